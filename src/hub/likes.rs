//! Likes: taps counted per room on this node, and once a second (`Hub::likes_tick`)
//! handed to the sequencer, which answers the room's total when its `likes` event is
//! due (at most once a second, across a cluster). The taps themselves are never
//! fanned out one by one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Hub;
use crate::protocol::{to_json, EphemeralEvent};

/// A room's likes on this node since its last `likes` tick.
#[derive(Default)]
pub struct RoomLikes {
    pending: AtomicU64,
    /// Taps were handed over but the cluster's event was not due yet: ask again.
    owed: AtomicBool,
}

impl RoomLikes {
    pub fn tap(&self, count: u32) {
        self.pending.fetch_add(u64::from(count), Ordering::Relaxed);
    }
}

impl Hub {
    /// Hands each room's taps to the sequencer and announces the rooms whose `likes`
    /// event is due.
    pub async fn likes_tick(&self) {
        for room in self.all_rooms() {
            let taps = room.likes.pending.swap(0, Ordering::Relaxed);
            if taps == 0 && !room.likes.owed.load(Ordering::Relaxed) {
                continue;
            }
            match self.sequencer.add_likes(&room.name, taps).await {
                Ok(Some((_, 0))) => room.likes.owed.store(false, Ordering::Relaxed),
                Ok(Some((total, recent))) => {
                    room.likes.owed.store(false, Ordering::Relaxed);
                    let frame = to_json(&EphemeralEvent::Likes {
                        room: &room.name,
                        total,
                        recent,
                    });
                    self.sequencer.flash(self, &room.name, frame.into());
                }
                Ok(None) => room.likes.owed.store(true, Ordering::Relaxed),
                Err(rejection) => {
                    // Counted again next time: likes are free, a late event costs nothing.
                    room.likes.pending.fetch_add(taps, Ordering::Relaxed);
                    tracing::warn!(
                        room = room.name,
                        message = rejection.message,
                        "likes were not counted"
                    );
                }
            }
        }
    }
}
