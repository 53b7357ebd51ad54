//! The double-entry ledger: accounts, transfers whose legs sum to zero, idempotency by
//! (user, key). `Ledger` is the seam between the gift engine and storage; `sqlite`
//! is the embedded implementation, `postgres` the shared one for several nodes.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

pub use postgres::PostgresLedger;
pub use sqlite::SqliteLedger;

use crate::money::Minor;

/// Every account money can sit in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// A user's spendable coins.
    Wallet(String),
    /// What a broadcaster earned (their room id is their user id).
    Earnings(String),
    Agency(String),
    Platform,
    AppStore,
    /// Where simulated store purchases come from; it goes negative as coins are sold.
    TopupSource,
    /// Coins held in a red packet until grabbed or refunded.
    Escrow(String),
}

impl Account {
    /// How the stored names of per-user accounts start.
    pub const WALLET: &'static str = "wallet:";
    pub const EARNINGS: &'static str = "earnings:";
    pub const AGENCY: &'static str = "agency:";
    pub const ESCROW: &'static str = "escrow:";

    /// The stored name, e.g. `wallet:bob`.
    pub fn key(&self) -> String {
        match self {
            Account::Wallet(id) => format!("{}{id}", Self::WALLET),
            Account::Earnings(id) => format!("{}{id}", Self::EARNINGS),
            Account::Agency(id) => format!("{}{id}", Self::AGENCY),
            Account::Platform => "platform".into(),
            Account::AppStore => "app_store".into(),
            Account::TopupSource => "topup_source".into(),
            Account::Escrow(id) => format!("{}{id}", Self::ESCROW),
        }
    }

    /// Accounts that hold someone's money may never go below zero.
    pub fn must_stay_non_negative(key: &str) -> bool {
        key.starts_with(Self::WALLET) || key.starts_with(Self::ESCROW)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Topup,
    Gift,
    Question,
    RedPacket,
    Grab,
    Refund,
}

impl TransferKind {
    /// Payments to a broadcaster: what their earnings statement counts.
    pub const PAID: [TransferKind; 2] = [TransferKind::Gift, TransferKind::Question];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Topup => "topup",
            TransferKind::Gift => "gift",
            TransferKind::Question => "question",
            TransferKind::RedPacket => "red_packet",
            TransferKind::Grab => "grab",
            TransferKind::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<TransferKind> {
        use TransferKind::*;
        [Topup, Gift, Question, RedPacket, Grab, Refund]
            .into_iter()
            .find(|kind| kind.as_str() == s)
    }
}

/// Legs and meta decided by an account's balance at the moment of commit, for a pot
/// that several nodes draw on at once (a red packet's next share, or its remainder).
/// The ledger serialises transfers on the account, so each draw sees the balance
/// the previous one left.
#[derive(Clone)]
pub struct Draw {
    pub account: Account,
    pub rule: Arc<dyn Fn(Minor) -> Result<Drawn, String> + Send + Sync>,
}

/// What a draw takes: the transfer's legs and meta.
pub struct Drawn {
    pub legs: Vec<(Account, Minor)>,
    pub meta: Value,
}

impl std::fmt::Debug for Draw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draw")
            .field("account", &self.account)
            .finish()
    }
}

/// A transfer to commit.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub kind: TransferKind,
    pub legs: Vec<(Account, Minor)>,
    /// The room a payment was made in, for earnings statements.
    pub room: Option<String>,
    /// (user, key): a second request with the same pair is a retry.
    pub idempotency: Option<(String, String)>,
    /// What must match for a retry to be "the same request".
    pub fingerprint: String,
    /// Facts about the transfer returned to retries (ids, sticker, count…).
    pub meta: Value,
    /// When set, `legs` and `meta` are decided at commit time by the draw.
    pub draw: Option<Draw>,
}

impl TransferRequest {
    pub fn new(kind: TransferKind, legs: Vec<(Account, Minor)>) -> TransferRequest {
        TransferRequest {
            kind,
            legs,
            room: None,
            idempotency: None,
            fingerprint: String::new(),
            meta: Value::Null,
            draw: None,
        }
    }

    /// A transfer whose legs and meta `rule` decides from `account`'s balance when the
    /// ledger commits it; `rule` declines (an `Err`) when there is nothing to take.
    pub fn drawing(
        kind: TransferKind,
        account: Account,
        rule: impl Fn(Minor) -> Result<Drawn, String> + Send + Sync + 'static,
    ) -> TransferRequest {
        TransferRequest {
            draw: Some(Draw {
                account,
                rule: Arc::new(rule),
            }),
            ..TransferRequest::new(kind, Vec::new())
        }
    }

