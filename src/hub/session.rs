//! One connection's protocol state machine: it parses each client message, checks who
//! may do what, calls into rooms and answers with exactly one reply per message.
//! No socket here: `ws.rs` feeds it text and carries its frames.

use std::sync::Arc;
use std::time::Instant;

use super::rate::SlidingWindow;
use super::{Hub, Outbox, Room};
use crate::auth::User;
use crate::config::Limits;
use crate::protocol::{
    checked_text, close, error_reply, is_valid_id, ok_reply, ChatRequest, Envelope, ErrorCode,
    JoinRequest, MessageType, Rejection, Rid, RoomEventBody, RoomRequest,
};

pub const CHAT_MAX_CHARS: usize = 500;

/// What the connection should do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close(u16),
}

/// A handler's answer: the `ok` frame to send, or `None` when the handler has queued
/// its reply itself (a `join` reply must be ordered with the room's events).
type Answer = Result<Option<String>, Rejection>;

pub struct Session {
    hub: Arc<Hub>,
    user: Option<User>,
    outbox: Arc<Outbox>,
    joined: Vec<Arc<Room>>,
    errors: SlidingWindow,
}

impl Session {
    pub fn new(hub: Arc<Hub>, user: Option<User>, outbox: Arc<Outbox>) -> Session {
        let errors = SlidingWindow::new(
            hub.limits.error_storm_count,
            Limits::ms(hub.limits.error_storm_window_ms),
        );
        Session {
            hub,
            user,
            outbox,
            joined: Vec::new(),
            errors,
        }
    }

    /// Handles one text frame from the client.
    pub async fn on_text(&mut self, text: &str) -> Flow {
        let now = Instant::now();
        let (rid, answer) = match Envelope::parse(text) {
            Err(rejection) => (None, Err(rejection)),
            Ok(mut envelope) => {
                let rid = envelope.rid.take();
                let answer = match std::mem::replace(&mut envelope.kind, Ok(MessageType::Ping)) {
                    Err(rejection) => Err(rejection),
                    Ok(kind) => {
                        crate::metrics::message_in(kind.as_str());
                        self.handle(kind, &rid, envelope, now).await
                    }
                };
                (rid, answer)
            }
        };
        match answer {
            Ok(Some(reply)) => {
                crate::metrics::message_out("ok", 1);
                self.outbox.push(reply.into());
            }
            Ok(None) => {}
            Err(rejection) => return self.reject(&rid, &rejection, now),
        }
        Flow::Continue
    }

    /// Sends an error; too many errors in a short time close the connection with 1008.
    pub fn reject(&mut self, rid: &Option<Rid>, rejection: &Rejection, now: Instant) -> Flow {
        crate::metrics::error_sent(rejection.code);
        self.outbox.push(error_reply(rid, rejection).into());
        if self.errors.record(now) {
            Flow::Close(close::POLICY_VIOLATION)
        } else {
            Flow::Continue
        }
    }

    async fn handle(
        &mut self,
        kind: MessageType,
        rid: &Option<Rid>,
        envelope: Envelope,
        now: Instant,
    ) -> Answer {
        match kind {
            MessageType::Ping => Ok(Some(ok_reply(rid, Empty {}))),
            MessageType::Join => self.join(rid, envelope.fields()?),
            MessageType::Leave => self.leave(rid, envelope.fields()?, now),
            MessageType::Chat => self.chat(rid, envelope.fields()?, now),
            MessageType::Gift
            | MessageType::Question
            | MessageType::Ack
            | MessageType::RedPacket
            | MessageType::Grab => Err(Rejection::new(
                ErrorCode::Unavailable,
                format!("{} is not available on this server", kind.as_str()),
            )),
        }
    }

    fn signed_in(&self) -> Result<&User, Rejection> {
        self.user.as_ref().ok_or_else(|| {
            Rejection::new(
                ErrorCode::Unauthorized,
                "guests may only watch: connect with a valid token to write",
            )
        })
    }

    fn joined_room(&self, room: &str) -> Result<&Arc<Room>, Rejection> {
        checked_room_id(room)?;
        self.joined.iter().find(|r| r.name == room).ok_or_else(|| {
            Rejection::new(ErrorCode::NotJoined, format!("join room {room:?} first"))
        })
    }

    fn join(&mut self, rid: &Option<Rid>, request: JoinRequest) -> Answer {
        checked_room_id(&request.room)?;
        let already = self.joined.iter().any(|r| r.name == request.room);
        let limit = self.hub.limits.rooms_per_connection;
        if !already && self.joined.len() >= limit {
            return Err(Rejection::new(
                ErrorCode::TooLarge,
                format!("a connection may be in at most {limit} rooms; leave one first"),
            ));
        }
        let replay_len = self.hub.limits.join_replay;
        let outbox = self.outbox.clone();
        let room = self.hub.with_room(&request.room, |room| {
            let since = request
                .since
                .as_ref()
                .filter(|since| since.epoch == room.epoch)
                .map(|since| since.seq);
            room.join(&outbox, since, replay_len, |snapshot| {
                ok_reply(rid, snapshot)
            });
            room.clone()
        });
        crate::metrics::message_out("ok", 1);
        if !already {
            self.joined.push(room);
        }
        Ok(None)
    }

    fn leave(&mut self, rid: &Option<Rid>, request: RoomRequest, now: Instant) -> Answer {
        let room = self.joined_room(&request.room)?.clone();
        room.leave(self.outbox.id, now);
        self.joined.retain(|r| !Arc::ptr_eq(r, &room));
        Ok(Some(ok_reply(rid, Empty {})))
    }

    fn chat(&mut self, rid: &Option<Rid>, request: ChatRequest, now: Instant) -> Answer {
        let user = self.signed_in()?;
        let room = self.joined_room(&request.room)?;
        let text = checked_text(&request.text, CHAT_MAX_CHARS, "text")?;
        if !self.hub.allow_chat(&user.id, now) {
            let limits = &self.hub.limits;
            return Err(Rejection::new(
                ErrorCode::RateLimited,
                format!(
                    "slow down: at most {} chat messages per {} s",
                    limits.chat_burst,
                    limits.chat_window_ms / 1000
                ),
            ));
        }
        let published = room.publish(&RoomEventBody::Chat {
            from: user.as_ref(),
            text,
        });
        Ok(Some(ok_reply(rid, published)))
    }

    /// Leaves every room and unregisters the connection.
    pub fn end(self) {
        let now = Instant::now();
        for room in &self.joined {
            room.leave(self.outbox.id, now);
        }
        self.hub.disconnect(&self.outbox);
    }
}

#[derive(serde::Serialize)]
struct Empty {}

fn checked_room_id(room: &str) -> Result<(), Rejection> {
    if is_valid_id(room) {
        Ok(())
    } else {
        Err(Rejection::bad_request("room must match [a-z0-9_-]{1,64}"))
    }
}
