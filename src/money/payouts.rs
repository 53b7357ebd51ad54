//! How earnings become payable: the hold on each day's earnings, the smallest payout,
//! and a payment's creators' shares held from the day it was made.

use anyhow::bail;
use serde::Deserialize;

use super::{Day, Minor};
use crate::ledger::{Account, Payee};

/// `[payouts]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutPolicy {
    /// Earnings of a day stay held (refunds can take them back) for this many whole
    /// days after it; 0 makes them available at once.
    pub hold_days: u32,
    /// The smallest payout, in minor units (1/100 coin).
    pub min_amount: u64,
}

impl Default for PayoutPolicy {
    fn default() -> Self {
        PayoutPolicy {
            hold_days: 7,
            min_amount: 10_000,
        }
    }
}

/// The longest hold: a year.
const MAX_HOLD_DAYS: u32 = 366;

impl PayoutPolicy {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.hold_days > MAX_HOLD_DAYS {
            bail!("payouts.hold_days must be at most {MAX_HOLD_DAYS}");
        }
        if self.min_amount == 0 || i64::try_from(self.min_amount).is_err() {
            bail!("payouts.min_amount must be greater than zero and fit the ledger");
        }
        Ok(())
    }

    /// The first day on which earnings of `earned` are available: after `hold_days`
    /// whole days, so that a gift just before midnight is held as long as any.
    pub fn available_on(&self, earned: Day) -> Day {
        earned.plus(self.hold_days + 1)
    }

    /// Whether `account` holds earnings a payout may take on `today`: available ones,
    /// and held ones whose hold has passed.
    pub fn is_payable(&self, account: &Account, today: Day) -> bool {
        match account {
            Account::Held(earned, _) => today >= self.available_on(*earned),
            other => Payee::of_available(other).is_some(),
        }
    }

    /// A payment's legs with its creators' shares (`Earnings`, `Agency`) held from
    /// `today`; unchanged without a hold.
    pub fn hold(&self, mut legs: Vec<(Account, Minor)>, today: Day) -> Vec<(Account, Minor)> {
        if self.hold_days > 0 {
            for (account, _) in &mut legs {
                if let Some(payee) = Payee::of_available(account) {
                    *account = Account::Held(today, payee);
                }
            }
        }
        legs
    }

    /// The smallest payout, in minor units.
    pub fn minimum(&self) -> Minor {
        Minor::new(i64::try_from(self.min_amount).expect("validated to fit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_earnings_are_payable_after_the_hold_and_not_a_day_before() {
        let policy = PayoutPolicy::default();
        let earned = Day::parse("2026-12-02").unwrap();
        let held = Account::Held(earned, Payee::Broadcaster("alice".into()));
        assert!(!policy.is_payable(&held, earned));
        assert!(!policy.is_payable(&held, earned.plus(7)));
        assert!(policy.is_payable(&held, earned.plus(8)));
        assert!(policy.is_payable(&Account::Earnings("alice".into()), earned));
        assert!(!policy.is_payable(&Account::Platform, earned.plus(100)));
    }

    #[test]
    fn creators_shares_are_held_from_the_day_of_the_payment() {
        let today = Day::parse("2026-12-02").unwrap();
        let legs = vec![
            (Account::Wallet("bob".into()), Minor::new(-100)),
            (Account::Earnings("alice".into()), Minor::new(40)),
            (Account::Agency("stars".into()), Minor::new(10)),
            (Account::Platform, Minor::new(50)),
        ];
        let held = PayoutPolicy::default().hold(legs.clone(), today);
        assert_eq!(
            held[1].0,
            Account::Held(today, Payee::Broadcaster("alice".into()))
        );
        assert_eq!(
            held[2].0,
            Account::Held(today, Payee::Agency("stars".into()))
        );
        assert_eq!((&held[0], &held[3]), (&legs[0], &legs[3]));
        let at_once = PayoutPolicy {
            hold_days: 0,
            ..PayoutPolicy::default()
        };
        assert_eq!(at_once.hold(legs.clone(), today), legs);
    }
}
