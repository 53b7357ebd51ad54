//! Red packets as pure functions: how the coins are split (decided once, at creation,
//! and stored), and which share a grab takes given what the escrow still holds.
//!
//! The random split cuts the coins at `shares - 1` distinct points chosen uniformly
//! among the `coins - 1` gaps between coins (a uniformly random composition). So:
//! every share is at least 1 coin and they sum to `coins` exactly; the shares are
//! exchangeable, so whatever position a grabber arrives in, the expected share is
//! `coins / shares` and the odds are the same for everyone; the largest possible
//! share is `coins - shares + 1`.

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

/// One share handed to a grabber, and how many shares are left after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub coins: u64,
    pub left: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NoShare {
    /// The escrow is empty: every share is taken (or the rest was refunded).
    Exhausted,
    /// The escrow holds an amount no number of grabs leaves: the books need an operator.
    Inconsistent,
}

/// The share the next grab takes when the escrow holds `left_coins`. Shares are taken
/// in their stored order, and each is at least one coin, so what is left says how
/// many were taken: the ledger's balance is the packet's whole state.
pub fn next_share(shares: &[u64], left_coins: u64) -> Result<Share, NoShare> {
    if left_coins == 0 {
        return Err(NoShare::Exhausted);
    }
    let mut unclaimed = 0;
    for (index, &coins) in shares.iter().enumerate().rev() {
        unclaimed += coins;
        if unclaimed == left_coins {
            return Ok(Share {
                index,
                coins,
                left: (shares.len() - index - 1) as u32,
            });
        }
    }
    Err(NoShare::Inconsistent)
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

    #[test]
    fn grabs_take_the_stored_shares_in_order_until_the_escrow_is_empty() {
        let shares = [5, 1, 4];
        let mut left = 10;
        let mut taken = Vec::new();
        while let Ok(share) = next_share(&shares, left) {
            left -= share.coins;
            taken.push((share.index, share.coins, share.left));
        }
        assert_eq!(taken, [(0, 5, 2), (1, 1, 1), (2, 4, 0)]);
        assert_eq!(next_share(&shares, 0), Err(NoShare::Exhausted));
    }

    #[test]
    fn a_balance_no_grabs_can_leave_is_inconsistent() {
        assert_eq!(next_share(&[5, 1, 4], 3), Err(NoShare::Inconsistent));
        assert_eq!(next_share(&[5, 1, 4], 11), Err(NoShare::Inconsistent));
    }

    proptest! {
        #[test]
        fn every_balance_a_packet_passes_through_names_one_share(
            coins in 1u64..10_000, shares in 1u32..=100, seed: u64,
        ) {
            prop_assume!(u64::from(shares) <= coins);
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
            let amounts = split(coins, shares, SplitKind::Random, &mut rng);
            let mut left = coins;
            for (expected, &amount) in amounts.iter().enumerate() {
                let share = next_share(&amounts, left).unwrap();
                prop_assert_eq!((share.index, share.coins), (expected, amount));
                prop_assert_eq!(share.left as usize, amounts.len() - expected - 1);
                left -= share.coins;
            }
            prop_assert_eq!(next_share(&amounts, left), Err(NoShare::Exhausted));
        }
    }
}
