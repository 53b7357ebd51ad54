//! The hub's side of a cluster: keeping each local room a faithful mirror of the bus
//! (the follower task), publishing through the bus, and the counts that span nodes
//! (presence, leaderboards, which node hosts a room's video).
//!
//! Ordering argument: the follower is the only writer of mirrors after their first
//! use, and it handles bus messages and seed requests one at a time. A room's snapshot
//! is taken while the follower is not reading messages, so every message it reads
//! afterwards is either in the snapshot (skipped by seq) or the next event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use futures_util::StreamExt;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::room::{Applied, Published, Room, Seeded};
use super::{Hub, Sequencer};
use crate::bus::{Bus, BusError, BusMessage};
use crate::protocol::{
    LeaderEntry, Rejection, RoomEventBody, TextFrame, UnsequencedEvent, UserRef,
};

/// How long the follower waits before resubscribing after losing the bus.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(250);

/// Announcements waiting for the bus. Each is a name and a short frame (a few hundred
/// bytes, so about a megabyte when full) and one bus round trip (thousands a second):
/// room for seconds of a gift storm's balance events or a sweep's refunds, so a full
/// queue means the bus has stalled (its commands time out after 2 s), not a burst.
const OUTGOING_CAPACITY: usize = 4096;

pub struct Cluster {
    bus: Arc<dyn Bus>,
    /// This node in presence counts: random per process, so a restarted node's old
    /// counts simply expire.
    node: String,
    /// This node's base URL, where WHEP viewers of the rooms whose video it hosts go.
    url: String,
    seeds: mpsc::Sender<SeedRequest>,
    outgoing: Outbound,
    /// Rooms whose video this node hosts, claimed again on every tick.
    hosted: Mutex<HashSet<String>>,
    announced_tops: Mutex<HashMap<String, Vec<LeaderEntry>>>,
}

/// What this node tells the cluster, in the order it happened.
enum Outgoing {
    /// The room's video started or stopped here.
    Video { room: String, live: bool },
    /// A private event for a user's connections on every node.
    ToUser { user: String, frame: String },
    /// An ephemeral event for a room's members on every node.
    ToRoom { room: String, frame: String },
}

impl Outgoing {
    /// Its label in metrics.
    fn kind(&self) -> &'static str {
        match self {
            Outgoing::Video { .. } => "video",
            Outgoing::ToUser { .. } => "user",
            Outgoing::ToRoom { .. } => "room",
        }
    }
}

/// The bounded, ordered queue of announcements to the bus (`tell_cluster` drains it).
struct Outbound {
    queue: mpsc::Sender<Outgoing>,
    /// Set while announcements are being dropped, so that each episode logs once.
    dropping: AtomicBool,
}

impl Outbound {
    fn channel(capacity: usize) -> (Outbound, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(capacity);
        let outbound = Outbound {
            queue,
            dropping: AtomicBool::new(false),
        };
        (outbound, receiver)
    }

    /// Queues `what` after everything queued before it; whether it was queued. When
    /// the queue is full, `what` is dropped: the callers cannot wait (the relay's
    /// callback, a payment already settled) and the room never does. That is what
    /// `tell_cluster` does with an announcement the bus refuses: a private event is
    /// not recoverable anyway (a client's balance comes back with its next reply or
    /// payment); the tick keeps claiming this node's videos and ends orphaned ones,
    /// but a dropped start's `stream live:true` event is lost, as when refused.
    fn tell(&self, what: Outgoing) -> bool {
        let kind = what.kind();
        match self.queue.try_send(what) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("the bus takes announcements again");
                }
                true
            }
            // Dropped like an announcement the bus refused: nobody here may wait for it.
            Err(TrySendError::Full(_)) => {
                crate::metrics::bus_announcement_dropped(kind);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queued = OUTGOING_CAPACITY,
                        "the bus is not keeping up: dropping private events and video \
                         announcements until it does"
                    );
                }
                false
            }
            // The node is stopping.
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

struct SeedRequest {
    room: Arc<Room>,
    done: oneshot::Sender<Result<(), BusError>>,
}

/// The tasks a cluster hub needs, started by `run` once the hub exists.
pub struct ClusterTasks {
    seeds: mpsc::Receiver<SeedRequest>,
    outgoing: mpsc::Receiver<Outgoing>,
}

