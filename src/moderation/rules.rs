//! A room's moderation state, folded from its log of actions: moderators, bans and
//! timeouts, slow mode, blocked terms, suspended gifting. It answers who may
//! moderate whom, and whether a user may chat or pay in the room now. Times are
//! milliseconds since the Unix epoch that the caller reads from its clock.

use std::collections::{HashMap, HashSet};

use crate::auth::{Role, User};
use crate::protocol::{AssistantSettings, ModAction, ModerationRecord, UserRef};

use super::action::Action;
use super::terms::BlockedTerms;
use super::Refusal;

/// A room may block at most this many terms of its own.
pub const MAX_ROOM_TERMS: usize = 1000;
/// Slow mode's memory of who chatted when is pruned past this many users.
const SLOW_MEMORY: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct RoomRules {
    room: String,
    rev: u64,
    moderators: HashSet<String>,
    /// Banned (`None`) or timed out until a time.
    restrictions: HashMap<String, Option<u64>>,
    slow_s: u64,
    terms: Vec<String>,
    blocked: BlockedTerms,
    gifting_suspended: bool,
    assistant: AssistantSettings,
    /// When each user last chatted here (slow mode; this node's own memory).
    last_chat: HashMap<String, u64>,
}

/// A user's place in a room, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    Admin,
    Broadcaster,
    Moderator,
    Member,
}

/// What a moderator sees of a room's rules.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RulesView {
    pub rev: u64,
    pub slow: u64,
    pub gifting_suspended: bool,
    pub assistant: AssistantSettings,
    pub moderators: Vec<String>,
    pub terms: Vec<String>,
    /// Bans and timeouts in force: `until_ms` is null for a ban.
    pub restricted: Vec<Restricted>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Restricted {
    pub user: String,
    pub until_ms: Option<u64>,
}

impl RoomRules {
    pub fn new(room: &str) -> RoomRules {
        RoomRules {
            room: room.to_owned(),
            ..RoomRules::default()
        }
    }

    /// The rules a room's whole log leaves, oldest record first.
    pub fn fold(room: &str, log: impl IntoIterator<Item = ModerationRecord>) -> RoomRules {
        let mut rules = RoomRules::new(room);
        for record in log {
            rules.apply(&record);
        }
        rules
    }

    /// The last record applied.
    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// Applies the record that follows the last one.
    ///
    /// # Panics
    /// When the record is not the next one: a log read or delivered out of order.
    pub fn apply(&mut self, record: &ModerationRecord) {
        assert_eq!(
            record.rev,
            self.rev + 1,
            "moderation records apply in order"
        );
        self.rev = record.rev;
        let user = record.user.as_ref().map(|u| u.id.clone());
        match (record.action, user) {
            (ModAction::Timeout, Some(user)) => {
                self.restrictions.insert(user, record.until_ms);
            }
            (ModAction::Ban, Some(user)) => {
                self.restrictions.insert(user, None);
            }
            (ModAction::Unban, Some(user)) => {
                self.restrictions.remove(&user);
            }
            (ModAction::ModsAdd, Some(user)) => {
                self.moderators.insert(user);
            }
            (ModAction::ModsRemove, Some(user)) => {
                self.moderators.remove(&user);
            }
            (ModAction::Slow, _) => {
                self.slow_s = record.seconds.unwrap_or(0);
                self.last_chat.clear();
            }
            (ModAction::TermsAdd, _) => {
                if let Some(term) = &record.term {
                    if !self.terms.contains(term) {
                        self.terms.push(term.clone());
                        self.rebuild_terms();
                    }
                }
            }
            (ModAction::TermsRemove, _) => {
                if let Some(term) = &record.term {
                    self.terms.retain(|t| t != term);
                    self.rebuild_terms();
                }
            }
            (ModAction::SuspendGifts, _) => self.gifting_suspended = true,
            (ModAction::ResumeGifts, _) => self.gifting_suspended = false,
            (ModAction::Assistant, _) => {
                if let Some(settings) = &record.assistant {
                    self.assistant = settings.clone();
                }
            }
            // A delete changes the room's history, not its rules.
            _ => {}
        }
    }

    fn rebuild_terms(&mut self) {
        // Terms were checked when taken, so building them again cannot fail.
        self.blocked = BlockedTerms::new(&self.terms).unwrap_or_default();
    }

    pub fn standing(&self, user: &User) -> Standing {
        if user.role == Role::Admin {
            Standing::Admin
        } else if user.owns_room(&self.room) {
            Standing::Broadcaster
        } else if self.moderators.contains(&user.id) {
            Standing::Moderator
        } else {
            Standing::Member
        }
    }

