//! The outbound side of one connection: a bounded queue of serialized frames that the
//! connection's writer task drains, and the signal that closes the connection.
//! Pushing never blocks or awaits, so rooms may push while holding their lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::close;
use crate::protocol::TextFrame;

pub type ConnId = u64;

/// The queue is a plain `VecDeque` behind a short lock rather than a channel: it
/// allocates nothing until a frame arrives (idle connections stay small), the writer
/// takes everything queued in one swap, and only a push into an empty queue wakes it.
pub struct Outbox {
    pub id: ConnId,
    /// The signed-in user's id; `None` for guests.
    pub user_id: Option<String>,
    queue: Mutex<Queue>,
    capacity: usize,
    ready: Notify,
    closing: CancellationToken,
    close_code: AtomicU16,
    /// The client closed first: its close is answered at once, without what is queued.
    answering: AtomicBool,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<TextFrame>,
    /// The payload of the client's latest ping, not yet answered (RFC 6455 lets an
    /// endpoint answer only the latest).
    pong: Option<Bytes>,
    /// The writer is gone: nothing more will be sent.
    ended: bool,
}

/// The writer task's end of an outbox.
pub struct OutboxReceiver {
    outbox: Arc<Outbox>,
}

/// What a writer takes from its outbox in one go.
#[derive(Default)]
pub struct Batch {
    pub frames: VecDeque<TextFrame>,
    pub pong: Option<Bytes>,
}

/// After a burst, the writer lets go of a batch buffer larger than this.
const KEPT_BATCH_CAPACITY: usize = 64;

