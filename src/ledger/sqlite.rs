//! The embedded ledger on SQLite (WAL, `synchronous=FULL`) in the data directory.
//!
//! Group commit: one writer thread owns the write connection. It takes every request
//! queued, applies each inside one transaction (checking idempotency, the double-entry
//! rule and non-negative wallets first), commits once — one fsync for the batch —
//! and only then answers each request. Balances live in the writer's memory (rebuilt
//! from the legs at open), so the non-negativity check never reads the disk; so do the
//! broadcasters' earnings statements, so that a gift adds no entry to a per-room
//! index (each such entry dirtied one more page per gift, at a random place).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use tokio::sync::oneshot;

use super::{
    answer_batch, parse_meta, take_batch, Account, CheckReport, Committed, Earnings, Job, Ledger,
    LedgerError, TransferKind, TransferRequest,
};
use crate::config::LedgerSettings;
use crate::money::Minor;

/// Requests one transaction takes at most.
const MAX_BATCH: usize = 4096;
const FILE_NAME: &str = "ledger.sqlite3";
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
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

/// A red packet's creation meta by room and id. The kind is spelled out, not bound,
/// so that the planner can use the partial index.
const RED_PACKET_BY_ID: &str = "SELECT meta FROM transfers
     WHERE room = ?1 AND kind = 'red_packet' AND json_extract(meta, '$.id') = ?2";

/// Version 1 indexed every transfer by room, for earnings statements; they are now
/// kept in memory, and only red packets are looked up by room.
const MIGRATE_FROM_1: &str = "
DROP INDEX IF EXISTS transfers_by_room;
UPDATE schema_version SET version = 2;
";

/// Each broadcaster's earnings statement, by room, as committed.
type Statements = Arc<Mutex<HashMap<String, Earnings>>>;

pub struct SqliteLedger {
    submit: Mutex<mpsc::Sender<Job>>,
    reader: Arc<Mutex<Connection>>,
    statements: Statements,
    /// Dropping it stops the checkpointer.
    _checkpoints: mpsc::Sender<()>,
}

/// How long a connection waits for a lock another one holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often WAL frames are copied back into the database file, off the commit path.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Bytes in front of each page in the WAL.
const WAL_FRAME_HEADER: i64 = 24;

/// Set by the checkpointer when the WAL should start again from its beginning and the
/// database file has caught up with it; the writer restarts it between two batches.
type RestartWal = Arc<AtomicBool>;

/// Copies the WAL into the database from its own connection, without waiting for the
/// writer. Under continuous load such a passive checkpoint never catches up, and the
/// WAL would grow without end: past `wal_limit_mib` of frames, the writer restarts it.
///
/// A restart holds the writer back while it copies the frames not yet copied and syncs
/// the database file, so the checkpointer leaves it little of either (`catch_up`).
/// Then the writer does the restart itself, between two batches: waiting for SQLite's
/// write lock from here meant polling for the short gap between batches, for seconds,
/// while frames piled up. (A truncating checkpoint paused the writer for 200 ms, 130 ms
/// of it to free a 64 MiB WAL; a restarted WAL is overwritten in place and keeps its
/// size on disk.)
fn checkpoint_until_closed(
    path: &Path,
    wal_limit_mib: u64,
    restart: RestartWal,
    stop: mpsc::Receiver<()>,
) -> Result<(), LedgerError> {
    let connection = Connection::open(path)?;
    configure(&connection)?;
    let database = std::fs::File::open(path)?;
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let wal_limit_bytes = i64::try_from(wal_limit_mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
    let frame_limit = wal_limit_bytes / (page_size + WAL_FRAME_HEADER);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        // Until the writer has restarted the WAL, a checkpoint here would only contend
        // with its own.
        if restart.load(Ordering::Acquire) {
            continue;
        }
        match catch_up(&connection, &database, frame_limit) {
            Ok(true) => restart.store(true, Ordering::Release),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "ledger checkpoint failed; retrying"),
        }
    }
    Ok(())
}

