//! Where the server reads the time of day: the system's clock, or one a test sets, so
//! that days and expiries are tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock(Source::System)
    }

    /// A clock that reads `start_ms` until moved with `set`.
    pub fn manual(start_ms: u64) -> Clock {
        Clock(Source::Manual(Arc::new(AtomicU64::new(start_ms))))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Source::System => crate::ids::unix_ms(),
            Source::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock (every copy of it) to `ms`.
    ///
    /// # Panics
    /// On the system clock, which nobody sets.
    pub fn set(&self, ms: u64) {
        match &self.0 {
            Source::System => panic!("the system clock cannot be set"),
            Source::Manual(now) => now.store(ms, Ordering::SeqCst),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(now) => write!(f, "Clock::manual({})", now.load(Ordering::SeqCst)),
        }
    }
}
