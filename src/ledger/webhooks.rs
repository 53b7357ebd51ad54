//! What the books keep for outgoing webhooks: endpoints, the queue of events to
//! deliver, each endpoint's deliveries and every attempt. Kept beside the books so
//! that a money event enters the queue with the transfer that booked it: the
//! embedded ledger's transfers are themselves the outbox (read in commit order
//! behind a cursor), the shared ledger's writer adds each transfer to an outbox
//! table in the transaction that books it. Other events are queued when they
//! happen. `webhooks::` decides what is sent, when and how.

use async_trait::async_trait;
use serde::Serialize;

use super::facts::TransferMeta;
use super::LedgerError;

/// Who registered an endpoint: the platform (an admin), or a broadcaster for their
/// room; stored as `*` or the room's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Platform,
    Room(String),
}

impl Owner {
    pub fn stored(&self) -> &str {
        match self {
            Owner::Platform => "*",
            Owner::Room(room) => room,
        }
    }

    pub fn from_stored(stored: String) -> Owner {
        if stored == "*" {
            Owner::Platform
        } else {
            Owner::Room(stored)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub id: String,
    #[serde(skip)]
    pub owner: Owner,
    pub url: String,
    /// Event types delivered to it.
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    /// Why deliveries stopped (`410 Gone`, or failing for the whole schedule).
    pub disabled: Option<String>,
    pub created_ms: u64,
}

/// An event to deliver, before the queue numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: String,
    /// The room it happened in: endpoints of that room's broadcaster get it.
    pub room: Option<String>,
    pub at_ms: u64,
    /// The body's `data`, JSON.
    pub data: String,
}

/// An event in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    /// Its place in the queue: deliveries go out in this order.
    pub seq: u64,
    /// `webhook-id`: the same on every attempt.
    pub id: String,
    pub kind: String,
    pub at_ms: u64,
    pub data: String,
}

/// A delivery due now, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub endpoint: Endpoint,
    pub event: QueuedEvent,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at_ms: u64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `delivered`, `retrying` (at `next_at_ms`) or `failed` (given up).
    pub state: String,
    pub next_at_ms: Option<u64>,
}

/// One attempt of a delivery, to record.
#[derive(Debug, Clone)]
pub struct Tried {
    pub endpoint: String,
    pub event_seq: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at_ms: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub outcome: Outcome,
}

/// After an attempt: delivered, try again at a time, or give up (and, for `410` or a
/// whole schedule failed, disable the endpoint with a reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry { at_ms: u64 },
    GiveUp { disable: Option<String> },
}

/// Turns a booked transfer into the event it is to webhooks, if any.
pub type Describe = dyn Fn(&TransferMeta, u64) -> Option<NewEvent> + Send + Sync;

#[async_trait]
pub trait WebhookBooks: Send + Sync {
    async fn add_endpoint(&self, endpoint: &Endpoint) -> Result<(), LedgerError>;
    /// The owner's endpoints (every endpoint for `None`), oldest first.
    async fn endpoints(&self, owner: Option<&Owner>) -> Result<Vec<Endpoint>, LedgerError>;
    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, LedgerError>;
    /// Removes the endpoint and its pending deliveries; false if there was none.
    async fn remove_endpoint(&self, id: &str) -> Result<bool, LedgerError>;
    /// Queues an event and a delivery to every enabled endpoint that wants it.
    async fn enqueue(&self, event: NewEvent) -> Result<(), LedgerError>;
    /// Queues the events of transfers booked since the last call (at most `limit`);
    /// how many transfers it took. Each is taken once, whichever node asks.
    async fn queue_booked(&self, describe: &Describe, limit: usize) -> Result<usize, LedgerError>;
    /// Deliveries due at `now_ms`, oldest event first, each leased to the caller
    /// until `lease_until_ms` so that no other node sends it meanwhile.
    async fn due(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, LedgerError>;
    /// Records attempts (of one pass, together) and what comes next for each.
    async fn attempted(&self, tried: Vec<Tried>) -> Result<(), LedgerError>;
    /// The endpoint's newest attempts, newest first.
    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>, LedgerError>;
    /// Forgets events older than `before_ms` with nothing left to send, with their
    /// deliveries and attempts; how many events.
    async fn prune(&self, before_ms: u64) -> Result<usize, LedgerError>;
    /// Queues again every event since `since_ms` that the endpoint wants, delivered
    /// or not (same `webhook-id`); how many.
    async fn replay(
        &self,
        endpoint: &str,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, LedgerError>;
}

/// The tables both dialects share.
const COMMON_TABLES: &str = "
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    disabled TEXT,
    created_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    attempts INT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    next_at_ms BIGINT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (endpoint_id, event_seq)
);
-- Due deliveries in the order they are sent, without sorting the backlog.
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_at_ms, event_seq)
    WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS webhook_attempts (
    endpoint_id TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    attempt INT NOT NULL,
    at_ms BIGINT NOT NULL,
    status INT,
    error TEXT,
    state TEXT NOT NULL,
    next_at_ms BIGINT,
    PRIMARY KEY (endpoint_id, event_seq, attempt)
);
";

