//! PK battles, with no I/O: `battle` (a battle's life: invited, running, finished;
//! who may answer; the rules a new invite must pass), `tally` (the scores, summed
//! from the ledger's gifts), `store` (where battles are kept). The hub drives them
//! (`hub/pk.rs`); the rules come from `[pk]` in the configuration.

mod battle;
mod store;
mod tally;

use serde::Deserialize;

use crate::protocol::{ErrorCode, Rejection};

pub use battle::{Battle, Invite, State};
pub use store::{PkStore, TABLES};
pub use tally::{GiftSum, Tally, TOP_SUPPORTERS};

/// `[pk]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PkSettings {
    /// A battle's length when the invite names none.
    pub default_seconds: u64,
    pub min_seconds: u64,
    pub max_seconds: u64,
    /// How long an invite waits for an answer.
    pub invite_ttl_ms: u64,
    /// Battles a broadcaster may start (invite) within `window_s`.
    pub max_per_window: usize,
    pub window_s: u64,
    /// Time between two battles of the same pair of rooms.
    pub cooldown_s: u64,
    /// The least time between two `running` events of a battle.
    pub score_interval_ms: u64,
    /// Whether the invited room must be live (tests of the rules without video turn
    /// it off).
    pub require_live: bool,
}

impl Default for PkSettings {
    fn default() -> Self {
        PkSettings {
            default_seconds: 300,
            min_seconds: 10,
            max_seconds: 3600,
            invite_ttl_ms: 30_000,
            max_per_window: 2,
            window_s: 7200,
            cooldown_s: 600,
            score_interval_ms: 250,
            require_live: true,
        }
    }
}

impl PkSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.min_seconds == 0
            || self.min_seconds > self.max_seconds
            || !(self.min_seconds..=self.max_seconds).contains(&self.default_seconds)
        {
            anyhow::bail!("pk: 0 < min_seconds <= default_seconds <= max_seconds");
        }
        if self.invite_ttl_ms == 0 || self.score_interval_ms == 0 || self.max_per_window == 0 {
            anyhow::bail!("pk.invite_ttl_ms, score_interval_ms and max_per_window must be > 0");
        }
        Ok(())
    }
}

/// Why a battle action is refused. Mapped to the protocol's codes in one place,
/// `From<Refusal> for Rejection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The invite is malformed (yourself, a length out of range).
    BadInvite(String),
    /// Only a room's broadcaster may invite from it or answer for it.
    NotYours,
    /// The opponent's room is not live.
    Offline(String),
    /// No such battle.
    Unknown,
    /// A room is already in a battle or invited to one.
    Busy(String),
    /// The invite was answered already or ran out.
    Answered(State),
    /// The platform's limits on battles: how long until one may be started.
    TooSoon { retry_after_ms: u64, why: String },
    /// The battles' store could not be read or written.
    Unavailable(String),
}

impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Rejection {
        match refusal {
            Refusal::BadInvite(why) => Rejection::bad_request(why),
            Refusal::NotYours => Rejection::new(
                ErrorCode::Forbidden,
                "only the room's broadcaster may do this",
            ),
            Refusal::Offline(room) => {
                Rejection::new(ErrorCode::NotFound, format!("{room:?} is not live"))
            }
            Refusal::Unknown => Rejection::new(ErrorCode::NotFound, "no such battle"),
            Refusal::Busy(room) => Rejection::new(
                ErrorCode::Conflict,
                format!("{room:?} is already in a battle or invited to one"),
            ),
            Refusal::Answered(state) => Rejection::new(
                ErrorCode::Conflict,
                format!("the invite is {}", state.as_str()),
            ),
            Refusal::TooSoon {
                retry_after_ms,
                why,
            } => Rejection::new(ErrorCode::RateLimited, why).retry_after(retry_after_ms),
            Refusal::Unavailable(why) => Rejection::new(ErrorCode::Unavailable, why),
        }
    }
}

/// A battle as rooms, pages and the HTTP API see it, with the scores of `tally`.
pub fn view(battle: &Battle, tally: &Tally) -> crate::protocol::PkView {
    let scores = tally.scores();
    let rooms = &battle.rooms;
    crate::protocol::PkView {
        pk: battle.id.clone(),
        state: battle.state.as_str().to_owned(),
        rooms: rooms.clone(),
        seconds: battle.seconds,
        started_at: battle.started_ms,
        ends_at: battle.ends_ms(),
        scores: rooms.iter().cloned().zip(scores).collect(),
        top: (0..2)
            .map(|side| (rooms[side].clone(), tally.top(side)))
            .collect(),
        winner: match battle.state {
            State::Finished => battle.winner(scores).map(str::to_owned),
            _ => None,
        },
    }
}
