//! Every type that crosses the WebSocket, in one place (see `docs/protocol.md`).
//!
//! Client messages are parsed in two steps: first the envelope (`type`, `rid`),
//! so that even a message with bad fields gets an error carrying its `rid`; then
//! the fields of that type. Server messages are serialized once and shared.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Stable error codes of the protocol. The only place they are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    NotJoined,
    RateLimited,
    InsufficientFunds,
    TooLarge,
    Conflict,
    Exhausted,
    Unavailable,
    Internal,
    /// A refund left the user owing coins (v2).
    InDebt,
    /// A spending cap (v2).
    LimitReached,
    /// A ban or timeout in force in the room (v2).
    Banned,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::NotJoined,
        ErrorCode::RateLimited,
        ErrorCode::InsufficientFunds,
        ErrorCode::TooLarge,
        ErrorCode::Conflict,
        ErrorCode::Exhausted,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::InDebt,
        ErrorCode::LimitReached,
        ErrorCode::Banned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Exhausted => "exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::InDebt => "in_debt",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::Banned => "banned",
        }
    }

    /// The server's fault (an outage, a bug), not the client's. The one place this rule
    /// lives: such errors never count toward a connection's error-storm limit, and may
    /// carry a retry hint.
    pub fn is_server_fault(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

/// The retry hint of `Rejection::unavailable`: how long a client waits before its first
/// retry (it doubles the wait on each later one).
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1000;

/// A failed request: the code a client can act on, a message a person can read and,
/// for a server fault worth retrying, how long to wait first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// Milliseconds the client should wait before retrying the same request (with the
    /// same idempotency key); `retry_after_ms` in the `error` reply, `Retry-After` over
    /// HTTP. `None`: no hint.
    pub retry_after_ms: Option<u64>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::BadRequest, message)
    }

    /// `unavailable` (a dependency such as the ledger is down) with the default retry
    /// hint, `DEFAULT_RETRY_AFTER_MS`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::Unavailable, message).retry_after(DEFAULT_RETRY_AFTER_MS)
    }

    /// The same rejection, telling the client to retry after `ms` milliseconds.
    pub fn retry_after(self, ms: u64) -> Self {
        Rejection {
            retry_after_ms: Some(ms),
            ..self
        }
    }
}

/// WebSocket close codes the server uses.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    /// A frame RFC 6455 forbids (unmasked, reserved bits, a bad control frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A text message that is not valid UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server restarts, or a cluster room lost continuity: reconnect (to any node)
    /// and `join` with `since`.
    pub const SERVICE_RESTART: u16 = 1012;
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// The client's request id, echoed in the reply: a string of at most 64 chars or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Rid {
    Int(i64),
    Str(String),
}

pub const MAX_RID_CHARS: usize = 64;

/// A user id, also a room id: `[a-z0-9_-]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A JSON object whose keys are all distinct.
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StrictObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object with distinct field names")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<StrictObject, A::Error> {
                let mut fields = Map::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    if fields.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "field `{key}` is given twice"
                        )));
                    }
                    fields.insert(key, value);
                }
                Ok(StrictObject(fields))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// What every client message has in common. Parsed before the type's own fields.
pub struct Envelope {
    pub rid: Option<Rid>,
    pub kind: Result<MessageType, Rejection>,
    fields: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Join,
    Leave,
    Chat,
    Gift,
    Question,
    Ack,
    RedPacket,
    Grab,
    Mod,
    Like,
    PkInvite,
    PkAccept,
    PkDecline,
    Ping,
}

