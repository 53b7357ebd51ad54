//! The real-time hub: the registry of rooms, the connections of each user, per-user
//! rate limits, and the periodic work (presence, freeing empty rooms).
//!
//! Map: `history` (recovery window) and `rate` (limiters) are pure state machines;
//! `room` holds one room behind one lock; `outbox` is a connection's outbound queue;
//! `session` turns one connection's client messages into hub operations and replies.

mod admission;
mod history;
mod outbox;
mod rate;
mod room;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use serde::Serialize;

pub use admission::{Admission, Refusal, Ticket};
pub use outbox::{ConnId, Outbox, OutboxReceiver, Pushed};
pub use room::{Published, Room};
pub use session::{Flow, Session};

use crate::config::Limits;
use rate::TokenBucket;

pub struct Hub {
    pub limits: Limits,
    pub admission: Arc<Admission>,
    /// Random per process: positions from another process never match.
    process_epoch: u64,
    rooms: DashMap<String, Arc<Room>>,
    incarnations: AtomicU64,
    next_conn: AtomicU64,
    /// Every open connection of each signed-in user, for private events.
    users: DashMap<String, Vec<Arc<Outbox>>>,
    chat_buckets: DashMap<String, TokenBucket>,
}

#[derive(Debug, Serialize)]
pub struct RoomSummary {
    pub room: String,
    pub live: bool,
    pub viewers: usize,
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        Hub {
            limits,
            admission: Arc::default(),
            process_epoch: rand::random::<u64>() >> 16,
            rooms: DashMap::new(),
            incarnations: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            users: DashMap::new(),
            chat_buckets: DashMap::new(),
        }
    }

    /// Registers a new connection and returns its outbox and the writer's end of it.
    pub fn connect(&self, user_id: Option<String>) -> (Arc<Outbox>, OutboxReceiver) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (outbox, receiver) = Outbox::new(id, user_id, self.limits.queue_len);
        if let Some(user) = &outbox.user_id {
            self.users
                .entry(user.clone())
                .or_default()
                .push(outbox.clone());
        }
        crate::metrics::connection_opened();
        (outbox, receiver)
    }

    pub fn disconnect(&self, outbox: &Outbox) {
        if let Some(user) = &outbox.user_id {
            self.users.remove_if_mut(user, |_, conns| {
                conns.retain(|c| c.id != outbox.id);
                conns.is_empty()
            });
        }
        crate::metrics::connection_closed();
    }

    pub fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.get(name).map(|r| r.clone())
    }

    /// The room, created if needed. The caller's `with` runs while the registry entry
    /// is held, so the room cannot be freed between lookup and use.
    fn with_room<T>(&self, name: &str, with: impl FnOnce(&Arc<Room>) -> T) -> T {
        let entry = self.rooms.entry(name.to_owned()).or_insert_with(|| {
            let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
            crate::metrics::rooms_changed(1);
            Arc::new(Room::new(
                name.to_owned(),
                format!("{:x}-{incarnation:x}", self.process_epoch),
                self.limits.history_len,
                Instant::now(),
            ))
        });
        with(&entry)
    }

    /// Like `with_room` for a client's `join`: a new room is refused once the server
    /// holds `max_rooms`, so no client can grow the registry without bound.
    fn join_room<T>(
        &self,
        name: &str,
        with: impl FnOnce(&Arc<Room>) -> T,
    ) -> Result<T, crate::protocol::Rejection> {
        if !self.rooms.contains_key(name) && self.rooms.len() >= self.limits.max_rooms {
            return Err(crate::protocol::Rejection::new(
                crate::protocol::ErrorCode::Unavailable,
                "the server holds as many rooms as it can; try again later",
            ));
        }
        Ok(self.with_room(name, with))
    }

    /// Publishes a server-originated event (for example `stream`) to a room, creating it.
    pub fn publish(&self, room: &str, body: &crate::protocol::RoomEventBody) -> Published {
        self.with_room(room, |room| room.publish(body))
    }

    /// Sends a private frame to every connection of one user.
    pub fn send_to_user(&self, user_id: &str, frame: Utf8Bytes) {
        if let Some(conns) = self.users.get(user_id) {
            for outbox in conns.iter() {
                outbox.push(frame.clone());
            }
        }
    }

    /// Takes one chat token of the user's bucket.
    fn allow_chat(&self, user_id: &str, now: Instant) -> bool {
        let window = crate::config::Limits::ms(self.limits.chat_window_ms);
        self.chat_buckets
            .entry(user_id.to_owned())
            .or_insert_with(|| TokenBucket::new(self.limits.chat_burst, window, now))
            .try_take(now)
    }

    /// The room's video went live or stopped: members hear a `stream` event when that
    /// changes what they knew, and a live room is not freed.
    pub fn set_live(&self, room: &str, live: bool) {
        self.with_room(room, |room| {
            if room.live() != live {
                room.publish(&crate::protocol::RoomEventBody::Stream { live });
            }
        });
    }

    pub fn rooms(&self) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .iter()
            .map(|r| RoomSummary {
                room: r.name.clone(),
                live: r.live(),
                viewers: r.viewers(),
            })
            .filter(|r| r.live || r.viewers > 0)
            .collect();
        rooms.sort_by(|a, b| (b.live, b.viewers, &a.room).cmp(&(a.live, a.viewers, &b.room)));
        rooms
    }

    /// Periodic work: coalesced presence, freeing rooms empty for longer than the
    /// linger time, and forgetting rate-limit state that has fully recovered.
    pub fn tick(&self, now: Instant) {
        let rooms: Vec<Arc<Room>> = self.rooms.iter().map(|r| r.clone()).collect();
        for room in &rooms {
            room.announce_presence();
        }
        let linger = Limits::ms(self.limits.room_linger_ms);
        let before = self.rooms.len();
        self.rooms.retain(|_, room| !room.can_free(now, linger));
        crate::metrics::rooms_changed(self.rooms.len() as i64 - before as i64);
        self.chat_buckets.retain(|_, bucket| !bucket.is_full(now));
    }
}
