//! One room: its sequence, history, members and live flag, behind one short lock.
//!
//! Ordering rule: every frame of a room is pushed to its members' outboxes while the
//! room's lock is held, so all members see the room's events in `seq` order, and a
//! `join` reply is queued before any event that follows its snapshot.
//!
//! A room sequences its own events (`publish_as`), or, in a cluster, mirrors the bus:
//! the bus sequences, and `seed` and `apply` copy its history and events here in
//! order, so joins and recovery are answered locally.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::TextFrame;
use serde::Serialize;

use super::history::{History, Replay};
use super::moderation::RoomModeration;
use super::outbox::{ConnId, Outbox, Pushed};
use crate::bus::{RoomMessage, Snapshot};
use crate::ids;
use crate::protocol::{
    close, to_json, EphemeralEvent, EventPeek, ModerationRecord, RoomEventBody, UnsequencedEvent,
    UserRef,
};

pub struct Room {
    pub name: String,
    state: Mutex<RoomState>,
    /// The room's moderation rules on this node. Taken after `state` when both are.
    pub moderation: RoomModeration,
    /// Taps not yet counted.
    pub likes: super::likes::RoomLikes,
    /// The battle the room is in, as last announced.
    pub battle: super::pk::RoomBattle,
}

struct RoomState {
    /// Identifies this incarnation of the room's history: a `since` from another epoch
    /// (another process, before the room was freed, or a history the bus lost) cannot
    /// be recovered from it.
    epoch: String,
    /// False for a cluster room until its history is copied from the bus.
    seeded: bool,
    history: History,
    members: HashMap<ConnId, Arc<Outbox>>,
    /// Viewers on other nodes, as of the last cluster presence count.
    elsewhere: usize,
    live: bool,
    /// Viewer count last announced by `presence`.
    announced_viewers: Option<usize>,
    empty_since: Option<Instant>,
}

/// The state a joining client receives.
#[derive(Serialize)]
pub struct JoinSnapshot<'a> {
    pub room: &'a str,
    pub epoch: &'a str,
    pub seq: u64,
    pub viewers: usize,
    pub live: bool,
    pub recovered: bool,
    pub events: Vec<&'a serde_json::value::RawValue>,
}

/// Where a published event landed.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub id: String,
    pub seq: u64,
}

/// What `apply` did with an event from the bus.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Delivered,
    /// Already here (it came with the snapshot), or the room is not seeded yet and its
    /// snapshot will hold it.
    Skipped,
    /// Events are missing before it, or its history restarted: catch up with `seed`.
    Gap,
}

/// What `seed` did with a snapshot from the bus.
#[derive(Debug, PartialEq, Eq)]
pub enum Seeded {
    /// The room took its first history.
    First,
    /// The snapshot continued the room's history; the events it was missing were
    /// delivered.
    CaughtUp(usize),
    /// The history could not be continued: members were closed with 1012 so that
    /// they rejoin and learn they could not be recovered.
    Restarted { closed: usize },
}

impl Room {
    /// A room that sequences its own events.
    pub fn new(name: String, epoch: String, history_len: usize, now: Instant) -> Room {
        Room::with_state(name, epoch, true, history_len, now)
    }

    /// A room of a cluster: its events come from the bus, after `seed`.
    pub fn mirror(name: String, history_len: usize, now: Instant) -> Room {
        Room::with_state(name, String::new(), false, history_len, now)
    }