/// Makes the next commit write the WAL from its beginning (see
/// `checkpoint_until_closed`); false if a reader was on the WAL. It does not wait for
/// readers: the writer would wait with it.
fn restart_wal(connection: &Connection) -> Result<bool, LedgerError> {
    connection.busy_timeout(std::time::Duration::ZERO)?;
    let busy = connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        row.get::<_, i64>(0)
    });
    connection.busy_timeout(BUSY_TIMEOUT)?;
    Ok(busy? == 0)
}

/// A passive checkpoint, and a sync of what it copied: the database file's writes go
/// out a round's worth at a time (64 MiB at once, at the restart, slowed the writer's
/// own syncs for 60-200 ms). Past `frame_limit` frames in the WAL, one more of each,
/// which leaves the restart only the last batches. True when the WAL should be
/// restarted.
fn catch_up(
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

fn configure(connection: &Connection) -> Result<(), LedgerError> {
    // Small pages: a commit writes every page it dirtied to the WAL, and the
    // idempotency index dirties one page per transfer wherever its key falls.
    // (Takes effect when the file is created.)
    connection.pragma_update(None, "page_size", 1024)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    // 2 MiB holds the pages a gift storm keeps touching. A larger cache made every
    // commit slower: the page cache is swept at the end of each transaction, and
    // that sweep was 12 % of the writer's time with 64 MiB.
    connection.pragma_update(None, "cache_size", -2048)?;
    connection.pragma_update(None, "mmap_size", 1i64 << 30)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    Ok(())
}

impl SqliteLedger {
    /// Opens (creating if needed) the ledger in `dir` and starts its writer thread.
    pub fn open(dir: &Path, settings: &LedgerSettings) -> Result<SqliteLedger, LedgerError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let connection = Connection::open(&path)?;
        configure(&connection)?;
        migrate(&connection)?;
        let balances = all_balances(&connection)?;
        let statements = Arc::new(Mutex::new(all_statements(&connection)?));
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (checkpoints, stop) = mpsc::channel();
        let checkpoint_path = path.clone();
        let restart_wal = RestartWal::default();
        let wal_limit_mib = settings.wal_limit_mib;
        let restart = restart_wal.clone();
        std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                checkpoint_until_closed(&checkpoint_path, wal_limit_mib, restart, stop)
            })?;
        let (submit, jobs) = mpsc::channel();
        let writer = Writer {
            connection,
            balances,
            statements: statements.clone(),
            restart_wal,
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(jobs))?;
        Ok(SqliteLedger {
            submit: Mutex::new(submit),
            reader: Arc::new(Mutex::new(reader)),
            statements,
            _checkpoints: checkpoints,
        })
    }

    /// Runs a query on the read connection without blocking the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let connection = reader.lock().unwrap_or_else(|p| p.into_inner());
            query(&connection)
        })
        .await
        .map_err(|e| LedgerError::Storage(e.to_string()))?
    }
}

fn migrate(connection: &Connection) -> Result<(), LedgerError> {
    connection.execute_batch(SCHEMA)?;
    let version: Option<i64> = connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?;
    match version {
        None => {
            connection.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some(1) => connection.execute_batch(MIGRATE_FROM_1)?,
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(LedgerError::Storage(format!(
                "ledger schema version {other} is newer than this server's {SCHEMA_VERSION}"
            )))
        }
    }
    Ok(())
}

fn all_balances(connection: &Connection) -> Result<HashMap<String, Minor>, LedgerError> {
    let mut statement =
        connection.prepare("SELECT account, SUM(amount) FROM legs GROUP BY account")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every broadcaster's statement: their room's paid transfers, summed by account.
fn all_statements(connection: &Connection) -> Result<HashMap<String, Earnings>, LedgerError> {
    let paid = TransferKind::PAID.map(TransferKind::as_str);
    let mut statements: HashMap<String, Earnings> = HashMap::new();
    let mut counts = connection.prepare(
        "SELECT room, COUNT(*) FROM transfers WHERE room IS NOT NULL AND kind IN (?1, ?2) GROUP BY room",
    )?;
    let rows = counts.query_map(params![paid[0], paid[1]], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (room, gifts) = row?;
        statements.entry(room).or_default().gifts = gifts as u64;
    }
    let mut sums = connection.prepare(
        "SELECT t.room, l.account, SUM(l.amount) FROM legs l JOIN transfers t ON t.id = l.transfer_id
         WHERE t.room IS NOT NULL AND t.kind IN (?1, ?2) GROUP BY t.room, l.account",
    )?;
    let rows = sums.query_map(params![paid[0], paid[1]], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Minor>(2)?,
        ))
    })?;
    for row in rows {
        let (room, account, sum) = row?;
        statements
            .entry(room.clone())
            .or_default()
            .add(&room, &account, sum);
    }
    Ok(statements)
}

