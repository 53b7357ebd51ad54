//! Coins bought with real money: payment systems' signed notifications, verified over
//! the raw body before anything is parsed, turned into ledger purchases credited
//! exactly once (`docs/payments.md`). Sans-IO: the HTTP edge (`http/payments.rs`)
//! hands in the headers, the body and the time.

pub mod notification;
pub mod standard;
pub mod stripe;

use crate::config::PaymentSettings;
use crate::ledger::facts::Purchase;
use crate::money::{CoinPack, Coins};
use notification::PurchaseCompleted;

/// What the payment routes need: the secrets and the packs.
pub struct Payments {
    pub standard: Option<standard::Secret>,
    pub stripe: Option<String>,
    pub tolerance_s: i64,
    pub max_body_bytes: usize,
    packs: Vec<CoinPack>,
}

/// Why a well-signed notification cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprocessable {
    #[error("no user {0:?}: user ids match [a-z0-9_-]{{1,64}}")]
    User(String),
    #[error("no coin pack {0:?}")]
    Pack(String),
    #[error("{0}")]
    Shape(String),
}

impl Payments {
    pub fn new(settings: &PaymentSettings, packs: Vec<CoinPack>) -> anyhow::Result<Payments> {
        Ok(Payments {
            standard: settings
                .standard_secret
                .as_deref()
                .map(standard::Secret::parse)
                .transpose()?,
            stripe: settings.stripe_secret.clone(),
            tolerance_s: i64::try_from(settings.tolerance_s)?,
            max_body_bytes: settings.max_body_bytes,
            packs,
        })
    }

    pub fn packs(&self) -> &[CoinPack] {
        &self.packs
    }

    /// The ledger purchase a completed payment makes: its coins from the pack it names,
    /// or as given. `Shape` is the body's fault (400); `User` and `Pack` are unknown
    /// names (422).
    pub fn purchase(
        &self,
        provider: &str,
        event_id: &str,
        completed: PurchaseCompleted,
    ) -> Result<Purchase, Unprocessable> {
        completed.check().map_err(Unprocessable::Shape)?;
        if !crate::protocol::is_valid_id(&completed.user) {
            return Err(Unprocessable::User(completed.user));
        }
        let coins = match (&completed.pack, completed.coins) {
            (Some(id), None) => {
                let pack = self.packs.iter().find(|pack| pack.id == *id);
                pack.ok_or_else(|| Unprocessable::Pack(id.clone()))?.coins
            }
            (None, Some(coins)) if coins > 0 && Coins::new(coins).to_minor().is_ok() => {
                Coins::new(coins)
            }
            _ => {
                return Err(Unprocessable::Shape(
                    "a purchase names a pack or a number of coins (at least 1), not both".into(),
                ))
            }
        };
        Ok(Purchase {
            provider: provider.to_owned(),
            purchase_id: completed.purchase_id,
            event_id: event_id.to_owned(),
            user: completed.user,
            coins,
            pack: completed.pack,
            amount: completed.amount,
            currency: completed.currency,
            store: completed.store,
            repaid: Coins::ZERO,
        })
    }
}
