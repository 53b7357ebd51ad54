//! The real-time hub: the registry of rooms, the connections of each user, per-user
//! rate limits, and the periodic work (presence, freeing empty rooms).
//!
//! Map: `history` (recovery window) and `rate` (limiters) are pure state machines;
//! `room` holds one room behind one lock; `outbox` is a connection's outbound queue;
//! `session` turns one connection's client messages into hub operations and replies;
//! `sequencer` decides who orders a room's events and keeps its leaderboard: the
//! room's lock on one node, or (`cluster`) the bus, which keeps rooms in step with
//! the other nodes.

mod admission;
mod assistant;
mod cluster;
mod history;
mod leaderboard;
mod likes;
mod moderation;
mod outbox;
mod pk;
mod rate;
mod room;
mod sequencer;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::TextFrame;
use dashmap::DashMap;
use serde::Serialize;

pub use admission::{Admission, Refusal, Ticket};
pub use cluster::{Cluster, ClusterTasks};
pub use moderation::{JoinModeration, Moderation, RoomModeration};
pub use outbox::{Batch, ConnId, Next, Outbox, OutboxReceiver, Pushed};
pub use pk::Battles;
pub use room::{Published, Room};
pub use sequencer::{Local, Sequencer};
pub use session::{Flow, Session};

use crate::auth::{Role, User};
use crate::config::Limits;
use crate::protocol::{ErrorCode, LeaderEntry, Rejection, RoomEventBody, UserRef};
use crate::webhooks::Webhooks;
use rate::TokenBucket;

pub struct Hub {
    pub limits: Limits,
    pub admission: Arc<Admission>,
    rooms: DashMap<String, Arc<Room>>,
    next_conn: AtomicU64,
    /// Every open connection of each signed-in user, for private events.
    users: DashMap<String, Vec<Arc<Outbox>>>,
    chat_buckets: DashMap<String, TokenBucket>,
    like_buckets: DashMap<String, TokenBucket>,
    /// Orders rooms' events: their own locks, or a cluster's bus.
    sequencer: Arc<dyn Sequencer>,
    moderation: Moderation,
    remembered: moderation::Remembered,
    /// Told of what happens in rooms besides payments (which the books tell).
    webhooks: Arc<Webhooks>,
    /// PK battles: invites, answers, and the ones this node drives.
    battles: Battles,
    /// Paid questions the assistant watches for an answer.
    waiting: assistant::Waiting,
    /// Work the hub started that must end before the process does (queueing the
    /// events of videos that stopped).
    tasks: tokio_util::task::TaskTracker,
}

#[derive(Debug, Serialize)]
pub struct RoomSummary {
    pub room: String,
    pub live: bool,
    pub viewers: usize,
}

