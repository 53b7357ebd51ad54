//! Combos: the same sender repeating the same sticker in a room within the window
//! counts up 1, 2, 3… Pure state over caller-supplied `Instant`s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Hash, PartialEq, Eq)]
struct Streak {
    room: String,
    sender: String,
    sticker: String,
}

pub struct Combos {
    window: Duration,
    streaks: HashMap<Streak, (u32, Instant)>,
}

impl Combos {
    pub fn new(window: Duration) -> Combos {
        Combos {
            window,
            streaks: HashMap::new(),
        }
    }

    /// Records a gift and returns its combo number.
    pub fn record(&mut self, room: &str, sender: &str, sticker: &str, now: Instant) -> u32 {
        let key = Streak {
            room: room.to_owned(),
            sender: sender.to_owned(),
            sticker: sticker.to_owned(),
        };
        let window = self.window;
        let entry = self.streaks.entry(key).or_insert((0, now));
        let continues = entry.0 > 0 && now.saturating_duration_since(entry.1) <= window;
        *entry = (if continues { entry.0 + 1 } else { 1 }, now);
        entry.0
    }

    /// Forgets streaks that can no longer continue.
    pub fn expire(&mut self, now: Instant) {
        let window = self.window;
        self.streaks
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_count_up_and_a_pause_resets() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut combos = Combos::new(Duration::from_secs(3));
        assert_eq!(combos.record("r", "bob", "rose", t0), 1);
        assert_eq!(combos.record("r", "bob", "rose", t0 + s), 2);
        assert_eq!(
            combos.record("r", "bob", "rose", t0 + 4 * s),
            3,
            "window runs from the last gift"
        );
        assert_eq!(
            combos.record("r", "bob", "heart", t0 + 4 * s),
            1,
            "another sticker"
        );
        assert_eq!(
            combos.record("r", "amy", "rose", t0 + 4 * s),
            1,
            "another sender"
        );
        assert_eq!(
            combos.record("x", "bob", "rose", t0 + 4 * s),
            1,
            "another room"
        );
        assert_eq!(
            combos.record("r", "bob", "rose", t0 + 8 * s),
            1,
            "paused too long"
        );
    }

    #[test]
    fn expire_drops_only_finished_streaks() {
        let t0 = Instant::now();
        let mut combos = Combos::new(Duration::from_secs(3));
        combos.record("r", "bob", "rose", t0);
        combos.record("r", "amy", "rose", t0 + Duration::from_secs(5));
        combos.expire(t0 + Duration::from_secs(6));
        assert_eq!(combos.streaks.len(), 1);
    }
}