    /// The request to write once a drawing request's account balance is known.
    pub fn drawn(&self, balance: Minor) -> Result<TransferRequest, LedgerError> {
        let draw = self.draw.as_ref().expect("only drawing requests are drawn");
        let Drawn { legs, meta } = (draw.rule)(balance).map_err(LedgerError::Declined)?;
        debug_assert!(
            legs.iter().any(|(account, _)| *account == draw.account),
            "a draw moves money of the account it draws on"
        );
        Ok(TransferRequest {
            legs,
            meta,
            draw: None,
            ..self.clone()
        })
    }

    pub fn idempotent(mut self, user: &str, key: &str, fingerprint: String) -> Self {
        self.idempotency = Some((user.to_owned(), key.to_owned()));
        self.fingerprint = fingerprint;
        self
    }

    pub fn in_room(mut self, room: &str) -> Self {
        self.room = Some(room.to_owned());
        self
    }

    pub fn with_meta(mut self, meta: Value) -> Self {
        self.meta = meta;
        self
    }

    /// The double-entry rule, checked before anything is written.
    pub fn is_balanced(&self) -> bool {
        !self.legs.is_empty()
            && self
                .legs
                .iter()
                .try_fold(0 as Minor, |sum, (_, amount)| sum.checked_add(*amount))
                == Some(0)
    }
}

/// A transfer that is in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub transfer_id: i64,
    /// True when this request was a retry of `transfer_id`; nothing changed.
    pub duplicate: bool,
    pub fingerprint: String,
    pub meta: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the idempotency key was used for a different request")]
    Conflict,
    #[error("a wallet would go below zero")]
    InsufficientFunds,
    /// A draw found nothing to take (its rule's reason).
    #[error("{0}")]
    Declined(String),
    #[error("the legs of the transfer do not sum to zero")]
    Unbalanced,
    #[error("ledger storage failed: {0}")]
    Storage(String),
    #[error("the ledger is shut down")]
    Closed,
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

/// A request queued for a ledger's single writer, and where its answer goes.
struct Job {
    request: TransferRequest,
    answer: tokio::sync::oneshot::Sender<Result<Committed, LedgerError>>,
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
    for (job, answer) in batch.into_iter().zip(answers) {
        let _ = job.answer.send(answer);
    }
}

/// A stored transfer's meta, read back.
fn parse_meta(meta: &str) -> Result<Value, LedgerError> {
    serde_json::from_str(meta).map_err(|e| LedgerError::Storage(e.to_string()))
}

/// A broadcaster's earnings statement, in minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Earnings {
    /// Paid gifts and questions in their room.
    pub gifts: u64,
    /// Their total value in whole coins.
    pub coins: u64,
    pub broadcaster: Minor,
    pub agency: Minor,
    pub platform: Minor,
    pub app_store: Minor,
}

impl Earnings {
    /// Adds one account's sum over the broadcaster's paid transfers (the one place
    /// the account names of a split are read back).
    pub fn add(&mut self, broadcaster: &str, account: &str, sum: Minor) {
        match account {
            a if a.strip_prefix(Account::EARNINGS) == Some(broadcaster) => self.broadcaster += sum,
            a if a.starts_with(Account::AGENCY) => self.agency += sum,
            a if a.starts_with(Account::WALLET) => {
                self.coins += (-sum / crate::money::MINOR_PER_COIN) as u64
            }
            "platform" => self.platform += sum,
            "app_store" => self.app_store += sum,
            _ => {}
        }
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

#[async_trait]
pub trait Ledger: Send + Sync {
    /// Commits the transfer durably (or finds its first commit, for a retry).
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError>;
    /// The transfer committed for (user, key), if any.
    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError>;
    /// Every wallet's balance, by user id.
    async fn balances(&self) -> Result<Vec<(String, Minor)>, LedgerError>;
    /// One wallet's committed balance, when other processes may have changed it (a
    /// ledger shared by several nodes); `None` for a ledger only this process writes,
    /// whose balances this process already knows.
    async fn shared_balance(&self, user: &str) -> Result<Option<Minor>, LedgerError>;
    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError>;
    /// Whether other processes write this ledger too (a cluster's shared ledger).
    fn is_shared(&self) -> bool;
    /// The creation meta of every red packet whose escrow still holds money.
    async fn open_red_packets(&self) -> Result<Vec<Value>, LedgerError>;
    /// The creation meta of red packet `id` in `room`, if it was created there.
    async fn red_packet(&self, room: &str, id: &str) -> Result<Option<Value>, LedgerError>;
    /// Verifies every invariant of the books.
    async fn check(&self) -> Result<CheckReport, LedgerError>;
}
