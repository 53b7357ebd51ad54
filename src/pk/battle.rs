//! A battle's life, as a value: invited → running → finished, or declined, or
//! expired. Each step checks who takes it and when; the store keeps the value, the
//! hub drives it.

use serde::{Deserialize, Serialize};

use super::{PkSettings, Refusal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Invited,
    Running,
    Finished,
    Declined,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Invited => "invited",
            State::Running => "running",
            State::Finished => "finished",
            State::Declined => "declined",
            State::Expired => "expired",
        }
    }

    /// Whether the battle still holds its rooms (no other battle may start there).
    pub fn holds_rooms(self) -> bool {
        matches!(self, State::Invited | State::Running)
    }
}

/// What an invite asks for, as the inviter sent it.
pub struct Invite<'a> {
    pub room: &'a str,
    pub opponent: &'a str,
    pub seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Battle {
    pub id: String,
    /// The inviter's room, then the opponent's.
    pub rooms: [String; 2],
    pub seconds: u64,
    pub invited_ms: u64,
    pub expires_ms: u64,
    pub state: State,
    #[serde(default)]
    pub started_ms: Option<u64>,
    /// The final scores, in `rooms` order, once finished.
    #[serde(default)]
    pub scores: Option<[u64; 2]>,
}

impl Battle {
    /// A new invite, checked on its own (the rules that need other battles are
    /// `allowed_beside`).
    pub fn invite(
        id: String,
        invite: Invite,
        now_ms: u64,
        settings: &PkSettings,
    ) -> Result<Battle, Refusal> {
        if invite.room == invite.opponent {
            return Err(Refusal::BadInvite(
                "a broadcaster cannot battle themselves".into(),
            ));
        }
        let seconds = invite.seconds.unwrap_or(settings.default_seconds);
        if !(settings.min_seconds..=settings.max_seconds).contains(&seconds) {
            return Err(Refusal::BadInvite(format!(
                "seconds must be from {} to {}",
                settings.min_seconds, settings.max_seconds
            )));
        }
        Ok(Battle {
            id,
            rooms: [invite.room.to_owned(), invite.opponent.to_owned()],
            seconds,
            invited_ms: now_ms,
            expires_ms: now_ms + settings.invite_ttl_ms,
            state: State::Invited,
            started_ms: None,
            scores: None,
        })
    }

    /// The state at `now_ms`: an invite nobody answered in time has expired.
    pub fn state_at(&self, now_ms: u64) -> State {
        match self.state {
            State::Invited if now_ms >= self.expires_ms => State::Expired,
            state => state,
        }
    }

    pub fn ends_ms(&self) -> Option<u64> {
        self.started_ms.map(|started| started + self.seconds * 1000)
    }

    /// Whether this battle may begin beside `others` (battles of either room: those
    /// still holding a room, and those started within the window or the cooldown).
    pub fn allowed_beside(
        &self,
        others: &[Battle],
        now_ms: u64,
        settings: &PkSettings,
    ) -> Result<(), Refusal> {
        let others = || others.iter().filter(|b| b.id != self.id);
        for room in &self.rooms {
            let theirs = || others().filter(|b| b.rooms.contains(room));
            if theirs().any(|b| b.state_at(now_ms).holds_rooms()) {
                return Err(Refusal::Busy(room.clone()));
            }
            let window_ms = settings.window_s * 1000;
            let mut started: Vec<u64> = theirs()
                .filter_map(|b| b.started_ms)
                .filter(|&at| at + window_ms > now_ms)
                .collect();
            if started.len() >= settings.max_per_window {
                started.sort_unstable();
                let frees_at = started[started.len() - settings.max_per_window] + window_ms;
                return Err(Refusal::TooSoon {
                    retry_after_ms: frees_at - now_ms,
                    why: format!(
                        "{room:?} has had {} battles within {} s",
                        started.len(),
                        settings.window_s
                    ),
                });
            }
        }
        let pair =
            |b: &&Battle| b.rooms.contains(&self.rooms[0]) && b.rooms.contains(&self.rooms[1]);
        let cooldown_ms = settings.cooldown_s * 1000;
        let last_end = others().filter(pair).filter_map(Battle::ends_ms).max();
        if let Some(ended) = last_end.filter(|&end| end + cooldown_ms > now_ms) {
            return Err(Refusal::TooSoon {
                retry_after_ms: ended + cooldown_ms - now_ms,
                why: format!(
                    "these two rooms battled less than {} s ago",
                    settings.cooldown_s
                ),
            });
        }
        Ok(())
    }

    /// The opponent's broadcaster accepts: the battle runs from now.
    pub fn accept(&mut self, by_room: &str, now_ms: u64) -> Result<(), Refusal> {
        self.answerable(by_room, now_ms)?;
        self.state = State::Running;
        self.started_ms = Some(now_ms);
        Ok(())
    }