impl MessageType {
    pub const ALL: [MessageType; 14] = [
        MessageType::Join,
        MessageType::Leave,
        MessageType::Chat,
        MessageType::Gift,
        MessageType::Question,
        MessageType::Ack,
        MessageType::RedPacket,
        MessageType::Grab,
        MessageType::Mod,
        MessageType::Like,
        MessageType::PkInvite,
        MessageType::PkAccept,
        MessageType::PkDecline,
        MessageType::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Join => "join",
            MessageType::Leave => "leave",
            MessageType::Chat => "chat",
            MessageType::Gift => "gift",
            MessageType::Question => "question",
            MessageType::Ack => "ack",
            MessageType::RedPacket => "red_packet",
            MessageType::Grab => "grab",
            MessageType::Mod => "mod",
            MessageType::Like => "like",
            MessageType::PkInvite => "pk_invite",
            MessageType::PkAccept => "pk_accept",
            MessageType::PkDecline => "pk_decline",
            MessageType::Ping => "ping",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl Envelope {
    /// Parses the JSON object and its `type` and `rid`. Only malformed JSON, a non-object
    /// or a bad `rid` fail here; an unknown type is reported through `kind` so the error
    /// can still carry the `rid`.
    pub fn parse(text: &str) -> Result<Envelope, Rejection> {
        // A field given twice could be read one way here and another by whatever
        // inspected the message on its way: refuse it rather than pick one.
        let StrictObject(mut fields) = serde_json::from_str(text).map_err(|e| {
            Rejection::bad_request(format!("a message must be one JSON object: {e}"))
        })?;
        let rid = match fields.remove("rid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_RID_CHARS => Some(Rid::Str(s)),
            Some(Value::Number(n)) if n.is_i64() => Some(Rid::Int(n.as_i64().unwrap_or_default())),
            Some(_) => {
                return Err(Rejection::bad_request(
                    "rid must be a string of at most 64 characters or an integer",
                ))
            }
        };
        let kind = match fields.remove("type") {
            Some(Value::String(t)) => MessageType::parse(&t)
                .ok_or_else(|| Rejection::bad_request(format!("unknown message type {t:?}"))),
            Some(_) => Err(Rejection::bad_request("type must be a string")),
            None => Err(Rejection::bad_request("missing field `type`")),
        };
        Ok(Envelope { rid, kind, fields })
    }

    /// Deserializes the type's own fields; unknown fields are ignored (forward compatible).
    pub fn fields<T: serde::de::DeserializeOwned>(self) -> Result<T, Rejection> {
        serde_json::from_value(Value::Object(self.fields))
            .map_err(|e| Rejection::bad_request(e.to_string()))
    }
}

#[derive(Debug, Deserialize)]
pub struct JoinRequest {
    pub room: String,
    #[serde(default)]
    pub since: Option<SinceField>,
}

/// A client's last seen position in a room; the epoch is opaque to clients.
#[derive(Debug, Deserialize)]
pub struct SinceField {
    pub epoch: String,
    pub seq: u64,
}

#[derive(Debug, Deserialize)]
pub struct RoomRequest {
    pub room: String,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub room: String,
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct GiftRequest {
    pub room: String,
    pub sticker: String,
    pub count: u32,
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub struct QuestionRequest {
    pub room: String,
    pub text: String,
    pub coins: u64,
    pub key: String,
}

#[derive(Debug, Deserialize)]
pub struct RedPacketRequest {
    pub room: String,
    pub coins: u64,
    pub shares: u32,
    pub split: SplitKind,
    pub key: String,
}

/// How a red packet's coins are cut into shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitKind {
    Random,
    Even,
}

#[derive(Debug, Deserialize)]
pub struct GrabRequest {
    pub room: String,
    pub packet: String,
}

#[derive(Debug, Deserialize)]
pub struct AckRequest {
    pub room: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub text: String,
}

/// Taps of the heart button (`like`, v2).
#[derive(Debug, Deserialize)]
pub struct LikeRequest {
    pub room: String,
    pub count: u32,
}

/// The taps one `like` may carry.
pub const LIKE_COUNT: std::ops::RangeInclusive<u32> = 1..=15;

/// A broadcaster invites another to a battle (`pk_invite`, v2).
#[derive(Debug, Deserialize)]
pub struct PkInviteRequest {
    pub room: String,
    pub opponent: String,
    #[serde(default)]
    pub seconds: Option<u64>,
}

/// The invited broadcaster's answer (`pk_accept`, `pk_decline`, v2).
#[derive(Debug, Deserialize)]
pub struct PkAnswerRequest {
    pub pk: String,
}

/// A battle as rooms, pages and `GET /api/pk/{pk}` see it (v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkView {
    pub pk: String,
    /// `invited`, `running`, `finished`, `declined` or `expired`.
    pub state: String,
    pub rooms: [String; 2],
    pub seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<u64>,
    /// Points per room.
    pub scores: std::collections::BTreeMap<String, u64>,
    /// Each room's biggest supporters in this battle.
    pub top: std::collections::BTreeMap<String, Vec<LeaderEntry>>,
    /// Once finished: the room with more points, `null` for a draw.
    pub winner: Option<String>,
}

/// The reply to `pk_invite`.
#[derive(Debug, Serialize)]
pub struct PkInvitedReply<'a> {
    pub pk: &'a str,
    pub expires_at: u64,
}

/// The reply to `pk_accept`.
#[derive(Debug, Serialize)]
pub struct PkAcceptedReply<'a> {
    pub pk: &'a str,
    pub ends_at: u64,
}