impl Cluster {
    pub fn new(bus: Arc<dyn Bus>, url: String) -> (Cluster, ClusterTasks) {
        let (seeds, seed_requests) = mpsc::channel(1024);
        let (outgoing, outgoing_rx) = Outbound::channel(OUTGOING_CAPACITY);
        let cluster = Cluster {
            bus,
            node: format!("{:016x}", rand::random::<u64>()),
            url,
            seeds,
            outgoing,
            hosted: Mutex::default(),
            announced_tops: Mutex::default(),
        };
        let tasks = ClusterTasks {
            seeds: seed_requests,
            outgoing: outgoing_rx,
        };
        (cluster, tasks)
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Copies the room's history from the bus (through the follower, see the module
    /// comment), unless it has it already.
    async fn seed(&self, room: &Arc<Room>) -> Result<(), BusError> {
        // Once seeded, the follower keeps it current: no trip through it per join.
        if room.is_seeded() {
            return Ok(());
        }
        let (done, seeded) = oneshot::channel();
        let request = SeedRequest {
            room: room.clone(),
            done,
        };
        self.seeds
            .send(request)
            .await
            .map_err(|_| BusError::Stopped)?;
        seeded.await.map_err(|_| BusError::Stopped)?
    }

    /// Sequences the event on the bus, which delivers it to every node.
    async fn publish_on_bus(
        &self,
        room: &str,
        id: String,
        body: &RoomEventBody,
    ) -> Result<Published, BusError> {
        let live = match body {
            RoomEventBody::Stream { live } => Some(*live),
            _ => None,
        };
        let deletes = matches!(body, RoomEventBody::Deleted {}).then_some(id.as_str());
        let event = UnsequencedEvent::new(room, crate::ids::unix_ms(), &id, body);
        let seq = self.bus.publish(room, &event, live, deletes).await?;
        Ok(Published { id, seq })
    }

    /// The room's video started or stopped on this node: announced in order.
    fn announce_video(&self, room: &str, live: bool) {
        let mut hosted = lock(&self.hosted);
        if live {
            hosted.insert(room.to_owned());
        } else {
            hosted.remove(room);
        }
        self.tell(Outgoing::Video {
            room: room.to_owned(),
            live,
        });
    }

    /// Sends a private event to the user's connections on every node (this one
    /// included: it comes back through the bus).
    fn tell_user(&self, user: &str, frame: &str) {
        self.tell(Outgoing::ToUser {
            user: user.to_owned(),
            frame: frame.to_owned(),
        });
    }

    fn tell(&self, what: Outgoing) {
        self.outgoing.tell(what);
    }

    /// Adds a payment to the room's cluster leaderboard; a failure only costs the
    /// leaderboard those coins, never the ledger.
    fn count_payment(&self, room: &str, sender: &UserRef, coins: u64) {
        let (bus, room, sender) = (self.bus.clone(), room.to_owned(), sender.clone());
        tokio::spawn(async move {
            if let Err(error) = bus.add_to_leaderboard(&room, &sender, coins).await {
                tracing::warn!(%error, room, "a payment is missing from the leaderboard");
            }
        });
    }

    async fn bus_leaderboard(&self, room: &str) -> Result<Vec<LeaderEntry>, BusError> {
        let mut boards = self.bus.leaderboards(&[room.to_owned()]).await?;
        Ok(boards.pop().unwrap_or_default())
    }

    /// The periodic work of a cluster node: count presence across nodes, announce
    /// changed leaderboards, keep claiming the videos hosted here, and end the videos
    /// of rooms here whose host stopped claiming them.
    async fn tick_rooms(&self, rooms: &[Arc<Room>]) -> Result<(), BusError> {
        let counts: Vec<(String, usize)> = rooms
            .iter()
            .map(|room| (room.name.clone(), room.local_viewers()))
            .collect();
        let totals = self.bus.presence(&self.node, &counts).await?;
        for ((room, (_, local)), total) in rooms.iter().zip(&counts).zip(totals) {
            room.set_cluster_viewers(total, *local);
        }
        let watched: Vec<&Arc<Room>> = rooms.iter().filter(|r| r.local_viewers() > 0).collect();
        let names: Vec<String> = watched.iter().map(|r| r.name.clone()).collect();
        let boards = self.bus.leaderboards(&names).await?;
        self.announce_leaderboards(watched, &names, boards);
        let hosted: Vec<String> = lock(&self.hosted).iter().cloned().collect();
        self.bus.host_video(&hosted, &self.url).await?;
        for room in rooms
            .iter()
            .filter(|r| r.live() && !hosted.contains(&r.name))
        {
            let body = RoomEventBody::Stream { live: false };
            let event = UnsequencedEvent::new(
                &room.name,
                crate::ids::unix_ms(),
                &crate::ids::event_id(),
                &body,
            );
            if self.bus.end_orphaned_video(&room.name, &event).await? {
                tracing::info!(room = room.name, "the video's node is gone: video ended");
            }
        }
        Ok(())
    }

    /// Announces the boards that changed since last time, in each room here.
    fn announce_leaderboards(
        &self,
        rooms: Vec<&Arc<Room>>,
        names: &[String],
        boards: Vec<Vec<LeaderEntry>>,
    ) {
        let mut announced = lock(&self.announced_tops);
        announced.retain(|room, _| names.contains(room));
        for (room, top) in rooms.into_iter().zip(boards) {
            if top.is_empty() || announced.get(&room.name) == Some(&top) {
                continue;
            }
            let frame = crate::protocol::to_json(&crate::protocol::EphemeralEvent::Leaderboard {
                room: &room.name,
                top: &top,
            });
            room.broadcast_ephemeral("leaderboard", frame.into());
            announced.insert(room.name.clone(), top);
        }
    }
}

#[async_trait]
impl Sequencer for Cluster {
    fn new_room(&self, name: &str, history_len: usize, now: Instant) -> Room {
        Room::mirror(name.to_owned(), history_len, now)
    }

