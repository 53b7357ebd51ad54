//! How earnings become payable (`[payouts]`): the hold on each day's earnings, the
//! smallest payout, and a payment's creators' shares held from the day it was made.

use crate::config::PayoutSettings;
use crate::ledger::{Account, Payee};
use crate::money::{Day, Minor, SplitPolicy};

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

    /// The legs of a payment of `value` from `payer`'s wallet in `room` (the room is
    /// the broadcaster's id), split by `split`, with the creators' shares held from
    /// `today` (paid into their available earnings without a hold). Zero parts are
    /// left out; the legs sum to zero.
    pub fn payment_legs(
        &self,
        split: &SplitPolicy,
        payer: &str,
        room: &str,
        value: Minor,
        today: Day,
    ) -> Vec<(Account, Minor)> {
        let parts = split.split(value, room);
        let earned = |payee: Payee| match self.hold_days {
            0 => payee.available(),
            _ => Account::Held(today, payee),
        };
        // Without an agency, its part is zero and it has no leg.
        let agency = (split.agency_of(room))
            .map(|(agency, _)| (earned(Payee::Agency(agency.to_owned())), parts.agency));
        let shares = [
            Some((Account::AppStore, parts.app_store)),
            Some((
                earned(Payee::Broadcaster(room.to_owned())),
                parts.broadcaster,
            )),
            agency,
            Some((Account::Platform, parts.platform)),
        ];
        let mut legs = vec![(Account::Wallet(payer.to_owned()), -value)];
        legs.extend((shares.into_iter().flatten()).filter(|(_, amount)| *amount != Minor::ZERO));
        debug_assert_eq!(legs.iter().map(|(_, a)| *a).sum::<Minor>(), Minor::ZERO);
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
    use crate::money::AgencyAssignment;

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
    fn creators_shares_are_paid_into_the_held_earnings_of_the_day() {
        let today = Day::parse("2026-12-02").unwrap();
        let mut split = SplitPolicy {
            agency_bps: 2000,
            ..SplitPolicy::default()
        };
        let stars = AgencyAssignment {
            agency: "stars".into(),
            agency_bps: None,
        };
        split.agencies.insert("alice".into(), stars);
        let value = Minor::new(10_000);
        let legs = PayoutRules::default().payment_legs(&split, "bob", "alice", value, today);
        let alice = Payee::Broadcaster("alice".into());
        let expected = [
            (Account::Wallet("bob".into()), -value),
            (Account::AppStore, Minor::new(3000)),
            (Account::Held(today, alice.clone()), Minor::new(2800)),
            (
                Account::Held(today, Payee::Agency("stars".into())),
                Minor::new(700),
            ),
            (Account::Platform, Minor::new(3500)),
        ];
        assert_eq!(legs, expected);
        let at_once = PayoutRules::from(&PayoutSettings {
            hold_days: 0,
            ..PayoutSettings::default()
        });
        let legs = at_once.payment_legs(&split, "bob", "alice", value, today);
        assert_eq!(legs[2], (alice.available(), Minor::new(2800)));
    }
}