impl Outbox {
    pub fn new(
        id: ConnId,
        user_id: Option<String>,
        capacity: usize,
    ) -> (Arc<Outbox>, OutboxReceiver) {
        let closing = CancellationToken::new();
        let outbox = Arc::new(Outbox {
            id,
            user_id,
            queue: Mutex::new(Queue::default()),
            capacity,
            ready: Notify::new(),
            closing,
            close_code: AtomicU16::new(0),
            answering: AtomicBool::new(false),
        });
        let receiver = OutboxReceiver {
            outbox: outbox.clone(),
        };
        (outbox, receiver)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. A full queue means the client does not keep up: it is closed
    /// with 4008 rather than slowing down whoever is sending.
    pub fn push(&self, frame: TextFrame) -> Pushed {
        let mut queue = self.queue();
        if queue.ended {
            return Pushed::Dropped;
        }
        if queue.frames.len() >= self.capacity {
            drop(queue);
            if self.close(close::SLOW_CONSUMER) {
                crate::metrics::slow_consumer_closed();
            }
            return Pushed::Dropped;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(frame);
        drop(queue);
        // A non-empty queue has already woken the writer, which will take this too.
        if was_empty {
            self.ready.notify_one();
        }
        Pushed::Queued
    }

    /// Asks the writer to answer a ping; not counted against the queue's capacity.
    pub fn pong(&self, payload: Bytes) {
        let mut queue = self.queue();
        let was_idle = queue.frames.is_empty() && queue.pong.is_none();
        queue.pong = Some(payload);
        drop(queue);
        if was_idle {
            self.ready.notify_one();
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
        // The writer waits on `ready` alone, for frames or for this.
        self.ready.notify_one();
        first
    }

    /// Answers the client's close with `code` (RFC 6455 §5.5.1: at once, and no more
    /// data frames).
    pub fn answer_close(&self, code: u16) {
        self.answering.store(true, Ordering::Release);
        self.close(code);
    }

    /// Whether the connection closes because the client closed it.
    pub fn answering_close(&self) -> bool {
        self.answering.load(Ordering::Acquire)
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

impl OutboxReceiver {
    pub fn closing(&self) -> &CancellationToken {
        &self.outbox.closing
    }

    /// Waits until frames or a pong are queued, then moves all of them into `batch`
    /// (which must be empty); or until the connection is closing. Queued one by one
    /// under load, frames go out together.
    pub async fn next_batch(&self, batch: &mut Batch) -> Next {
        debug_assert!(batch.frames.is_empty() && batch.pong.is_none());
        let mut yielded = false;
        loop {
            if self.outbox.close_code().is_some() {
                return Next::Closing;
            }
            let queued = {
                let mut queue = self.outbox.queue();
                let queued = queue.frames.len();
                let take = queued > 1 || (queued == 1 && yielded) || queue.pong.is_some();
                if take {
                    std::mem::swap(&mut queue.frames, &mut batch.frames);
                    batch.pong = queue.pong.take();
                    return Next::Frames;
                }
                queued
            };
            if queued == 1 {
                // Let the other woken writers and the room's publishers run first:
                // under load more frames are queued by then. Unloaded, this costs
                // one trip through the run queue.
                yielded = true;
                tokio::task::yield_now().await;
            } else {
                self.outbox.ready.notified().await;
            }
        }
    }

    /// Moves whatever is queued into `batch` without waiting.
    pub fn take_queued(&self, batch: &mut Batch) {
        batch.frames.append(&mut self.outbox.queue().frames);
    }

    /// Empties a written batch, keeping its buffer unless a burst made it large.
    pub fn recycle(batch: &mut Batch) {
        batch.pong = None;
        batch.frames.clear();
        if batch.frames.capacity() > KEPT_BATCH_CAPACITY {
            batch.frames = VecDeque::new();
        }
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut queue = self.outbox.queue();
        queue.ended = true;
        queue.frames = VecDeque::new();
    }
}

/// What woke a connection's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Frames or a pong were moved into the batch.
    Frames,
    Closing,
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
        let (outbox, rx) = Outbox::new(1, None, 2);
        assert_eq!(outbox.push("a".into()), Pushed::Queued);
        assert_eq!(outbox.push("b".into()), Pushed::Queued);
        assert_eq!(outbox.push("c".into()), Pushed::Dropped);
        assert_eq!(outbox.close_code(), Some(close::SLOW_CONSUMER));
        assert!(!outbox.close(close::GOING_AWAY));
        assert_eq!(outbox.close_code(), Some(close::SLOW_CONSUMER));
        assert!(outbox.closing().is_cancelled());
        drop(rx);
        assert_eq!(outbox.push("d".into()), Pushed::Dropped);
    }

    #[tokio::test]
    async fn the_writer_takes_everything_queued_in_one_batch() {
        let (outbox, rx) = Outbox::new(1, None, 10);
        for frame in ["a", "b", "c"] {
            outbox.push(frame.into());
        }
        let mut batch = Batch::default();
        assert_eq!(rx.next_batch(&mut batch).await, Next::Frames);
        assert_eq!(batch.frames, ["a", "b", "c"]);
        OutboxReceiver::recycle(&mut batch);
        outbox.push("d".into());
        assert_eq!(rx.next_batch(&mut batch).await, Next::Frames);
        assert_eq!(batch.frames, ["d"]);
        OutboxReceiver::recycle(&mut batch);
        // A pong alone wakes the writer too; only the latest ping is answered.
        outbox.pong(Bytes::from_static(b"1"));
        outbox.pong(Bytes::from_static(b"2"));
        assert_eq!(rx.next_batch(&mut batch).await, Next::Frames);
        assert_eq!(
            (batch.frames.len(), batch.pong.clone()),
            (0, Some(Bytes::from_static(b"2")))
        );
        OutboxReceiver::recycle(&mut batch);
        // Closing wakes a waiting writer, and comes before frames still queued.
        let waiting = tokio::spawn(async move {
            let next = rx.next_batch(&mut batch).await;
            (next, batch)
        });
        tokio::task::yield_now().await;
        outbox.push("e".into());
        outbox.close(close::GOING_AWAY);
        let (next, batch) = waiting.await.unwrap();
        assert_eq!((next, batch.frames.len()), (Next::Closing, 0));
    }
}
