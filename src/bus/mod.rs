//! The cluster bus: what several nodes share so that a room behaves as if there were
//! one server. It sequences every room event cluster-wide (one `seq` and history per
//! room), delivers each event to every node in `seq` order, and keeps the counts that
//! span nodes: presence, leaderboards, and which node hosts a room's video.
//!
//! Without `--bus` there is no bus: each room sequences its own events in process.
//! `redis.rs` is the one implementation; the trait is the contract another (NATS)
//! would meet. The hub's `cluster` module drives it.

mod redis;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

pub use self::redis::RedisBus;
use crate::protocol::{LeaderEntry, UnsequencedEvent, UserRef};

/// What the bus delivers to every node.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    Room(RoomMessage),
    /// A private event for every connection of one user, wherever it is.
    User {
        user: String,
        frame: String,
    },
    /// An ephemeral event for every member of a room, wherever they are.
    Flash {
        room: String,
        frame: String,
    },
}

/// A room event as the bus delivers it to every node.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomMessage {
    pub room: String,
    /// The room's history epoch when the event was sequenced.
    pub epoch: String,
    pub seq: u64,
    /// `Some` for `stream` events: the room's video went live or stopped.
    pub live: Option<bool>,
    pub frame: String,
}

/// One node's load, as it reports it every second for placing WHEP viewers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeLoad {
    /// The node's base URL, where viewers sent to it go.
    pub url: String,
    /// WHEP viewers it serves (from a publisher here or from a pulled copy).
    pub viewers: usize,
    /// The operator's cap on `viewers`, if any.
    pub max_viewers: Option<usize>,
    /// The process's CPU use, as a share of the machine's cores (0-100).
    pub cpu_percent: f64,
    /// Media bytes sent per second to viewers and edges.
    pub egress_bytes_per_s: u64,
    /// The rooms whose video it has: published to it or pulled.
    pub rooms: Vec<String>,
}

/// A room's shared state at one instant: its epoch, last `seq`, whether its video is
/// live, and its newest events (the last one numbered `seq`; a deleted one is empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub epoch: String,
    pub seq: u64,
    pub live: bool,
    pub events: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is unreachable or failed: {0}")]
    Unreachable(#[from] ::redis::RedisError),
    #[error("the bus answered something unexpected: {0}")]
    Malformed(String),
    #[error("the bus connection closed")]
    Disconnected,
    #[error("this node is shutting down")]
    Stopped,
}

/// What a client hears when the bus fails its request (logged here, once).
impl From<BusError> for crate::protocol::Rejection {
    fn from(error: BusError) -> Self {
        tracing::warn!(%error, "the cluster bus failed a request");
        crate::protocol::Rejection::unavailable(
            "the cluster is unreachable from this node; try again",
        )
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sequences the event in its room's history and delivers it to every node;
    /// returns its `seq`. `live` records a `stream` event's new state; `deletes` is the
    /// event a `deleted` event takes out of the history (its place is left empty).
    async fn publish(
        &self,
        room: &str,
        event: &UnsequencedEvent,
        live: Option<bool>,
        deletes: Option<&str>,
    ) -> Result<u64, BusError>;

    /// The room's state and history, creating its epoch if the room is new.
    async fn snapshot(&self, room: &str) -> Result<Snapshot, BusError>;

    /// Every room's events, each room's in `seq` order, and every user's private
    /// events, from now until the connection drops (the stream ends then; the caller
    /// resubscribes and catches up).
    async fn subscribe(&self) -> Result<BoxStream<'static, BusMessage>, BusError>;

    /// Delivers a private event to the user's connections on every node (not kept:
    /// private events are not recoverable).
    async fn send_to_user(&self, user: &str, frame: &str) -> Result<(), BusError>;

    /// Delivers an ephemeral event (not numbered, not kept) to the room's members on
    /// every node.
    async fn flash(&self, room: &str, frame: &str) -> Result<(), BusError>;

    /// Counts `taps` likes in the room (0: only asks). At most once a second across
    /// the cluster it answers the room's total and the taps since the last answer,
    /// for its `likes` event (0 taps: none waited); `None` while the event is not due
    /// (the taps wait for the next answer).
    async fn add_likes(&self, room: &str, taps: u64) -> Result<Option<(u64, u64)>, BusError>;

    /// Starts the room's like total again (its stream started).
    async fn reset_likes(&self, room: &str) -> Result<(), BusError>;

    /// Records this node's viewer count of each room (it expires unless refreshed)
    /// and returns the cluster's totals, in the same order.
    async fn presence(
        &self,
        node: &str,
        counts: &[(String, usize)],
    ) -> Result<Vec<usize>, BusError>;

    /// Adds coins to a sender's total on the room's leaderboard.
    async fn add_to_leaderboard(
        &self,
        room: &str,
        sender: &UserRef,
        coins: u64,
    ) -> Result<(), BusError>;

    /// The top senders of each room, most coins first.
    async fn leaderboards(&self, rooms: &[String]) -> Result<Vec<Vec<LeaderEntry>>, BusError>;

    /// Claims (or keeps claiming) the rooms whose video this node hosts, for a while.
    async fn host_video(&self, rooms: &[String], node_url: &str) -> Result<(), BusError>;

    /// Publishes `event` (the video's end) if the room's video is live but no node
    /// claims it any more: its node died. Once, however many nodes ask; whether it
    /// was published.
    async fn end_orphaned_video(
        &self,
        room: &str,
        event: &UnsequencedEvent,
    ) -> Result<bool, BusError>;

    /// Gives up hosting a room's video.
    async fn stop_hosting_video(&self, room: &str, node_url: &str) -> Result<(), BusError>;

    /// The base URL of the node hosting the room's video, if any.
    async fn video_host(&self, room: &str) -> Result<Option<String>, BusError>;

    /// Records this node's load (it expires after `ttl_ms` unless reported again)
    /// and returns every node's unexpired load, this one's included.
    async fn report_load(&self, load: &NodeLoad, ttl_ms: u64) -> Result<Vec<NodeLoad>, BusError>;
}
