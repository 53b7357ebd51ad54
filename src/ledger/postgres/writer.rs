//! Each node's group-commit writer on the shared database: one transaction per batch,
//! each request decided by the rulebook on balances locked with `SELECT … FOR
//! UPDATE` (another node's transfer on the same account waits for this batch to
//! commit, then sees what it left). Refusals write nothing, so no savepoints.
//! Accounts that are only credited by a request (platform, app store, earnings…) are
//! updated once per batch, in account order, so that two nodes' batches do not
//! deadlock on them; a batch that still loses a deadlock or serialization race is
//! retried.
//!
//! A lost connection answers the batch `unavailable` and is opened again with
//! back-off; meanwhile requests are answered `unavailable` at once, never kept
//! waiting. A batch that takes longer than `BATCH_TIMEOUT` is abandoned the same way.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement, Transaction};

use super::connection::{connect, describe, Backoff};
use crate::clock::Clock;
use crate::ledger::rules::{self, Balances, BalancesMut, Plan, Prior};
use crate::ledger::{
    answer_batch, refuse_batch, take_batch, Account, Committed, Job, LedgerError, TransferMeta,
    TransferRequest,
};
use crate::money::Minor;

const MAX_BATCH: usize = 1024;
const BATCH_ATTEMPTS: usize = 5;
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The writer's connection and its statements, prepared once: a batch then costs one
/// round trip per statement instead of two.
pub struct Connection {
    client: Client,
    insert_transfer: Statement,
    insert_legs: Statement,
    update_account: Statement,
    lock_balances: Statement,
    find_prior: Statement,
}

impl Connection {
    pub async fn open(url: &str) -> Result<Connection, LedgerError> {
        let client = connect(url).await?;
        Ok(Connection {
            insert_transfer: client
                .prepare(
                    // The outbox row is the transfer's event for webhooks, booked with it.
                    "WITH booked AS (
                         INSERT INTO transfers (kind, room, created_ms, idem_user, idem_key, fingerprint, meta)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (idem_user, idem_key) DO NOTHING RETURNING id
                     ), outbox AS (
                         INSERT INTO webhook_outbox (transfer_id) SELECT id FROM booked
                     )
                     SELECT id FROM booked",
                )
                .await?,
            insert_legs: client
                .prepare(
                    "INSERT INTO legs (transfer_id, n, account, amount)
                     SELECT $1, * FROM unnest($2::INT[], $3::TEXT[], $4::BIGINT[])",
                )
                .await?,
            update_account: client
                .prepare("UPDATE accounts SET balance = balance + $2 WHERE name = $1")
                .await?,
            lock_balances: client
                .prepare(
                    "SELECT name, balance FROM accounts WHERE name = ANY($1) ORDER BY name FOR UPDATE",
                )
                .await?,
            find_prior: client
                .prepare(
                    "SELECT id, fingerprint, meta FROM transfers WHERE idem_user = $1 AND idem_key = $2",
                )
                .await?,
            client,
        })
    }
}

/// Why a batch did not commit.
enum BatchError {
    Database(tokio_postgres::Error),
    /// The books hold something they should not (unreadable facts, a taken key with
    /// no transfer): nothing of the batch is booked.
    Books(LedgerError),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        BatchError::Database(error)
    }
}

impl From<LedgerError> for BatchError {
    fn from(error: LedgerError) -> Self {
        BatchError::Books(error)
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Database(error) => write!(f, "{}", describe(error)),
            BatchError::Books(error) => write!(f, "{error}"),
        }
    }
}

pub struct Writer {
    pub url: String,
    pub connection: Option<Connection>,
    pub backoff: Backoff,
    /// What transfers are dated by.
    pub clock: Clock,
}