/// A moderation request (`mod`): which fields an action needs is checked by
/// `moderation::Action::parse`.
#[derive(Debug, Default, Deserialize)]
pub struct ModRequest {
    pub room: String,
    pub action: ModAction,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub seconds: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub term: Option<String>,
    /// `assistant`: thank each gift's sender in the broadcaster's name.
    #[serde(default)]
    pub thanks: Option<bool>,
    /// `assistant`: the thanks, with `{name}`, `{count}` and `{sticker}` filled in.
    #[serde(default)]
    pub template: Option<String>,
    /// `assistant`: after how long an unanswered paid question's asker is told it
    /// is still queued.
    #[serde(default)]
    pub answer_window_s: Option<u64>,
}

/// The moderation actions, as `mod` requests, `moderation` events and the audit log
/// spell them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    #[default]
    Delete,
    Timeout,
    Ban,
    Unban,
    Slow,
    ModsAdd,
    ModsRemove,
    TermsAdd,
    TermsRemove,
    /// Admins only: gifts and questions to the room's broadcaster are refused.
    SuspendGifts,
    ResumeGifts,
    /// The broadcaster's settings of the room's assistant (v2, bots).
    Assistant,
}

/// How a room's assistant behaves (`mod` action `assistant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssistantSettings {
    pub thanks: bool,
    pub template: String,
    pub answer_window_s: u64,
}

impl Default for AssistantSettings {
    fn default() -> Self {
        AssistantSettings {
            thanks: false,
            template: "Thank you {name} for {count} {sticker}!".into(),
            answer_window_s: 300,
        }
    }
}

/// One moderation action as it was taken: a line of the room's audit log, and (without
/// its `term`, which the room is not shown) the body of a `moderation` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationRecord {
    /// The action's place in the room's log: 1, 2, 3…
    pub rev: u64,
    pub at_ms: u64,
    pub action: ModAction,
    pub by: UserRef,
    /// The user acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserRef>,
    /// The event deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// A timeout's length, or slow mode's period (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// When a timeout ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant: Option<AssistantSettings>,
}

impl ModerationRecord {
    /// What the room is told: everything but a blocked term.
    pub fn public(&self) -> ModerationRecord {
        ModerationRecord {
            term: None,
            ..self.clone()
        }
    }
}

/// The sender or subject of an event, as every client shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
}

/// The body of a sequenced (recoverable) room event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoomEventBody {
    Chat {
        from: UserRef,
        text: String,
        /// Said by a bot (a `bot` token, or the room's assistant) (v2).
        #[serde(skip_serializing_if = "is_false")]
        bot: bool,
    },
    Gift {
        from: UserRef,
        sticker: String,
        count: u32,
        coins: u64,
        combo: u32,
        tier: u8,
    },
    Question {
        from: UserRef,
        text: String,
        coins: u64,
        pin_ms: u64,
    },
    Ack {
        #[serde(rename = "ref")]
        reference: String,
        to: UserRef,
        text: String,
    },
    RedPacket {
        from: UserRef,
        coins: u64,
        shares: u32,
        split: SplitKind,
    },
    Grab {
        packet: String,
        by: UserRef,
        coins: u64,
        left: u32,
    },
    Stream {
        live: bool,
    },
    /// The event whose `id` this event carries was deleted by a moderator.
    Deleted {},
    Moderation {
        #[serde(flatten)]
        record: ModerationRecord,
    },
}

