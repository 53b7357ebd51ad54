//! Which transfers moved each creator's accounts: the table statements are read from
//! (`creator_lines`: per account, lists of transfer ids).
//!
//! It is derived data, written behind the books: the writer collects the lines of
//! what it books and writes them with the batch that comes once `FLUSH_EVERY` has
//! passed, one row per account listing its transfers, together with the highest
//! transfer they cover (`creator_lines_upto`): a second's gifts to 300 rooms are 300
//! rows, where an index on the legs would take an entry per gift and dirty a page per
//! room in every batch (`docs/benchmarks.md`). Lines not yet written
//! (a crash loses them) are rebuilt from the legs at open, and a reader takes the
//! transfers after `upto` from the legs themselves, in the same snapshot.

use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};

use crate::ledger::{Account, LedgerError, Payee};
use crate::money::Minor;

/// One row per account per write: the transfers (a JSON array of ids, ascending)
/// that moved it since the write before, keyed by the last of them.
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS creator_lines (
    account TEXT NOT NULL,
    last_transfer INTEGER NOT NULL,
    transfers TEXT NOT NULL,
    PRIMARY KEY (account, last_transfer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS creator_lines_upto (upto INTEGER NOT NULL);
INSERT INTO creator_lines_upto SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM creator_lines_upto);
";

/// How long lines wait in memory at most, and how many.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const MAX_PENDING: usize = 65_536;

/// Whether a leg on `account` is a line of its creator's statement.
fn is_line(account: &Account) -> bool {
    Payee::of(account).is_some()
}

/// The lines the writer booked and has not written yet.
pub struct PendingLines {
    lines: Vec<(String, i64)>,
    /// The highest transfer booked.
    booked_upto: i64,
    flushed_at: Instant,
}

impl PendingLines {
    pub fn new(booked_upto: i64) -> PendingLines {
        PendingLines {
            lines: Vec::new(),
            booked_upto,
            flushed_at: Instant::now(),
        }
    }

    /// Notes the lines of transfer `transfer_id`, booked with `legs` (whose accounts'
    /// stored names are `keys`).
    pub fn booked(&mut self, transfer_id: i64, legs: &[(Account, Minor)], keys: Vec<String>) {
        self.booked_upto = self.booked_upto.max(transfer_id);
        let lines = legs
            .iter()
            .zip(keys)
            .filter(|((account, _), _)| is_line(account));
        self.lines.extend(lines.map(|(_, key)| (key, transfer_id)));
    }

    /// Writes the lines into `transaction` if they have waited long enough (or are
    /// many): they commit with it. `now` is when the batch is written.
    pub fn write_if_due(
        &mut self,
        transaction: &Transaction<'_>,
        now: Instant,
    ) -> Result<(), LedgerError> {
        let due = now.duration_since(self.flushed_at) >= FLUSH_EVERY;
        if !(due || self.lines.len() >= MAX_PENDING) {
            return Ok(());
        }
        self.lines.sort_unstable();
        write(transaction, &self.lines, self.booked_upto)?;
        self.lines.clear();
        self.flushed_at = now;
        Ok(())
    }
}

/// Writes `lines` (sorted by account, then transfer) as one row per account, and
/// `upto` as the highest transfer they cover.
fn write(connection: &Connection, lines: &[(String, i64)], upto: i64) -> Result<(), LedgerError> {
    let mut insert = connection.prepare_cached(
        "INSERT INTO creator_lines (account, last_transfer, transfers) VALUES (?1, ?2, ?3)",
    )?;
    for account_lines in lines.chunk_by(|a, b| a.0 == b.0) {
        let mut transfers: Vec<i64> = account_lines.iter().map(|(_, id)| *id).collect();
        transfers.dedup();
        let last = *transfers.last().expect("a chunk is never empty");
        let listed = serde_json::to_string(&transfers).expect("ids serialize");
        insert.execute(params![account_lines[0].0, last, listed])?;
    }
    connection
        .prepare_cached("UPDATE creator_lines_upto SET upto = ?1")?
        .execute([upto])?;
    Ok(())
}

/// Writes the lines of every transfer after `creator_lines_upto` (those a crash
/// left unwritten, or all of them in a file from before lines were kept), and
/// answers the highest transfer in the books.
pub fn catch_up(connection: &mut Connection) -> Result<i64, LedgerError> {
    let transaction = connection.transaction()?;
    let upto: i64 =
        transaction.query_row("SELECT upto FROM creator_lines_upto", [], |r| r.get(0))?;
    let last: i64 =
        transaction.query_row("SELECT COALESCE(MAX(id), 0) FROM transfers", [], |r| {
            r.get(0)
        })?;
    let mut lines = Vec::new();
    {
        let mut tail =
            transaction.prepare("SELECT transfer_id, account FROM legs WHERE transfer_id > ?1")?;
        let mut rows = tail.query([upto])?;
        while let Some(row) = rows.next()? {
            let (transfer_id, name): (i64, String) = (row.get(0)?, row.get(1)?);
            if is_line(&Account::stored(&name)?) {
                lines.push((name, transfer_id));
            }
        }
    }
    lines.sort_unstable();
    write(&transaction, &lines, last)?;
    transaction.commit()?;
    Ok(last)
}

/// The transfers that moved a payee's accounts (`?1`, `?2` exact names; `?3`, `?4`
/// `GLOB` patterns) in a period (`?5`, `?6`): the lines written, and the transfers
/// after them read from the legs, in one snapshot.
pub const STATEMENT: &str = "
SELECT id, created_ms, meta FROM transfers WHERE id IN (
    SELECT listed.value FROM creator_lines, json_each(creator_lines.transfers) AS listed
    WHERE account IN (?1, ?2) OR account GLOB ?3 OR account GLOB ?4
    UNION
    SELECT transfer_id FROM legs
    WHERE transfer_id > (SELECT upto FROM creator_lines_upto)
      AND (account IN (?1, ?2) OR account GLOB ?3 OR account GLOB ?4))
  AND created_ms >= ?5 AND created_ms < ?6
ORDER BY id";