    /// Whether `actor` may take `action`, on `target` (the user acted on, as the server
    /// last saw them; `None` when it has never seen them).
    pub fn authorize(
        &self,
        actor: &User,
        action: &Action,
        target: Option<(&UserRef, Role)>,
    ) -> Result<(), Refusal> {
        let standing = self.standing(actor);
        if standing == Standing::Member {
            return Err(Refusal::NotAllowed(
                "only the room's broadcaster, its moderators and admins can moderate",
            ));
        }
        match action {
            Action::SuspendGifts { .. } | Action::ResumeGifts { .. }
                if standing != Standing::Admin =>
            {
                return Err(Refusal::NotAllowed(
                    "only a platform admin can suspend or resume gifting",
                ))
            }
            Action::ModsAdd { .. } | Action::ModsRemove { .. }
                if standing == Standing::Moderator =>
            {
                return Err(Refusal::NotAllowed(
                    "only the broadcaster appoints or removes moderators",
                ))
            }
            _ => {}
        }
        let Some(user) = action.target() else {
            return self.check_state(action);
        };
        let (target, role) = target.ok_or_else(|| Refusal::UnknownUser(user.to_owned()))?;
        if target.id == actor.id {
            return Err(Refusal::Invalid("you cannot moderate yourself"));
        }
        let restricts = matches!(action, Action::Restrict { .. });
        if restricts && target.id == self.room {
            return Err(Refusal::NotAllowed(
                "the broadcaster cannot be banned from their own room",
            ));
        }
        if restricts && role == Role::Admin {
            return Err(Refusal::NotAllowed("an admin cannot be banned"));
        }
        if restricts && standing == Standing::Moderator && self.moderators.contains(&target.id) {
            return Err(Refusal::NotAllowed(
                "a moderator cannot ban another moderator",
            ));
        }
        if matches!(action, Action::ModsAdd { .. }) && target.id == self.room {
            return Err(Refusal::Invalid(
                "the broadcaster already moderates their room",
            ));
        }
        self.check_state(action)
    }

    /// Refuses actions that would change nothing the caller means to change.
    fn check_state(&self, action: &Action) -> Result<(), Refusal> {
        match action {
            Action::Unban { user, .. } if !self.restrictions.contains_key(user) => Err(
                Refusal::NotFound(format!("{user} is not banned or timed out here")),
            ),
            Action::ModsRemove { user } if !self.moderators.contains(user) => {
                Err(Refusal::NotFound(format!("{user} is not a moderator here")))
            }
            Action::TermsRemove { term } if !self.terms.contains(term) => {
                Err(Refusal::NotFound(format!("{term:?} is not blocked here")))
            }
            Action::TermsAdd { .. } if self.terms.len() >= MAX_ROOM_TERMS => {
                Err(Refusal::Invalid("a room blocks at most 1000 terms"))
            }
            _ => Ok(()),
        }
    }

    /// The record of `action` taken now (its `rev` is the store's to give).
    pub fn record(
        actor: &User,
        action: &Action,
        target: Option<&UserRef>,
        now_ms: u64,
    ) -> ModerationRecord {
        let mut record = ModerationRecord {
            rev: 0,
            at_ms: now_ms,
            action: action.kind(),
            by: actor.as_ref(),
            user: target.cloned(),
            event: None,
            seconds: None,
            until_ms: None,
            reason: None,
            term: None,
            assistant: None,
        };
        match action {
            Action::Delete { event } => record.event = Some(event.clone()),
            Action::Restrict {
                seconds, reason, ..
            } => {
                record.seconds = *seconds;
                record.until_ms = seconds.map(|s| now_ms + s * 1000);
                record.reason = reason.clone();
            }
            Action::Unban { reason, .. }
            | Action::SuspendGifts { reason }
            | Action::ResumeGifts { reason } => record.reason = reason.clone(),
            Action::Slow { seconds } => record.seconds = Some(*seconds),
            Action::TermsAdd { term } | Action::TermsRemove { term } => {
                record.term = Some(term.clone())
            }
            Action::Assistant(settings) => record.assistant = Some(settings.clone()),
            Action::ModsAdd { .. } | Action::ModsRemove { .. } => {}
        }
        record
    }

    /// A ban or a timeout of `user` in force now.
    pub fn restriction(&self, user: &str, now_ms: u64) -> Option<Refusal> {
        match self.restrictions.get(user)? {
            None => Some(Refusal::Banned { left_ms: None }),
            Some(until) if *until > now_ms => Some(Refusal::Banned {
                left_ms: Some(until - now_ms),
            }),
            Some(_) => None,
        }
    }

