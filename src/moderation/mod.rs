//! Moderation rules, with no I/O: `action` (a `mod` request checked), `rules` (a
//! room's moderators, bans, timeouts, slow mode and blocked terms, folded from its
//! log of actions; who may moderate whom; who may chat or pay now), `terms`
//! (blocked terms, Unicode-folded), `store` (where logs are kept). The hub applies
//! them; the platform-wide settings come from `[moderation]` in the configuration.

mod action;
mod rules;
mod store;
mod terms;

use serde::Deserialize;

use crate::protocol::{ErrorCode, Rejection};

pub use action::{Action, MAX_REASON_CHARS, MAX_TIMEOUT_S, SLOW_RANGE_S};
pub use rules::{Restricted, RoomRules, RulesView, Standing, MAX_ROOM_TERMS};
pub use store::{ModerationStore, StoreError, TABLES};
pub use terms::{BlockedTerms, MAX_TERM_CHARS};

/// `[moderation]` in the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModerationSettings {
    /// Terms no chat message may contain, in any room (matched ignoring case and
    /// Unicode compatibility forms).
    pub blocked_terms: Vec<String>,
}

impl ModerationSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        BlockedTerms::new(&self.blocked_terms).map(|_| ())
    }
}

/// Why moderation refuses something. Mapped to the protocol's codes in one place,
/// `From<Refusal> for Rejection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The actor may not take this action (on this user).
    NotAllowed(&'static str),
    /// The request makes no sense as asked.
    Invalid(&'static str),
    /// A user the server has never seen write.
    UnknownUser(String),
    /// Nothing to undo or remove.
    NotFound(String),
    /// A ban (`left_ms: None`) or a timeout in force.
    Banned {
        left_ms: Option<u64>,
    },
    /// Slow mode: the user chatted less than `seconds` ago.
    Slow {
        seconds: u64,
        left_ms: u64,
    },
    BlockedTerm,
    GiftingSuspended,
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Rejection {
        match refusal {
            Refusal::NotAllowed(why) => Rejection::new(ErrorCode::Forbidden, why),
            Refusal::Invalid(why) => Rejection::bad_request(why),
            Refusal::UnknownUser(user) => Rejection::new(
                ErrorCode::NotFound,
                format!("no user {user:?} has written on this server"),
            ),
            Refusal::NotFound(what) => Rejection::new(ErrorCode::NotFound, what),
            Refusal::Banned { left_ms: None } => {
                Rejection::new(ErrorCode::Banned, "you are banned from this room")
            }
            Refusal::Banned {
                left_ms: Some(left),
            } => Rejection::new(
                ErrorCode::Banned,
                format!(
                    "you are timed out in this room for {} more seconds",
                    left.div_ceil(1000)
                ),
            )
            .retry_after(left),
            Refusal::Slow { seconds, left_ms } => Rejection::new(
                ErrorCode::RateLimited,
                format!("slow mode: one message every {seconds} s"),
            )
            .retry_after(left_ms),
            Refusal::BlockedTerm => Rejection::new(
                ErrorCode::Forbidden,
                "your message contains a term that is not allowed here",
            ),
            Refusal::GiftingSuspended => Rejection::new(
                ErrorCode::Forbidden,
                "gifts to this broadcaster are suspended by the platform",
            ),
        }
    }
}
