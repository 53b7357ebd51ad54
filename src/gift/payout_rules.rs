//! How earnings become payable (`[payouts]`): the hold on each day's earnings, the
//! smallest payout, and a payment's creators' shares held from the day it was made.

use crate::config::PayoutSettings;
use crate::ledger::{Account, Payee};
use crate::money::{Day, Minor};

/// The payout rules of `[payouts]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayoutRules {
    hold_days: u32,
    minimum: Minor,
}

impl From<&PayoutSettings> for PayoutRules {
    fn from(settings: &PayoutSettings) -> Self {
        PayoutRules {
            hold_days: settings.hold_days,
            minimum: Minor::new(i64::try_from(settings.min_amount).expect("validated to fit")),
        }
    }
}

impl Default for PayoutRules {
    fn default() -> Self {
        PayoutRules::from(&PayoutSettings::default())
    }
}

impl PayoutRules {
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
        self.minimum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_earnings_are_payable_after_the_hold_and_not_a_day_before() {
        let policy = PayoutRules::default();
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
        let held = PayoutRules::default().hold(legs.clone(), today);
        assert_eq!(
            held[1].0,
            Account::Held(today, Payee::Broadcaster("alice".into()))
        );
        assert_eq!(
            held[2].0,
            Account::Held(today, Payee::Agency("stars".into()))
        );
        assert_eq!((&held[0], &held[3]), (&legs[0], &legs[3]));
        let at_once = PayoutRules::from(&PayoutSettings {
            hold_days: 0,
            ..PayoutSettings::default()
        });
        assert_eq!(at_once.hold(legs.clone(), today), legs);
    }
}