fn find_committed(
    connection: &Connection,
    user: &str,
    key: &str,
) -> Result<Option<Committed>, LedgerError> {
    let found = connection
        .prepare_cached(
            "SELECT id, fingerprint, meta FROM transfers WHERE idem_user = ?1 AND idem_key = ?2",
        )?
        .query_row(params![user, key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    Ok(found.map(|(transfer_id, fingerprint, meta)| Committed {
        transfer_id,
        duplicate: true,
        fingerprint,
        meta: serde_json::from_str(&meta).unwrap_or_default(),
    }))
}

struct Writer {
    connection: Connection,
    /// Every account's balance as committed.
    balances: HashMap<String, Minor>,
    statements: Statements,
    restart_wal: RestartWal,
}

/// What a batch changes in the writer's memory, applied only once it has committed.
#[derive(Default)]
struct Pending {
    /// Balance changes of the batch so far, on top of the committed balances.
    balances: HashMap<String, Minor>,
    /// The legs of each paid transfer, by the room it was paid in.
    paid: Vec<(String, Vec<(String, Minor)>)>,
}

impl Pending {
    fn balance(&self, committed: &HashMap<String, Minor>, account: &str) -> Minor {
        committed.get(account).copied().unwrap_or(0)
            + self.balances.get(account).copied().unwrap_or(0)
    }
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let batch = take_batch(first, || jobs.try_recv().ok(), MAX_BATCH);
            let answers = self.commit_batch(&batch);
            answer_batch(batch, answers);
            if self.restart_wal.load(Ordering::Acquire) {
                // If it fails, the checkpointer asks again later.
                match restart_wal(&self.connection) {
                    Ok(true) => crate::metrics::ledger_wal_restarted(),
                    Ok(false) => tracing::debug!("ledger WAL not restarted: a reader was on it"),
                    Err(error) => tracing::warn!(%error, "restarting the ledger WAL failed"),
                }
                self.restart_wal.store(false, Ordering::Release);
            }
        }
    }

    /// Applies every request in one transaction and commits once. If the commit fails,
    /// nothing of the batch happened and every request gets the error.
    fn commit_batch(&mut self, batch: &[Job]) -> Vec<Result<Committed, LedgerError>> {
        let mut pending = Pending::default();
        let outcome = (|| {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let answers = batch
                .iter()
                .map(|job| apply(&transaction, &self.balances, &mut pending, &job.request))
                .collect::<Result<Vec<_>, _>>()?;
            transaction.commit()?;
            Ok::<_, LedgerError>(answers)
        })();
        match outcome {
            Ok(answers) => {
                for (account, delta) in pending.balances {
                    *self.balances.entry(account).or_insert(0) += delta;
                }
                let mut statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
                for (room, legs) in pending.paid {
                    let statement = statements.entry(room.clone()).or_default();
                    statement.gifts += 1;
                    for (account, amount) in legs {
                        statement.add(&room, &account, amount);
                    }
                }
                answers
            }
            Err(error) => {
                tracing::error!(%error, "ledger commit failed");
                batch
                    .iter()
                    .map(|_| Err(LedgerError::Storage(error.to_string())))
                    .collect()
            }
        }
    }
}

