//! Red packets as a pure state machine: how the coins are split (decided once, at
//! creation, and stored), and who has grabbed which share.
//!
//! The random split cuts the coins at `shares - 1` distinct points chosen uniformly
//! among the `coins - 1` gaps between coins (a uniformly random composition). So:
//! every share is at least 1 coin and they sum to `coins` exactly; the shares are
//! exchangeable, so whatever position a grabber arrives in, the expected share is
//! `coins / shares` and the odds are the same for everyone; the largest possible
//! share is `coins - shares + 1`.

use std::collections::HashSet;

use rand::seq::index::sample;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub const MAX_SHARES: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    Random,
    Even,
}

/// The amounts of a packet's shares, in the order they will be handed out.
/// `shares` must be in `1..=coins`.
pub fn split(coins: u64, shares: u32, kind: SplitKind, rng: &mut impl Rng) -> Vec<u64> {
    let count = u64::from(shares);
    assert!(count >= 1 && count <= coins, "1 <= shares <= coins");
    let amounts: Vec<u64> = match kind {
        // Equal shares; the first grabbers take the remainder coin by coin.
        SplitKind::Even => (0..count)
            .map(|i| coins / count + u64::from(i < coins % count))
            .collect(),
        SplitKind::Random => {
            let gaps = usize::try_from(coins - 1).expect("coin counts fit in usize");
            let mut cuts: Vec<u64> = sample(rng, gaps, (count - 1) as usize)
                .into_iter()
                .map(|gap| gap as u64 + 1)
                .collect();
            cuts.sort_unstable();
            cuts.push(coins);
            let mut previous = 0;
            cuts.into_iter()
                .map(|cut| cut - std::mem::replace(&mut previous, cut))
                .collect()
        }
    };
    assert_eq!(amounts.iter().sum::<u64>(), coins, "shares sum to the packet");
    debug_assert!(amounts.iter().all(|&a| a >= 1));
    amounts
}

/// A packet being grabbed.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Share amounts in hand-out order.
    shares: Vec<u64>,
    grabbed_by: HashSet<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GrabRefusal {
    AlreadyGrabbed,
    Exhausted,
}

impl Packet {
    /// A packet with its stored shares, of which `grabbers` already took the first ones.
    pub fn new(shares: Vec<u64>, grabbers: impl IntoIterator<Item = String>) -> Packet {
        let grabbed_by: HashSet<String> = grabbers.into_iter().collect();
        assert!(grabbed_by.len() <= shares.len());
        Packet { shares, grabbed_by }
    }

    pub fn left(&self) -> usize {
        self.shares.len() - self.grabbed_by.len()
    }

    /// Coins not yet handed out: what an expiry refunds.
    pub fn remainder(&self) -> u64 {
        self.shares[self.grabbed_by.len()..].iter().sum()
    }

    /// The share `user` would get next, without taking it (the caller commits the
    /// transfer first, then calls `take`).
    pub fn next_share(&self, user: &str) -> Result<u64, GrabRefusal> {
        if self.grabbed_by.contains(user) {
            return Err(GrabRefusal::AlreadyGrabbed);
        }
        self.shares
            .get(self.grabbed_by.len())
            .copied()
            .ok_or(GrabRefusal::Exhausted)
    }

    /// Records that `user` took the next share.
    pub fn take(&mut self, user: &str) -> u64 {
        let amount = self.next_share(user).expect("take follows a successful next_share");
        self.grabbed_by.insert(user.to_owned());
        amount
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_split_sums_exactly_with_every_share_at_least_one(
            coins in 1u64..1_000_000, shares in 1u32..=MAX_SHARES, seed: u64,
        ) {
            prop_assume!(u64::from(shares) <= coins);
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            let amounts = split(coins, shares, SplitKind::Random, &mut rng);
            prop_assert_eq!(amounts.len(), shares as usize);
            prop_assert_eq!(amounts.iter().sum::<u64>(), coins);
            prop_assert!(amounts.iter().all(|&a| a >= 1 && a <= coins - u64::from(shares) + 1));
        }

        #[test]
        fn even_split_differs_by_at_most_one_coin_larger_first(
            coins in 1u64..1_000_000, shares in 1u32..=MAX_SHARES,
        ) {
            prop_assume!(u64::from(shares) <= coins);
            let amounts = split(coins, shares, SplitKind::Even, &mut rand::thread_rng());
            prop_assert_eq!(amounts.iter().sum::<u64>(), coins);
            prop_assert!(amounts.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
        }
    }

    #[test]
    fn random_shares_are_fair_on_average_in_every_position() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let (coins, shares, rounds) = (100u64, 5u32, 20_000u64);
        let mut totals = [0u64; 5];
        for _ in 0..rounds {
            for (total, amount) in totals.iter_mut().zip(split(coins, shares, SplitKind::Random, &mut rng)) {
                *total += amount;
            }
        }
        for total in totals {
            let mean = total / rounds;
            assert!((19..=21).contains(&mean), "expected about 20 coins per position, got {mean}");
        }
    }

    #[test]
    fn each_user_grabs_once_until_exhausted() {
        let mut packet = Packet::new(vec![3, 2], []);
        assert_eq!(packet.next_share("amy"), Ok(3));
        assert_eq!(packet.take("amy"), 3);
        assert_eq!(packet.next_share("amy"), Err(GrabRefusal::AlreadyGrabbed));
        assert_eq!(packet.remainder(), 2);
        assert_eq!(packet.take("bob"), 2);
        assert_eq!(packet.next_share("cat"), Err(GrabRefusal::Exhausted));
        assert_eq!((packet.left(), packet.remainder()), (0, 0));
    }

    #[test]
    fn a_reloaded_packet_continues_with_the_stored_amounts() {
        let packet = Packet::new(vec![5, 1, 4], ["amy".to_owned()]);
        assert_eq!(packet.next_share("bob"), Ok(1));
        assert_eq!(packet.left(), 2);
    }
}
