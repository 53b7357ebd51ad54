//! The body of a Standard Webhooks notification from a payment backend:
//! `{"type": T, "data": {...}}`.

use serde::Deserialize;

/// The events this server applies. Any other type is not the shape it takes (400).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Notification {
    #[serde(rename = "purchase.completed")]
    PurchaseCompleted(PurchaseCompleted),
    /// The seller gave the money back.
    #[serde(rename = "purchase.refunded")]
    PurchaseRefunded(Refunded),
    /// The buyer's bank took it back.
    #[serde(rename = "purchase.charged_back")]
    PurchaseChargedBack(Refunded),
    /// The money of a payout reached the creator.
    #[serde(rename = "payout.paid")]
    PayoutPaid(PayoutEvent),
    /// It did not: the amount is theirs to cash out again.
    #[serde(rename = "payout.failed")]
    PayoutFailed(PayoutEvent),
}

#[derive(Debug, Clone, Deserialize)]
pub struct PayoutEvent {
    pub payout_id: String,
}

/// Coins of a purchase to take back: `coins` of them, or all.
#[derive(Debug, Clone, Deserialize)]
pub struct Refunded {
    pub purchase_id: String,
    pub coins: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PurchaseCompleted {
    pub purchase_id: String,
    pub user: String,
    /// A coin pack's id, or else
    pub pack: Option<String>,
    /// a number of coins.
    pub coins: Option<u64>,
    /// What was paid, in the currency's minor unit.
    pub amount: u64,
    pub currency: String,
    pub store: String,
}

/// Longest purchase id and store name taken.
const MAX_ID_CHARS: usize = 128;
const MAX_STORE_CHARS: usize = 32;

impl PurchaseCompleted {
    /// The fields' own rules; what they name (user, pack) is checked by `Payments`.
    pub fn check(&self) -> Result<(), String> {
        let printable = |text: &str, max: usize| {
            (1..=max).contains(&text.chars().count()) && !text.chars().any(char::is_control)
        };
        if !printable(&self.purchase_id, MAX_ID_CHARS) {
            return Err(format!(
                "purchase_id must be 1 to {MAX_ID_CHARS} printable characters"
            ));
        }
        if !printable(&self.store, MAX_STORE_CHARS) {
            return Err(format!(
                "store must be 1 to {MAX_STORE_CHARS} printable characters"
            ));
        }
        if !crate::money::is_currency(&self.currency) {
            return Err("currency must be an ISO 4217 code such as USD".into());
        }
        Ok(())
    }
}