    /// Whether `user` may say `text` now; if so, slow mode counts it.
    pub fn may_chat(&mut self, user: &User, text: &str, now_ms: u64) -> Result<(), Refusal> {
        if let Some(refusal) = self.restriction(&user.id, now_ms) {
            return Err(refusal);
        }
        let exempt = self.standing(user) != Standing::Member;
        if !exempt && self.blocked.found_in(text) {
            return Err(Refusal::BlockedTerm);
        }
        if self.slow_s == 0 || exempt {
            return Ok(());
        }
        let period = self.slow_s * 1000;
        if let Some(last) = self.last_chat.get(&user.id) {
            let next = last + period;
            if next > now_ms {
                return Err(Refusal::Slow {
                    seconds: self.slow_s,
                    left_ms: next - now_ms,
                });
            }
        }
        if self.last_chat.len() >= SLOW_MEMORY {
            self.last_chat.retain(|_, last| *last + period > now_ms);
        }
        self.last_chat.insert(user.id.clone(), now_ms);
        Ok(())
    }

    /// Whether `user` may pay in the room now (gifts, questions, red packets, grabs).
    pub fn may_pay(&self, user: &User, now_ms: u64) -> Result<(), Refusal> {
        self.restriction(&user.id, now_ms).map_or(Ok(()), Err)
    }

    /// Whether the room's broadcaster may be paid (gifts and questions).
    pub fn may_pay_broadcaster(&self) -> Result<(), Refusal> {
        if self.gifting_suspended {
            Err(Refusal::GiftingSuspended)
        } else {
            Ok(())
        }
    }

    pub fn is_moderator(&self, user: &str) -> bool {
        self.moderators.contains(user)
    }

    pub fn slow_seconds(&self) -> u64 {
        self.slow_s
    }

    pub fn assistant(&self) -> &AssistantSettings {
        &self.assistant
    }

