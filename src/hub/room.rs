//! One room: its sequence, history, members and live flag, behind one short lock.
//!
//! Ordering rule: every frame of a room is pushed to its members' outboxes while the
//! room's lock is held, so all members see the room's events in `seq` order, and a
//! `join` reply is queued before any event that follows its snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use super::history::{History, Replay};
use super::outbox::{ConnId, Outbox, Pushed};
use crate::ids;
use crate::protocol::{to_json, EphemeralEvent, RoomEvent, RoomEventBody};

pub struct Room {
    pub name: String,
    /// Identifies this incarnation of the room: a `since` from another epoch (another
    /// process, or before the room was freed) cannot be recovered from this history.
    pub epoch: String,
    state: Mutex<RoomState>,
}

struct RoomState {
    history: History,
    members: HashMap<ConnId, Arc<Outbox>>,
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

impl Room {
    pub fn new(name: String, epoch: String, history_len: usize, now: Instant) -> Room {
        Room {
            name,
            epoch,
            state: Mutex::new(RoomState {
                history: History::new(history_len),
                members: HashMap::new(),
                live: false,
                announced_viewers: None,
                empty_since: Some(now),
            }),
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
        since: Option<u64>,
        replay_len: usize,
        reply: impl FnOnce(JoinSnapshot<'_>) -> String,
    ) -> Pushed {
        let mut state = self.state();
        state.members.insert(outbox.id, outbox.clone());
        state.empty_since = None;
        let Replay { recovered, events } = state.history.replay(since, replay_len);
        let events = events
            .iter()
            .map(|e| serde_json::from_str(e.as_str()).expect("history holds JSON we wrote"))
            .collect();
        let frame = reply(JoinSnapshot {
            room: &self.name,
            epoch: &self.epoch,
            seq: state.history.last_seq(),
            viewers: state.members.len(),
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

    pub fn viewers(&self) -> usize {
        self.state().members.len()
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
        let mut state = self.state();
        if let RoomEventBody::Stream { live } = body {
            state.live = *live;
        }
        let seq = state.history.next_seq();
        let frame = Utf8Bytes::from(to_json(&RoomEvent {
            room: &self.name,
            seq,
            ts: ids::unix_ms(),
            id: &id,
            body,
        }));
        state.history.push(frame.clone());
        let delivered = fan_out(&state.members, &frame);
        drop(state);
        crate::metrics::event_fanned_out(body_type(body), delivered, started.elapsed());
        Published { id, seq }
    }

    /// Sends a frame that is not sequenced (presence, leaderboard) to every member.
    pub fn broadcast_ephemeral(&self, kind: &'static str, frame: Utf8Bytes) {
        let started = Instant::now();
        let delivered = fan_out(&self.state().members, &frame);
        crate::metrics::event_fanned_out(kind, delivered, started.elapsed());
    }

    /// Announces the viewer count if it changed since the last announcement.
    pub fn announce_presence(&self) {
        let started = Instant::now();
        let mut state = self.state();
        let viewers = state.members.len();
        if state.announced_viewers == Some(viewers) || viewers == 0 {
            return;
        }
        state.announced_viewers = Some(viewers);
        let frame = Utf8Bytes::from(to_json(&EphemeralEvent::Presence {
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

fn fan_out(members: &HashMap<ConnId, Arc<Outbox>>, frame: &Utf8Bytes) -> u64 {
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
    }
}