    /// The opponent's broadcaster declines.
    pub fn decline(&mut self, by_room: &str, now_ms: u64) -> Result<(), Refusal> {
        self.answerable(by_room, now_ms)?;
        self.state = State::Declined;
        Ok(())
    }

    fn answerable(&self, by_room: &str, now_ms: u64) -> Result<(), Refusal> {
        if by_room != self.rooms[1] {
            return Err(Refusal::NotYours);
        }
        match self.state_at(now_ms) {
            State::Invited => Ok(()),
            state => Err(Refusal::Answered(state)),
        }
    }

    /// Whether the battle's time is up at `now_ms`.
    pub fn over_at(&self, now_ms: u64) -> bool {
        self.state == State::Running && self.ends_ms().is_some_and(|end| now_ms >= end)
    }

    /// Ends a running battle with its final scores.
    pub fn finish(&mut self, scores: [u64; 2]) {
        assert_eq!(self.state, State::Running, "only a running battle finishes");
        self.state = State::Finished;
        self.scores = Some(scores);
    }

    /// The room with more points; `None` for a draw.
    pub fn winner(&self, scores: [u64; 2]) -> Option<&str> {
        match scores[0].cmp(&scores[1]) {
            std::cmp::Ordering::Greater => Some(&self.rooms[0]),
            std::cmp::Ordering::Less => Some(&self.rooms[1]),
            std::cmp::Ordering::Equal => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PkSettings {
        PkSettings::default()
    }

    fn invite(id: &str, a: &str, b: &str, now: u64) -> Battle {
        let asked = Invite {
            room: a,
            opponent: b,
            seconds: None,
        };
        Battle::invite(id.into(), asked, now, &settings()).unwrap()
    }

    #[test]
    fn an_invite_names_someone_else_and_a_length_within_the_limits() {
        let asked = |opponent, seconds| Invite {
            room: "a",
            opponent,
            seconds,
        };
        let s = settings();
        assert!(Battle::invite("p".into(), asked("a", None), 0, &s).is_err());
        assert!(Battle::invite("p".into(), asked("b", Some(9)), 0, &s).is_err());
        assert!(Battle::invite("p".into(), asked("b", Some(3601)), 0, &s).is_err());
        let battle = Battle::invite("p".into(), asked("b", None), 5, &s).unwrap();
        assert_eq!((battle.seconds, battle.expires_ms), (300, 30_005));
    }

    #[test]
    fn only_the_opponent_answers_and_only_in_time() {
        let mut battle = invite("p", "a", "b", 0);
        assert_eq!(battle.accept("a", 1), Err(Refusal::NotYours));
        assert_eq!(
            battle.clone().accept("b", 30_000),
            Err(Refusal::Answered(State::Expired))
        );
        battle.accept("b", 1_000).unwrap();
        assert_eq!(battle.ends_ms(), Some(301_000));
        assert_eq!(
            battle.decline("b", 2_000),
            Err(Refusal::Answered(State::Running))
        );
        assert!(!battle.over_at(300_999));
        assert!(battle.over_at(301_000));
    }

    #[test]
    fn a_room_holds_one_battle_and_the_platform_limits_how_often() {
        let s = settings();
        let mut running = invite("p1", "a", "b", 0);
        running.accept("b", 0).unwrap();
        let next = invite("p2", "a", "c", 1_000);
        assert_eq!(
            next.allowed_beside(std::slice::from_ref(&running), 1_000, &s),
            Err(Refusal::Busy("a".into()))
        );
        // An invite nobody answered stops holding its rooms when it expires.
        let stale = invite("p0", "c", "d", 0);
        let other = invite("p3", "d", "e", 30_000);
        assert!(other.allowed_beside(&[stale], 30_000, &s).is_ok());
        // Two battles ran within the window: the third waits until the first leaves it.
        running.finish([1, 2]);
        let mut second = invite("p4", "a", "c", 400_000);
        second.accept("c", 400_000).unwrap();
        second.finish([0, 0]);
        let third = invite("p5", "a", "e", 800_000);
        match third.allowed_beside(&[running.clone(), second.clone()], 800_000, &s) {
            Err(Refusal::TooSoon { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, 7_200_000 - 800_000)
            }
            other => panic!("{other:?}"),
        }
        // The same pair again within the cooldown (after its end at 300 s).
        let again = invite("p6", "b", "a", 500_000);
        match again.allowed_beside(&[running], 500_000, &s) {
            Err(Refusal::TooSoon { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, 300_000 + 600_000 - 500_000)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn more_points_win_and_equal_points_draw() {
        let battle = invite("p", "a", "b", 0);
        assert_eq!(battle.winner([5, 3]), Some("a"));
        assert_eq!(battle.winner([3, 5]), Some("b"));
        assert_eq!(battle.winner([4, 4]), None);
    }
}