impl Writer {
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.recv().await {
            let batch = take_batch(first, || jobs.try_recv().ok(), MAX_BATCH);
            let created_ms = self.clock.now_ms() as i64;
            let Some(connection) = self.connected().await else {
                refuse_batch(batch, || {
                    LedgerError::Unavailable("the ledger database is out of reach".into())
                });
                continue;
            };
            let requests: Vec<&TransferRequest> = batch.iter().map(|job| &job.request).collect();
            let committing = commit_with_retries(connection, &requests, created_ms);
            match tokio::time::timeout(BATCH_TIMEOUT, committing).await {
                Ok(Ok(answers)) => answer_batch(batch, answers),
                Ok(Err(error)) => {
                    tracing::error!(%error, "ledger batch failed");
                    let message = error.to_string();
                    refuse_batch(batch, || LedgerError::Unavailable(message.clone()));
                }
                Err(_) => {
                    tracing::error!("ledger batch timed out; reconnecting");
                    self.connection = None;
                    refuse_batch(batch, || {
                        LedgerError::Unavailable(
                            "the ledger database did not answer in time".into(),
                        )
                    });
                }
            }
        }
    }

    /// The open connection; or a new one, when the back-off allows an attempt.
    async fn connected(&mut self) -> Option<&mut Connection> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            tracing::warn!("the ledger writer lost its database connection");
            self.connection = None;
        }
        if self.connection.is_none() {
            let now = Instant::now();
            if !self.backoff.may_try(now) {
                return None;
            }
            match Connection::open(&self.url).await {
                Ok(connection) => {
                    tracing::info!("the ledger writer is connected");
                    self.backoff.succeeded();
                    self.connection = Some(connection);
                }
                Err(error) => {
                    tracing::warn!(%error, "the ledger writer could not connect; backing off");
                    self.backoff.failed(now);
                }
            }
        }
        self.connection.as_mut()
    }
}

