//! The embedded ledger's file: its schema, the migrations from older versions, and the
//! settings every connection to it uses.

use rusqlite::{Connection, OptionalExtension};

use crate::ledger::{LedgerError, TransferMeta};

pub const FILE_NAME: &str = "ledger.sqlite3";
pub const SCHEMA_VERSION: i64 = 4;

/// How long a connection waits for a lock another one holds.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    room TEXT,
    created_ms INTEGER NOT NULL,
    idem_user TEXT,
    idem_key TEXT,
    fingerprint TEXT NOT NULL,
    meta TEXT NOT NULL,
    UNIQUE (idem_user, idem_key)
);
-- Clustered by transfer: appending a transfer's legs touches only the table's tail.
CREATE TABLE IF NOT EXISTS legs (
    transfer_id INTEGER NOT NULL REFERENCES transfers(id),
    n INTEGER NOT NULL,
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (transfer_id, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS red_packets_by_room ON transfers (room) WHERE kind = 'red_packet';
";

/// Version 1 indexed every transfer by room, for earnings statements; they are kept
/// in memory, and only red packets are looked up by room.
const MIGRATE_FROM_1: &str = "
DROP INDEX IF EXISTS transfers_by_room;
UPDATE schema_version SET version = 2;
";

/// Version 3 stores a transfer's facts tagged with its kind (`TransferMeta`), and the
/// facts of a grab or a refund name their room.
const MIGRATE_FROM_2: &str = "
UPDATE transfers SET meta = json_set(meta, '$.kind', kind);
UPDATE transfers SET meta = json_set(meta, '$.room', room)
    WHERE kind IN ('grab', 'refund') AND room IS NOT NULL;
UPDATE schema_version SET version = 3;
";

pub fn configure(connection: &Connection) -> Result<(), LedgerError> {
    // First: even setting the journal mode waits for a lock, e.g. while the last
    // connection of a process that just stopped checkpoints the WAL away.
    connection.busy_timeout(BUSY_TIMEOUT)?;
    // Small pages: a commit writes every page it dirtied to the WAL, and the
    // idempotency index dirties one page per transfer wherever its key falls.
    // (Takes effect when the file is created.)
    connection.pragma_update(None, "page_size", 1024)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    // 2 MiB holds the pages a gift storm keeps touching. A larger cache made every
    // commit slower: the page cache is swept at the end of each transaction
    // (`docs/benchmarks.md`, "The writer's page work").
    connection.pragma_update(None, "cache_size", -2048)?;
    connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
    Ok(())
}

/// Version 4 keeps which transfers moved each creator's accounts (`lines.rs`; its
/// tables are created with the others, and filled at open).
const MIGRATE_FROM_3: &str = "UPDATE schema_version SET version = 4;";

/// Creates the tables, or brings an older file up to this version, in one transaction.
pub fn migrate(connection: &mut Connection) -> Result<(), LedgerError> {
    let transaction = connection.transaction()?;
    transaction.execute_batch(SCHEMA)?;
    transaction.execute_batch(crate::ledger::profiles::TABLE)?;
    transaction.execute_batch(crate::moderation::TABLES)?;
    transaction.execute_batch(crate::pk::TABLES)?;
    transaction.execute_batch(super::lines::TABLES)?;
    let version: Option<i64> = transaction
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?;
    match version {
        None => {
            transaction.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(old @ 1..=3) => {
            if old == 1 {
                transaction.execute_batch(MIGRATE_FROM_1)?;
            }
            if old <= 2 {
                transaction.execute_batch(MIGRATE_FROM_2)?;
            }
            transaction.execute_batch(MIGRATE_FROM_3)?;
            every_fact_reads_back(&transaction)?;
        }
        Some(other) => {
            return Err(LedgerError::Storage(format!(
                "ledger schema version {other} is not one this server knows ({SCHEMA_VERSION})"
            )))
        }
    }
    transaction.commit()?;
    Ok(())
}

/// Refuses a migration that leaves any transfer's facts unreadable: better to stop at
/// the upgrade than to find a hole in the books later.
fn every_fact_reads_back(connection: &Connection) -> Result<(), LedgerError> {
    let mut statement = connection.prepare("SELECT id, meta FROM transfers")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let (id, meta): (i64, String) = (row.get(0)?, row.get(1)?);
        TransferMeta::parse(&meta).map_err(|error| {
            LedgerError::Storage(format!("transfer {id} after migration: {error}"))
        })?;
    }
    Ok(())
}
