//! PK battles in the hub: invites and answers from broadcasters, and the driver
//! (`Hub::pk_tick`, every `score_interval_ms`) that expires invites, counts running
//! battles' scores from the ledger and ends them. One node drives a battle at a time
//! (a lease in the store); if it dies another takes over and counts again from the
//! ledger, so no point is lost or doubled.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::Hub;
use crate::auth::User;
use crate::clock::Clock;
use crate::pk::{self, Battle, Invite, PkSettings, PkStore, Refusal, State, Tally};
use crate::protocol::{to_json, EphemeralEvent, PkView, Rejection, TextFrame};

/// How long a node drives a battle without renewing its claim.
const LEASE_MS: u64 = 3_000;
/// Gifts dated within this much of now may still be committing (on another node's
/// writer): they are counted again each tick until older, and a battle is ended
/// only this long after its end.
const SETTLE_MS: u64 = 1_000;
/// A running battle's event goes out this often even when its scores stand still.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// The battles this node knows and drives.
pub struct Battles {
    pub store: Arc<dyn PkStore>,
    pub settings: PkSettings,
    pub clock: Clock,
    /// This node, as it claims battles.
    node: String,
    driven: Mutex<HashMap<String, Driven>>,
}

/// A battle this node drives: the gifts counted up to `counted_to` (settled), and
/// what it last announced.
struct Driven {
    tally: Tally,
    counted_to: u64,
    announced: Option<(std::collections::BTreeMap<String, u64>, Instant)>,
}

impl Battles {
    pub fn new(store: Arc<dyn PkStore>, settings: PkSettings, clock: Clock) -> Battles {
        Battles {
            store,
            settings,
            clock,
            node: crate::ids::session_id(),
            driven: Mutex::default(),
        }
    }

