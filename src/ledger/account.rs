//! Accounts and kinds of transfer, and the one place their stored names are spelled.

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
    const PLATFORM: &'static str = "platform";
    const APP_STORE: &'static str = "app_store";
    const TOPUP_SOURCE: &'static str = "topup_source";
    const PURCHASES: &'static str = "purchases";

    /// SQL `LIKE` patterns matching the stored names of held accounts.
    pub const HELD_PATTERNS: [&'static str; 2] = ["wallet:%", "escrow:%"];
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
                    _ => return None,
                }
            }
        })
    }

    /// Accounts that hold someone's money may never go below zero.
    pub fn is_held(&self) -> bool {
        matches!(self, Account::Wallet(_) | Account::Escrow(_))
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
        ] {
            assert_eq!(Account::parse(name), None, "{name:?}");
        }
    }
}
