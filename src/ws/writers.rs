//! The threads that write to connections, apart from those that read them and run the
//! rooms.
//!
//! A room's event wakes every member's writer at once. On one runtime, a reader woken
//! meanwhile (a chat message, a gift) joins the back of the same queue and waits for
//! all those writers: tokio runs a worker's queue in order, and only the last task
//! woken goes first. With many rooms and many senders, inbound messages then wait a
//! whole fan-out sweep before they are even read (`docs/benchmarks.md`, "Many
//! rooms"). On threads of their own, writers queue
//! among themselves, and the operating system runs a reading thread as soon as it
//! wakes.

use tokio::runtime::{Handle, Runtime};

/// A runtime of its own for writer tasks. Its threads stop when it is dropped, without
/// waiting: by then the server has waited for its connections, writers included.
pub struct WriterPool {
    /// Taken only when dropped.
    runtime: Option<Runtime>,
}

impl WriterPool {
    /// As many threads as the runtime that reads connections has workers.
    pub fn new() -> std::io::Result<WriterPool> {
        let threads = Handle::try_current().map_or(1, |h| h.metrics().num_workers());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("ovation-writer")
            .enable_all()
            .build()?;
        crate::metrics::writer_threads(threads);
        Ok(WriterPool {
            runtime: Some(runtime),
        })
    }

    /// Where writer tasks are spawned.
    pub fn handle(&self) -> Handle {
        let runtime = self.runtime.as_ref().expect("taken only when dropped");
        runtime.handle().clone()
    }
}

impl Drop for WriterPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