impl Hub {
    /// A hub whose rooms' events `sequencer` orders: `Local` (each room's lock), or a
    /// `Cluster` (the bus; start its tasks with `ClusterTasks::run`).
    pub fn new(
        limits: Limits,
        sequencer: Arc<dyn Sequencer>,
        moderation: Moderation,
        webhooks: Arc<Webhooks>,
        battles: Battles,
    ) -> Hub {
        Hub {
            limits,
            admission: Arc::default(),
            rooms: DashMap::new(),
            next_conn: AtomicU64::new(1),
            users: DashMap::new(),
            chat_buckets: DashMap::new(),
            like_buckets: DashMap::new(),
            sequencer,
            moderation,
            remembered: Default::default(),
            webhooks,
            battles,
            waiting: Default::default(),
            tasks: Default::default(),
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

    fn all_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.iter().map(|r| r.clone()).collect()
    }

    /// The room, created if needed. The caller's `with` runs while the registry entry
    /// is held, so the room cannot be freed between lookup and use.
    fn with_room<T>(&self, name: &str, with: impl FnOnce(&Arc<Room>) -> T) -> T {
        let entry = self.rooms.entry(name.to_owned()).or_insert_with(|| {
            crate::metrics::rooms_changed(1);
            let (history_len, now) = (self.limits.history_len, Instant::now());
            Arc::new(self.sequencer.new_room(name, history_len, now))
        });
        with(&entry)
    }

    /// The room, ready to use (see `join_room`).
    pub async fn ready_room(&self, name: &str) -> Result<Arc<Room>, Rejection> {
        self.join_room(name, Arc::clone).await
    }

    /// The room a client's `join` enters, with its history (copied from the bus in a
    /// cluster). A new room is refused once the server holds `max_rooms`, so no client
    /// can grow the registry without bound. `with` runs while the room is registered.
    async fn join_room<T>(
        &self,
        name: &str,
        with: impl FnOnce(&Arc<Room>) -> T,
    ) -> Result<T, Rejection> {
        if !self.rooms.contains_key(name) && self.rooms.len() >= self.limits.max_rooms {
            return Err(Rejection::unavailable(
                "the server holds as many rooms as it can; try again later",
            ));
        }
        let room = self.with_room(name, Arc::clone);
        self.sequencer.ready(&room).await?;
        self.prepare_rules(&room).await;
        self.with_room(name, |room| {
            // Freed and created again while it was seeded (it sat empty for the
            // whole linger time): rare enough to refuse and let the client retry.
            if !room.is_seeded() {
                return Err(Rejection::unavailable(
                    "the room is being loaded; try again",
                ));
            }
            Ok(with(room))
        })
    }

    /// Sequences an event in a room and delivers it to every member, on every node.
    pub async fn publish(
        &self,
        room: &Room,
        id: String,
        body: &RoomEventBody,
    ) -> Result<Published, Rejection> {
        self.sequencer.publish(room, id, body).await
    }

    /// A payment went through in a room: counted on its leaderboard.
    pub fn record_payment(&self, room: &str, sender: &UserRef, coins: u64) {
        self.sequencer.record_payment(room, sender, coins);
    }

    /// The room's leaderboard.
    pub async fn leaderboard(&self, room: &str) -> Result<Vec<LeaderEntry>, Rejection> {
        self.sequencer.leaderboard(room).await
    }

    /// The base URL of another node hosting the room's video, if one does.
    pub async fn video_elsewhere(&self, room: &str) -> Option<String> {
        self.sequencer.video_elsewhere(room).await
    }

    /// Sends a private frame to every connection of one user, on every node.
    pub fn send_to_user(&self, user_id: &str, frame: TextFrame) {
        self.sequencer.send_to_user(self, user_id, frame);
    }

    /// Sends a private frame to the user's connections on this node.
    fn deliver_to_user(&self, user_id: &str, frame: TextFrame) {
        if let Some(conns) = self.users.get(user_id) {
            for outbox in conns.iter() {
                outbox.push(frame.clone());
            }
        }
    }

    /// Takes one chat token of the user's bucket: a person's, or a bot's own
    /// (`bot_chat_burst`). An error saying the limit when it is spent.
    fn allow_chat(&self, user: &User, now: Instant) -> Result<(), Rejection> {
        let limits = &self.limits;
        let (burst, window_ms) = if user.role == Role::Bot {
            (limits.bot_chat_burst, limits.bot_chat_window_ms)
        } else {
            (limits.chat_burst, limits.chat_window_ms)
        };
        let window = Limits::ms(window_ms);
        let allowed = self
            .chat_buckets
            .entry(user.id.clone())
            .or_insert_with(|| TokenBucket::new(burst, window, now))
            .try_take(now);
        if allowed {
            return Ok(());
        }
        Err(Rejection::new(
            ErrorCode::RateLimited,
            format!(
                "slow down: at most {burst} chat messages per {} s",
                window_ms / 1000
            ),
        ))
    }

    /// Takes one `like` token of the user's bucket (`like_burst` per `like_window_ms`,
    /// across the user's connections on this node).
    fn allow_like(&self, user: &User, now: Instant) -> Result<(), Rejection> {
        let limits = &self.limits;
        let (burst, window_ms) = (limits.like_burst, limits.like_window_ms);
        let allowed = self
            .like_buckets
            .entry(user.id.clone())
            .or_insert_with(|| TokenBucket::new(burst, Limits::ms(window_ms), now))
            .try_take(now);
        if allowed {
            return Ok(());
        }
        let message = format!("slow down: at most {burst} likes per {window_ms} ms");
        Err(Rejection::new(ErrorCode::RateLimited, message)
            .retry_after(window_ms / u64::from(burst)))
    }

    /// The room's video went live or stopped on this node: members (of every node)
    /// hear a `stream` event when that changes what they knew, and a live room is not
    /// freed.
    pub fn set_live(self: &Arc<Self>, room: &str, live: bool) {
        self.sequencer.video_changed(self, room, live);
        let (hub, room) = (self.clone(), room.to_owned());
        let kind = if live {
            "stream.started"
        } else {
            "stream.ended"
        };
        self.tasks.spawn(async move {
            if live {
                // Likes are counted per stream.
                hub.sequencer.reset_likes(&room).await;
            }
            let data = serde_json::json!({ "room": room });
            hub.webhooks.notify(kind, Some(&room), data).await;
        });
    }

    /// At shutdown, after the videos ended: waits (up to `grace`) for the work they
    /// started, so that no `stream.ended` is left unqueued.
    pub async fn finish(&self, grace: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the hub's last work did not end within the shutdown grace period");
        }
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

    /// The periodic work that waits, before `tick`: changed leaderboards (and in a
    /// cluster presence across nodes and video claims), moderation rules that missed
    /// a record, the assistant's reminders.
    pub async fn sequencer_tick(&self) {
        self.sequencer.tick(self).await;
        self.refresh_stale_rules().await;
        self.remind_waiting_askers();
    }

    /// Periodic work: coalesced presence, freeing rooms empty for longer than the
    /// linger time, and forgetting rate-limit state that has fully recovered.
    pub fn tick(&self, now: Instant) {
        for room in &self.all_rooms() {
            room.announce_presence();
        }
        let linger = Limits::ms(self.limits.room_linger_ms);
        let before = self.rooms.len();
        self.rooms.retain(|_, room| !room.can_free(now, linger));
        crate::metrics::rooms_changed(self.rooms.len() as i64 - before as i64);
        self.chat_buckets.retain(|_, bucket| !bucket.is_full(now));
        self.like_buckets.retain(|_, bucket| !bucket.is_full(now));
    }
}