impl RoomEventBody {
    /// Who paid how many coins, for events that record a payment.
    pub fn payment(&self) -> Option<(&UserRef, u64)> {
        match self {
            RoomEventBody::Gift { from, coins, .. }
            | RoomEventBody::Question { from, coins, .. }
            | RoomEventBody::RedPacket { from, coins, .. } => Some((from, *coins)),
            _ => None,
        }
    }
}

/// A room event serialized once, all but its `seq`, which whoever sequences it fills
/// in: the room itself, or the cluster's bus (in a Lua script that only concatenates).
/// On the wire: `{"room":…,"seq":N,"ts":…,"id":…,"type":…,…fields}`.
#[derive(Debug, Clone)]
pub struct UnsequencedEvent {
    /// `{"room":"…","seq":`
    pub head: String,
    /// `,"ts":…,"id":…,"type":…}`
    pub tail: String,
}

#[derive(Serialize)]
struct EventTail<'a> {
    ts: u64,
    id: &'a str,
    #[serde(flatten)]
    body: &'a RoomEventBody,
}

impl UnsequencedEvent {
    pub fn new(room: &str, ts: u64, id: &str, body: &RoomEventBody) -> UnsequencedEvent {
        let head = format!(r#"{{"room":{},"seq":"#, to_json(&room));
        let mut tail = to_json(&EventTail { ts, id, body });
        tail.replace_range(..1, ",");
        UnsequencedEvent { head, tail }
    }

    pub fn with_seq(&self, seq: u64) -> String {
        let mut frame = String::with_capacity(self.head.len() + 20 + self.tail.len());
        frame.push_str(&self.head);
        frame.push_str(itoa::Buffer::new().format(seq));
        frame.push_str(&self.tail);
        frame
    }
}

/// What a node reads back from a sequenced frame it holds: its type and id (which
/// event a moderator deletes), and who sent a gift or a question (so that the
/// broadcaster can acknowledge one paid on another node).
#[derive(Debug, Deserialize)]
pub struct EventPeek {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub from: Option<UserRef>,
    /// What an `ack` answers.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

/// Ephemeral events: not sequenced, coalesced, not recoverable.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EphemeralEvent<'a> {
    Presence {
        room: &'a str,
        viewers: usize,
    },
    Leaderboard {
        room: &'a str,
        top: &'a [LeaderEntry],
    },
    /// A private message to one user in a room (the assistant's answers) (v2).
    Notice {
        room: &'a str,
        text: &'a str,
    },
    Balance {
        coins: u64,
        /// What the user owes, when they owe anything (v2).
        #[serde(skip_serializing_if = "is_zero")]
        debt: u64,
    },
    /// The room's likes since its previous `likes` event, and since its stream
    /// started (v2).
    Likes {
        room: &'a str,
        total: u64,
        recent: u64,
    },
    /// Another broadcaster invites the one who gets this to a battle (v2).
    PkInvite {
        pk: &'a str,
        from: &'a str,
        room: &'a str,
        seconds: u64,
        expires_at: u64,
    },
    /// A battle's state, in each of its rooms (v2).
    Pk {
        room: &'a str,
        #[serde(flatten)]
        view: &'a PkView,
    },
    /// The broadcaster asked their stream overlay to show a sample alert (v2).
    OverlayTest {
        room: &'a str,
    },
    /// The broadcaster asked their stream overlay to show its last alert again (v2).
    OverlayReplay {
        room: &'a str,
    },
}

/// Entries a room's leaderboard shows.
pub const LEADERBOARD_TOP: usize = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderEntry {
    pub id: String,
    pub name: String,
    pub coins: u64,
}

impl LeaderEntry {
    /// The `n` biggest of `totals` (id → name and coins), most coins first; ties in
    /// id order, so that every node shows the same.
    pub fn ranked<'a>(
        totals: impl IntoIterator<Item = (&'a String, &'a (String, u64))>,
        n: usize,
    ) -> Vec<LeaderEntry> {
        let mut all: Vec<LeaderEntry> = totals
            .into_iter()
            .map(|(id, (name, coins))| LeaderEntry {
                id: id.clone(),
                name: name.clone(),
                coins: *coins,
            })
            .collect();
        all.sort_by(|a, b| b.coins.cmp(&a.coins).then_with(|| a.id.cmp(&b.id)));
        all.truncate(n);
        all
    }
}