async fn commit_with_retries(
    connection: &mut Connection,
    requests: &[&TransferRequest],
    created_ms: i64,
) -> Result<Vec<Result<Committed, LedgerError>>, BatchError> {
    let mut attempt = 1;
    loop {
        match commit_batch(connection, requests, created_ms).await {
            Err(BatchError::Database(error))
                if is_transient(&error) && attempt < BATCH_ATTEMPTS =>
            {
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_transient(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// One transaction for the batch.
async fn commit_batch(
    connection: &mut Connection,
    requests: &[&TransferRequest],
    created_ms: i64,
) -> Result<Vec<Result<Committed, LedgerError>>, BatchError> {
    let Connection { client, .. } = connection;
    let transaction = client.transaction().await?;
    let statements = Statements {
        insert_transfer: &connection.insert_transfer,
        insert_legs: &connection.insert_legs,
        update_account: &connection.update_account,
        lock_balances: &connection.lock_balances,
        find_prior: &connection.find_prior,
        created_ms,
    };
    let mut credits: BTreeMap<Account, Minor> = BTreeMap::new();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(book(&transaction, &statements, request, &mut credits).await?);
    }
    for (account, delta) in credits {
        add_to_account(&transaction, &statements, &account.key(), delta).await?;
    }
    transaction.commit().await?;
    Ok(answers)
}

/// The prepared statements, borrowed beside the transaction that uses them.
struct Statements<'a> {
    insert_transfer: &'a Statement,
    insert_legs: &'a Statement,
    update_account: &'a Statement,
    lock_balances: &'a Statement,
    find_prior: &'a Statement,
    /// When the batch's transfers are booked.
    created_ms: i64,
}

/// The balances a decision read, locked until the batch commits.
struct Locked(HashMap<Account, Minor>);

impl Balances for Locked {
    fn balance(&self, account: &Account) -> Minor {
        *self
            .0
            .get(account)
            .expect("the rulebook reads only the accounts it declared")
    }
}

impl BalancesMut for Locked {
    fn add(&mut self, account: &Account, delta: Minor) {
        *self.0.entry(account.clone()).or_default() += delta;
    }
}

async fn lock_balances(
    transaction: &Transaction<'_>,
    statements: &Statements<'_>,
    accounts: Vec<Account>,
) -> Result<Locked, BatchError> {
    let names: Vec<String> = accounts.iter().map(Account::key).collect();
    let rows = transaction
        .query(statements.lock_balances, &[&names])
        .await?;
    let mut locked: HashMap<Account, Minor> = accounts
        .into_iter()
        .map(|account| (account, Minor::ZERO))
        .collect();
    for row in rows {
        let account = Account::stored(row.get(0))?;
        locked.insert(account, Minor::new(row.get(1)));
    }
    Ok(Locked(locked))
}

/// Decides one request by the rulebook and writes it; a refusal writes nothing.
async fn book(
    transaction: &Transaction<'_>,
    statements: &Statements<'_>,
    request: &TransferRequest,
    credits: &mut BTreeMap<Account, Minor>,
) -> Result<Result<Committed, LedgerError>, BatchError> {
    let mut locked = lock_balances(transaction, statements, rules::reads(request)).await?;
    let plan = match rules::plan(request, &locked) {
        Ok(plan) => plan,
        Err(refusal) => {
            let prior = find_prior(transaction, statements, request).await?;
            return Ok(rules::refused(request, prior, refusal));
        }
    };
    let Some(transfer_id) = insert(transaction, statements, request, &plan).await? else {
        let prior = find_prior(transaction, statements, request)
            .await?
            .ok_or_else(|| LedgerError::Storage("a taken key holds no transfer".into()))?;
        return Ok(rules::retried(request, prior));
    };
    plan.apply(&mut locked);
    for (account, delta) in plan.deltas() {
        // Held, debited and decided-on accounts now (their rows are locked by now, or
        // new), so that the batch's next decision reads them as this one left them;
        // what is only credited at the end of the batch, in account order.
        if account.is_held() || delta.is_negative() || locked.0.contains_key(account) {
            add_to_account(transaction, statements, &account.key(), delta).await?;
        } else {
            *credits.entry(account.clone()).or_default() += delta;
        }
    }
    Ok(Ok(Committed {
        transfer_id,
        duplicate: false,
        fingerprint: request.fingerprint.clone(),
        meta: plan.meta().clone(),
    }))
}

/// Writes the transfer and its legs; `None` when its idempotency key is taken.
async fn insert(
    transaction: &Transaction<'_>,
    statements: &Statements<'_>,
    request: &TransferRequest,
    plan: &Plan<'_>,
) -> Result<Option<i64>, BatchError> {
    let (user, key) = request.idempotency.as_ref().map_or((None, None), |k| {
        (Some(k.user.as_str()), Some(k.key.as_str()))
    });
    let meta = plan.meta();
    let (kind, created_ms, stored) = (meta.kind().as_str(), statements.created_ms, meta.to_json());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &kind,
        &meta.room(),
        &created_ms,
        &user,
        &key,
        &request.fingerprint,
        &stored,
    ];
    let Some(row) = transaction
        .query_opt(statements.insert_transfer, &params)
        .await?
    else {
        return Ok(None);
    };
    let transfer_id: i64 = row.get(0);
    let numbers: Vec<i32> = (0..plan.legs().len() as i32).collect();
    let accounts: Vec<String> = plan.legs().iter().map(|(a, _)| a.key()).collect();
    let amounts: Vec<i64> = plan.legs().iter().map(|(_, amount)| amount.get()).collect();
    transaction
        .execute(
            statements.insert_legs,
            &[&transfer_id, &numbers, &accounts, &amounts],
        )
        .await?;
    Ok(Some(transfer_id))
}

async fn find_prior(
    transaction: &Transaction<'_>,
    statements: &Statements<'_>,
    request: &TransferRequest,
) -> Result<Option<Prior>, BatchError> {
    let Some(key) = &request.idempotency else {
        return Ok(None);
    };
    let row = transaction
        .query_opt(statements.find_prior, &[&key.user, &key.key])
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(Prior {
        transfer_id: row.get(0),
        fingerprint: row.get(1),
        meta: TransferMeta::parse(row.get(2))?,
    }))
}

async fn add_to_account(
    transaction: &Transaction<'_>,
    statements: &Statements<'_>,
    account: &str,
    delta: Minor,
) -> Result<(), BatchError> {
    // Update first: `INSERT … ON CONFLICT DO UPDATE` would check the proposed row
    // (a debit, negative) against the CHECK constraint before finding the account.
    let updated = transaction
        .execute(statements.update_account, &[&account, &delta.get()])
        .await?;
    if updated == 0 {
        transaction
            .execute(
                "INSERT INTO accounts (name, balance) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance",
                &[&account, &delta.get()],
            )
            .await?;
    }
    Ok(())
}
