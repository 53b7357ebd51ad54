//! The embedded ledger on SQLite (WAL, `synchronous=FULL`) in the data directory.
//!
//! One writer thread group-commits (`writer`), a checkpointer thread keeps the WAL
//! short (`wal`), reads go through their own connection (`reads`, `audit`), and the
//! file's schema and migrations are in `schema`. Balances and the broadcasters'
//! earnings statements live in memory (rebuilt from the legs at open), so deciding a
//! transfer never reads the disk and a gift adds no entry to a per-room index.

mod audit;
mod creators;
mod lines;
mod moderation;
mod pk;
mod profiles;
mod reads;
mod schema;
mod wal;
mod webhooks;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use super::facts::RedPacket;
use super::{
    answered, queue_full, writer_stopped, Account, CheckReport, Committed, Earnings, Holdings, Job,
    Ledger, LedgerError, LedgerSettings, Payee, Standing, StorageFault, TransferRequest,
    QUEUE_CAPACITY,
};
use crate::clock::Clock;
use crate::money::{Day, Minor};
use schema::{configure, migrate, BUSY_TIMEOUT, FILE_NAME};
use wal::RestartWal;
use writer::Writer;

/// What the embedded ledger keeps in memory about creators, as committed.
#[derive(Debug, Default)]
struct Creators {
    /// Each broadcaster's earnings statement, by room.
    statements: HashMap<String, Earnings>,
    /// Each payee's accounts and their balances.
    accounts: HashMap<Payee, BTreeMap<Account, Minor>>,
    /// The counters of refunds traced to gifts, and the platform's refund losses.
    refunds: HashMap<Account, Minor>,
}

impl Creators {
    /// Adds `delta` to `account` if it is one of those kept here.
    fn add(&mut self, account: &Account, delta: Minor) {
        if let Some(payee) = Payee::of(account) {
            let accounts = self.accounts.entry(payee).or_default();
            *accounts.entry(account.clone()).or_default() += delta;
        } else if matches!(account, Account::Traced(_) | Account::Losses) {
            *self.refunds.entry(account.clone()).or_default() += delta;
        }
    }
}

type Statements = Arc<Mutex<Creators>>;

pub struct SqliteLedger {
    submit: mpsc::SyncSender<Job>,
    reader: Arc<Mutex<Connection>>,
    /// Writes profiles (`profiles.rs`), never money.
    profiles: Arc<Mutex<Connection>>,
    /// The outgoing webhooks' queue, in its own file (`webhooks.rs`).
    webhooks: Arc<Mutex<Connection>>,
    statements: Statements,
    /// Dropping it stops the checkpointer.
    _checkpoints: mpsc::Sender<()>,
}

