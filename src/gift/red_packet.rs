//! Red packets as a pure state machine: how the coins are split (decided once, at
//! creation, and stored), and who has grabbed which share.
//!
//! The random split cuts the coins at `shares - 1` distinct points chosen uniformly
//! among the `coins - 1` gaps between coins (a uniformly random composition). So:
//! every share is at least 1 coin and they sum to `coins` exactly; the shares are
//! exchangeable, so whatever position a grabber arrives in, the expected share is
//! `coins / shares` and the odds are the same for everyone; the largest possible
//! share is `coins - shares + 1`.

use std::collections::HashMap;

use rand::seq::index::sample;
use rand::Rng;

pub use crate::protocol::SplitKind;

pub const MAX_SHARES: u32 = 1000;

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
    assert_eq!(
        amounts.iter().sum::<u64>(),
        coins,
        "shares sum to the packet"
    );
    debug_assert!(amounts.iter().all(|&a| a >= 1));
    amounts
}

/// A packet being grabbed: its stored shares and who holds which.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Share amounts by index, as decided at creation.
    shares: Vec<u64>,
    /// Indices not handed out, the next one last.
    unclaimed: Vec<usize>,
    grabbed_by: HashMap<String, usize>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum GrabRefusal {
    AlreadyGrabbed,
    Exhausted,
}

/// One share handed to a grabber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub coins: u64,
}

impl Packet {
    /// A packet with its stored shares, of which `grabbed` (user, share index) are taken.
    pub fn new(shares: Vec<u64>, grabbed: impl IntoIterator<Item = (String, usize)>) -> Packet {
        let grabbed_by: HashMap<String, usize> = grabbed.into_iter().collect();
        let mut taken = vec![false; shares.len()];
        for &index in grabbed_by.values() {
            assert!(
                !std::mem::replace(&mut taken[index], true),
                "one grabber per share"
            );
        }
        let unclaimed = (0..shares.len()).rev().filter(|&i| !taken[i]).collect();
        Packet {
            shares,
            unclaimed,
            grabbed_by,
        }
    }

    pub fn left(&self) -> u32 {
        self.unclaimed.len() as u32
    }

    /// Coins not yet handed out: what an expiry refunds.
    pub fn remainder(&self) -> u64 {
        self.unclaimed.iter().map(|&i| self.shares[i]).sum()
    }

    /// Hands `user` the next share. The caller commits its transfer, and calls
    /// `release` if that fails.
    pub fn take(&mut self, user: &str) -> Result<Share, GrabRefusal> {
        if self.grabbed_by.contains_key(user) {
            return Err(GrabRefusal::AlreadyGrabbed);
        }
        let index = self.unclaimed.pop().ok_or(GrabRefusal::Exhausted)?;
        self.grabbed_by.insert(user.to_owned(), index);
        Ok(Share {
            index,
            coins: self.shares[index],
        })
    }

    /// Gives back a share whose transfer did not commit; it is the next handed out.
    pub fn release(&mut self, user: &str) {
        if let Some(index) = self.grabbed_by.remove(user) {
            self.unclaimed.push(index);
        }
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
            for (total, amount) in
                totals
                    .iter_mut()
                    .zip(split(coins, shares, SplitKind::Random, &mut rng))
            {
                *total += amount;
            }
        }
        for total in totals {
            let mean = total / rounds;
            assert!(
                (19..=21).contains(&mean),
                "expected about 20 coins per position, got {mean}"
            );
        }
    }

    fn coins(share: Result<Share, GrabRefusal>) -> Result<u64, GrabRefusal> {
        share.map(|s| s.coins)
    }

    #[test]
    fn each_user_grabs_once_until_exhausted() {
        let mut packet = Packet::new(vec![3, 2], []);
        assert_eq!(coins(packet.take("amy")), Ok(3));
        assert_eq!(coins(packet.take("amy")), Err(GrabRefusal::AlreadyGrabbed));
        assert_eq!(packet.remainder(), 2);
        assert_eq!(coins(packet.take("bob")), Ok(2));
        assert_eq!(coins(packet.take("cat")), Err(GrabRefusal::Exhausted));
        assert_eq!((packet.left(), packet.remainder()), (0, 0));
    }

    #[test]
    fn a_released_share_goes_to_the_next_grabber() {
        let mut packet = Packet::new(vec![3, 2, 1], []);
        assert_eq!(coins(packet.take("amy")), Ok(3));
        assert_eq!(coins(packet.take("bob")), Ok(2));
        packet.release("amy");
        assert_eq!((packet.left(), packet.remainder()), (2, 4));
        assert_eq!(coins(packet.take("cat")), Ok(3));
        assert_eq!(coins(packet.take("amy")), Ok(1));
    }

    #[test]
    fn a_reloaded_packet_continues_with_the_stored_amounts() {
        let mut packet = Packet::new(
            vec![5, 1, 4],
            [("amy".to_owned(), 0), ("bob".to_owned(), 2)],
        );
        assert_eq!((packet.left(), packet.remainder()), (1, 1));
        assert_eq!(coins(packet.take("amy")), Err(GrabRefusal::AlreadyGrabbed));
        assert_eq!(coins(packet.take("cat")), Ok(1));
    }

    proptest! {
        #[test]
        fn shares_handed_out_plus_remainder_always_make_the_packet(
            amounts in proptest::collection::vec(1u64..100, 1..50),
            ops in proptest::collection::vec((0usize..60, any::<bool>()), 0..200),
        ) {
            let total: u64 = amounts.iter().sum();
            let mut packet = Packet::new(amounts, []);
            let mut held: HashMap<String, u64> = HashMap::new();
            for (user, release) in ops {
                let user = format!("u{user}");
                if release {
                    packet.release(&user);
                    held.remove(&user);
                } else if let Ok(share) = packet.take(&user) {
                    prop_assert!(held.insert(user, share.coins).is_none());
                }
                prop_assert_eq!(held.values().sum::<u64>() + packet.remainder(), total);
            }
        }
    }
}