/// Serializes `{"type":"ok","rid":...}` merged with the fields of `result` (an object).
/// The reply to a paid action: the payer's balance after it, whether it was a retry
/// (nothing charged again), and the id of what was paid for.
#[derive(Debug, Serialize)]
pub struct ChargedReply {
    pub balance: u64,
    pub duplicate: bool,
    #[serde(flatten)]
    pub id: ChargedId,
}

/// The id a paid action's reply names, under the field of its kind.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargedId {
    GiftId(String),
    QuestionId(String),
    PacketId(String),
}

/// A reply with nothing but its type and `rid` (to `ping`, `leave`).
#[derive(Debug, Serialize)]
pub struct EmptyReply {}

/// The reply to a grab: the share taken and the grabber's balance.
#[derive(Debug, Serialize)]
pub struct GrabbedReply {
    pub coins: u64,
    pub balance: u64,
}

pub fn ok_reply(rid: &Option<Rid>, result: impl Serialize) -> String {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        #[serde(rename = "type")]
        kind: &'static str,
        rid: &'a Option<Rid>,
        #[serde(flatten)]
        result: T,
    }
    to_json(&Ok {
        kind: "ok",
        rid,
        result,
    })
}

pub fn error_reply(rid: &Option<Rid>, rejection: &Rejection) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        rid: &'a Option<Rid>,
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }
    to_json(&Error {
        kind: "error",
        rid,
        code: rejection.code,
        message: &rejection.message,
        retry_after_ms: rejection.retry_after_ms,
    })
}

/// Our own types always serialize; a failure here is a programming error.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("wire types serialize to JSON")
}

/// Checks a user-supplied text: trimmed, then 1..=max characters.
pub fn checked_text(text: &str, max_chars: usize, field: &str) -> Result<String, Rejection> {
    let trimmed = text.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(Rejection::bad_request(format!("{field} must not be empty")));
    }
    if chars > max_chars {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!("{field} is {chars} characters; the limit is {max_chars}"),
        ));
    }
    Ok(trimmed.to_owned())
}

fn is_zero(amount: &u64) -> bool {
    *amount == 0
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// A serialized text message, shared by every connection it is sent to. It is only
/// built from Rust strings, so it is always valid UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextFrame(Bytes);

impl TextFrame {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a TextFrame is built from a str")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for TextFrame {
    fn from(text: String) -> Self {
        TextFrame(Bytes::from(text))
    }
}

impl From<&'static str> for TextFrame {
    fn from(text: &'static str) -> Self {
        TextFrame(Bytes::from_static(text.as_bytes()))
    }
}