    fn with_state(
        name: String,
        epoch: String,
        seeded: bool,
        history_len: usize,
        now: Instant,
    ) -> Room {
        Room {
            name,
            state: Mutex::new(RoomState {
                epoch,
                seeded,
                history: History::new(history_len),
                members: HashMap::new(),
                elsewhere: 0,
                live: false,
                announced_viewers: None,
                empty_since: Some(now),
            }),
            moderation: RoomModeration::default(),
            likes: Default::default(),
            battle: Default::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the connection (if not already a member) and queues the `join` reply built
    /// by `reply` from the room's snapshot, before any later event of the room.
    pub fn join(
        &self,
        outbox: &Arc<Outbox>,
        since: Option<(&str, u64)>,
        replay_len: usize,
        reply: impl FnOnce(JoinSnapshot<'_>) -> String,
    ) -> Pushed {
        let mut state = self.state();
        debug_assert!(state.seeded, "joins wait for a cluster room's history");
        state.members.insert(outbox.id, outbox.clone());
        state.empty_since = None;
        let since = since
            .filter(|(epoch, _)| *epoch == state.epoch)
            .map(|(_, seq)| seq);
        let Replay { recovered, events } = state.history.replay(since, replay_len);
        let events = events
            .iter()
            .map(|e| serde_json::from_str(e.as_str()).expect("history holds JSON we wrote"))
            .collect();
        let frame = reply(JoinSnapshot {
            room: &self.name,
            epoch: &state.epoch,
            seq: state.history.last_seq(),
            viewers: state.members.len() + state.elsewhere,
            live: state.live,
            recovered,
            events,
        });
        outbox.push(frame.into())
    }

    /// Removes the connection; true if it was a member.
    pub fn leave(&self, conn: ConnId, now: Instant) -> bool {
        let mut state = self.state();
        let was_member = state.members.remove(&conn).is_some();
        if state.members.is_empty() {
            state.empty_since.get_or_insert(now);
        }
        was_member
    }

    pub fn is_member(&self, conn: ConnId) -> bool {
        self.state().members.contains_key(&conn)
    }

    /// Viewers here and, in a cluster, on the other nodes.
    pub fn viewers(&self) -> usize {
        let state = self.state();
        state.members.len() + state.elsewhere
    }

    /// Viewers connected to this node.
    pub fn local_viewers(&self) -> usize {
        self.state().members.len()
    }

    /// The cluster counted `total` viewers when this node had `local` of them.
    pub fn set_cluster_viewers(&self, total: usize, local: usize) {
        self.state().elsewhere = total.saturating_sub(local);
    }

    pub fn is_seeded(&self) -> bool {
        self.state().seeded
    }

    pub fn live(&self) -> bool {
        self.state().live
    }

    /// Sequences, records and fans out one event: serialized once, shared by every member.
    pub fn publish(&self, body: &RoomEventBody) -> Published {
        self.publish_as(ids::event_id(), body)
    }

    /// Like `publish`, with an id chosen earlier (a gift's id is fixed at its charge).
    pub fn publish_as(&self, id: String, body: &RoomEventBody) -> Published {
        let started = Instant::now();
        let event = UnsequencedEvent::new(&self.name, ids::unix_ms(), &id, body);
        let mut state = self.state();
        match body {
            RoomEventBody::Stream { live } => state.live = *live,
            RoomEventBody::Deleted {} => state.history.remove(&id),
            RoomEventBody::Moderation { record } => self.moderation.delivered(record),
            _ => {}
        }
        let seq = state.history.next_seq();
        let frame = TextFrame::from(event.with_seq(seq));
        state.history.push(frame.clone());
        let delivered = fan_out(&state.members, &frame);
        drop(state);
        crate::metrics::event_fanned_out(body_type(body), delivered, started.elapsed());
        Published { id, seq }
    }

    /// Delivers an event the bus sequenced, if it is the next one.
    pub fn apply(&self, message: RoomMessage) -> Applied {
        let started = Instant::now();
        let mut state = self.state();
        if !state.seeded {
            return Applied::Skipped;
        }
        if message.epoch != state.epoch || message.seq > state.history.next_seq() {
            return Applied::Gap;
        }
        if message.seq < state.history.next_seq() {
            return Applied::Skipped;
        }
        if let Some(live) = message.live {
            state.live = live;
        }
        self.take_effects(&mut state, &message.frame);
        let frame = TextFrame::from(message.frame);
        state.history.push(frame.clone());
        let delivered = fan_out(&state.members, &frame);
        drop(state);
        crate::metrics::event_fanned_out("bus", delivered, started.elapsed());
        Applied::Delivered
    }

    /// Takes the bus's view of the room: the first history of a new mirror, the events
    /// it missed (after a gap or a lost bus connection), or, when the history cannot be
    /// continued, a fresh start that closes the members so they rejoin.
    pub fn seed(&self, snapshot: Snapshot) -> Seeded {
        let mut state = self.state();
        let continuation = (state.seeded && snapshot.epoch == state.epoch)
            .then(|| {
                state
                    .history
                    .continuation(snapshot.seq, snapshot.events.len())
            })
            .flatten();
        let outcome = match continuation {
            Some(skip) => {
                let missed = snapshot.events.len() - skip;
                for frame in snapshot.events.into_iter().skip(skip) {
                    self.take_effects(&mut state, &frame);
                    let frame = TextFrame::from(frame);
                    state.history.push(frame.clone());
                    fan_out(&state.members, &frame);
                }
                debug_assert_eq!(state.history.last_seq(), snapshot.seq);
                Seeded::CaughtUp(missed)
            }
            None => {
                let outcome = if state.seeded {
                    self.moderation.mark_stale();
                    let closed = state.members.len();
                    for outbox in state.members.values() {
                        outbox.close(close::SERVICE_RESTART);
                    }
                    Seeded::Restarted { closed }
                } else {
                    Seeded::First
                };
                let events = snapshot.events.into_iter().map(TextFrame::from);
                state.history.reset(snapshot.seq, events);
                state.epoch = snapshot.epoch;
                state.seeded = true;
                outcome
            }
        };
        state.live = snapshot.live;
        outcome
    }

    /// What a frame sequenced elsewhere does to the room besides being delivered: a
    /// `deleted` event takes its event out of the history, a `moderation` event
    /// changes the rules. (A member's text is escaped in the frame, so it never
    /// contains the unescaped `"type":` these look for.)
    fn take_effects(&self, state: &mut RoomState, frame: &str) {
        if frame.contains(r#""type":"deleted""#) {
            if let Ok(peek) = serde_json::from_str::<EventPeek>(frame) {
                state.history.remove(&peek.id);
            }
        } else if frame.contains(r#""type":"moderation""#) {
            match serde_json::from_str::<ModerationRecord>(frame) {
                Ok(record) => self.moderation.delivered(&record),
                Err(_) => self.moderation.mark_stale(),
            }
        }
    }

    /// Whether `id` is a chat message, question or answer still in the room's history.
    pub fn can_delete(&self, id: &str) -> bool {
        self.state().history.find_deletable(id).is_some()
    }

    /// Whether the broadcaster answered (acknowledged) `id`, as far as the room's
    /// history remembers.
    pub fn answered(&self, id: &str) -> bool {
        let state = self.state();
        let answered = state.history.newest_first().any(|frame| {
            serde_json::from_str::<EventPeek>(frame.as_str())
                .is_ok_and(|peek| peek.kind == "ack" && peek.reference.as_deref() == Some(id))
        });
        answered
    }

    /// Who sent the gift or question `id`, if it is still in the room's history: how a
    /// node learns of payments made on other nodes.
    pub fn payment_sender(&self, id: &str) -> Option<UserRef> {
        let frames: Vec<TextFrame> = self.state().history.newest_first().cloned().collect();
        frames.iter().find_map(|frame| {
            let peek: EventPeek = serde_json::from_str(frame.as_str()).ok()?;
            let payment = matches!(peek.kind.as_str(), "gift" | "question");
            (payment && peek.id == id).then_some(peek.from).flatten()
        })
    }

    /// Sends a frame that is not sequenced (presence, leaderboard) to every member.
    pub fn broadcast_ephemeral(&self, kind: &'static str, frame: TextFrame) {
        let started = Instant::now();
        let delivered = fan_out(&self.state().members, &frame);
        crate::metrics::event_fanned_out(kind, delivered, started.elapsed());
    }

    /// Announces the viewer count if it changed since the last announcement.
    pub fn announce_presence(&self) {
        let started = Instant::now();
        let mut state = self.state();
        let viewers = state.members.len() + state.elsewhere;
        if state.announced_viewers == Some(viewers) || viewers == 0 {
            return;
        }
        state.announced_viewers = Some(viewers);
        let frame = TextFrame::from(to_json(&EphemeralEvent::Presence {
            room: &self.name,
            viewers,
        }));
        let delivered = fan_out(&state.members, &frame);
        drop(state);
        crate::metrics::event_fanned_out("presence", delivered, started.elapsed());
    }

    /// An empty room that nobody needed for `linger` can be dropped with its history.
    pub fn can_free(&self, now: Instant, linger: Duration) -> bool {
        let state = self.state();
        !state.live
            && state
                .empty_since
                .is_some_and(|since| now.saturating_duration_since(since) >= linger)
    }
}

fn fan_out(members: &HashMap<ConnId, Arc<Outbox>>, frame: &TextFrame) -> u64 {
    let mut delivered = 0;
    for outbox in members.values() {
        if outbox.push(frame.clone()) == Pushed::Queued {
            delivered += 1;
        }
    }
    delivered
}

fn body_type(body: &RoomEventBody) -> &'static str {
    match body {
        RoomEventBody::Chat { .. } => "chat",
        RoomEventBody::Gift { .. } => "gift",
        RoomEventBody::Question { .. } => "question",
        RoomEventBody::Ack { .. } => "ack",
        RoomEventBody::RedPacket { .. } => "red_packet",
        RoomEventBody::Grab { .. } => "grab",
        RoomEventBody::Stream { .. } => "stream",
        RoomEventBody::Deleted {} => "deleted",
        RoomEventBody::Moderation { .. } => "moderation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Batch, OutboxReceiver};

    fn frame(seq: u64) -> String {
        format!(r#"{{"room":"r","seq":{seq},"id":"e{seq}","type":"chat"}}"#)
    }

    fn message(epoch: &str, seq: u64) -> RoomMessage {
        RoomMessage {
            room: "r".into(),
            epoch: epoch.into(),
            seq,
            live: None,
            frame: frame(seq),
        }
    }

    fn snapshot(epoch: &str, seqs: std::ops::RangeInclusive<u64>) -> Snapshot {
        Snapshot {
            epoch: epoch.into(),
            seq: *seqs.end(),
            live: false,
            events: seqs.map(frame).collect(),
        }
    }

    /// A seeded mirror holding events 1..=3 of epoch "a", with one member.
    fn seeded_mirror() -> (Room, Arc<Outbox>, OutboxReceiver) {
        let room = Room::mirror("r".into(), 10, Instant::now());
        assert_eq!(room.seed(snapshot("a", 1..=3)), Seeded::First);
        let (outbox, receiver) = Outbox::new(1, None, 100);
        room.join(&outbox, None, 0, |_| "joined".into());
        (room, outbox, receiver)
    }

    /// The seqs of the events queued for the member since the last call.
    fn received(receiver: &OutboxReceiver) -> Vec<u64> {
        let mut batch = Batch::default();
        receiver.take_queued(&mut batch);
        batch
            .frames
            .iter()
            .filter_map(|f| serde_json::from_str::<serde_json::Value>(f.as_str()).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    #[test]
    fn a_mirror_ignores_the_bus_until_seeded() {
        let room = Room::mirror("r".into(), 10, Instant::now());
        assert_eq!(room.apply(message("a", 1)), Applied::Skipped);
        assert!(!room.is_seeded());
    }

    #[test]
    fn a_mirror_delivers_the_next_event_and_skips_what_it_has() {
        let (room, _outbox, receiver) = seeded_mirror();
        received(&receiver);
        assert_eq!(room.apply(message("a", 3)), Applied::Skipped);
        assert_eq!(room.apply(message("a", 4)), Applied::Delivered);
        assert_eq!(received(&receiver), vec![4]);
    }

    #[test]
    fn a_gap_is_filled_from_a_snapshot_in_order() {
        let (room, _outbox, receiver) = seeded_mirror();
        received(&receiver);
        assert_eq!(room.apply(message("a", 6)), Applied::Gap);
        assert_eq!(room.seed(snapshot("a", 1..=6)), Seeded::CaughtUp(3));
        assert_eq!(received(&receiver), vec![4, 5, 6]);
        assert_eq!(room.apply(message("a", 6)), Applied::Skipped);
    }

    #[test]
    fn a_lost_history_restarts_the_room_and_closes_its_members() {
        let (room, outbox, _receiver) = seeded_mirror();
        assert_eq!(room.apply(message("b", 1)), Applied::Gap);
        assert_eq!(
            room.seed(snapshot("b", 1..=1)),
            Seeded::Restarted { closed: 1 }
        );
        assert_eq!(outbox.close_code(), Some(close::SERVICE_RESTART));
        // A position in the old epoch is not recovered in the new one.
        let (again, receiver) = Outbox::new(2, None, 100);
        let mut recovered = None;
        room.join(&again, Some(("a", 3)), 50, |snapshot| {
            recovered = Some(snapshot.recovered);
            String::new()
        });
        assert_eq!(recovered, Some(false));
        drop(receiver);
    }

    #[test]
    fn a_snapshot_that_misses_events_after_ours_restarts_the_room() {
        let (room, outbox, _receiver) = seeded_mirror();
        // The bus trimmed 4 and 5 before this node could catch up.
        assert_eq!(
            room.seed(snapshot("a", 6..=9)),
            Seeded::Restarted { closed: 1 }
        );
        assert_eq!(outbox.close_code(), Some(close::SERVICE_RESTART));
    }
}
