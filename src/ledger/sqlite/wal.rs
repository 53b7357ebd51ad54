//! The WAL policy: frames are copied back into the database file off the commit path,
//! and the WAL is started over from its beginning once it has grown past its limit.
//!
//! A passive checkpoint copies the WAL into the database from the checkpointer's own
//! connection, without waiting for the writer. Under continuous load it never catches
//! up, and the WAL would grow without end: past `wal_limit_mib` of frames, the writer
//! restarts it.
//!
//! A restart holds the writer back while it copies the frames not yet copied and syncs
//! the database file, so the checkpointer leaves it little of either (`catch_up`).
//! Then the writer does the restart itself, between two batches: waiting for SQLite's
//! write lock from here meant polling for the short gap between batches, for seconds,
//! while frames piled up. (A truncating checkpoint paused the writer while it freed
//! the WAL, `docs/benchmarks.md`; a restarted WAL is overwritten in place and keeps
//! its size on disk.)

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

use super::schema::{configure, BUSY_TIMEOUT};
use crate::ledger::{LedgerError, StorageFault};

/// How often WAL frames are copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Bytes in front of each page in the WAL.
const WAL_FRAME_HEADER: i64 = 24;

/// Set by the checkpointer when the WAL should start again from its beginning and the
/// database file has caught up with it; the writer restarts it between two batches.
#[derive(Clone, Default)]
pub struct RestartWal(Arc<AtomicBool>);

impl RestartWal {
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn request(&self) {
        self.0.store(true, Ordering::Release)
    }

    pub fn done(&self) {
        self.0.store(false, Ordering::Release)
    }
}

/// Checkpoints every `CHECKPOINT_EVERY` until `stop` is dropped. A failed checkpoint
/// or sync is a storage fault: it is not retried.
pub fn checkpoint_until_closed(
    path: &Path,
    wal_limit_mib: u64,
    restart: RestartWal,
    stop: mpsc::Receiver<()>,
    fault: StorageFault,
) {
    let outcome = (|| -> Result<(), LedgerError> {
        let connection = Connection::open(path)?;
        configure(&connection)?;
        let database = std::fs::File::open(path)?;
        let frame_limit = frame_limit(&connection, wal_limit_mib)?;
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
            // Until the writer has restarted the WAL, a checkpoint here would only
            // contend with its own.
            if !restart.requested() && catch_up(&connection, &database, frame_limit)? {
                restart.request();
            }
        }
        Ok(())
    })();
    if let Err(error) = outcome {
        fault.trip(format!("checkpointing the ledger: {error}"));
    }
}

fn frame_limit(connection: &Connection, wal_limit_mib: u64) -> Result<i64, LedgerError> {
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let wal_limit_bytes = i64::try_from(wal_limit_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    Ok(wal_limit_bytes / (page_size + WAL_FRAME_HEADER))
}

/// Makes the next commit write the WAL from its beginning; false if a reader was on the
/// WAL. It does not wait for readers: the writer would wait with it.
pub fn restart_wal(connection: &Connection) -> Result<bool, LedgerError> {
    connection.busy_timeout(Duration::ZERO)?;
    let busy = connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        row.get::<_, i64>(0)
    });
    connection.busy_timeout(BUSY_TIMEOUT)?;
    Ok(busy? == 0)
}

/// A passive checkpoint, and a sync of what it copied: the database file's writes go
/// out a round's worth at a time (all at once, at the restart, slowed the writer's own
/// syncs: `docs/benchmarks.md`). Past `frame_limit` frames in the WAL, one more of each,
/// which leaves the restart only the last batches. True when the WAL should be
/// restarted.
pub fn catch_up(
    connection: &Connection,
    database: &std::fs::File,
    frame_limit: i64,
) -> Result<bool, LedgerError> {
    let passive = || -> Result<i64, LedgerError> {
        Ok(connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?)
    };
    let sync = || database.sync_data();
    let frames = passive()?;
    sync()?;
    if frames < frame_limit {
        return Ok(false);
    }
    passive()?;
    sync()?;
    Ok(true)
}