/// Applies one transfer inside the batch's transaction, on top of the committed
/// `balances` and what the batch has `pending`. Everything that can refuse a transfer
/// is checked before anything is written, so the outer error is only ever a storage
/// failure, which aborts the whole batch.
///
/// A retry (its idempotency key already used) answers the first transfer's result,
/// even when the wallet could no longer pay for it. The key is looked up only when
/// the transfer is refused or its insert finds the key taken: the insert checks the
/// unique index anyway, so a first request costs no separate lookup.
fn apply(
    transaction: &rusqlite::Transaction<'_>,
    balances: &HashMap<String, Minor>,
    pending: &mut Pending,
    request: &TransferRequest,
) -> Result<Result<Committed, LedgerError>, LedgerError> {
    let drawn;
    let request = match &request.draw {
        None => request,
        Some(draw) => match request.drawn(pending.balance(balances, &draw.account.key())) {
            Ok(request) => {
                drawn = request;
                &drawn
            }
            Err(declined) => return retry_or(transaction, request, declined),
        },
    };
    if !request.is_balanced() {
        return retry_or(transaction, request, LedgerError::Unbalanced);
    }
    let legs: Vec<(String, Minor)> = request
        .legs
        .iter()
        .map(|(account, amount)| (account.key(), *amount))
        .collect();
    let mut deltas: HashMap<&str, Minor> = HashMap::new();
    for (account, amount) in &legs {
        *deltas.entry(account).or_insert(0) += amount;
    }
    for (account, delta) in &deltas {
        let now = pending.balance(balances, account);
        if Account::must_stay_non_negative(account) && now + delta < 0 {
            return retry_or(transaction, request, LedgerError::InsufficientFunds);
        }
    }
    let (idem_user, idem_key) = request
        .idempotency
        .as_ref()
        .map_or((None, None), |(user, key)| {
            (Some(user.as_str()), Some(key.as_str()))
        });
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO transfers (kind, room, created_ms, idem_user, idem_key, fingerprint, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (idem_user, idem_key) DO NOTHING",
        )?
        .execute(params![
            request.kind.as_str(),
            request.room,
            crate::ids::unix_ms() as i64,
            idem_user,
            idem_key,
            request.fingerprint,
            request.meta.to_string()
        ])?;
    if inserted == 0 {
        // Only a used idempotency key makes the insert do nothing.
        return retry_or(transaction, request, LedgerError::Conflict);
    }
    let transfer_id = transaction.last_insert_rowid();
    let mut insert_leg = transaction.prepare_cached(
        "INSERT INTO legs (transfer_id, n, account, amount) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (n, (account, amount)) in legs.iter().enumerate() {
        insert_leg.execute(params![transfer_id, n as i64, account, amount])?;
    }
    for (account, delta) in deltas {
        *pending.balances.entry(account.to_owned()).or_insert(0) += delta;
    }
    if let (Some(room), true) = (&request.room, TransferKind::PAID.contains(&request.kind)) {
        pending.paid.push((room.clone(), legs));
    }
    Ok(Ok(Committed {
        transfer_id,
        duplicate: false,
        fingerprint: request.fingerprint.clone(),
        meta: request.meta.clone(),
    }))
}

