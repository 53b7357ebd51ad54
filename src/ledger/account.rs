//! Accounts and kinds of transfer, and the one place their stored names are spelled.

use serde::{Deserialize, Serialize};

use crate::money::Day;

/// Every account money can sit in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// A user's spendable coins.
    Wallet(String),
    /// What a broadcaster earned (their room id is their user id).
    Earnings(String),
    Agency(String),
    Platform,
    AppStore,
    /// Where simulated store purchases come from; it goes negative as coins are sold.
    TopupSource,
    /// Where coins bought with real money come from; it goes negative as they are sold.
    Purchases,
    /// Coins held in a red packet until grabbed or refunded.
    Escrow(String),
    /// What a user owes after a refund took back coins already spent: at or below
    /// zero, minus the debt. Never a negative wallet.
    Debt(String),
    /// A counter, not money: the coins a user spent (gifts, questions, red packets) on
    /// a UTC day, which a daily cap bounds. Its other side is `Counters`.
    Spent(Day, String),
    /// A counter, not money: the coins taken back so far from the purchase
    /// `{provider}:{purchase_id}`, which the purchase's coins bound.
    Refunded(String),
    /// The other side of every counter; it goes negative as they count.
    Counters,
    /// A payee's earnings from day `Day`'s gifts, held until the hold period passes
    /// (refunds can still take them back); then they count as available.
    Held(Day, Payee),
    /// A payout asked for and not yet settled by the payment system: `Payout(payee, id)`.
    Payout(Payee, String),
    /// What was paid out to a payee, all told; it only grows.
    PaidOut(Payee),
    /// A counter, not money: the coins of gift (or question) transfer `i64` that refunds
    /// have traced to it, which the gift's value bounds.
    Traced(i64),
    /// The creators' shares of refunded coins that were already available when the
    /// refund came: the platform carries them.
    Losses,
}

/// Who earnings belong to: a broadcaster (their room id is their user id) or an agency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payee {
    Broadcaster(String),
    Agency(String),
}

impl Payee {
    /// The account of the payee's available earnings.
    pub fn available(&self) -> Account {
        match self {
            Payee::Broadcaster(id) => Account::Earnings(id.clone()),
            Payee::Agency(id) => Account::Agency(id.clone()),
        }
    }

    /// The stored name of the payee's available account, in two parts (`earnings:`,
    /// `alice`), for names built on it without another allocation.
    fn key_parts(&self) -> (&'static str, &str) {
        match self {
            Payee::Broadcaster(id) => (Account::EARNINGS, id),
            Payee::Agency(id) => (Account::AGENCY, id),
        }
    }

    /// The payee's user id.
    pub fn id(&self) -> &str {
        match self {
            Payee::Broadcaster(id) | Payee::Agency(id) => id,
        }
    }

    /// The payee whose available earnings `account` holds, if it holds any.
    pub fn of_available(account: &Account) -> Option<Payee> {
        match account {
            Account::Earnings(id) => Some(Payee::Broadcaster(id.clone())),
            Account::Agency(id) => Some(Payee::Agency(id.clone())),
            _ => None,
        }
    }

    /// The payee an account of earnings (held, available, pending or paid) belongs to.
    pub fn of(account: &Account) -> Option<Payee> {
        match account {
            Account::Held(_, payee) | Account::Payout(payee, _) | Account::PaidOut(payee) => {
                Some(payee.clone())
            }
            other => Payee::of_available(other),
        }
    }

    /// Stored-name prefixes shared by the payee's held and pending accounts:
    /// `held:earnings:alice:` and `payout:earnings:alice:`.
    pub fn prefixes(&self) -> [String; 2] {
        let available = self.available().key();
        [
            format!("{}{available}:", Account::HELD),
            format!("{}{available}:", Account::PAYOUT),
        ]
    }
}