impl SqliteLedger {
    /// Opens (creating or migrating if needed) the ledger in `dir` and starts its
    /// writer and checkpointer threads, which trip `fault` if storage fails. Transfers
    /// are dated by `clock`.
    pub fn open(
        dir: &Path,
        settings: &LedgerSettings,
        fault: StorageFault,
        clock: Clock,
    ) -> Result<SqliteLedger, LedgerError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut connection = Connection::open(&path)?;
        configure(&connection)?;
        migrate(&mut connection)?;
        let booked_upto = lines::catch_up(&mut connection)?;
        let dated: i64 = connection.query_row(
            "SELECT COALESCE(MAX(created_ms), 0) FROM transfers",
            [],
            |row| row.get(0),
        )?;
        let balances = reads::all_balances(&connection)?;
        let mut creators = Creators {
            statements: reads::all_statements(&connection)?,
            ..Creators::default()
        };
        for (account, balance) in &balances {
            creators.add(account, *balance);
        }
        let statements = Arc::new(Mutex::new(creators));
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        let profiles = Connection::open(&path)?;
        profiles.busy_timeout(BUSY_TIMEOUT)?;
        profiles.pragma_update(None, "synchronous", "FULL")?;
        let webhooks = webhooks::open(&dir.join(webhooks::FILE_NAME), &connection)?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        let restart_wal = RestartWal::default();
        let (checkpoints, stop) = mpsc::channel();
        let (wal_limit_mib, restart, checkpoint_fault) =
            (settings.wal_limit_mib, restart_wal.clone(), fault.clone());
        std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                wal::checkpoint_until_closed(&path, wal_limit_mib, restart, stop, checkpoint_fault)
            })?;
        let (submit, jobs) = mpsc::sync_channel(QUEUE_CAPACITY);
        let writer = Writer {
            connection,
            balances,
            statements: statements.clone(),
            restart_wal,
            fault,
            clock,
            dated: dated as u64,
            lines: lines::PendingLines::new(booked_upto),
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // A panic is a broken rule (`Plan::apply`'s assertions): the money stops.
                let fault = writer.fault.clone();
                let run = std::panic::AssertUnwindSafe(|| writer.run(jobs));
                if std::panic::catch_unwind(run).is_err() {
                    fault.trip("the ledger writer panicked");
                }
            })?;
        Ok(SqliteLedger {
            submit,
            reader: Arc::new(Mutex::new(reader)),
            profiles: Arc::new(Mutex::new(profiles)),
            webhooks: Arc::new(Mutex::new(webhooks)),
            statements,
            _checkpoints: checkpoints,
        })
    }

    /// Runs a query on the read connection without blocking the async runtime.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        on(self.reader.clone(), query).await
    }

    /// Runs statements on the webhooks' queue without blocking the runtime.
    async fn webhook_statement<T: Send + 'static>(
        &self,
        statement: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        on(self.webhooks.clone(), statement).await
    }

    /// Runs a statement on the profiles' connection without blocking the runtime.
    async fn profile_statement<T: Send + 'static>(
        &self,
        statement: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        on(self.profiles.clone(), statement).await
    }
}

/// Runs `work` on `connection` on a blocking thread.
async fn on<T: Send + 'static>(
    connection: Arc<Mutex<Connection>>,
    work: impl FnOnce(&Connection) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(move || {
        let connection = connection.lock().expect("ledger connection lock");
        work(&connection)
    })
    .await
    .map_err(|e| LedgerError::Storage(e.to_string()))?
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError> {
        let (answer, answer_rx) = oneshot::channel();
        self.submit
            .try_send(Job { request, answer })
            .map_err(|error| match error {
                mpsc::TrySendError::Full(_) => queue_full(),
                mpsc::TrySendError::Disconnected(_) => writer_stopped(),
            })?;
        answered(answer_rx).await
    }

    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError> {
        let (user, key) = (user.to_owned(), key.to_owned());
        let prior = self
            .read(move |c| reads::find_prior(c, &user, &key))
            .await?;
        Ok(prior.map(|prior| prior.retried()))
    }

    async fn holdings(&self, day: Day) -> Result<Holdings, LedgerError> {
        self.read(move |c| Ok(Holdings::of(day, reads::all_balances(c)?)))
            .await
    }

    async fn shared_standing(
        &self,
        _user: &str,
        _day: Day,
    ) -> Result<Option<Standing>, LedgerError> {
        Ok(None) // only this process writes the file
    }

    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError> {
        let creators = self.statements.lock().expect("creators' books lock");
        Ok(creators
            .statements
            .get(broadcaster)
            .cloned()
            .unwrap_or_default())
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn open_red_packets(&self) -> Result<Vec<RedPacket>, LedgerError> {
        self.read(reads::open_red_packets).await
    }

    async fn red_packet(&self, room: &str, id: &str) -> Result<Option<RedPacket>, LedgerError> {
        let (room, id) = (room.to_owned(), id.to_owned());
        self.read(move |c| reads::red_packet(c, &room, &id)).await
    }

    async fn check(&self) -> Result<CheckReport, LedgerError> {
        self.read(audit::check).await
    }
}

#[cfg(test)]
mod tests;