    pub fn view(&self, now_ms: u64) -> RulesView {
        let mut moderators: Vec<String> = self.moderators.iter().cloned().collect();
        moderators.sort();
        let mut restricted: Vec<Restricted> = (self.restrictions.iter())
            .filter(|(_, until)| until.is_none_or(|until| until > now_ms))
            .map(|(user, until_ms)| Restricted {
                user: user.clone(),
                until_ms: *until_ms,
            })
            .collect();
        restricted.sort_by(|a, b| a.user.cmp(&b.user));
        RulesView {
            rev: self.rev,
            slow: self.slow_s,
            gifting_suspended: self.gifting_suspended,
            assistant: self.assistant.clone(),
            moderators,
            terms: self.terms.clone(),
            restricted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, role: Role) -> User {
        User {
            id: id.into(),
            name: id.to_uppercase(),
            role,
            minor: false,
        }
    }

    fn rules_after(actions: &[(User, Action, Option<Role>)], now_ms: u64) -> RoomRules {
        let mut rules = RoomRules::new("alice");
        for (actor, action, role) in actions {
            let target = action.target().map(|id| UserRef {
                id: id.into(),
                name: id.into(),
            });
            let target_role = target.as_ref().map(|t| (t, role.unwrap_or(Role::Viewer)));
            rules.authorize(actor, action, target_role).unwrap();
            let mut record = RoomRules::record(actor, action, target.as_ref(), now_ms);
            record.rev = rules.rev() + 1;
            rules.apply(&record);
        }
        rules
    }

    fn alice() -> User {
        user("alice", Role::Broadcaster)
    }

    #[test]
    fn a_timeout_ends_and_a_ban_does_not() {
        let rules = rules_after(
            &[
                (
                    alice(),
                    Action::Restrict {
                        user: "bob".into(),
                        seconds: Some(60),
                        reason: None,
                    },
                    None,
                ),
                (
                    alice(),
                    Action::Restrict {
                        user: "eve".into(),
                        seconds: None,
                        reason: None,
                    },
                    None,
                ),
            ],
            1_000,
        );
        let bob = user("bob", Role::Viewer);
        assert_eq!(
            rules.may_pay(&bob, 1_000),
            Err(Refusal::Banned {
                left_ms: Some(60_000)
            })
        );
        assert_eq!(rules.may_pay(&bob, 61_000), Ok(()));
        let eve = user("eve", Role::Viewer);
        assert_eq!(
            rules.may_pay(&eve, u64::MAX / 2),
            Err(Refusal::Banned { left_ms: None })
        );
    }

    #[test]
    fn moderators_cannot_touch_the_broadcaster_admins_or_each_other() {
        let rules = rules_after(
            &[
                (alice(), Action::ModsAdd { user: "mo".into() }, None),
                (alice(), Action::ModsAdd { user: "max".into() }, None),
            ],
            0,
        );
        let mo = user("mo", Role::Viewer);
        let ban = |id: &str| Action::Restrict {
            user: id.into(),
            seconds: None,
            reason: None,
        };
        let card = |id: &str| UserRef {
            id: id.into(),
            name: id.into(),
        };
        let (alice_card, admin_card, max_card, bob_card) =
            (card("alice"), card("root"), card("max"), card("bob"));
        for (target, role) in [
            (&alice_card, Role::Broadcaster),
            (&admin_card, Role::Admin),
            (&max_card, Role::Viewer),
        ] {
            let refused = rules.authorize(&mo, &ban(&target.id), Some((target, role)));
            assert!(matches!(refused, Err(Refusal::NotAllowed(_))), "{target:?}");
        }
        assert_eq!(
            rules.authorize(&mo, &ban("bob"), Some((&bob_card, Role::Viewer))),
            Ok(())
        );
        // The broadcaster may ban a moderator; nobody may ban an unknown user.
        assert_eq!(
            rules.authorize(&alice(), &ban("max"), Some((&max_card, Role::Viewer))),
            Ok(())
        );
        assert_eq!(
            rules.authorize(&alice(), &ban("ghost"), None),
            Err(Refusal::UnknownUser("ghost".into()))
        );
        // Only the broadcaster (or an admin) appoints; only an admin suspends gifting.
        let appoint = Action::ModsAdd { user: "bob".into() };
        assert!(rules
            .authorize(&mo, &appoint, Some((&bob_card, Role::Viewer)))
            .is_err());
        let suspend = Action::SuspendGifts { reason: None };
        assert!(rules.authorize(&alice(), &suspend, None).is_err());
        let root = user("root", Role::Admin);
        assert_eq!(rules.authorize(&root, &suspend, None), Ok(()));
        let viewer = user("vic", Role::Viewer);
        assert!(rules
            .authorize(&viewer, &Action::Slow { seconds: 3 }, None)
            .is_err());
    }

    #[test]
    fn slow_mode_spares_moderators_and_counts_per_user() {
        let mut rules = rules_after(
            &[
                (alice(), Action::ModsAdd { user: "mo".into() }, None),
                (alice(), Action::Slow { seconds: 10 }, None),
            ],
            0,
        );
        let bob = user("bob", Role::Viewer);
        assert_eq!(rules.may_chat(&bob, "hi", 1_000), Ok(()));
        assert_eq!(
            rules.may_chat(&bob, "again", 4_000),
            Err(Refusal::Slow {
                seconds: 10,
                left_ms: 7_000
            })
        );
        assert_eq!(rules.may_chat(&bob, "later", 11_000), Ok(()));
        let mo = user("mo", Role::Viewer);
        for at in [1_000, 1_001, 1_002] {
            assert_eq!(rules.may_chat(&mo, "mod talk", at), Ok(()));
            assert_eq!(rules.may_chat(&alice(), "host talk", at), Ok(()));
        }
    }

    #[test]
    fn room_terms_block_members_and_can_be_removed() {
        let mut rules = rules_after(
            &[(
                alice(),
                Action::TermsAdd {
                    term: "Scam".into(),
                },
                None,
            )],
            0,
        );
        let bob = user("bob", Role::Viewer);
        assert_eq!(
            rules.may_chat(&bob, "a ＳＣＡＭ link", 0),
            Err(Refusal::BlockedTerm)
        );
        let remove = Action::TermsRemove {
            term: "Scam".into(),
        };
        assert_eq!(rules.authorize(&alice(), &remove, None), Ok(()));
        let mut record = RoomRules::record(&alice(), &remove, None, 0);
        record.rev = 2;
        rules.apply(&record);
        assert_eq!(rules.may_chat(&bob, "a scam link", 0), Ok(()));
        assert!(matches!(
            rules.authorize(&alice(), &remove, None),
            Err(Refusal::NotFound(_))
        ));
    }

    #[test]
    #[should_panic(expected = "in order")]
    fn records_apply_only_in_order() {
        let mut rules = RoomRules::new("alice");
        let mut record = RoomRules::record(&alice(), &Action::Slow { seconds: 3 }, None, 0);
        record.rev = 2;
        rules.apply(&record);
    }
}
