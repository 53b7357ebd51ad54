//! One connection's protocol state machine: it parses each client message, checks who
//! may do what, calls into rooms and answers with exactly one reply per message.
//! No socket here: `ws.rs` feeds it text and carries its frames.

use std::sync::Arc;
use std::time::Instant;

use super::assistant::{Command, CommandReply};
use super::rate::{SlidingWindow, TokenBucket};
use super::{Hub, JoinModeration, Outbox, Room};
use crate::auth::{Role, User};
use crate::config::Limits;
use crate::gift::{Charge, GiftEngine, GiftOrder, QuestionOrder, RedPacketOrder};
use crate::ids::event_id;
use crate::moderation::Action;
use crate::protocol::{
    checked_text, close, error_reply, is_valid_id, ok_reply, to_json, AckRequest, ChargedId,
    ChargedReply, ChatRequest, EmptyReply, Envelope, EphemeralEvent, ErrorCode, GiftRequest,
    GrabRequest, GrabbedReply, JoinRequest, LikeRequest, MessageType, ModRequest, PkAcceptedReply,
    PkAnswerRequest, PkInviteRequest, PkInvitedReply, QuestionRequest, RedPacketRequest, Rejection,
    Rid, RoomEventBody, RoomRequest, LIKE_COUNT,
};

pub const CHAT_MAX_CHARS: usize = 500;
pub const QUESTION_MAX_CHARS: usize = 300;
pub const ACK_MAX_CHARS: usize = 200;

/// The `join` reply: the room's snapshot and what the user should know of its
/// moderation.
#[derive(serde::Serialize)]
struct JoinReply<'a> {
    #[serde(flatten)]
    snapshot: super::room::JoinSnapshot<'a>,
    moderation: JoinModeration,
    /// The battle the room is in, if one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pk: Option<Box<serde_json::value::RawValue>>,
}

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
    gifts: Arc<GiftEngine>,
    user: Option<User>,
    outbox: Arc<Outbox>,
    joined: Vec<Arc<Room>>,
    errors: ErrorStorm,
    joins: TokenBucket,
}

/// The error-storm limit: a client that gets `limit` errors within `window` is closed
/// with 1008. Only the client's errors count; the server's own faults
/// (`ErrorCode::is_server_fault`) never do, so a client retrying through an outage is
/// not taken for a hostile one.
struct ErrorStorm {
    window: SlidingWindow,
}

impl ErrorStorm {
    fn new(limit: usize, window: std::time::Duration) -> ErrorStorm {
        ErrorStorm {
            window: SlidingWindow::new(limit, window),
        }
    }

    /// Records an error sent with `code`; true when it trips the limit.
    fn record(&mut self, code: ErrorCode, now: Instant) -> bool {
        !code.is_server_fault() && self.window.record(now)
    }
}