/// The first result of `request`'s idempotency key if it was used before (the same
/// request answers it again, a different one is a conflict), else `refusal`.
fn retry_or(
    transaction: &rusqlite::Transaction<'_>,
    request: &TransferRequest,
    refusal: LedgerError,
) -> Result<Result<Committed, LedgerError>, LedgerError> {
    let Some((user, key)) = &request.idempotency else {
        return Ok(Err(refusal));
    };
    Ok(match find_committed(transaction, user, key)? {
        Some(first) if first.fingerprint == request.fingerprint => Ok(first),
        Some(_) => Err(LedgerError::Conflict),
        None => Err(refusal),
    })
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError> {
        let (answer, answered) = oneshot::channel();
        self.submit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Job { request, answer })
            .map_err(|_| LedgerError::Closed)?;
        answered.await.map_err(|_| LedgerError::Closed)?
    }

    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError> {
        let (user, key) = (user.to_owned(), key.to_owned());
        self.read(move |c| find_committed(c, &user, &key)).await
    }

    async fn balances(&self) -> Result<Vec<(String, Minor)>, LedgerError> {
        self.read(|c| {
            Ok(all_balances(c)?
                .into_iter()
                .filter_map(|(account, balance)| {
                    Some((account.strip_prefix(Account::WALLET)?.to_owned(), balance))
                })
                .collect())
        })
        .await
    }

    async fn shared_balance(&self, _user: &str) -> Result<Option<Minor>, LedgerError> {
        Ok(None) // only this process writes the file
    }

    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError> {
        let statements = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        Ok(statements.get(broadcaster).cloned().unwrap_or_default())
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn open_red_packets(&self) -> Result<Vec<Value>, LedgerError> {
        self.read(|c| {
            let mut statement = c.prepare(
                "WITH open AS (SELECT account FROM legs WHERE account LIKE 'escrow:%'
                               GROUP BY account HAVING SUM(amount) > 0)
                 SELECT t.meta FROM open JOIN legs l ON l.account = open.account
                 JOIN transfers t ON t.id = l.transfer_id AND t.kind = ?1",
            )?;
            let rows = statement.query_map([TransferKind::RedPacket.as_str()], |row| {
                row.get::<_, String>(0)
            })?;
            rows.map(|meta| parse_meta(&meta?)).collect()
        })
        .await
    }

    async fn red_packet(&self, room: &str, id: &str) -> Result<Option<Value>, LedgerError> {
        let (room, id) = (room.to_owned(), id.to_owned());
        self.read(move |c| {
            let meta: Option<String> = c
                .prepare_cached(RED_PACKET_BY_ID)?
                .query_row(params![room, id], |row| row.get(0))
                .optional()?;
            meta.as_deref().map(parse_meta).transpose()
        })
        .await
    }

    async fn check(&self) -> Result<CheckReport, LedgerError> {
        self.read(|c| {
            let count = |sql: &str| -> Result<i64, LedgerError> { Ok(c.query_row(sql, [], |row| row.get(0))?) };
            let mut problems = Vec::new();
            let accounts = count("SELECT COUNT(DISTINCT account) FROM legs")?;
            let transfers = count("SELECT COUNT(*) FROM transfers")?;
            let sum = count("SELECT COALESCE(SUM(amount), 0) FROM legs")?;
            if sum != 0 {
                problems.push(format!("accounts sum to {sum}, not zero"));
            }
            let mut listed = |sql: &str, what: &str| -> Result<(), LedgerError> {
                let mut statement = c.prepare(sql)?;
                let rows = statement.query_map([], |row| Ok(format!("{}: {}", row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
                for row in rows.take(20) {
                    problems.push(format!("{what} {}", row?));
                }
                Ok(())
            };
            listed(
                "SELECT CAST(transfer_id AS TEXT), SUM(amount) FROM legs GROUP BY transfer_id HAVING SUM(amount) != 0",
                "unbalanced transfer",
            )?;
            listed(
                "SELECT account, SUM(amount) FROM legs WHERE account LIKE 'wallet:%' OR account LIKE 'escrow:%'
                 GROUP BY account HAVING SUM(amount) < 0",
                "account below zero",
            )?;
            listed(
                "SELECT idem_user || '/' || idem_key, COUNT(*) FROM transfers WHERE idem_key IS NOT NULL
                 GROUP BY idem_user, idem_key HAVING COUNT(*) > 1",
                "idempotency key used twice",
            )?;
            listed(
                "SELECT CAST(t.id AS TEXT), 0 FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM legs l WHERE l.transfer_id = t.id)",
                "transfer without legs",
            )?;
            Ok(CheckReport {
                ok: problems.is_empty(),
                accounts: accounts as u64,
                transfers: transfers as u64,
                sum,
                problems,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as version 1 created it.
    const SCHEMA_1: &str = "
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version (version) VALUES (1);
        CREATE TABLE transfers (
            id INTEGER PRIMARY KEY, kind TEXT NOT NULL, room TEXT, created_ms INTEGER NOT NULL,
            idem_user TEXT, idem_key TEXT, fingerprint TEXT NOT NULL, meta TEXT NOT NULL,
            UNIQUE (idem_user, idem_key));
        CREATE TABLE legs (
            transfer_id INTEGER NOT NULL REFERENCES transfers(id), n INTEGER NOT NULL,
            account TEXT NOT NULL, amount INTEGER NOT NULL,
            PRIMARY KEY (transfer_id, n)) WITHOUT ROWID;
        CREATE INDEX transfers_by_room ON transfers (room, kind);
        INSERT INTO transfers VALUES (1, 'topup', NULL, 0, 'bob', 't1', 'f', '{}');
        INSERT INTO legs VALUES (1, 0, 'topup_source', -1000), (1, 1, 'wallet:bob', 1000);
        INSERT INTO transfers VALUES (2, 'gift', 'alice', 0, 'bob', 'g1', 'f', '{}');
        INSERT INTO legs VALUES (2, 0, 'wallet:bob', -500), (2, 1, 'earnings:alice', 300),
            (2, 2, 'platform', 200);
        INSERT INTO transfers VALUES (3, 'red_packet', 'alice', 0, 'bob', 'r1', 'f', '{\"id\":\"p1\"}');
        INSERT INTO legs VALUES (3, 0, 'wallet:bob', -100), (3, 1, 'escrow:p1', 100);
    ";

    fn indexes(connection: &Connection) -> Vec<String> {
        let mut statement = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .unwrap();
        let names = statement.query_map([], |row| row.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    #[tokio::test]
    async fn a_version_1_ledger_opens_with_its_statements_and_red_packets() {
        let dir = tempfile::tempdir().unwrap();
        Connection::open(dir.path().join(FILE_NAME))
            .unwrap()
            .execute_batch(SCHEMA_1)
            .unwrap();

        let ledger = SqliteLedger::open(dir.path(), &LedgerSettings::default()).unwrap();

        let earnings = ledger.earnings("alice").await.unwrap();
        let expected = Earnings {
            gifts: 1,
            coins: 5,
            broadcaster: 300,
            platform: 200,
            ..Earnings::default()
        };
        assert_eq!(earnings, expected);
        let packet = ledger.red_packet("alice", "p1").await.unwrap();
        assert_eq!(packet, Some(serde_json::json!({"id": "p1"})));
        assert!(ledger.check().await.unwrap().ok);
        let connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(indexes(&connection), ["red_packets_by_room"]);
        let version: i64 = connection
            .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_wal_past_its_limit_is_caught_up_then_restarted_from_its_beginning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let writer = Connection::open(&path).unwrap();
        configure(&writer).unwrap();
        migrate(&writer).unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        let checkpointer = Connection::open(&path).unwrap();
        configure(&checkpointer).unwrap();
        let database = std::fs::File::open(&path).unwrap();
        let commit = |n: i64| {
            writer
                .execute(
                    "INSERT INTO transfers (kind, created_ms, fingerprint, meta)
                     VALUES ('topup', ?1, 'f', '{}')",
                    [n],
                )
                .unwrap();
        };
        // Each commit appends at least one frame.
        for n in 0..100 {
            commit(n);
        }
        let frames_in_wal = || -> i64 {
            checkpointer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
                .unwrap()
        };
        // Under load, the writer has always appended frames that the last checkpoint
        // did not copy, so it never starts the WAL again by itself. A reader that
        // holds on to the WAL across the next commit puts the test in that state.
        let reader = Connection::open(&path).unwrap();
        reader
            .execute_batch("BEGIN; SELECT count(*) FROM transfers;")
            .unwrap();

        assert!(!catch_up(&checkpointer, &database, 1_000_000).unwrap());
        assert!(catch_up(&checkpointer, &database, 100).unwrap());
        commit(100);
        assert!(
            !restart_wal(&writer).unwrap(),
            "the reader is still on the WAL"
        );
        reader.execute_batch("COMMIT").unwrap();
        assert!(restart_wal(&writer).unwrap());
        commit(101);

        // One commit's frames, not the hundred before them.
        let frames = frames_in_wal();
        assert!((1..10).contains(&frames), "{frames} frames in the WAL");
        let transfers: i64 = writer
            .query_row("SELECT count(*) FROM transfers", [], |row| row.get(0))
            .unwrap();
        assert_eq!(transfers, 102);
    }

    #[test]
    fn red_packets_are_found_by_the_partial_index() {
        let connection = Connection::open_in_memory().unwrap();
        connection.execute_batch(SCHEMA).unwrap();
        // The index and the query spell the kind out; it must be the stored one.
        assert_eq!(TransferKind::RedPacket.as_str(), "red_packet");
        let plan: String = connection
            .query_row(
                &format!("EXPLAIN QUERY PLAN {RED_PACKET_BY_ID}"),
                params!["alice", "p1"],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("red_packets_by_room"), "{plan}");
    }
}