    async fn ready(&self, room: &Arc<Room>) -> Result<(), Rejection> {
        Ok(self.seed(room).await?)
    }

    async fn publish(
        &self,
        room: &Room,
        id: String,
        body: &RoomEventBody,
    ) -> Result<Published, Rejection> {
        Ok(self.publish_on_bus(&room.name, id, body).await?)
    }

    fn send_to_user(&self, _hub: &Hub, user: &str, frame: TextFrame) {
        self.tell_user(user, frame.as_str());
    }

    fn flash(&self, _hub: &Hub, room: &str, frame: TextFrame) {
        self.tell(Outgoing::ToRoom {
            room: room.to_owned(),
            frame: frame.as_str().to_owned(),
        });
    }

    async fn add_likes(&self, room: &str, taps: u64) -> Result<Option<(u64, u64)>, Rejection> {
        Ok(self.bus.add_likes(room, taps).await?)
    }

    async fn reset_likes(&self, room: &str) {
        if let Err(error) = self.bus.reset_likes(room).await {
            tracing::warn!(%error, room, "the room's like total was not started again");
        }
    }

    fn video_changed(&self, _hub: &Hub, room: &str, live: bool) {
        self.announce_video(room, live);
    }

    fn record_payment(&self, room: &str, sender: &UserRef, coins: u64) {
        self.count_payment(room, sender, coins);
    }

    async fn leaderboard(&self, room: &str) -> Result<Vec<LeaderEntry>, Rejection> {
        Ok(self.bus_leaderboard(room).await?)
    }

    async fn tick(&self, hub: &Hub) {
        if let Err(error) = self.tick_rooms(&hub.all_rooms()).await {
            tracing::warn!(%error, "the cluster's periodic work failed");
        }
    }

    /// A bus failure answers as if there were none (404 from the relay): the viewer
    /// retries.
    async fn video_elsewhere(&self, room: &str) -> Option<String> {
        match self.bus.video_host(room).await {
            Ok(host) => host.filter(|host| *host != self.url),
            Err(error) => {
                tracing::warn!(%error, room, "looking up the room's video host failed");
                None
            }
        }
    }
}

impl ClusterTasks {
    /// Runs the follower and the video announcer until shutdown.
    pub fn run(self, hub: Arc<Hub>, cluster: Arc<Cluster>, shutdown: CancellationToken) {
        let bus = cluster.bus.clone();
        tokio::spawn(tell_cluster(cluster, self.outgoing, shutdown.clone()));
        tokio::spawn(follow(hub, bus, self.seeds, shutdown));
    }
}

/// Keeps the local mirrors in step with the bus: applies its messages, seeds new
/// rooms, and after losing the bus (or failing to catch a room up) resubscribes and
/// catches every room up.
async fn follow(
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    mut seeds: mpsc::Receiver<SeedRequest>,
    shutdown: CancellationToken,
) {
    loop {
        match follow_subscription(&hub, &*bus, &mut seeds, &shutdown).await {
            Ok(()) => return,
            Err(error) => tracing::warn!(%error, "lost the bus; resubscribing"),
        }
        crate::metrics::bus_connected(false);
        let wait = tokio::time::sleep(RESUBSCRIBE_AFTER);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut wait => break,
                Some(request) = seeds.recv() => answer_seed(&*bus, request).await,
            }
        }
    }
}

