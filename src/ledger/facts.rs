//! What each kind of transfer records beside its legs, typed: the facts a retry is
//! answered with, and what red packets and statements are rebuilt from. Stored as
//! JSON tagged with the kind; parsed once, where the ledger hands a transfer back.

use serde::{Deserialize, Serialize};

use super::account::{Account, Payee, TransferKind};
use super::LedgerError;
use crate::money::{Coins, Minor};
use crate::protocol::{SplitKind, UserRef};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransferMeta {
    Topup(Topup),
    Gift(Gift),
    Question(Question),
    RedPacket(RedPacket),
    Grab(Grab),
    Refund(Refund),
    Purchase(Purchase),
    PurchaseRefund(PurchaseRefund),
    Payout(Payout),
    PayoutSettled(PayoutSettled),
}

/// Coins bought (simulated in dev mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topup {
    pub coins: Coins,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    /// The event id clients refer to (acknowledgements).
    pub id: String,
    pub room: String,
    pub from: UserRef,
    pub sticker: String,
    pub count: u32,
    /// The gift's whole value.
    pub coins: Coins,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub id: String,
    pub room: String,
    pub from: UserRef,
    pub text: String,
    pub coins: Coins,
}

/// A red packet's creation: everything that is fixed once (its shares above all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedPacket {
    pub id: String,
    pub room: String,
    pub from: UserRef,
    pub coins: Coins,
    pub shares: u32,
    pub split: SplitKind,
    /// Each share, in the order grabs take them.
    pub amounts: Vec<Coins>,
    /// When what is left goes back to the sender (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// One share of a red packet taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grab {
    pub packet: String,
    pub room: String,
    pub index: u32,
    pub coins: Coins,
    /// Shares left after this one.
    pub left: u32,
    pub by: UserRef,
}

/// What was left of an expired red packet, back to its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub packet: String,
    pub room: String,
    pub coins: Coins,
    pub to: UserRef,
}

/// Coins bought with real money, as the payment system notified them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// Which payment system (`standard`, …) said so.
    pub provider: String,
    /// The payment system's id of the purchase: one purchase, one credit.
    pub purchase_id: String,
    /// The notification that first reported it.
    pub event_id: String,
    pub user: String,
    pub coins: Coins,
    /// The coin pack bought, if the payment named one.
    pub pack: Option<String>,
    /// What was paid, in the currency's minor unit.
    pub amount: u64,
    pub currency: String,
    /// Where it was paid (`apple`, `google`, `web`, …).
    pub store: String,
    /// What of `coins` went to repay the user's debt rather than into the wallet.
    #[serde(default)]
    pub repaid: Coins,
}

/// Coins of a purchase taken back: the payment system refunded it or the buyer's
/// bank charged it back. What the wallet no longer holds becomes debt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRefund {
    pub provider: String,
    pub purchase_id: String,
    pub event_id: String,
    pub user: String,
    /// The coins taken back.
    pub coins: Coins,
    /// Of those, what the wallet still held
    pub taken: Coins,
    /// and what the user now owes.
    pub owed: Coins,
    /// A chargeback (the bank's decision) rather than a refund (the seller's).
    pub chargeback: bool,
    /// The gifts the owed coins had paid for, and what came back of their creators'
    /// shares.
    #[serde(default)]
    pub clawed: Vec<Clawed>,
}

/// One creator's share of one gift that refunded coins had paid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clawed {
    /// The gift's (or question's) transfer.
    pub transfer_id: i64,
    pub room: String,
    pub payee: Payee,
    /// The refunded coins traced to the gift (minor units).
    pub traced: Minor,
    /// What came back out of the payee's held earnings
    pub clawed: Minor,
    /// and what was already available, which the platform carries.
    pub lost: Minor,
}

/// Available earnings moved into a pending payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub payout_id: String,
    pub payee: Payee,
    pub amount: Minor,
    /// The payee's idempotency key.
    pub key: String,
    /// When it was asked for (ms since the Unix epoch).
    pub requested_ms: u64,
}

/// The payment system's word on a payout: paid, or failed (back to available).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutSettled {
    pub payout_id: String,
    pub payee: Payee,
    pub amount: Minor,
    pub paid: bool,
    pub event_id: String,
    pub settled_ms: u64,
}

