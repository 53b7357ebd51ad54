//! The revenue split of a paid value: app store first, then the broadcaster's share of
//! the rest (out of which an agency may take its cut), and the platform keeps the
//! remainder, including every rounding remainder. Floor rounding everywhere.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::{Minor, BPS_WHOLE};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitPolicy {
    /// The app store's fee, of the whole value.
    pub app_store_bps: u32,
    /// The broadcaster's share of what remains after the app store.
    pub broadcaster_bps: u32,
    /// The default agency cut, out of the broadcaster's share (for broadcasters with an
    /// agency assignment that does not name its own cut).
    pub agency_bps: u32,
    /// Broadcaster id → their agency.
    pub agencies: BTreeMap<String, AgencyAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyAssignment {
    pub agency: String,
    pub agency_bps: Option<u32>,
}

impl Default for SplitPolicy {
    fn default() -> Self {
        SplitPolicy {
            app_store_bps: 3000,
            broadcaster_bps: 5000,
            agency_bps: 0,
            agencies: BTreeMap::new(),
        }
    }
}

/// Where one value goes; the four parts sum to the value exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub app_store: Minor,
    pub broadcaster: Minor,
    pub agency: Minor,
    pub platform: Minor,
}

/// `amount * bps / 10000`, rounded down, without overflow.
fn part(amount: Minor, bps: u32) -> Minor {
    let exact = i128::from(amount.get()) * i128::from(bps) / i128::from(BPS_WHOLE);
    Minor::new(i64::try_from(exact).expect("a part is never larger than the whole"))
}

impl SplitPolicy {
    pub fn validate(&self) -> anyhow::Result<()> {
        let assigned = self.agencies.values().filter_map(|a| a.agency_bps);
        for bps in [self.app_store_bps, self.broadcaster_bps, self.agency_bps]
            .into_iter()
            .chain(assigned)
        {
            if bps > BPS_WHOLE {
                bail!("split: basis points must be at most {BPS_WHOLE}, got {bps}");
            }
        }
        for (broadcaster, assignment) in &self.agencies {
            if !crate::protocol::is_valid_id(broadcaster)
                || !crate::protocol::is_valid_id(&assignment.agency)
            {
                bail!("split.agencies: ids must match [a-z0-9_-]{{1,64}}");
            }
        }
        Ok(())
    }

    /// Whether some broadcaster is assigned to agency `id`.
    pub fn is_agency(&self, id: &str) -> bool {
        self.agencies.values().any(|a| a.agency == id)
    }

    /// The broadcaster's agency and its cut, if they have one.
    pub fn agency_of(&self, broadcaster: &str) -> Option<(&str, u32)> {
        self.agencies
            .get(broadcaster)
            .map(|a| (a.agency.as_str(), a.agency_bps.unwrap_or(self.agency_bps)))
    }

    pub fn split(&self, value: Minor, broadcaster: &str) -> Split {
        assert!(!value.is_negative(), "a paid value is never negative");
        let app_store = part(value, self.app_store_bps);
        let gross = part(value - app_store, self.broadcaster_bps);
        let agency_bps = self.agency_of(broadcaster).map_or(0, |(_, bps)| bps);
        let agency = part(gross, agency_bps);
        let broadcaster = part(gross, BPS_WHOLE - agency_bps);
        let platform = value - app_store - agency - broadcaster;
        let split = Split {
            app_store,
            broadcaster,
            agency,
            platform,
        };
        assert_eq!(app_store + broadcaster + agency + platform, value);
        assert!(!platform.is_negative());
        split
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_agency(app: u32, share: u32, cut: u32) -> SplitPolicy {
        let mut policy = SplitPolicy {
            app_store_bps: app,
            broadcaster_bps: share,
            agency_bps: cut,
            agencies: BTreeMap::new(),
        };
        policy.agencies.insert(
            "alice".into(),
            AgencyAssignment {
                agency: "stars".into(),
                agency_bps: None,
            },
        );
        policy
    }

    #[test]
    fn default_policy_on_a_round_value() {
        let split = SplitPolicy::default().split(Minor::new(3000), "alice");
        assert_eq!(
            split,
            Split {
                app_store: Minor::new(900),
                broadcaster: Minor::new(1050),
                agency: Minor::ZERO,
                platform: Minor::new(1050)
            }
        );
    }

    #[test]
    fn rounding_remainders_go_to_the_platform() {
        // 1 minor unit: every floor gives 0, so the platform keeps it.
        let platform = SplitPolicy::default().split(Minor::new(1), "a").platform;
        assert_eq!(platform, Minor::new(1));
        let split = with_agency(3000, 5000, 1000).split(Minor::new(333), "alice");
        // store floor(99.9)=99, gross floor(117)=117, agency floor(11.7)=11, broadcaster floor(105.3)=105
        assert_eq!(
            [
                split.app_store,
                split.agency,
                split.broadcaster,
                split.platform
            ]
            .map(Minor::get),
            [99, 11, 105, 118]
        );
    }

    #[test]
    fn only_assigned_broadcasters_pay_an_agency() {
        let policy = with_agency(3000, 5000, 2000);
        let value = Minor::new(10_000);
        assert_eq!(policy.split(value, "bob").agency, Minor::ZERO);
        assert_eq!(policy.split(value, "alice").agency, Minor::new(700));
    }

    proptest! {
        #[test]
        fn any_split_sums_exactly_and_matches_the_policy_to_the_unit(
            value in 0i64..=i64::MAX / 2,
            app in 0u32..=10_000, share in 0u32..=10_000, cut in 0u32..=10_000,
        ) {
            let split = with_agency(app, share, cut).split(Minor::new(value), "alice");
            prop_assert_eq!((split.app_store + split.broadcaster + split.agency + split.platform).get(), value);
            let v = i128::from(value);
            let store = v * i128::from(app) / 10_000;
            let gross = (v - store) * i128::from(share) / 10_000;
            prop_assert_eq!(i128::from(split.app_store.get()), store);
            prop_assert_eq!(i128::from(split.agency.get()), gross * i128::from(cut) / 10_000);
            prop_assert_eq!(i128::from(split.broadcaster.get()), gross * i128::from(10_000 - cut) / 10_000);
            prop_assert!(!(split.platform.is_negative() || split.broadcaster.is_negative() || split.agency.is_negative()));
        }
    }
}