/// One subscription's life: until shutdown (`Ok`) or until the bus fails it.
async fn follow_subscription(
    hub: &Hub,
    bus: &dyn Bus,
    seeds: &mut mpsc::Receiver<SeedRequest>,
    shutdown: &CancellationToken,
) -> Result<(), BusError> {
    let mut messages = bus.subscribe().await?;
    // Whatever was published while we were not subscribed is in the bus's history.
    for room in hub.all_rooms() {
        if room.is_seeded() {
            catch_up(bus, &room).await?;
        }
    }
    crate::metrics::bus_connected(true);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(request) = seeds.recv() => answer_seed(bus, request).await,
            message = messages.next() => match message {
                None => return Err(BusError::Disconnected),
                Some(BusMessage::User { user, frame }) => hub.deliver_to_user(&user, frame.into()),
                Some(BusMessage::Flash { room, frame }) => hub.flash_delivered(&room, frame.into()),
                Some(BusMessage::Room(message)) => {
                    let Some(room) = hub.room(&message.room) else { continue };
                    if room.apply(message) == Applied::Gap {
                        catch_up(bus, &room).await?;
                    }
                }
            }
        }
    }
}

async fn answer_seed(bus: &dyn Bus, request: SeedRequest) {
    let result = if request.room.is_seeded() {
        Ok(())
    } else {
        bus.snapshot(&request.room.name).await.map(|snapshot| {
            request.room.seed(snapshot);
        })
    };
    // The joiner may have gone; nothing to tell then.
    let _ = request.done.send(result);
}

/// Fills a mirror's gap from the bus's history, or restarts it (closing its
/// members) when the history cannot be continued.
async fn catch_up(bus: &dyn Bus, room: &Room) -> Result<(), BusError> {
    match room.seed(bus.snapshot(&room.name).await?) {
        Seeded::Restarted { closed } => {
            tracing::warn!(
                room = room.name,
                closed,
                "room history restarted on the bus"
            );
        }
        Seeded::CaughtUp(missed) if missed > 0 => {
            tracing::info!(room = room.name, missed, "caught up with the bus");
        }
        _ => {}
    }
    Ok(())
}

/// Tells the cluster what happened on this node, in order: video starts and stops
/// (claiming or releasing the room's video, so that WHEP viewers on other nodes are
/// sent here, and publishing the `stream` event), and users' private events.
async fn tell_cluster(
    cluster: Arc<Cluster>,
    mut outgoing: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let (bus, url) = (&cluster.bus, &cluster.url);
    loop {
        let what = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(what) = outgoing.recv() => what,
        };
        match what {
            Outgoing::Video { room, live } => {
                let claimed = if live {
                    bus.host_video(std::slice::from_ref(&room), url).await
                } else {
                    bus.stop_hosting_video(&room, url).await
                };
                if let Err(error) = claimed {
                    tracing::warn!(%error, room, "claiming the room's video on the bus failed");
                }
                let body = RoomEventBody::Stream { live };
                let published = cluster.publish_on_bus(&room, crate::ids::event_id(), &body);
                if let Err(error) = published.await {
                    tracing::warn!(%error, room, "announcing the video failed");
                }
            }
            Outgoing::ToUser { user, frame } => {
                if let Err(error) = bus.send_to_user(&user, &frame).await {
                    tracing::warn!(%error, user, "a private event was not delivered");
                }
            }
            Outgoing::ToRoom { room, frame } => {
                if let Err(error) = bus.flash(&room, &frame).await {
                    tracing::warn!(%error, room, "an ephemeral room event was not delivered");
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(user: &str) -> Outgoing {
        Outgoing::ToUser {
            user: user.into(),
            frame: "{}".into(),
        }
    }

    fn users(queue: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut users = Vec::new();
        while let Ok(what) = queue.try_recv() {
            match what {
                Outgoing::ToUser { user, .. } => users.push(user),
                Outgoing::Video { room, .. } | Outgoing::ToRoom { room, .. } => {
                    panic!("an announcement for room {room}")
                }
            }
        }
        users
    }

    #[test]
    fn a_full_queue_drops_what_comes_next_without_waiting_or_reordering() {
        let (outbound, mut queue) = Outbound::channel(2);
        assert!(outbound.tell(to("a")));
        assert!(outbound.tell(to("b")));
        assert!(!outbound.tell(to("c")), "queued beyond the capacity");
        assert!(!outbound.tell(to("d")));
        assert!(outbound.dropping.load(Ordering::Relaxed));
        assert_eq!(users(&mut queue), ["a", "b"]);

        // Drained: announcements are queued again, in order.
        assert!(outbound.tell(to("e")));
        assert!(!outbound.dropping.load(Ordering::Relaxed));
        assert!(outbound.tell(to("f")));
        assert_eq!(users(&mut queue), ["e", "f"]);

        // A stopped node's announcer: nothing is queued, nothing panics.
        drop(queue);
        assert!(!outbound.tell(to("g")));
    }
}
