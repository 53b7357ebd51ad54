//! The room's assistant, a built-in bot: it answers chat commands (`/help`,
//! `/balance` privately, `/top` to the room), thanks each gift's sender in the
//! broadcaster's name when the broadcaster turned that on (`mod` action `assistant`),
//! and tells the asker of a paid question that waited past the broadcaster's answer
//! window that it is still queued. Its settings live in the room's rules, so every
//! node knows them; the node that charged a payment is the one that reacts to it, so
//! it reacts once.

use std::sync::Mutex;

use serde::Serialize;

use super::{Hub, Room};
use crate::auth::User;
use crate::gift::GiftEngine;
use crate::ids::event_id;
use crate::protocol::{to_json, EphemeralEvent, Rejection, RoomEventBody, UserRef};

/// The assistant's own id and name in a room's events.
pub const ASSISTANT_ID: &str = "assistant";
const ASSISTANT_NAME: &str = "Assistant";
/// A paid question is watched for an answer this long at most.
const WATCH_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Help,
    Balance,
    Top,
}

impl Command {
    /// A chat message that is one of the assistant's commands (case aside).
    pub fn parse(text: &str) -> Option<Command> {
        let word = text.split_whitespace().next()?.to_ascii_lowercase();
        match word.as_str() {
            "/help" => Some(Command::Help),
            "/balance" => Some(Command::Balance),
            "/top" => Some(Command::Top),
            _ => None,
        }
    }
}

/// The `ok` to a command: which one was answered (its answer comes as events).
#[derive(Debug, Serialize)]
pub struct CommandReply {
    pub command: Command,
}

/// A broadcaster's thanks template with the gift filled in.
pub fn thanks(template: &str, name: &str, count: u32, sticker: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{count}", &count.to_string())
        .replace("{sticker}", sticker)
}

/// Paid questions charged on this node and not yet known to be answered.
#[derive(Default)]
pub(super) struct Waiting(Mutex<Vec<WaitingQuestion>>);

struct WaitingQuestion {
    room: String,
    id: String,
    asker: String,
    text: String,
    asked_ms: u64,
}

impl Hub {
    /// Answers a command: privately (`notice`) or to the room (a chat from the
    /// assistant, `bot: true`).
    pub(super) async fn answer(
        &self,
        room: &Room,
        user: &User,
        command: Command,
        gifts: &GiftEngine,
    ) -> Result<(), Rejection> {
        match command {
            Command::Help => {
                let help = "Commands: /balance (your coins, only you see it), /top (this stream's top senders), /help";
                self.notify_user(&user.id, &room.name, help);
            }
            Command::Balance => {
                let text = format!("You have {} coins.", gifts.balance(&user.id));
                self.notify_user(&user.id, &room.name, &text);
            }
            Command::Top => {
                let top = self.leaderboard(&room.name).await?;
                let text = if top.is_empty() {
                    "No gifts yet in this stream.".to_owned()
                } else {
                    let names: Vec<String> = (top.iter().take(3))
                        .enumerate()
                        .map(|(i, e)| format!("{}. {} ({} coins)", i + 1, e.name, e.coins))
                        .collect();
                    format!("Top senders: {}", names.join(", "))
                };
                let assistant = UserRef {
                    id: ASSISTANT_ID.into(),
                    name: ASSISTANT_NAME.into(),
                };
                self.say(room, assistant, text).await?;
            }
        }
        Ok(())
    }

    fn notify_user(&self, user: &str, room: &str, text: &str) {
        let frame = to_json(&EphemeralEvent::Notice { room, text });
        self.send_to_user(user, frame.into());
    }

    async fn say(&self, room: &Room, from: UserRef, text: String) -> Result<(), Rejection> {
        let body = RoomEventBody::Chat {
            from,
            text,
            bot: true,
        };
        self.publish(room, event_id(), &body).await.map(|_| ())
    }

    /// A payment was charged here for the first time and announced: thank a gift's
    /// sender if the broadcaster asked for it; watch a question for an answer.
    pub(super) async fn assistant_sees(
        &self,
        room: &Room,
        id: &str,
        event: &RoomEventBody,
        gifts: &GiftEngine,
    ) {
        match event {
            RoomEventBody::Gift {
                from,
                sticker,
                count,
                ..
            } => {
                let Some(template) = room.moderation.thanks_template() else {
                    return;
                };
                let sticker =
                    (gifts.catalog.sticker(sticker)).map_or(sticker.clone(), |s| s.name.clone());
                let text = thanks(&template, &from.name, *count, &sticker);
                let broadcaster = self.broadcaster_of(room).await;
                if let Err(rejection) = self.say(room, broadcaster, text).await {
                    tracing::warn!(
                        room = room.name,
                        message = rejection.message,
                        "no thanks said"
                    );
                }
            }
            RoomEventBody::Question { from, text, .. } => {
                let mut waiting = self.waiting.0.lock().unwrap_or_else(|p| p.into_inner());
                waiting.push(WaitingQuestion {
                    room: room.name.clone(),
                    id: id.to_owned(),
                    asker: from.id.clone(),
                    text: text.clone(),
                    asked_ms: self.moderation.clock.now_ms(),
                });
            }
            _ => {}
        }
    }

    /// The room's broadcaster as the server last saw them write.
    async fn broadcaster_of(&self, room: &Room) -> UserRef {
        let known = self.moderation.store.user(&room.name).await.ok().flatten();
        known.map_or_else(
            || UserRef {
                id: room.name.clone(),
                name: room.name.clone(),
            },
            |(card, _)| card,
        )
    }

    /// Tells the askers of questions that waited past their room's answer window,
    /// unanswered, that they are still queued (once each).
    pub(super) fn remind_waiting_askers(&self) {
        let now = self.moderation.clock.now_ms();
        let mut due = Vec::new();
        {
            let mut waiting = self.waiting.0.lock().unwrap_or_else(|p| p.into_inner());
            waiting.retain(|question| {
                let Some(room) = self.room(&question.room) else {
                    return now < question.asked_ms + WATCH_MS;
                };
                if room.answered(&question.id) {
                    return false;
                }
                let window_ms = room.moderation.answer_window_ms().unwrap_or(u64::MAX);
                if now >= question.asked_ms.saturating_add(window_ms) {
                    let text = format!(
                        "Your question \u{201c}{}\u{201d} is still in the queue: the broadcaster has not answered it yet.",
                        question.text
                    );
                    due.push((question.asker.clone(), question.room.clone(), text));
                    return false;
                }
                now < question.asked_ms + WATCH_MS
            });
        }
        for (asker, room, text) in due {
            self.notify_user(&asker, &room, &text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_first_word_whatever_its_case() {
        assert_eq!(Command::parse("/help"), Some(Command::Help));
        assert_eq!(Command::parse("  /BALANCE please"), Some(Command::Balance));
        assert_eq!(Command::parse("/top"), Some(Command::Top));
        assert_eq!(Command::parse("/dance"), None);
        assert_eq!(Command::parse("help"), None);
        assert_eq!(Command::parse("say /top"), None);
    }

    #[test]
    fn thanks_fill_the_template() {
        let template = "Thank you {name} for {count} {sticker}! {name} rocks";
        assert_eq!(
            thanks(template, "Bob", 3, "Rose"),
            "Thank you Bob for 3 Rose! Bob rocks"
        );
    }
}
