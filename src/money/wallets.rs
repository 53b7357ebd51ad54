//! In-memory wallet balances with reservations: the hot path checks and holds funds
//! without reading the ledger. Rebuilt from the ledger at start; a reservation is
//! settled after its transfer commits, or returned if it does not.

use dashmap::DashMap;

use super::{Day, Minor};

#[derive(Default)]
pub struct Wallets {
    wallets: DashMap<String, Wallet>,
}

#[derive(Default, Clone, Copy)]
struct Wallet {
    /// Spendable: the ledger balance minus reservations in flight. Below zero only
    /// while a refund took back coins that charges in flight had reserved (those
    /// charges then fail at the ledger and give them back).
    available: Minor,
    /// Reserved by charges in flight.
    held: Minor,
    /// What the user owes after a refund took back coins already spent.
    debt: Minor,
    /// What the user spent on the last day they spent (a daily cap's count).
    spent: Option<(Day, Minor)>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Insufficient {
    pub available: Minor,
}

/// Funds held for one charge. Dropped unsettled, it gives them back.
#[must_use = "a reservation is returned when dropped; settle it after the commit"]
pub struct Reservation<'a> {
    wallets: &'a Wallets,
    user: String,
    amount: Minor,
    settled: bool,
}

impl Wallets {
    /// Wallets with their committed `balances`, and what their owners owe (`debts`).
    pub fn load(
        balances: impl IntoIterator<Item = (String, Minor)>,
        debts: impl IntoIterator<Item = (String, Minor)>,
    ) -> Wallets {
        let wallets: DashMap<String, Wallet> = DashMap::new();
        for (user, balance) in balances {
            assert!(
                !balance.is_negative(),
                "wallet {user} is below zero in the ledger"
            );
            wallets.entry(user).or_default().available = balance;
        }
        for (user, debt) in debts {
            assert!(!debt.is_negative(), "{user} owes less than nothing");
            wallets.entry(user).or_default().debt = debt;
        }
        Wallets { wallets }
    }

    /// What each user spent on `day`, as the books count it.
    pub fn with_spent(self, day: Day, spent: impl IntoIterator<Item = (String, Minor)>) -> Self {
        for (user, amount) in spent {
            self.wallets.entry(user).or_default().spent = Some((day, amount));
        }
        self
    }

    /// What the user spent on `day` (gifts, questions, red packets).
    pub fn spent(&self, user: &str, day: Day) -> Minor {
        match self.wallets.get(user).and_then(|wallet| wallet.spent) {
            Some((spent_on, amount)) if spent_on == day => amount,
            _ => Minor::ZERO,
        }
    }

    /// What the user can spend now (never shown below zero).
    pub fn available(&self, user: &str) -> Minor {
        let available = self.wallets.get(user).map_or(Minor::ZERO, |w| w.available);
        available.max(Minor::ZERO)
    }

    /// What the user owes.
    pub fn debt(&self, user: &str) -> Minor {
        self.wallets.get(user).map_or(Minor::ZERO, |w| w.debt)
    }

    /// A committed purchase: `credited` into the wallet, `repaid` off the debt.
    pub fn purchased(&self, user: &str, credited: Minor, repaid: Minor) {
        let mut wallet = self.wallets.entry(user.to_owned()).or_default();
        wallet.available += credited;
        wallet.debt -= repaid;
        assert!(
            !wallet.debt.is_negative(),
            "{user} repaid more than they owed"
        );
    }

    /// A committed refund: `taken` out of the wallet, `owed` added to the debt.
    pub fn taken_back(&self, user: &str, taken: Minor, owed: Minor) {
        let mut wallet = self.wallets.entry(user.to_owned()).or_default();
        wallet.available -= taken;
        wallet.debt += owed;
    }

    /// Takes the committed balance, debt and spending on `day` read from a shared
    /// ledger (other nodes may have charged, credited or refunded), keeping this
    /// node's reservations held.
    pub fn resync(&self, user: &str, committed: Minor, debt: Minor, spent: (Day, Minor)) {
        let mut wallet = self.wallets.entry(user.to_owned()).or_default();
        wallet.available = (committed - wallet.held).max(Minor::ZERO);
        wallet.debt = debt;
        wallet.spent = Some(spent);
    }

    /// Checks and holds `amount` in one step, so concurrent charges never overspend.
    pub fn reserve(&self, user: &str, amount: Minor) -> Result<Reservation<'_>, Insufficient> {
        assert!(!amount.is_negative());
        let mut wallet = self.wallets.entry(user.to_owned()).or_default();
        if wallet.available < amount {
            return Err(Insufficient {
                available: wallet.available,
            });
        }
        wallet.available -= amount;
        wallet.held += amount;
        Ok(Reservation {
            wallets: self,
            user: user.to_owned(),
            amount,
            settled: false,
        })
    }

    /// Adds committed money (a top-up, a grab, a refund).
    pub fn credit(&self, user: &str, amount: Minor) {
        assert!(!amount.is_negative());
        self.wallets.entry(user.to_owned()).or_default().available += amount;
    }
}

impl Reservation<'_> {
    /// The charge committed on `day`: the held funds are spent.
    pub fn settle(mut self, day: Day) {
        self.settled = true;
        if let Some(mut wallet) = self.wallets.wallets.get_mut(&self.user) {
            wallet.held -= self.amount;
            let before = match wallet.spent {
                Some((spent_on, amount)) if spent_on == day => amount,
                _ => Minor::ZERO,
            };
            wallet.spent = Some((day, before + self.amount));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut wallet = self.wallets.wallets.entry(self.user.clone()).or_default();
            wallet.held -= self.amount;
            wallet.available += self.amount;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(minor: i64) -> Minor {
        Minor::new(minor)
    }

    fn day() -> Day {
        Day::parse("2026-12-01").unwrap()
    }

    #[test]
    fn reservations_hold_funds_until_settled_or_dropped() {
        let wallets = Wallets::load([("bob".to_owned(), m(100))], []);
        let held = wallets.reserve("bob", m(60)).unwrap();
        assert_eq!(
            wallets.reserve("bob", m(50)).err(),
            Some(Insufficient { available: m(40) })
        );
        drop(held);
        assert_eq!(wallets.available("bob"), m(100));
        wallets.reserve("bob", m(60)).unwrap().settle(day());
        assert_eq!(wallets.spent("bob", day()), m(60));
        assert_eq!(wallets.available("bob"), m(40));
        assert!(wallets.reserve("nobody", m(1)).is_err());
    }

    #[test]
    fn a_resync_keeps_what_this_node_holds() {
        let wallets = Wallets::load([("bob".to_owned(), m(100))], []);
        let held = wallets.reserve("bob", m(30)).unwrap();
        // Another node credited 50: the ledger says 150, of which 30 are held here.
        wallets.resync("bob", m(150), Minor::ZERO, (day(), Minor::ZERO));
        assert_eq!(wallets.available("bob"), m(120));
        held.settle(day());
        assert_eq!(wallets.available("bob"), m(120));
        wallets.resync("bob", m(120), Minor::ZERO, (day(), m(30)));
        assert_eq!(wallets.available("bob"), m(120));
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let wallets = Wallets::load([("bob".to_owned(), m(1_000))], []);
        let settled = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = wallets.reserve("bob", m(3)) {
                            r.settle(day());
                            settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(settled.into_inner(), 333);
        assert_eq!(wallets.available("bob"), m(1));
    }
}
