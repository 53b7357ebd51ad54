//! Per-room leaderboards: coins each sender gave in the room, top 10, announced only
//! when they changed.

use std::collections::HashMap;

use crate::protocol::{LeaderEntry, UserRef, LEADERBOARD_TOP};

#[derive(Default)]
pub struct Leaderboard {
    totals: HashMap<String, (String, u64)>,
    changed: bool,
}

impl Leaderboard {
    pub fn add(&mut self, sender: &UserRef, coins: u64) {
        let entry = self
            .totals
            .entry(sender.id.clone())
            .or_insert_with(|| (sender.name.clone(), 0));
        entry.0.clone_from(&sender.name);
        entry.1 += coins;
        self.changed = true;
    }

    /// The top senders, most coins first; ties in id order so every node agrees.
    pub fn top(&self) -> Vec<LeaderEntry> {
        LeaderEntry::ranked(&self.totals, LEADERBOARD_TOP)
    }

    /// The top list if it changed since the last call.
    pub fn take_change(&mut self) -> Option<Vec<LeaderEntry>> {
        std::mem::take(&mut self.changed).then(|| self.top())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserRef {
        UserRef {
            id: id.into(),
            name: id.to_uppercase(),
        }
    }

    #[test]
    fn ranks_by_total_and_keeps_ten() {
        let mut board = Leaderboard::default();
        for i in 0..12u64 {
            board.add(&user(&format!("u{i:02}")), i + 1);
        }
        board.add(&user("u00"), 100);
        let top = board.top();
        assert_eq!(top.len(), 10);
        assert_eq!((top[0].id.as_str(), top[0].coins), ("u00", 101));
        assert_eq!(top[1].id, "u11");
    }

    #[test]
    fn change_is_reported_once() {
        let mut board = Leaderboard::default();
        assert!(board.take_change().is_none());
        board.add(&user("a"), 5);
        assert_eq!(board.take_change().unwrap()[0].coins, 5);
        assert!(board.take_change().is_none());
    }
}
