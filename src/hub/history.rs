//! A room's window of recent sequenced events, and `since` recovery over it.
//! Pure data: no locks, no clocks, no sockets.
//!
//! A deleted event leaves an empty frame in its place (so is it kept in the bus's
//! history too): the window's positions stay those of the room's `seq`, and nothing
//! that reads the history returns it.

use std::collections::VecDeque;

use crate::protocol::{EventPeek, TextFrame};

/// What a `join` gets back from the history.
#[derive(Debug, PartialEq)]
pub struct Replay {
    /// True when the events are exactly those after the client's `since`.
    pub recovered: bool,
    pub events: Vec<TextFrame>,
}

pub struct History {
    capacity: usize,
    /// Sequence number of the newest event; the room's `seq`.
    last_seq: u64,
    /// Serialized events, oldest first; the last one has `last_seq`.
    events: VecDeque<TextFrame>,
}

impl History {
    pub fn new(capacity: usize) -> History {
        assert!(capacity > 0, "a history keeps at least one event");
        History {
            capacity,
            last_seq: 0,
            events: VecDeque::new(),
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The events held, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &TextFrame> {
        self.events.iter().rev().filter(|e| !is_deleted(e))
    }

    /// Where the chat message, question or answer `id` is in the window.
    pub fn find_deletable(&self, id: &str) -> Option<usize> {
        self.events.iter().rposition(|frame| {
            serde_json::from_str::<EventPeek>(frame.as_str()).is_ok_and(|peek| {
                peek.id == id && matches!(peek.kind.as_str(), "chat" | "question" | "ack")
            })
        })
    }

    /// Deletes the chat message, question or answer `id`, if the window holds it.
    pub fn remove(&mut self, id: &str) {
        if let Some(at) = self.find_deletable(id) {
            self.events[at] = TextFrame::from("");
        }
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Appends the event that was given `next_seq()`.
    pub fn push(&mut self, event: TextFrame) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.last_seq += 1;
        debug_assert!(self.events.len() <= self.capacity);
    }

    /// Replaces the window with a snapshot of the cluster's history: `events` are the
    /// newest ones, the last of them numbered `last_seq`.
    pub fn reset(&mut self, last_seq: u64, events: impl IntoIterator<Item = TextFrame>) {
        self.events = events.into_iter().collect();
        let excess = self.events.len().saturating_sub(self.capacity);
        self.events.drain(..excess);
        self.last_seq = last_seq;
        assert!(
            self.events.len() as u64 <= last_seq,
            "a snapshot cannot hold more events than its seq"
        );
    }

    /// How a snapshot of `len` events ending at `last_seq` continues this window: the
    /// number of its events to skip (those already here), or `None` when it cannot
    /// (it misses events right after ours, or it is older than what we hold).
    pub fn continuation(&self, last_seq: u64, len: usize) -> Option<usize> {
        let oldest = last_seq + 1 - len as u64;
        if last_seq < self.last_seq || oldest > self.last_seq + 1 {
            return None;
        }
        Some((self.last_seq + 1 - oldest) as usize)
    }

    fn oldest_seq(&self) -> u64 {
        self.last_seq + 1 - self.events.len() as u64
    }

    /// Events after `since` when the window still holds all of them; else the latest
    /// `fallback` events, flagged as not recovered.
    pub fn replay(&self, since: Option<u64>, fallback: usize) -> Replay {
        if let Some(seq) = since {
            // Recoverable when nothing after `seq` has fallen out of the window.
            if seq <= self.last_seq && seq + 1 >= self.oldest_seq() {
                let skip = (seq + 1 - self.oldest_seq()) as usize;
                return Replay {
                    recovered: true,
                    events: kept(self.events.iter().skip(skip)),
                };
            }
        }
        let skip = self.events.len().saturating_sub(fallback);
        Replay {
            recovered: false,
            events: kept(self.events.iter().skip(skip)),
        }
    }
}

fn is_deleted(frame: &TextFrame) -> bool {
    frame.as_bytes().is_empty()
}

fn kept<'a>(events: impl Iterator<Item = &'a TextFrame>) -> Vec<TextFrame> {
    events.filter(|e| !is_deleted(e)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(capacity: usize, events: u64) -> History {
        let mut history = History::new(capacity);
        for _ in 0..events {
            let seq = history.next_seq();
            history.push(TextFrame::from(seq.to_string()));
        }
        history
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay
            .events
            .iter()
            .map(|e| e.as_str().parse().unwrap())
            .collect()
    }

    #[test]
    fn recovers_exactly_the_missed_events() {
        let h = history(10, 25);
        let replay = h.replay(Some(20), 3);
        assert!(replay.recovered);
        assert_eq!(seqs(&replay), vec![21, 22, 23, 24, 25]);
    }

    #[test]
    fn oldest_recoverable_position_is_one_before_the_window() {
        let h = history(10, 25); // holds 16..=25
        assert_eq!(seqs(&h.replay(Some(15), 3)), (16..=25).collect::<Vec<_>>());
        let replay = h.replay(Some(14), 3);
        assert!(!replay.recovered);
        assert_eq!(seqs(&replay), vec![23, 24, 25]);
    }

    #[test]
    fn up_to_date_client_recovers_nothing_new() {
        let h = history(10, 5);
        assert_eq!(
            h.replay(Some(5), 3),
            Replay {
                recovered: true,
                events: vec![]
            }
        );
    }

    #[test]
    fn position_from_the_future_is_not_recovered() {
        let h = history(10, 5);
        assert!(!h.replay(Some(6), 3).recovered);
    }

    #[test]
    fn reset_takes_the_snapshot_window() {
        let mut h = history(10, 3);
        h.reset(40, (31..=40).map(|s| TextFrame::from(s.to_string())));
        assert_eq!(h.last_seq(), 40);
        assert_eq!(seqs(&h.replay(Some(35), 3)), vec![36, 37, 38, 39, 40]);
        assert!(!h.replay(Some(29), 3).recovered);
    }

    #[test]
    fn continuation_skips_what_is_held_and_refuses_holes() {
        let h = history(10, 25);
        // A snapshot of 26..=30 continues 25 directly; one of 20..=30 after 6 events.
        assert_eq!(h.continuation(30, 5), Some(0));
        assert_eq!(h.continuation(30, 11), Some(6));
        assert_eq!(h.continuation(25, 3), Some(3));
        // 28..=30 misses 26 and 27; a snapshot ending before us is from the past.
        assert_eq!(h.continuation(30, 3), None);
        assert_eq!(h.continuation(24, 10), None);
    }

    #[test]
    fn fresh_room_recovers_from_zero() {
        let h = history(10, 0);
        assert!(h.replay(Some(0), 3).recovered);
        assert!(!h.replay(None, 3).recovered);
    }

    #[test]
    fn a_deleted_event_is_never_returned_and_keeps_its_place() {
        let mut h = History::new(10);
        for (seq, kind) in [(1, "chat"), (2, "gift"), (3, "chat")] {
            let frame =
                format!(r#"{{"room":"r","seq":{seq},"ts":0,"id":"e{seq}","type":"{kind}"}}"#);
            h.push(TextFrame::from(frame));
        }
        // Gifts are money: they are not deleted.
        assert_eq!(h.find_deletable("e2"), None);
        h.remove("e2");
        h.remove("e1");
        assert_eq!(h.find_deletable("e1"), None);
        let ids = |events: &[TextFrame]| -> Vec<String> {
            (events.iter())
                .map(|e| serde_json::from_str::<EventPeek>(e.as_str()).unwrap().id)
                .collect()
        };
        assert_eq!(ids(&h.replay(None, 50).events), vec!["e2", "e3"]);
        let recovered = h.replay(Some(0), 50);
        assert!(recovered.recovered);
        assert_eq!(ids(&recovered.events), vec!["e2", "e3"]);
        assert_eq!(h.last_seq(), 3);
        assert_eq!(h.newest_first().count(), 2);
    }
}