impl TransferMeta {
    pub fn kind(&self) -> TransferKind {
        match self {
            TransferMeta::Topup(_) => TransferKind::Topup,
            TransferMeta::Gift(_) => TransferKind::Gift,
            TransferMeta::Question(_) => TransferKind::Question,
            TransferMeta::RedPacket(_) => TransferKind::RedPacket,
            TransferMeta::Grab(_) => TransferKind::Grab,
            TransferMeta::Refund(_) => TransferKind::Refund,
            TransferMeta::Purchase(_) => TransferKind::Purchase,
            TransferMeta::PurchaseRefund(_) => TransferKind::PurchaseRefund,
            TransferMeta::Payout(_) => TransferKind::Payout,
            TransferMeta::PayoutSettled(_) => TransferKind::PayoutSettled,
        }
    }

    /// The room the transfer happened in, if any.
    pub fn room(&self) -> Option<&str> {
        match self {
            TransferMeta::Topup(_)
            | TransferMeta::Purchase(_)
            | TransferMeta::PurchaseRefund(_)
            | TransferMeta::Payout(_)
            | TransferMeta::PayoutSettled(_) => None,
            TransferMeta::Gift(gift) => Some(&gift.room),
            TransferMeta::Question(question) => Some(&question.room),
            TransferMeta::RedPacket(packet) => Some(&packet.room),
            TransferMeta::Grab(grab) => Some(&grab.room),
            TransferMeta::Refund(refund) => Some(&refund.room),
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("transfer facts always serialize")
    }

    /// Reads stored facts back. Facts that do not parse are a damaged ledger, never a
    /// default: a missing amount must not read as zero coins.
    pub fn parse(stored: &str) -> Result<TransferMeta, LedgerError> {
        serde_json::from_str(stored)
            .map_err(|error| LedgerError::Storage(format!("unreadable transfer facts: {error}")))
    }
}

impl RedPacket {
    /// A red packet's creation facts, from its creation transfer's stored facts.
    pub fn parse(stored: &str) -> Result<RedPacket, LedgerError> {
        match TransferMeta::parse(stored)? {
            TransferMeta::RedPacket(packet) => Ok(packet),
            other => Err(LedgerError::Storage(format!(
                "a red packet's creation holds the facts of a {}",
                other.kind().as_str()
            ))),
        }
    }
}

/// A broadcaster's earnings statement: what the paid transfers in their room moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Earnings {
    /// Paid gifts and questions in their room.
    pub gifts: u64,
    /// Their total value, in whole coins.
    pub coins: Coins,
    /// The broadcaster's share, in minor units.
    pub broadcaster: Minor,
    /// The agency's cut, in minor units.
    pub agency: Minor,
    /// The platform's part, in minor units.
    pub platform: Minor,
    /// The app store's fee, in minor units.
    pub app_store: Minor,
}

impl Earnings {
    /// One paid transfer's part of the statement of the broadcaster of `room`.
    pub fn of(room: &str, legs: &[(Account, Minor)]) -> Earnings {
        let mut part = Earnings {
            gifts: 1,
            ..Earnings::default()
        };
        for (account, amount) in legs {
            part.add(room, account, *amount);
        }
        part
    }

    /// Adds another part of the same broadcaster's statement.
    pub fn merge(&mut self, part: &Earnings) {
        self.gifts += part.gifts;
        self.coins += part.coins;
        self.broadcaster += part.broadcaster;
        self.agency += part.agency;
        self.platform += part.platform;
        self.app_store += part.app_store;
    }

    /// Adds one leg of one of the broadcaster's paid transfers.
    pub fn add(&mut self, broadcaster: &str, account: &Account, amount: Minor) {
        match account {
            Account::Earnings(id) | Account::Held(_, Payee::Broadcaster(id))
                if id == broadcaster =>
            {
                self.broadcaster += amount
            }
            Account::Agency(_) | Account::Held(_, Payee::Agency(_)) => self.agency += amount,
            Account::Wallet(_) => self.coins += (-amount).whole_coins(),
            Account::Platform => self.platform += amount,
            Account::AppStore => self.app_store += amount,
            Account::Earnings(_)
            | Account::TopupSource
            | Account::Purchases
            | Account::Escrow(_)
            | Account::Debt(_)
            | Account::Spent(..)
            | Account::Refunded(_)
            | Account::Counters
            | Account::Held(..)
            | Account::Traced(_)
            | Account::Payout(..)
            | Account::PaidOut(_)
            | Account::Losses => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_missing_an_amount_are_refused_not_read_as_zero() {
        let stored = r#"{"kind":"topup"}"#;
        assert!(matches!(
            TransferMeta::parse(stored),
            Err(LedgerError::Storage(_))
        ));
        let stored = r#"{"kind":"topup","coins":5}"#;
        assert_eq!(
            TransferMeta::parse(stored).unwrap(),
            TransferMeta::Topup(Topup {
                coins: Coins::new(5)
            })
        );
    }
}
