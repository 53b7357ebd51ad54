//! The outbound side of one connection: a bounded queue of serialized frames that the
//! connection's writer task drains, and the signal that closes the connection.
//! Everything here is non-blocking, so rooms may push while holding their lock.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;

pub type ConnId = u64;

pub struct Outbox {
    pub id: ConnId,
    /// The signed-in user's id; `None` for guests.
    pub user_id: Option<String>,
    queue: mpsc::Sender<Utf8Bytes>,
    closing: CancellationToken,
    close_code: AtomicU16,
}

/// The writer task's end of an outbox.
pub struct OutboxReceiver {
    pub frames: mpsc::Receiver<Utf8Bytes>,
    pub closing: CancellationToken,
}

impl Outbox {
    pub fn new(
        id: ConnId,
        user_id: Option<String>,
        capacity: usize,
    ) -> (Arc<Outbox>, OutboxReceiver) {
        let (queue, frames) = mpsc::channel(capacity);
        let closing = CancellationToken::new();
        let outbox = Arc::new(Outbox {
            id,
            user_id,
            queue,
            closing: closing.clone(),
            close_code: AtomicU16::new(0),
        });
        (outbox, OutboxReceiver { frames, closing })
    }

    /// Queues a frame. A full queue means the client does not keep up: it is closed
    /// with 4008 rather than slowing down whoever is sending.
    pub fn push(&self, frame: Utf8Bytes) -> Pushed {
        match self.queue.try_send(frame) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.close(close::SLOW_CONSUMER) {
                    crate::metrics::slow_consumer_closed();
                }
                Pushed::Dropped
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Dropped,
        }
    }

    /// Asks the connection to close with `code`. The first code wins; returns whether
    /// this call was the first.
    pub fn close(&self, code: u16) -> bool {
        let first = self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        self.closing.cancel();
        first
    }

    /// The code the connection is closing with, if closing.
    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    Dropped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_with_4008_and_first_code_wins() {
        let (outbox, _rx) = Outbox::new(1, None, 2);
        assert_eq!(outbox.push("a".into()), Pushed::Queued);
        assert_eq!(outbox.push("b".into()), Pushed::Queued);
        assert_eq!(outbox.push("c".into()), Pushed::Dropped);
        assert_eq!(outbox.close_code(), Some(close::SLOW_CONSUMER));
        assert!(!outbox.close(close::GOING_AWAY));
        assert_eq!(outbox.close_code(), Some(close::SLOW_CONSUMER));
        assert!(outbox.closing().is_cancelled());
    }
}
