//! The hub's side of moderation: each room's rules as this node holds them, kept in
//! step with the room's log in the store, and the actions moderators take.
//!
//! A room's rules are its log folded (`moderation::RoomRules`). Every action is
//! appended to the log (which numbers it, `rev`), applied here, and announced to the
//! room as a `moderation` event; every node applies that event as its room delivers
//! it, before its members see it. A node that misses a record (a gap in `rev`, an
//! event without the blocked term it added, a history restarted) marks the rules
//! stale and reads the rest of the log before it next checks anyone.

use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashSet;

use super::{Hub, Room};
use crate::auth::{Role, User};
use crate::clock::Clock;
use crate::ids::event_id;
use crate::moderation::{
    Action, BlockedTerms, ModerationStore, Refusal, RoomRules, RulesView, Standing, StoreError,
};
use crate::protocol::{ErrorCode, ModAction, ModerationRecord, Rejection, RoomEventBody, UserRef};

/// What the hub moderates with.
pub struct Moderation {
    pub store: Arc<dyn ModerationStore>,
    pub clock: Clock,
    /// Terms no chat message may contain, in any room (`[moderation] blocked_terms`).
    pub platform_terms: BlockedTerms,
}

/// The users this node has recorded in the store as having written.
#[derive(Default)]
pub(super) struct Remembered(DashSet<String>);

/// A room's rules on this node.
#[derive(Default)]
pub struct RoomModeration {
    slot: Mutex<Slot>,
    /// One reader of the store per room at a time.
    loading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Slot {
    /// `None` until first read from the store.
    rules: Option<RoomRules>,
    /// A record was delivered that these rules could not take: read the log again.
    stale: bool,
}

/// What a joining user learns of a room's moderation.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct JoinModeration {
    pub slow: u64,
    /// Whether the user may moderate the room.
    pub moderator: bool,
}

impl RoomModeration {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A record delivered to the room: applied if it is the next one and whole (a
    /// room's events leave out blocked terms); otherwise the rules are read again.
    pub fn delivered(&self, record: &ModerationRecord) {
        let mut slot = self.slot();
        let whole = !matches!(record.action, ModAction::TermsAdd | ModAction::TermsRemove)
            || record.term.is_some();
        match &mut slot.rules {
            Some(rules) if record.rev <= rules.rev() => {}
            Some(rules) if record.rev == rules.rev() + 1 && whole => rules.apply(record),
            _ => slot.stale = true,
        }
    }

    /// The broadcaster's thanks template, when the assistant is to thank gifts.
    pub fn thanks_template(&self) -> Option<String> {
        let slot = self.slot();
        let settings = slot.rules.as_ref()?.assistant();
        settings.thanks.then(|| settings.template.clone())
    }

    /// How long a paid question may wait for an answer, once the rules are read.
    pub fn answer_window_ms(&self) -> Option<u64> {
        let slot = self.slot();
        Some(slot.rules.as_ref()?.assistant().answer_window_s * 1000)
    }

    /// What a joining user learns; none of it before the rules are read.
    pub fn for_join(&self, user: Option<&User>) -> JoinModeration {
        let slot = self.slot();
        slot.rules.as_ref().map_or(
            JoinModeration {
                slow: 0,
                moderator: false,
            },
            |rules| JoinModeration {
                slow: rules.slow_seconds(),
                moderator: user.is_some_and(|u| rules.standing(u) != Standing::Member),
            },
        )
    }

    /// The room's history restarted: records may have been missed.
    pub fn mark_stale(&self) {
        self.slot().stale = true;
    }

    /// Whether the rules were read and missed no record since.
    fn is_fresh(&self) -> bool {
        let slot = self.slot();
        slot.rules.is_some() && !slot.stale
    }
}

impl Remembered {
    /// True the first time this node sees the user.
    fn first_time(&self, user: &str) -> bool {
        !self.0.contains(user) && self.0.insert(user.to_owned())
    }
}

fn unavailable(error: StoreError) -> Rejection {
    tracing::warn!(%error, "moderation store");
    Rejection::unavailable("moderation is unavailable; try again")
}

impl Hub {
    /// Makes sure the room's rules are those of its whole log: read from the store
    /// the first time, and again after a record was missed.
    pub(super) async fn rules_ready(&self, room: &Room) -> Result<(), Rejection> {
        let _one_reader = room.moderation.loading.lock().await;
        loop {
            let after = {
                let mut slot = room.moderation.slot();
                if slot.rules.is_some() && !slot.stale {
                    return Ok(());
                }
                slot.stale = false;
                slot.rules.as_ref().map_or(0, RoomRules::rev)
            };
            let records = (self.moderation.store)
                .log(&room.name, after)
                .await
                .map_err(unavailable)?;
            let mut slot = room.moderation.slot();
            let rules = slot.rules.get_or_insert_with(|| RoomRules::new(&room.name));
            for record in &records {
                if record.rev > rules.rev() {
                    rules.apply(record);
                }
            }
        }
    }

    /// Runs `with` on the room's rules: at once when they are up to date (one lock,
    /// the hot path), else after reading the log.
    async fn with_rules<T>(
        &self,
        room: &Room,
        with: impl FnOnce(&mut RoomRules) -> T,
    ) -> Result<T, Rejection> {
        {
            let mut slot = room.moderation.slot();
            if let (false, Some(rules)) = (slot.stale, slot.rules.as_mut()) {
                return Ok(with(rules));
            }
        }
        self.rules_ready(room).await?;
        // Read just now: a record delivered meanwhile is applied already, or marks them
        // stale for the next check.
        let mut slot = room.moderation.slot();
        let rules = slot.rules.as_mut().ok_or_else(|| {
            Rejection::unavailable("the room's moderation rules are not loaded; try again")
        })?;
        Ok(with(rules))
    }