impl Account {
    const WALLET: &'static str = "wallet:";
    const EARNINGS: &'static str = "earnings:";
    const AGENCY: &'static str = "agency:";
    const ESCROW: &'static str = "escrow:";
    const DEBT: &'static str = "debt:";
    const SPENT: &'static str = "spent:";
    const REFUNDED: &'static str = "refunded:";
    const COUNTERS: &'static str = "counters";
    const HELD: &'static str = "held:";
    const PAYOUT: &'static str = "payout:";
    const PAID_OUT: &'static str = "paid:";
    const LOSSES: &'static str = "losses";
    const TRACED: &'static str = "traced:";
    const PLATFORM: &'static str = "platform";
    const APP_STORE: &'static str = "app_store";
    const TOPUP_SOURCE: &'static str = "topup_source";
    const PURCHASES: &'static str = "purchases";

    /// The SQL `LIKE` pattern matching every wallet's stored name.
    pub const WALLET_PATTERN: &'static str = "wallet:%";
    /// The SQL `LIKE` pattern matching every escrow's stored name.
    pub const ESCROW_PATTERN: &'static str = "escrow:%";
    /// The SQL `LIKE` pattern matching every debt's stored name.
    pub const DEBT_PATTERN: &'static str = "debt:%";

    /// The stored name, e.g. `wallet:bob`.
    pub fn key(&self) -> String {
        match self {
            Account::Wallet(id) => format!("{}{id}", Self::WALLET),
            Account::Earnings(id) => format!("{}{id}", Self::EARNINGS),
            Account::Agency(id) => format!("{}{id}", Self::AGENCY),
            Account::Platform => Self::PLATFORM.into(),
            Account::AppStore => Self::APP_STORE.into(),
            Account::TopupSource => Self::TOPUP_SOURCE.into(),
            Account::Purchases => Self::PURCHASES.into(),
            Account::Escrow(id) => format!("{}{id}", Self::ESCROW),
            Account::Debt(id) => format!("{}{id}", Self::DEBT),
            Account::Spent(day, id) => format!("{}{day}:{id}", Self::SPENT),
            Account::Refunded(purchase) => format!("{}{purchase}", Self::REFUNDED),
            Account::Counters => Self::COUNTERS.into(),
            Account::Held(day, payee) => {
                let (kind, owner) = payee.key_parts();
                format!("{}{kind}{owner}:{day}", Self::HELD)
            }
            Account::Payout(payee, id) => {
                let (kind, owner) = payee.key_parts();
                format!("{}{kind}{owner}:{id}", Self::PAYOUT)
            }
            Account::PaidOut(payee) => {
                let (kind, owner) = payee.key_parts();
                format!("{}{kind}{owner}", Self::PAID_OUT)
            }
            Account::Losses => Self::LOSSES.into(),
            Account::Traced(transfer) => format!("{}{transfer}", Self::TRACED),
        }
    }

    /// The account a stored name names; `None` for a name no account has.
    pub fn parse(name: &str) -> Option<Account> {
        let owned = |id: &str| (!id.is_empty()).then(|| id.to_owned());
        Some(match name {
            Self::PLATFORM => Account::Platform,
            Self::APP_STORE => Account::AppStore,
            Self::TOPUP_SOURCE => Account::TopupSource,
            Self::PURCHASES => Account::Purchases,
            Self::COUNTERS => Account::Counters,
            Self::LOSSES => Account::Losses,
            _ => {
                let (prefix, id) = name.split_at(name.find(':')? + 1);
                let id = owned(id)?;
                match prefix {
                    Self::WALLET => Account::Wallet(id),
                    Self::EARNINGS => Account::Earnings(id),
                    Self::AGENCY => Account::Agency(id),
                    Self::ESCROW => Account::Escrow(id),
                    Self::DEBT => Account::Debt(id),
                    Self::REFUNDED => Account::Refunded(id),
                    Self::SPENT => {
                        let (day, user) = id.split_once(':')?;
                        Account::Spent(Day::parse(day)?, owned(user)?)
                    }
                    Self::HELD => {
                        let (payee, day) = id.rsplit_once(':')?;
                        Account::Held(Day::parse(day)?, Self::payee(payee)?)
                    }
                    Self::PAYOUT => {
                        let (payee, payout) = id.rsplit_once(':')?;
                        Account::Payout(Self::payee(payee)?, owned(payout)?)
                    }
                    Self::PAID_OUT => Account::PaidOut(Self::payee(&id)?),
                    Self::TRACED if !id.starts_with(['+', '0']) => {
                        Account::Traced(id.parse().ok().filter(|&t: &i64| t > 0)?)
                    }
                    _ => return None,
                }
            }
        })
    }

