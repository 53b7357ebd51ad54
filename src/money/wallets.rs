//! In-memory wallet balances with reservations: the hot path checks and holds funds
//! without reading the ledger. Rebuilt from the ledger at start; a reservation is
//! settled after its transfer commits, or returned if it does not.

use dashmap::DashMap;

use super::Minor;

#[derive(Default)]
pub struct Wallets {
    /// Spendable balance per user: the ledger balance minus reservations in flight.
    available: DashMap<String, Minor>,
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
    pub fn load(balances: impl IntoIterator<Item = (String, Minor)>) -> Wallets {
        let available = DashMap::new();
        for (user, balance) in balances {
            assert!(balance >= 0, "wallet {user} is below zero in the ledger");
            available.insert(user, balance);
        }
        Wallets { available }
    }

    pub fn available(&self, user: &str) -> Minor {
        self.available.get(user).map_or(0, |b| *b)
    }

    /// Checks and holds `amount` in one step, so concurrent charges never overspend.
    pub fn reserve(&self, user: &str, amount: Minor) -> Result<Reservation<'_>, Insufficient> {
        assert!(amount >= 0);
        let mut balance = self.available.entry(user.to_owned()).or_insert(0);
        if *balance < amount {
            return Err(Insufficient {
                available: *balance,
            });
        }
        *balance -= amount;
        Ok(Reservation {
            wallets: self,
            user: user.to_owned(),
            amount,
            settled: false,
        })
    }

    /// Adds committed money (a top-up, a grab, a refund).
    pub fn credit(&self, user: &str, amount: Minor) {
        assert!(amount >= 0);
        *self.available.entry(user.to_owned()).or_insert(0) += amount;
    }
}

impl Reservation<'_> {
    /// The charge committed: the held funds are spent.
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.wallets.credit(&self.user, self.amount);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_funds_until_settled_or_dropped() {
        let wallets = Wallets::load([("bob".to_owned(), 100)]);
        let held = wallets.reserve("bob", 60).unwrap();
        assert_eq!(
            wallets.reserve("bob", 50).err(),
            Some(Insufficient { available: 40 })
        );
        drop(held);
        assert_eq!(wallets.available("bob"), 100);
        wallets.reserve("bob", 60).unwrap().settle();
        assert_eq!(wallets.available("bob"), 40);
        assert!(wallets.reserve("nobody", 1).is_err());
    }

    #[test]
    fn concurrent_reservations_never_overspend() {
        let wallets = Wallets::load([("bob".to_owned(), 1_000)]);
        let settled = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(r) = wallets.reserve("bob", 3) {
                            r.settle();
                            settled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(settled.into_inner(), 333);
        assert_eq!(wallets.available("bob"), 1);
    }
}
