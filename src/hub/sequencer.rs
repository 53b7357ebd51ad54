//! Who orders a room's events and keeps what spans all of its members: the room's own
//! lock and this process's leaderboards (`Local`, one node), or the cluster's bus
//! and this node's follower (`Cluster`, `cluster.rs`). `Hub` owns one and never asks
//! which.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::leaderboard::Leaderboard;
use super::room::{Published, Room};
use super::Hub;
use crate::protocol::{
    to_json, EphemeralEvent, LeaderEntry, Rejection, RoomEventBody, TextFrame, UserRef,
};

#[async_trait]
pub trait Sequencer: Send + Sync {
    /// A room as this hub holds it: sequencing its own events, or mirroring the bus.
    fn new_room(&self, name: &str, history_len: usize, now: Instant) -> Room;
    /// Makes a room ready to join (a mirror copies the bus's history first).
    async fn ready(&self, room: &Arc<Room>) -> Result<(), Rejection>;
    /// Sequences an event in a room and delivers it to every member, on every node.
    async fn publish(
        &self,
        room: &Room,
        id: String,
        body: &RoomEventBody,
    ) -> Result<Published, Rejection>;
    /// A private frame for every connection of a user, on every node.
    fn send_to_user(&self, hub: &Hub, user: &str, frame: TextFrame);
    /// An ephemeral frame for every member of a room, on every node.
    fn flash(&self, hub: &Hub, room: &str, frame: TextFrame);
    /// Counts a room's likes: the room's total and the taps since the last answer
    /// when its `likes` event is due (at most once a second; 0 taps: nothing to
    /// announce), `None` while it is not.
    async fn add_likes(&self, room: &str, taps: u64) -> Result<Option<(u64, u64)>, Rejection>;
    /// Starts the room's like total again.
    async fn reset_likes(&self, room: &str);
    /// The room's video started or stopped on this node.
    fn video_changed(&self, hub: &Hub, room: &str, live: bool);
    /// A payment went through in a room: counted on its leaderboard.
    fn record_payment(&self, room: &str, sender: &UserRef, coins: u64);
    /// The room's leaderboard.
    async fn leaderboard(&self, room: &str) -> Result<Vec<LeaderEntry>, Rejection>;
    /// Periodic work: announce the leaderboards that changed (in a cluster also count
    /// presence across nodes and keep the videos' claims).
    async fn tick(&self, hub: &Hub);
    /// The base URL of another node hosting the room's video, if one does.
    async fn video_elsewhere(&self, room: &str) -> Option<String>;
}

/// One node: each room sequences its own events under its lock.
pub struct Local {
    /// Random per process: positions from another process never match.
    process_epoch: u64,
    incarnations: AtomicU64,
    boards: Mutex<HashMap<String, Leaderboard>>,
    /// Each room's like total.
    likes: Mutex<HashMap<String, u64>>,
}

impl Local {
    pub fn new() -> Local {
        Local {
            process_epoch: rand::random::<u64>() >> 16,
            incarnations: AtomicU64::new(0),
            boards: Mutex::default(),
            likes: Mutex::default(),
        }
    }

    fn boards(&self) -> std::sync::MutexGuard<'_, HashMap<String, Leaderboard>> {
        self.boards
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

#[async_trait]
impl Sequencer for Local {
    fn new_room(&self, name: &str, history_len: usize, now: Instant) -> Room {
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let epoch = format!("{:x}-{incarnation:x}", self.process_epoch);
        Room::new(name.to_owned(), epoch, history_len, now)
    }

    async fn ready(&self, _room: &Arc<Room>) -> Result<(), Rejection> {
        Ok(())
    }

    async fn publish(
        &self,
        room: &Room,
        id: String,
        body: &RoomEventBody,
    ) -> Result<Published, Rejection> {
        Ok(room.publish_as(id, body))
    }

    fn send_to_user(&self, hub: &Hub, user: &str, frame: TextFrame) {
        hub.deliver_to_user(user, frame);
    }

    fn flash(&self, hub: &Hub, room: &str, frame: TextFrame) {
        hub.flash_delivered(room, frame);
    }

    /// Called once a second per room at most (the hub's likes tick): always due.
    async fn add_likes(&self, room: &str, taps: u64) -> Result<Option<(u64, u64)>, Rejection> {
        let mut likes = self.likes.lock().unwrap_or_else(|p| p.into_inner());
        let total = likes.entry(room.to_owned()).or_default();
        *total += taps;
        Ok(Some((*total, taps)))
    }

    async fn reset_likes(&self, room: &str) {
        let mut likes = self.likes.lock().unwrap_or_else(|p| p.into_inner());
        likes.remove(room);
    }

    fn video_changed(&self, hub: &Hub, room: &str, live: bool) {
        hub.with_room(room, |room| {
            if room.live() != live {
                room.publish(&RoomEventBody::Stream { live });
            }
        });
    }

    fn record_payment(&self, room: &str, sender: &UserRef, coins: u64) {
        let mut boards = self.boards();
        boards
            .entry(room.to_owned())
            .or_default()
            .add(sender, coins);
    }

    async fn leaderboard(&self, room: &str) -> Result<Vec<LeaderEntry>, Rejection> {
        Ok(self
            .boards()
            .get(room)
            .map(Leaderboard::top)
            .unwrap_or_default())
    }

    async fn tick(&self, hub: &Hub) {
        let changed: Vec<(String, Vec<LeaderEntry>)> = (self.boards().iter_mut())
            .filter_map(|(room, board)| Some((room.clone(), board.take_change()?)))
            .collect();
        for (name, top) in changed {
            if let Some(room) = hub.room(&name) {
                let frame = to_json(&EphemeralEvent::Leaderboard {
                    room: &room.name,
                    top: &top,
                });
                room.broadcast_ephemeral("leaderboard", frame.into());
            }
        }
    }

    async fn video_elsewhere(&self, _room: &str) -> Option<String> {
        None
    }
}
