//! A battle's scores: the coin value of the gifts committed to each room while it
//! runs, summed per sender from the ledger (`PkStore::gifts_between`), so that any
//! node, after any crash, counts the same.

use std::collections::HashMap;

use crate::protocol::{LeaderEntry, UserRef};

/// Each side's biggest supporters shown.
pub const TOP_SUPPORTERS: usize = 3;

/// The coins one sender gave one room within a stretch of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftSum {
    pub room: String,
    pub sender: UserRef,
    pub coins: u64,
}

/// The scores of one battle so far, and who made them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    scores: [u64; 2],
    supporters: [HashMap<String, (String, u64)>; 2],
}

impl Tally {
    /// Adds gifts to `rooms` (in the battle's order); gifts to other rooms are not
    /// the battle's and are left out.
    pub fn add(&mut self, rooms: &[String; 2], sums: &[GiftSum]) {
        for sum in sums {
            let Some(side) = rooms.iter().position(|r| *r == sum.room) else {
                continue;
            };
            self.scores[side] += sum.coins;
            let entry = self.supporters[side]
                .entry(sum.sender.id.clone())
                .or_insert_with(|| (sum.sender.name.clone(), 0));
            entry.1 += sum.coins;
        }
        debug_assert_eq!(
            self.scores[0],
            self.supporters[0].values().map(|(_, c)| c).sum::<u64>()
        );
    }

    pub fn scores(&self) -> [u64; 2] {
        self.scores
    }

    /// A side's biggest supporters, most coins first.
    pub fn top(&self, side: usize) -> Vec<LeaderEntry> {
        LeaderEntry::ranked(&self.supporters[side], TOP_SUPPORTERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(room: &str, sender: &str, coins: u64) -> GiftSum {
        GiftSum {
            room: room.into(),
            sender: UserRef {
                id: sender.into(),
                name: sender.to_uppercase(),
            },
            coins,
        }
    }

    #[test]
    fn sides_add_up_their_own_gifts_and_rank_their_supporters() {
        let rooms = ["a".to_string(), "b".to_string()];
        let mut tally = Tally::default();
        tally.add(
            &rooms,
            &[sum("a", "u1", 10), sum("b", "u2", 7), sum("x", "u3", 99)],
        );
        tally.add(
            &rooms,
            &[
                sum("a", "u4", 30),
                sum("a", "u1", 25),
                sum("a", "u5", 1),
                sum("a", "u6", 1),
            ],
        );
        assert_eq!(tally.scores(), [67, 7]);
        let top: Vec<(String, u64)> = tally.top(0).into_iter().map(|e| (e.id, e.coins)).collect();
        assert_eq!(
            top,
            [("u1".into(), 35), ("u4".into(), 30), ("u5".into(), 1)]
        );
        assert_eq!(tally.top(1)[0].name, "U2");
    }
}