impl Session {
    pub fn new(
        hub: Arc<Hub>,
        gifts: Arc<GiftEngine>,
        user: Option<User>,
        outbox: Arc<Outbox>,
    ) -> Session {
        let errors = ErrorStorm::new(
            hub.limits.error_storm_count,
            Limits::ms(hub.limits.error_storm_window_ms),
        );
        let joins = TokenBucket::new(
            hub.limits.join_burst,
            Limits::ms(hub.limits.join_window_ms),
            Instant::now(),
        );
        Session {
            hub,
            gifts,
            user,
            outbox,
            joined: Vec::new(),
            errors,
            joins,
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

    /// Sends an error; too many client errors in a short time close the connection
    /// with 1008 (server faults do not count: `ErrorStorm`).
    pub fn reject(&mut self, rid: &Option<Rid>, rejection: &Rejection, now: Instant) -> Flow {
        crate::metrics::error_sent(rejection.code);
        self.outbox.push(error_reply(rid, rejection).into());
        if self.errors.record(rejection.code, now) {
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
            MessageType::Ping => Ok(Some(ok_reply(rid, EmptyReply {}))),
            MessageType::Join => self.join(rid, envelope.fields()?, now).await,
            MessageType::Leave => self.leave(rid, envelope.fields()?, now),
            MessageType::Chat => self.chat(rid, envelope.fields()?, now).await,
            MessageType::Gift => self.gift(rid, envelope.fields()?).await,
            MessageType::Question => self.question(rid, envelope.fields()?).await,
            MessageType::Ack => self.ack(rid, envelope.fields()?).await,
            MessageType::RedPacket => self.red_packet(rid, envelope.fields()?).await,
            MessageType::Grab => self.grab(rid, envelope.fields()?).await,
            MessageType::Mod => self.moderate(rid, envelope.fields()?).await,
            MessageType::Like => self.like(rid, envelope.fields()?, now).await,
            MessageType::PkInvite => self.pk_invite(rid, envelope.fields()?).await,
            MessageType::PkAccept => self.pk_answer(rid, envelope.fields()?, true).await,
            MessageType::PkDecline => self.pk_answer(rid, envelope.fields()?, false).await,
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

    async fn join(&mut self, rid: &Option<Rid>, request: JoinRequest, now: Instant) -> Answer {
        checked_room_id(&request.room)?;
        let already = self.joined.iter().any(|r| r.name == request.room);
        let limits = &self.hub.limits;
        if !already && self.joined.len() >= limits.rooms_per_connection {
            return Err(Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "a connection may be in at most {} rooms; leave one first",
                    limits.rooms_per_connection
                ),
            ));
        }
        if !already && !self.joins.try_take(now) {
            return Err(Rejection::new(
                ErrorCode::RateLimited,
                format!(
                    "slow down: at most {} joins per {} s",
                    limits.join_burst,
                    limits.join_window_ms / 1000
                ),
            ));
        }
        let replay_len = self.hub.limits.join_replay;
        let outbox = self.outbox.clone();
        let since = request.since.as_ref().map(|s| (s.epoch.as_str(), s.seq));
        let user = self.user.as_ref();
        let room = self
            .hub
            .join_room(&request.room, |room| {
                let moderation = room.moderation.for_join(user);
                let pk = room.battle.for_join();
                room.join(&outbox, since, replay_len, |snapshot| {
                    ok_reply(
                        rid,
                        JoinReply {
                            snapshot,
                            moderation,
                            pk,
                        },
                    )
                });
                room.clone()
            })
            .await?;
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
        Ok(Some(ok_reply(rid, EmptyReply {})))
    }

    async fn chat(&mut self, rid: &Option<Rid>, request: ChatRequest, now: Instant) -> Answer {
        let user = self.signed_in()?;
        let room = self.joined_room(&request.room)?;
        let text = checked_text(&request.text, CHAT_MAX_CHARS, "text")?;
        self.hub.allow_chat(user, now)?;
        self.hub.check_chat(room, user, &text).await?;
        if let Some(command) = Command::parse(&text) {
            self.hub.answer(room, user, command, &self.gifts).await?;
            return Ok(Some(ok_reply(rid, CommandReply { command })));
        }
        let body = RoomEventBody::Chat {
            from: user.as_ref(),
            text,
            bot: user.role == Role::Bot,
        };
        let published = self.hub.publish(room, event_id(), &body).await?;
        Ok(Some(ok_reply(rid, published)))
    }

    /// The signed-in user, unless a bot: bots never pay.
    fn paying_user(&self) -> Result<User, Rejection> {
        let user = self.signed_in()?;
        if user.role == Role::Bot {
            return Err(Rejection::new(ErrorCode::Forbidden, "bots do not pay"));
        }
        Ok(user.clone())
    }

    /// The signed-in user and the joined room a gift or question goes to; a
    /// broadcaster cannot pay their own room, nor anyone a room whose gifting is
    /// suspended, nor a user banned from it.
    async fn payer_in(&self, room: &str) -> Result<(User, Arc<Room>), Rejection> {
        let user = self.paying_user()?;
        let room = self.joined_room(room)?.clone();
        if user.owns_room(&room.name) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "broadcasters cannot pay their own room",
            ));
        }
        self.hub.check_payment(&room, &user, true).await?;
        Ok((user, room))
    }

    /// The signed-in user and the joined room of a red packet or a grab, unless the
    /// user is banned from it.
    async fn member_paying_in(&self, room: &str) -> Result<(User, Arc<Room>), Rejection> {
        let user = self.paying_user()?;
        let room = self.joined_room(room)?.clone();
        self.hub.check_payment(&room, &user, false).await?;
        Ok((user, room))
    }

    async fn gift(&mut self, rid: &Option<Rid>, request: GiftRequest) -> Answer {
        let (user, room) = self.payer_in(&request.room).await?;
        let order = GiftOrder {
            room: &room.name,
            sticker: &request.sticker,
            count: request.count,
            key: &request.key,
        };
        let charge = self.gifts.gift(&user, order).await?;
        Ok(Some(
            self.charged(rid, &room, &user, charge, ChargedId::GiftId)
                .await,
        ))
    }

    async fn question(&mut self, rid: &Option<Rid>, request: QuestionRequest) -> Answer {
        let (user, room) = self.payer_in(&request.room).await?;
        let text = checked_text(&request.text, QUESTION_MAX_CHARS, "text")?;
        let order = QuestionOrder {
            room: &room.name,
            text: &text,
            coins: request.coins,
            key: &request.key,
        };
        let charge = self.gifts.question(&user, order).await?;
        Ok(Some(
            self.charged(rid, &room, &user, charge, ChargedId::QuestionId)
                .await,
        ))
    }

    async fn red_packet(&mut self, rid: &Option<Rid>, request: RedPacketRequest) -> Answer {
        let (user, room) = self.member_paying_in(&request.room).await?;
        let order = RedPacketOrder {
            room: &room.name,
            coins: request.coins,
            shares: request.shares,
            split: request.split,
            key: &request.key,
        };
        let charge = self.gifts.red_packet(&user, order).await?;
        Ok(Some(
            self.charged(rid, &room, &user, charge, ChargedId::PacketId)
                .await,
        ))
    }

    async fn grab(&mut self, rid: &Option<Rid>, request: GrabRequest) -> Answer {
        let (user, room) = self.member_paying_in(&request.room).await?;
        let grabbed = self.gifts.grab(&user, &room.name, &request.packet).await?;
        self.announce(&room, event_id(), &grabbed.event).await;
        self.send_balance(&user, grabbed.balance);
        let reply = GrabbedReply {
            coins: grabbed.coins,
            balance: grabbed.balance,
        };
        Ok(Some(ok_reply(rid, reply)))
    }

    fn send_balance(&self, user: &User, coins: u64) {
        let debt = self.gifts.debt(&user.id);
        let balance = to_json(&EphemeralEvent::Balance { coins, debt });
        self.hub.send_to_user(&user.id, balance.into());
    }

    /// Publishes the event of a committed payment. The money has moved whatever
    /// happens here, so a failure to publish is logged, not answered as an error.
    async fn announce(&self, room: &Room, id: String, body: &RoomEventBody) {
        if let Err(rejection) = self.hub.publish(room, id, body).await {
            tracing::error!(
                room = room.name,
                message = rejection.message,
                "a committed payment was not announced"
            );
        }
    }

    /// After a durable charge: fan out its event (first time only), tell the payer's
    /// connections their balance, and build the reply.
    async fn charged(
        &self,
        rid: &Option<Rid>,
        room: &Room,
        user: &User,
        charge: Charge,
        id: fn(String) -> ChargedId,
    ) -> String {
        if let Some(event) = &charge.event {
            if let Some((sender, coins)) = event.payment() {
                self.hub.record_payment(&room.name, sender, coins);
            }
            self.announce(room, charge.id.clone(), event).await;
            self.send_balance(user, charge.balance);
            self.hub
                .assistant_sees(room, &charge.id, event, &self.gifts)
                .await;
        }
        let reply = ChargedReply {
            balance: charge.balance,
            duplicate: charge.duplicate,
            id: id(charge.id),
        };
        ok_reply(rid, reply)
    }

    async fn ack(&mut self, rid: &Option<Rid>, request: AckRequest) -> Answer {
        let user = self.signed_in()?;
        let room = self.joined_room(&request.room)?;
        if !user.owns_room(&room.name) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                "only the room's broadcaster can acknowledge",
            ));
        }
        let text = checked_text(&request.text, ACK_MAX_CHARS, "text")?;
        let to = self
            .gifts
            .acknowledgeable(&room.name, &request.reference)
            // Paid on another node of the cluster: its event is in the room's history.
            .or_else(|| room.payment_sender(&request.reference))
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::NotFound,
                    format!("no gift or question {:?} in this room", request.reference),
                )
            })?;
        let told = serde_json::json!({
            "room": room.name, "ref": request.reference, "to": to, "text": text,
        });
        let body = RoomEventBody::Ack {
            reference: request.reference,
            to,
            text,
        };
        let published = self.hub.publish(room, event_id(), &body).await?;
        self.hub
            .webhooks
            .notify("ack.sent", Some(&room.name), told)
            .await;
        Ok(Some(ok_reply(rid, published)))
    }

    async fn moderate(&mut self, rid: &Option<Rid>, request: ModRequest) -> Answer {
        let user = self.signed_in()?;
        let room = self.joined_room(&request.room)?;
        let action = Action::parse(request)?;
        let record = self.hub.moderate(user, room, action).await?;
        Ok(Some(ok_reply(rid, record)))
    }

    async fn like(&mut self, rid: &Option<Rid>, request: LikeRequest, now: Instant) -> Answer {
        if !LIKE_COUNT.contains(&request.count) {
            return Err(Rejection::bad_request(format!(
                "count must be from {} to {}",
                LIKE_COUNT.start(),
                LIKE_COUNT.end()
            )));
        }
        // Taps are free: only people may tap, so that no bot can inflate them.
        let user = self.signed_in()?.clone();
        if user.role == Role::Bot {
            return Err(Rejection::new(ErrorCode::Forbidden, "bots cannot like"));
        }
        let room = self.joined_room(&request.room)?.clone();
        self.hub.allow_like(&user, now)?;
        self.hub.check_payment(&room, &user, false).await?;
        room.likes.tap(request.count);
        // Only a message with a `rid` is owed an `ok`: a page that taps without one
        // saves a frame per like (errors are still answered).
        Ok(rid.as_ref().map(|_| ok_reply(rid, EmptyReply {})))
    }

    async fn pk_invite(&mut self, rid: &Option<Rid>, request: PkInviteRequest) -> Answer {
        let user = self.signed_in()?.clone();
        checked_room_id(&request.room)?;
        checked_room_id(&request.opponent)?;
        let (pk, expires_at) = (self.hub)
            .pk_invite(&user, &request.room, &request.opponent, request.seconds)
            .await?;
        Ok(Some(ok_reply(
            rid,
            PkInvitedReply {
                pk: &pk,
                expires_at,
            },
        )))
    }

    async fn pk_answer(
        &mut self,
        rid: &Option<Rid>,
        request: PkAnswerRequest,
        accept: bool,
    ) -> Answer {
        let user = self.signed_in()?.clone();
        let battle = self.hub.pk_answer(&user, &request.pk, accept).await?;
        match battle.ends_ms().filter(|_| accept) {
            Some(ends_at) => Ok(Some(ok_reply(
                rid,
                PkAcceptedReply {
                    pk: &battle.id,
                    ends_at,
                },
            ))),
            None => Ok(Some(ok_reply(rid, EmptyReply {}))),
        }
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

fn checked_room_id(room: &str) -> Result<(), Rejection> {
    if is_valid_id(room) {
        Ok(())
    } else {
        Err(Rejection::bad_request("room must match [a-z0-9_-]{1,64}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The default limit: 20 errors within 10 s.
    fn storm() -> ErrorStorm {
        ErrorStorm::new(20, Duration::from_secs(10))
    }

    #[test]
    fn server_faults_never_trip_the_error_storm_limit() {
        let t0 = Instant::now();
        let mut errors = storm();
        for i in 0..30 {
            let code = if i % 2 == 0 {
                ErrorCode::Unavailable
            } else {
                ErrorCode::Internal
            };
            assert!(
                !errors.record(code, t0),
                "server fault {i} tripped the limit"
            );
        }
        // Nor do they bring a client closer to it.
        for i in 1..20 {
            assert!(
                !errors.record(ErrorCode::BadRequest, t0),
                "client error {i}"
            );
        }
        assert!(errors.record(ErrorCode::BadRequest, t0));
    }

    #[test]
    fn twenty_client_errors_still_trip_it() {
        let t0 = Instant::now();
        for code in ErrorCode::ALL.into_iter().filter(|c| !c.is_server_fault()) {
            let mut errors = storm();
            for i in 1..20 {
                let now = t0 + Duration::from_millis(i * 100);
                assert!(!errors.record(code, now), "{code:?} {i}");
            }
            assert!(errors.record(code, t0 + Duration::from_secs(2)), "{code:?}");
        }
    }
}
