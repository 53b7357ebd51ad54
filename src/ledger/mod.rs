//! The double-entry ledger: accounts, transfers whose legs sum to zero, idempotency by
//! (user, key). The rules live in `rules` (pure); `sqlite` (embedded) and `postgres`
//! (shared by several nodes) store the books and execute the rules. `Ledger` is the
//! seam between the gift engine and storage. See `docs/ledger.md`.

mod account;
mod audit;
mod creators;
pub mod facts;
mod fault;
mod moderation;
mod pk;
mod postgres;
mod profiles;
pub mod rules;
mod settings;
mod sqlite;
pub mod webhooks;

use async_trait::async_trait;
use serde::Serialize;

pub use account::{Account, Payee, TransferKind};
pub use creators::{Booked, CreatorBooks, PAYOUT_KEYS};
pub use facts::{Earnings, TransferMeta};
pub use fault::StorageFault;
pub use postgres::PostgresLedger;
pub use profiles::{Profile, Profiles};
pub use rules::{Transfer, TransferRequest};
pub use settings::LedgerSettings;
pub use sqlite::SqliteLedger;

use crate::moderation::ModerationStore;
use crate::money::{Day, Minor};
use crate::pk::PkStore;
use webhooks::WebhookBooks;

/// A transfer that is in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub transfer_id: i64,
    /// True when this request was a retry of `transfer_id`; nothing changed.
    pub duplicate: bool,
    pub fingerprint: String,
    pub meta: TransferMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the idempotency key was used for a different request")]
    Conflict,
    #[error("a held account would go below zero")]
    InsufficientFunds,
    /// A draw found nothing to take (its rule's reason).
    #[error("{0}")]
    Declined(String),
    #[error("the legs of the transfer do not sum to zero")]
    Unbalanced,
    /// The transfer would take an account above its request's ceiling.
    #[error("a spending limit would be passed")]
    LimitReached,
    /// The books could not be written or read as they should: the ledger stops.
    #[error("ledger storage failed: {0}")]
    Storage(String),
    /// The ledger cannot take the request now (its queue is full, its database is out
    /// of reach, or it stopped); nothing was booked unless a retry finds it was.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(error: rusqlite::Error) -> Self {
        LedgerError::Storage(error.to_string())
    }
}

impl From<std::io::Error> for LedgerError {
    fn from(error: std::io::Error) -> Self {
        LedgerError::Storage(error.to_string())
    }
}

/// A user's money as the books hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The wallet's balance.
    pub wallet: Minor,
    /// What the user owes (at or above zero).
    pub debt: Minor,
    /// What the user spent on the day asked about.
    pub spent: Minor,
}

/// What users hold and owe, by user id.
#[derive(Debug, Default)]
pub struct Holdings {
    pub wallets: Vec<(String, Minor)>,
    /// Positive amounts owed; users who owe nothing are left out.
    pub debts: Vec<(String, Minor)>,
    /// What users spent on the day asked about.
    pub spent: Vec<(String, Minor)>,
}

impl Holdings {
    /// Sorts accounts and their balances into wallets, debts and spending on `day`;
    /// others are ignored.
    pub fn of(day: Day, accounts: impl IntoIterator<Item = (Account, Minor)>) -> Holdings {
        let mut holdings = Holdings::default();
        for (account, balance) in accounts {
            match account {
                Account::Wallet(user) => holdings.wallets.push((user, balance)),
                Account::Debt(user) if balance != Minor::ZERO => {
                    holdings.debts.push((user, -balance))
                }
                Account::Spent(spent_on, user) if spent_on == day => {
                    holdings.spent.push((user, balance))
                }
                _ => {}
            }
        }
        holdings
    }
}

/// The result of checking the books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub accounts: u64,
    pub transfers: u64,
    /// Sum over all accounts; zero when the books balance.
    pub sum: i64,
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Problems listed per kind of problem at most.
    const LISTED: usize = 20;

    /// The report on books with these counts, `sum` over all accounts, and the
    /// problems found with them (of each kind, the first `LISTED`).
    fn new(accounts: i64, transfers: i64, sum: i64, mut problems: Vec<String>) -> CheckReport {
        if sum != 0 {
            problems.insert(0, format!("accounts sum to {sum}, not zero"));
        }
        CheckReport {
            ok: problems.is_empty(),
            accounts: accounts as u64,
            transfers: transfers as u64,
            sum,
            problems,
        }
    }
}