impl PartialEq<&str> for TextFrame {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_given_twice_is_refused() {
        let twice =
            r#"{"type":"gift","room":"a","count":1,"count":1000,"sticker":"rose","key":"k"}"#;
        let refused = Envelope::parse(twice).err().unwrap();
        assert!(
            refused.message.contains("`count` is given twice"),
            "{}",
            refused.message
        );
        assert!(Envelope::parse(r#"{"type":"ping","type":"ping"}"#).is_err());
        assert!(Envelope::parse("[1,2]").is_err());
        assert!(Envelope::parse(r#"{"type":"ping"} trailing"#).is_err());
    }

    #[test]
    fn envelope_keeps_rid_when_type_is_unknown() {
        let env = Envelope::parse(r#"{"type":"dance","rid":"a1"}"#).unwrap();
        assert_eq!(env.rid, Some(Rid::Str("a1".into())));
        assert_eq!(env.kind.unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn rid_must_be_short_string_or_integer() {
        assert!(Envelope::parse(r#"{"type":"ping","rid":1.5}"#).is_err());
        assert!(
            Envelope::parse(&format!(r#"{{"type":"ping","rid":"{}"}}"#, "x".repeat(65))).is_err()
        );
        let env = Envelope::parse(r#"{"type":"ping","rid":-7}"#).unwrap();
        assert_eq!(env.rid, Some(Rid::Int(-7)));
    }

    #[test]
    fn fields_reject_wrong_types() {
        let env =
            Envelope::parse(r#"{"type":"gift","room":"a","sticker":"rose","count":1.5,"key":"k"}"#)
                .unwrap();
        assert!(env.fields::<GiftRequest>().is_err());
        let env =
            Envelope::parse(r#"{"type":"gift","room":"a","sticker":"rose","count":-1,"key":"k"}"#)
                .unwrap();
        assert!(env.fields::<GiftRequest>().is_err());
    }

    #[test]
    fn ids_follow_the_protocol_alphabet() {
        assert!(is_valid_id("alice_01-x"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("Alice"));
        assert!(!is_valid_id(&"a".repeat(65)));
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(checked_text("  hi ", 500, "text").unwrap(), "hi");
        assert_eq!(
            checked_text("   ", 500, "text").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            checked_text(&"é".repeat(501), 500, "text")
                .unwrap_err()
                .code,
            ErrorCode::TooLarge
        );
        assert!(checked_text(&"é".repeat(500), 500, "text").is_ok());
    }

    #[test]
    fn room_event_is_flat() {
        let body = RoomEventBody::Stream { live: true };
        let event = UnsequencedEvent::new("r", 9, "e1", &body);
        assert_eq!(
            event.with_seq(3),
            r#"{"room":"r","seq":3,"ts":9,"id":"e1","type":"stream","live":true}"#
        );
        let json: serde_json::Value = serde_json::from_str(&event.with_seq(u64::MAX)).unwrap();
        assert_eq!(json["seq"], u64::MAX);
    }

    #[test]
    fn only_unavailable_and_internal_are_server_faults() {
        let faults: Vec<ErrorCode> = ErrorCode::ALL
            .into_iter()
            .filter(|code| code.is_server_fault())
            .collect();
        assert_eq!(faults, [ErrorCode::Unavailable, ErrorCode::Internal]);
    }

    #[test]
    fn an_unavailable_reply_carries_a_retry_hint_and_a_client_error_does_not() {
        let rid = Some(Rid::Int(7));
        let unavailable = Rejection::unavailable("payments are unavailable right now");
        assert_eq!(unavailable.code, ErrorCode::Unavailable);
        assert_eq!(unavailable.retry_after_ms, Some(DEFAULT_RETRY_AFTER_MS));
        assert_eq!(
            error_reply(&rid, &unavailable),
            r#"{"type":"error","rid":7,"code":"unavailable","message":"payments are unavailable right now","retry_after_ms":1000}"#
        );
        let bad = Rejection::bad_request("count must be 1 to 9999");
        assert_eq!(bad.retry_after_ms, None);
        let reply: serde_json::Value = serde_json::from_str(&error_reply(&rid, &bad)).unwrap();
        assert_eq!(reply["code"], "bad_request");
        assert!(reply.get("retry_after_ms").is_none(), "{reply}");
        // A hint can be set on any rejection, and `new` still makes none.
        let internal = Rejection::new(ErrorCode::Internal, "oops").retry_after(250);
        let reply: serde_json::Value =
            serde_json::from_str(&error_reply(&None, &internal)).unwrap();
        assert_eq!(
            (reply["code"].as_str(), reply["retry_after_ms"].as_u64()),
            (Some("internal"), Some(250))
        );
        assert_eq!(
            Rejection::new(ErrorCode::Unavailable, "x").retry_after_ms,
            None
        );
    }
}