    fn driven(&self) -> std::sync::MutexGuard<'_, HashMap<String, Driven>> {
        self.driven.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running battle of a room, as its members last heard of it (the join reply
/// carries it).
#[derive(Default)]
pub struct RoomBattle {
    frame: Mutex<Option<TextFrame>>,
}

impl RoomBattle {
    pub fn for_join(&self) -> Option<Box<RawValue>> {
        let frame = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        frame
            .as_ref()
            .and_then(|f| RawValue::from_string(f.as_str().to_owned()).ok())
    }
}

impl Hub {
    pub async fn pk_invite(
        &self,
        user: &User,
        room: &str,
        opponent: &str,
        seconds: Option<u64>,
    ) -> Result<(String, u64), Rejection> {
        let battles = &self.battles;
        if !user.owns_room(room) {
            return Err(Refusal::NotYours.into());
        }
        let now = battles.clock.now_ms();
        let asked = Invite {
            room,
            opponent,
            seconds,
        };
        let battle = Battle::invite(
            format!("pk_{}", crate::ids::event_id()),
            asked,
            now,
            &battles.settings,
        )?;
        if battles.settings.require_live && !self.is_live(opponent).await {
            return Err(Refusal::Offline(opponent.to_owned()).into());
        }
        let settings = &battles.settings;
        let reach_ms =
            (settings.window_s * 1000).max((settings.cooldown_s + settings.max_seconds) * 1000);
        let since = now.saturating_sub(reach_ms + settings.invite_ttl_ms);
        battles
            .store
            .create_battle(&battle, since, &|others| {
                battle.allowed_beside(others, now, settings)
            })
            .await?;
        let invite = to_json(&EphemeralEvent::PkInvite {
            pk: &battle.id,
            from: room,
            room: opponent,
            seconds: battle.seconds,
            expires_at: battle.expires_ms,
        });
        self.send_to_user(opponent, invite.into());
        Ok((battle.id, battle.expires_ms))
    }

    /// The invited broadcaster accepts (`accept`) or declines.
    pub async fn pk_answer(
        &self,
        user: &User,
        id: &str,
        accept: bool,
    ) -> Result<Battle, Rejection> {
        let battles = &self.battles;
        let mut battle = battles.store.battle(id).await?.ok_or(Refusal::Unknown)?;
        if !user.owns_room(&battle.rooms[1]) {
            return Err(Refusal::NotYours.into());
        }
        let now = battles.clock.now_ms();
        match accept {
            true => battle.accept(&user.id, now)?,
            false => battle.decline(&user.id, now)?,
        }
        if !battles.store.update_battle(&battle, State::Invited).await? {
            // Answered (or expired by the driver) a moment ago.
            let state =
                (battles.store.battle(id).await?).map_or(State::Expired, |b| b.state_at(now));
            return Err(Refusal::Answered(state).into());
        }
        let view = pk::view(&battle, &Tally::default());
        match accept {
            true => self.announce_battle(&view),
            false => self.tell_inviter(&view),
        }
        Ok(battle)
    }

    /// A battle with its scores counted from the ledger now.
    pub async fn battle_view(&self, id: &str) -> Result<Option<PkView>, Rejection> {
        let battles = &self.battles;
        let Some(battle) = battles.store.battle(id).await? else {
            return Ok(None);
        };
        let mut tally = Tally::default();
        if let Some(started) = battle.started_ms {
            let now = battles.clock.now_ms();
            let to = battle.ends_ms().unwrap_or(now).min(now.max(started));
            let sums = battles
                .store
                .gifts_between(&battle.rooms, started, to)
                .await?;
            tally.add(&battle.rooms, &sums);
        }
        let mut view = pk::view(&battle, &tally);
        view.state = battle.state_at(battles.clock.now_ms()).as_str().to_owned();
        Ok(Some(view))
    }

    /// Expires invites nobody answered, counts running battles and ends those whose
    /// time is up.
    pub async fn pk_tick(&self) {
        let battles = &self.battles;
        let open = match battles.store.open_battles().await {
            Ok(open) => open,
            Err(refusal) => {
                tracing::warn!(?refusal, "open battles could not be read");
                return;
            }
        };
        let now = battles.clock.now_ms();
        let mut seen = HashSet::new();
        for battle in open {
            seen.insert(battle.id.clone());
            let outcome = match battle.state_at(now) {
                State::Expired => self.expire(battle).await,
                State::Running => self.drive(battle, now).await,
                _ => Ok(()),
            };
            if let Err(refusal) = outcome {
                tracing::warn!(?refusal, "a battle was not driven this time");
            }
        }
        battles.driven().retain(|id, _| seen.contains(id));
    }

    async fn expire(&self, mut battle: Battle) -> Result<(), Refusal> {
        battle.state = State::Expired;
        if self
            .battles
            .store
            .update_battle(&battle, State::Invited)
            .await?
        {
            self.tell_inviter(&pk::view(&battle, &Tally::default()));
        }
        Ok(())
    }

    async fn drive(&self, battle: Battle, now: u64) -> Result<(), Refusal> {
        let battles = &self.battles;
        let (store, rooms) = (&battles.store, &battle.rooms);
        if !store
            .claim_battle(&battle.id, &battles.node, now, now + LEASE_MS)
            .await?
        {
            battles.driven().remove(&battle.id);
            return Ok(());
        }
        let (Some(started), Some(ends)) = (battle.started_ms, battle.ends_ms()) else {
            return Err(Refusal::Unavailable(format!(
                "battle {} runs without a start",
                battle.id
            )));
        };
        if now >= ends + SETTLE_MS {
            // Counted again whole: whatever this node counted before is not trusted
            // (it may have started driving mid-battle).
            let mut tally = Tally::default();
            tally.add(rooms, &store.gifts_between(rooms, started, ends).await?);
            let mut finished = battle.clone();
            finished.finish(tally.scores());
            if store.update_battle(&finished, State::Running).await? {
                let view = pk::view(&finished, &tally);
                self.announce_battle(&view);
                for room in rooms {
                    self.webhooks
                        .notify("pk.finished", Some(room.as_str()), serde_json::json!(view))
                        .await;
                }
            }
            battles.driven().remove(&battle.id);
            return Ok(());
        }
        let mut driven = battles.driven().remove(&battle.id).unwrap_or(Driven {
            tally: Tally::default(),
            counted_to: started,
            announced: None,
        });
        let settled_to = now
            .saturating_sub(SETTLE_MS)
            .min(ends)
            .max(driven.counted_to);
        if settled_to > driven.counted_to {
            let sums = store
                .gifts_between(rooms, driven.counted_to, settled_to)
                .await?;
            driven.tally.add(rooms, &sums);
            driven.counted_to = settled_to;
        }
        let mut shown = driven.tally.clone();
        let fresh_to = now.min(ends);
        if fresh_to > driven.counted_to {
            shown.add(
                rooms,
                &store
                    .gifts_between(rooms, driven.counted_to, fresh_to)
                    .await?,
            );
        }
        let view = pk::view(&battle, &shown);
        let due = match &driven.announced {
            Some((scores, at)) => *scores != view.scores || at.elapsed() >= HEARTBEAT,
            None => true,
        };
        if due {
            self.announce_battle(&view);
            driven.announced = Some((view.scores.clone(), Instant::now()));
        }
        battles.driven().insert(battle.id.clone(), driven);
        Ok(())
    }

    /// A battle's state, to both its rooms on every node.
    fn announce_battle(&self, view: &PkView) {
        for room in &view.rooms {
            let frame = to_json(&EphemeralEvent::Pk { room, view });
            self.sequencer.flash(self, room, frame.into());
        }
    }

    /// An invite's end (declined, expired) to the broadcaster who sent it.
    fn tell_inviter(&self, view: &PkView) {
        let frame = to_json(&EphemeralEvent::Pk {
            room: &view.rooms[0],
            view,
        });
        self.send_to_user(&view.rooms[0], frame.into());
    }

    /// An ephemeral frame reached the room on this node: its members get it, and a
    /// battle's state is kept for those who join later.
    pub fn flash_delivered(&self, room: &str, frame: TextFrame) {
        let Some(room) = self.room(room) else {
            return;
        };
        // Ephemeral events are serialized with their type first (`to_json`).
        let text = frame.as_str();
        let kind = if text.starts_with(r#"{"type":"pk","#) {
            let running = text.contains(r#""state":"running""#);
            *room.battle.frame.lock().unwrap_or_else(|p| p.into_inner()) =
                running.then(|| frame.clone());
            "pk"
        } else if text.starts_with(r#"{"type":"likes","#) {
            "likes"
        } else {
            "flash"
        };
        room.broadcast_ephemeral(kind, frame);
    }

    /// Whether the room's video is live, here or on another node.
    async fn is_live(&self, room: &str) -> bool {
        self.room(room).is_some_and(|r| r.live())
            || self.sequencer.video_elsewhere(room).await.is_some()
    }
}