/// The queue's tables beside the embedded ledger, in a file of their own (so that
/// the queue's writes never wait for the ledger writer's lock, nor hold it up); the
/// ledger's transfers are the money events' outbox, read behind `webhook_cursor`.
pub fn sqlite_tables() -> String {
    format!(
        "{COMMON_TABLES}
CREATE TABLE IF NOT EXISTS webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id INTEGER UNIQUE,
    kind TEXT NOT NULL,
    room TEXT,
    at_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_cursor (name TEXT PRIMARY KEY, transfer_id INTEGER NOT NULL);
"
    )
}

/// The queue's tables in the shared ledger, whose writer adds every transfer to
/// `webhook_outbox` in the transaction that books it.
pub fn postgres_tables() -> String {
    format!(
        "{COMMON_TABLES}
CREATE TABLE IF NOT EXISTS webhook_events (
    seq BIGSERIAL PRIMARY KEY,
    transfer_id BIGINT UNIQUE,
    kind TEXT NOT NULL,
    room TEXT,
    at_ms BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    transfer_id BIGINT PRIMARY KEY,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
"
    )
}

/// What `WebhookBooks::prune` runs, in order (SQL both dialects take; `$1` is the
/// cut-off): attempts and finished deliveries of old events, then old events that no
/// delivery needs any more.
pub const PRUNE: [&str; 3] = [
    "DELETE FROM webhook_attempts WHERE event_seq IN (
         SELECT seq FROM webhook_events WHERE at_ms < $1
         AND seq NOT IN (SELECT event_seq FROM webhook_deliveries WHERE state = 'pending'))",
    "DELETE FROM webhook_deliveries WHERE state <> 'pending'
         AND event_seq IN (SELECT seq FROM webhook_events WHERE at_ms < $1)",
    "DELETE FROM webhook_events WHERE at_ms < $1
         AND seq NOT IN (SELECT event_seq FROM webhook_deliveries)",
];

/// The `webhook-id` of a queued event.
pub fn event_id(seq: u64) -> String {
    format!("msg_{seq}")
}

/// An endpoint as the queue matches events to it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: String,
    pub owner: Owner,
    pub events: Vec<String>,
    pub enabled: bool,
}

/// Whether any of `subscribers` wants `event` (a disabled one too: a replay may ask
/// for it later), and which enabled ones get a delivery now.
pub fn wanting<'a>(subscribers: &'a [Subscriber], event: &NewEvent) -> (bool, Vec<&'a str>) {
    let room = event.room.as_deref();
    let wanted: Vec<&Subscriber> = (subscribers.iter())
        .filter(|s| wants(&s.owner, &s.events, &event.kind, room))
        .collect();
    let now = (wanted.iter())
        .filter(|s| s.enabled)
        .map(|s| s.id.as_str())
        .collect();
    (!wanted.is_empty(), now)
}

/// Whether an endpoint of `owner` asking for `events` wants an event of type `kind`
/// from `room`: the one rule of who gets what.
pub fn wants(owner: &Owner, events: &[String], kind: &str, room: Option<&str>) -> bool {
    let room_matches = match owner {
        Owner::Platform => true,
        Owner::Room(own) => room == Some(own.as_str()),
    };
    room_matches && events.iter().any(|event| event == kind)
}

/// An endpoint's event types as stored.
pub fn encode_events(events: &[String]) -> String {
    serde_json::to_string(events).expect("strings serialize")
}

pub fn decode_events(stored: &str) -> Result<Vec<String>, LedgerError> {
    serde_json::from_str(stored)
        .map_err(|e| LedgerError::Storage(format!("an endpoint's event types are damaged: {e}")))
}

impl Outcome {
    /// The attempt's state as the log shows it, and when it is next tried.
    pub fn state(&self) -> (&'static str, Option<u64>) {
        match self {
            Outcome::Delivered => ("delivered", None),
            Outcome::Retry { at_ms } => ("retrying", Some(*at_ms)),
            Outcome::GiveUp { .. } => ("failed", None),
        }
    }

    /// The delivery's state in the queue: still `pending`, or done.
    pub fn delivery_state(&self) -> &'static str {
        match self {
            Outcome::Retry { .. } => "pending",
            _ => self.state().0,
        }
    }

    /// Why the endpoint is disabled after it, if it is.
    pub fn disables(&self) -> Option<&str> {
        match self {
            Outcome::GiveUp { disable } => disable.as_deref(),
            _ => None,
        }
    }
}