    /// Reads the room's rules before its first join on this node. A store that cannot
    /// give them now leaves them unread: watching does not depend on them (writing
    /// does, and reads them again).
    pub(super) async fn prepare_rules(&self, room: &Room) {
        if room.moderation.is_fresh() {
            return;
        }
        if let Err(rejection) = self.rules_ready(room).await {
            tracing::warn!(
                room = room.name,
                message = rejection.message,
                "rules not read"
            );
        }
    }

    /// Whether `user` may say `text` in the room now (bans, timeouts, blocked terms,
    /// slow mode); if so slow mode counts it.
    pub(super) async fn check_chat(
        &self,
        room: &Room,
        user: &User,
        text: &str,
    ) -> Result<(), Rejection> {
        if self.moderation.platform_terms.found_in(text) {
            return Err(Refusal::BlockedTerm.into());
        }
        let now = self.moderation.clock.now_ms();
        self.with_rules(room, |rules| rules.may_chat(user, text, now))
            .await??;
        self.remember(user).await;
        Ok(())
    }

    /// Whether `user` may pay in the room now; `to_broadcaster` for gifts and
    /// questions, which a suspension of gifting refuses.
    pub(super) async fn check_payment(
        &self,
        room: &Room,
        user: &User,
        to_broadcaster: bool,
    ) -> Result<(), Rejection> {
        let now = self.moderation.clock.now_ms();
        self.with_rules(room, |rules| {
            rules.may_pay(user, now)?;
            if to_broadcaster {
                rules.may_pay_broadcaster()?;
            }
            Ok::<_, Refusal>(())
        })
        .await??;
        self.remember(user).await;
        Ok(())
    }

    /// Records that the user writes, once per node, so that moderators can name them.
    /// Awaited (the first time only): a moderator acting on the message a moment
    /// later, on any node, finds its author.
    async fn remember(&self, user: &User) {
        if !self.remembered.first_time(&user.id) {
            return;
        }
        if let Err(error) = self
            .moderation
            .store
            .remember(&user.as_ref(), user.role)
            .await
        {
            tracing::warn!(%error, user = user.id, "a writer was not recorded");
        }
    }

    /// The user an action names, as last seen writing. A room's broadcaster is known
    /// by the room even before they wrote.
    async fn target(&self, room: &Room, id: &str) -> Result<Option<(UserRef, Role)>, Rejection> {
        let known = (self.moderation.store.user(id).await).map_err(unavailable)?;
        Ok(known.or_else(|| {
            (id == room.name).then(|| {
                let card = UserRef {
                    id: id.to_owned(),
                    name: id.to_owned(),
                };
                (card, Role::Broadcaster)
            })
        }))
    }

    /// Takes a moderation action in a room: checked, kept in the room's log, applied
    /// on every node, announced to the room.
    pub async fn moderate(
        &self,
        actor: &User,
        room: &Room,
        action: Action,
    ) -> Result<ModerationRecord, Rejection> {
        let target = match action.target() {
            Some(id) => self.target(room, id).await?,
            None => None,
        };
        let target_role = target.as_ref().map(|(card, role)| (card, *role));
        self.with_rules(room, |rules| rules.authorize(actor, &action, target_role))
            .await??;
        if let Action::Delete { event } = &action {
            if !room.can_delete(event) {
                return Err(Rejection::new(
                    ErrorCode::NotFound,
                    format!("no chat message, question or answer {event:?} in this room's history"),
                ));
            }
        }
        let now = self.moderation.clock.now_ms();
        let record = RoomRules::record(actor, &action, target.as_ref().map(|(c, _)| c), now);
        let store = &self.moderation.store;
        store
            .remember(&actor.as_ref(), actor.role)
            .await
            .map_err(unavailable)?;
        let record = store
            .append(&room.name, record)
            .await
            .map_err(unavailable)?;
        room.moderation.delivered(&record);
        crate::metrics::moderation_action(record.action);
        let told = serde_json::to_value(&record).unwrap_or_default();
        (self.webhooks)
            .notify("moderation.action", Some(&room.name), told)
            .await;
        if let Action::Delete { event } = &action {
            self.publish(room, event.clone(), &RoomEventBody::Deleted {})
                .await?;
        }
        let body = RoomEventBody::Moderation {
            record: record.public(),
        };
        self.publish(room, event_id(), &body).await?;
        Ok(record)
    }

    /// The room's rules and its newest log records (before `before_rev`), for its
    /// broadcaster, moderators and admins.
    pub async fn moderation_log(
        &self,
        viewer: &User,
        room: &str,
        before_rev: u64,
        limit: usize,
    ) -> Result<(RulesView, Vec<ModerationRecord>), Rejection> {
        let room = self.ready_room(room).await?;
        let now = self.moderation.clock.now_ms();
        let view = self
            .with_rules(&room, |rules| {
                if rules.standing(viewer) == Standing::Member {
                    return Err(Refusal::NotAllowed(
                        "only the room's broadcaster, its moderators and admins see its moderation",
                    ));
                }
                Ok(rules.view(now))
            })
            .await??;
        let log = (self.moderation.store)
            .recent(&room.name, before_rev, limit)
            .await
            .map_err(unavailable)?;
        Ok((view, log))
    }

    /// Rooms whose rules missed a record: read again (so that an action whose event
    /// was not delivered still applies within a tick).
    pub(super) async fn refresh_stale_rules(&self) {
        for room in self.all_rooms() {
            let stale = room.moderation.slot().stale;
            if stale {
                if let Err(rejection) = self.rules_ready(&room).await {
                    tracing::warn!(
                        room = room.name,
                        message = rejection.message,
                        "rules not refreshed"
                    );
                }
            }
        }
    }
}
