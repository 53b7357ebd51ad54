//! `[ledger]` in the configuration.

use anyhow::bail;
use serde::Deserialize;

/// The ledger: the embedded SQLite file's WAL, and what happens after a storage fault.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// Once the WAL holds this many MiB of frames, the writer starts it again from its
    /// beginning; the WAL file stays about this size on disk.
    pub wal_limit_mib: u64,
    /// After a storage fault, how long the server keeps answering (`/healthz` 503,
    /// every charge `unavailable`) before it shuts down and exits, so that a load
    /// balancer sees the node fail before its connections drop.
    pub fault_drain_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        LedgerSettings {
            wal_limit_mib: 64,
            fault_drain_ms: 1000,
        }
    }
}

impl LedgerSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.wal_limit_mib == 0 {
            bail!("ledger.wal_limit_mib must be greater than zero");
        }
        Ok(())
    }
}
