//! A storage fault: the ledger could not make a write durable (a failed commit or
//! sync). After a failed fsync the page cache can no longer be trusted, so nothing is
//! retried in place: the writer stops, every charge from then on answers
//! `unavailable`, and the server shuts down and exits non-zero, so that its supervisor
//! restarts it and start-up rebuilds everything from disk.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Shared by a ledger (which trips it) and the server (which reports and stops on it).
#[derive(Clone, Default)]
pub struct StorageFault {
    reason: Arc<OnceLock<String>>,
    tripped: CancellationToken,
}

impl StorageFault {
    /// Records the first fault; later ones are only logged.
    pub fn trip(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::error!(%reason, "ledger storage fault: the ledger stops taking money");
        if self.reason.set(reason).is_ok() {
            self.tripped.cancel();
        }
    }

    /// Why the ledger stopped, once it has.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Resolves once a fault has been recorded.
    pub async fn tripped(&self) {
        self.tripped.cancelled().await
    }
}
