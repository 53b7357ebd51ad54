//! Rate limits as plain state machines over `Instant`s supplied by the caller.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `burst` per `window`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: u32,
    window: Duration,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, window: Duration, now: Instant) -> TokenBucket {
        TokenBucket {
            burst,
            window,
            tokens: f64::from(burst),
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        let rate = f64::from(self.burst) / self.window.as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.burst));
        self.updated = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A full bucket carries no state worth keeping.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= f64::from(self.burst)
    }
}

/// Counts events in a sliding window; trips when `limit` fall within `window`.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    window: Duration,
    times: VecDeque<Instant>,
}

impl SlidingWindow {
    pub fn new(limit: usize, window: Duration) -> SlidingWindow {
        SlidingWindow {
            limit,
            window,
            times: VecDeque::new(),
        }
    }

    /// Records one event; true when this makes `limit` events within the window.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.times.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.times.pop_front();
            } else {
                break;
            }
        }
        self.times.push_back(now);
        self.times.len() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refills_over_the_window() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(5, Duration::from_secs(10), t0);
        assert!((0..5).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_millis(1900)));
        assert!(bucket.try_take(t0 + Duration::from_millis(2000)));
        assert!(bucket.is_full(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn window_trips_at_the_limit_and_forgets_old_events() {
        let t0 = Instant::now();
        let mut window = SlidingWindow::new(3, Duration::from_secs(10));
        assert!(!window.record(t0));
        assert!(!window.record(t0 + Duration::from_secs(1)));
        assert!(!window.record(t0 + Duration::from_secs(10)));
        assert!(!window.record(t0 + Duration::from_secs(11)));
        assert!(window.record(t0 + Duration::from_secs(12)));
    }
}