#[async_trait]
pub trait Ledger:
    Profiles + CreatorBooks + ModerationStore + PkStore + WebhookBooks + Send + Sync
{
    /// Commits the transfer durably (or finds its first commit, for a retry).
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError>;
    /// The transfer committed for (user, key), if any.
    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError>;
    /// Every user's wallet balance, debt and spending on `day`, from one read of the
    /// books.
    async fn holdings(&self, day: Day) -> Result<Holdings, LedgerError>;
    /// Every wallet's balance, by user id.
    async fn balances(&self) -> Result<Vec<(String, Minor)>, LedgerError> {
        Ok(self.holdings(Day::of_unix_ms(0)).await?.wallets)
    }
    /// What each user in debt owes (a positive amount), by user id.
    async fn debts(&self) -> Result<Vec<(String, Minor)>, LedgerError> {
        Ok(self.holdings(Day::of_unix_ms(0)).await?.debts)
    }
    /// One user's committed standing (with their spending on `day`), when other
    /// processes may have changed it (a ledger shared by several nodes); `None` for a
    /// ledger only this process writes, whose balances this process already knows.
    async fn shared_standing(&self, user: &str, day: Day) -> Result<Option<Standing>, LedgerError>;
    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError>;
    /// Whether other processes write this ledger too (a cluster's shared ledger).
    fn is_shared(&self) -> bool;
    /// The creation facts of every red packet whose escrow still holds money.
    async fn open_red_packets(&self) -> Result<Vec<facts::RedPacket>, LedgerError>;
    /// The creation facts of red packet `id` in `room`, if it was created there.
    async fn red_packet(
        &self,
        room: &str,
        id: &str,
    ) -> Result<Option<facts::RedPacket>, LedgerError>;
    /// Verifies every invariant of the books.
    async fn check(&self) -> Result<CheckReport, LedgerError>;
}

/// A request queued for a ledger's single writer, and where its answer goes.
struct Job {
    request: TransferRequest,
    answer: tokio::sync::oneshot::Sender<Result<Committed, LedgerError>>,
}

/// Requests waiting for a writer at most; past it, a charge answers `unavailable`
/// at once instead of queueing without bound.
const QUEUE_CAPACITY: usize = 16_384;

fn queue_full() -> LedgerError {
    LedgerError::Unavailable("the ledger is busy".into())
}

fn writer_stopped() -> LedgerError {
    LedgerError::Unavailable("the ledger writer has stopped".into())
}

/// Waits for a queued job's answer; a writer that stopped without answering it
/// (after a storage fault) answers `unavailable`.
async fn answered(
    answer: tokio::sync::oneshot::Receiver<Result<Committed, LedgerError>>,
) -> Result<Committed, LedgerError> {
    answer.await.map_err(|_| writer_stopped())?
}

/// Group commit's batch: the first job queued and whatever else already waits (from
/// `next`), up to `max`.
fn take_batch(first: Job, mut next: impl FnMut() -> Option<Job>, max: usize) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < max {
        match next() {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    crate::metrics::ledger_batch(batch.len());
    batch
}

/// Answers each job of a committed (or failed) batch; a caller that gave up is skipped.
fn answer_batch(batch: Vec<Job>, answers: Vec<Result<Committed, LedgerError>>) {
    assert_eq!(batch.len(), answers.len(), "one answer per request");
    for (job, answer) in batch.into_iter().zip(answers) {
        let _ = job.answer.send(answer);
    }
}

/// Answers every job of a batch that was not booked with the same error.
fn refuse_batch(batch: Vec<Job>, error: impl Fn() -> LedgerError) {
    for job in batch {
        let _ = job.answer.send(Err(error()));
    }
}