    /// The account a stored name names; a name no account has is a damaged ledger.
    pub fn stored(name: &str) -> Result<Account, super::LedgerError> {
        Account::parse(name).ok_or_else(|| {
            super::LedgerError::Storage(format!("the ledger holds an unknown account {name:?}"))
        })
    }

    /// The payee whose available earnings a stored name names.
    fn payee(name: &str) -> Option<Payee> {
        Payee::of_available(&Account::parse(name)?)
    }

    /// Accounts that hold someone's money may never go below zero.
    pub fn is_held(&self) -> bool {
        matches!(
            self,
            Account::Wallet(_)
                | Account::Escrow(_)
                | Account::Earnings(_)
                | Account::Agency(_)
                | Account::Held(..)
                | Account::Payout(..)
        )
    }

    /// Accounts of money owed to the platform may never go above zero.
    pub fn is_owed(&self) -> bool {
        matches!(self, Account::Debt(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Topup,
    Gift,
    Question,
    RedPacket,
    Grab,
    Refund,
    Purchase,
    PurchaseRefund,
    Payout,
    PayoutSettled,
}

impl TransferKind {
    /// Payments to a broadcaster: what their earnings statement counts.
    pub const PAID: [TransferKind; 2] = [TransferKind::Gift, TransferKind::Question];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Topup => "topup",
            TransferKind::Gift => "gift",
            TransferKind::Question => "question",
            TransferKind::RedPacket => "red_packet",
            TransferKind::Grab => "grab",
            TransferKind::Refund => "refund",
            TransferKind::Purchase => "purchase",
            TransferKind::PurchaseRefund => "purchase_refund",
            TransferKind::Payout => "payout",
            TransferKind::PayoutSettled => "payout_settled",
        }
    }

    pub fn is_paid(self) -> bool {
        Self::PAID.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_reads_back_from_its_stored_name() {
        let accounts = [
            Account::Wallet("bob".into()),
            Account::Earnings("alice".into()),
            Account::Agency("stars".into()),
            Account::Platform,
            Account::AppStore,
            Account::TopupSource,
            Account::Purchases,
            Account::Escrow("p1".into()),
            Account::Debt("bob".into()),
            Account::Spent(Day::parse("2026-12-01").unwrap(), "bob".into()),
            Account::Refunded("stripe:pi_1:x".into()),
            Account::Counters,
            Account::Held(
                Day::parse("2026-12-02").unwrap(),
                Payee::Broadcaster("alice".into()),
            ),
            Account::Held(
                Day::parse("2026-12-02").unwrap(),
                Payee::Agency("stars".into()),
            ),
            Account::Payout(Payee::Broadcaster("alice".into()), "po_1".into()),
            Account::PaidOut(Payee::Agency("stars".into())),
            Account::Losses,
            Account::Traced(42),
        ];
        for account in accounts {
            assert_eq!(Account::parse(&account.key()), Some(account));
        }
        for name in [
            "wallet:",
            "purse:bob",
            "",
            "platforms",
            "spent:bob",
            "spent:2026-12-01:",
            "held:wallet:bob:2026-12-02",
            "held:earnings:alice",
            "payout:earnings:alice:",
            "paid:platform",
            "traced:0",
            "traced:+4",
            "traced:x",
        ] {
            assert_eq!(Account::parse(name), None, "{name:?}");
        }
    }
}
