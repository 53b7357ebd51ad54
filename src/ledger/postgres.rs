//! The shared ledger on PostgreSQL, for several Ovation nodes (`--ledger postgres://…`).
//!
//! Same semantics as the SQLite ledger, made safe across processes by the database
//! itself: a unique constraint on (user, key) for idempotency, and an `accounts` table
//! whose CHECK constraint keeps wallets and escrows from going below zero whichever
//! node charges them. Group commit as in SQLite: one writer task per node takes every
//! queued request into one transaction (a savepoint per request, so one refusal does
//! not undo the others) and commits once. Accounts that are only ever credited
//! (platform, app store, earnings...) are updated once per batch, in name order, so
//! two nodes' batches do not deadlock on them; a batch that still loses a deadlock or
//! serialization race is retried.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use super::{
    answer_batch, parse_meta, take_batch, Account, CheckReport, Committed, Earnings, Job, Ledger,
    LedgerError, TransferKind, TransferRequest,
};
use crate::money::Minor;

const MAX_BATCH: usize = 1024;
const BATCH_ATTEMPTS: usize = 5;

/// Migrations, in one transaction under an advisory lock: nodes starting together
/// would otherwise race on `CREATE … IF NOT EXISTS` (it is not atomic in PostgreSQL).
const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7415161718);
CREATE TABLE IF NOT EXISTS transfers (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    room TEXT,
    created_ms BIGINT NOT NULL,
    idem_user TEXT,
    idem_key TEXT,
    fingerprint TEXT NOT NULL,
    meta TEXT NOT NULL,
    UNIQUE (idem_user, idem_key)
);
CREATE TABLE IF NOT EXISTS legs (
    transfer_id BIGINT NOT NULL REFERENCES transfers(id),
    n INT NOT NULL,
    account TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, n)
);
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    balance BIGINT NOT NULL,
    CONSTRAINT held_money_never_below_zero
        CHECK (balance >= 0 OR NOT (name LIKE 'wallet:%' OR name LIKE 'escrow:%'))
);
CREATE INDEX IF NOT EXISTS transfers_by_room ON transfers (room, kind);
CREATE INDEX IF NOT EXISTS legs_by_account ON legs (account);
COMMIT;
";

pub struct PostgresLedger {
    submit: mpsc::UnboundedSender<Job>,
    reader: Client,
}

/// The writer's statements, prepared once: a batch then costs one round trip per
/// statement instead of two.
struct Statements {
    insert_transfer: Statement,
    insert_legs: Statement,
    update_account: Statement,
    lock_balance: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            insert_transfer: client
                .prepare(
                    "INSERT INTO transfers (kind, room, created_ms, idem_user, idem_key, fingerprint, meta)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (idem_user, idem_key) DO NOTHING RETURNING id",
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
            lock_balance: client
                .prepare("SELECT balance FROM accounts WHERE name = $1 FOR UPDATE")
                .await?,
        })
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(error: tokio_postgres::Error) -> Self {
        LedgerError::Storage(error.to_string())
    }
}

async fn connect(url: &str) -> Result<Client, LedgerError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::error!(%error, "ledger database connection ended");
        }
    });
    Ok(client)
}

impl PostgresLedger {
    /// Connects (a writer and a reader connection), creates the tables if needed and
    /// starts the writer task.
    pub async fn open(url: &str) -> Result<PostgresLedger, LedgerError> {
        let writer = connect(url).await?;
        writer.batch_execute(SCHEMA).await?;
        let statements = Statements::prepare(&writer).await?;
        let reader = connect(url).await?;
        let (submit, jobs) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(writer, statements, jobs));
        Ok(PostgresLedger { submit, reader })
    }
}

async fn write_batches(
    mut client: Client,
    statements: Statements,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(first) = jobs.recv().await {
        let batch = take_batch(first, || jobs.try_recv().ok(), MAX_BATCH);
        let requests: Vec<&TransferRequest> = batch.iter().map(|job| &job.request).collect();
        let mut outcome = commit_batch(&mut client, &statements, &requests).await;
        for _ in 1..BATCH_ATTEMPTS {
            match &outcome {
                Err(error) if is_transient(error) => {
                    outcome = commit_batch(&mut client, &statements, &requests).await;
                }
                _ => break,
            }
        }
        let answers: Vec<Result<Committed, LedgerError>> = match outcome {
            Ok(answers) => answers,
            Err(error) => {
                tracing::error!(%error, "ledger commit failed");
                let message = error.to_string();
                batch
                    .iter()
                    .map(|_| Err(LedgerError::Storage(message.clone())))
                    .collect()
            }
        };
        answer_batch(batch, answers);
    }
}

fn is_transient(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// One transaction for the batch; each request under its own savepoint.
async fn commit_batch(
    client: &mut Client,
    statements: &Statements,
    requests: &[&TransferRequest],
) -> Result<Vec<Result<Committed, LedgerError>>, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    let mut credits: BTreeMap<String, Minor> = BTreeMap::new();
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(apply(&transaction, statements, request, &mut credits).await?);
    }
    for (account, delta) in credits {
        add_to_account(&transaction, statements, &account, delta).await?;
    }
    transaction.commit().await?;
    Ok(answers)
}

async fn find_committed(
    client: &impl tokio_postgres::GenericClient,
    user: &str,
    key: &str,
) -> Result<Option<Committed>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT id, fingerprint, meta FROM transfers WHERE idem_user = $1 AND idem_key = $2",
            &[&user, &key],
        )
        .await?;
    Ok(row.map(|row| Committed {
        transfer_id: row.get(0),
        duplicate: true,
        fingerprint: row.get(1),
        meta: serde_json::from_str(row.get::<_, &str>(2)).unwrap_or_default(),
    }))
}

async fn add_to_account(
    transaction: &Transaction<'_>,
    statements: &Statements,
    account: &str,
    delta: Minor,
) -> Result<(), tokio_postgres::Error> {
    // Update first: `INSERT … ON CONFLICT DO UPDATE` would check the proposed row
    // (a debit, negative) against the CHECK constraint before finding the account.
    let updated = transaction
        .execute(&statements.update_account, &[&account, &delta])
        .await?;
    if updated == 0 {
        transaction
            .execute(
                "INSERT INTO accounts (name, balance) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance",
                &[&account, &delta],
            )
            .await?;
    }
    Ok(())
}

/// Applies one transfer under a savepoint. A refusal (conflict, overdraft) rolls back
/// only this request; any other database error fails the batch.
async fn apply(
    transaction: &Transaction<'_>,
    statements: &Statements,
    request: &TransferRequest,
    credits: &mut BTreeMap<String, Minor>,
) -> Result<Result<Committed, LedgerError>, tokio_postgres::Error> {
    let drawn;
    let request = match &request.draw {
        None => request,
        Some(draw) => {
            // Locked until the batch commits: another node's draw waits for this one
            // and then sees the balance it left.
            let balance: Minor = transaction
                .query_opt(&statements.lock_balance, &[&draw.account.key()])
                .await?
                .map_or(0, |row| row.get(0));
            match request.drawn(balance) {
                Ok(request) => {
                    drawn = request;
                    &drawn
                }
                // A retry of a committed draw is answered as a retry, as in SQLite.
                Err(declined) => {
                    let first = match &request.idempotency {
                        Some((user, key)) => find_committed(transaction, user, key).await?,
                        None => None,
                    };
                    return Ok(first.map_or(Err(declined), |f| same_request(f, request)));
                }
            }
        }
    };
    if !request.is_balanced() {
        return Ok(Err(LedgerError::Unbalanced));
    }
    let mut deltas: HashMap<String, Minor> = HashMap::new();
    for (account, amount) in &request.legs {
        *deltas.entry(account.key()).or_insert(0) += amount;
    }
    // Round trips are what a batch costs: the savepoint is a simple query (no
    // prepare), the legs go in one statement, and a retried key is found by the
    // insert's conflict rather than by a lookup first.
    transaction.batch_execute("SAVEPOINT request").await?;
    let (idem_user, idem_key) = request
        .idempotency
        .as_ref()
        .map_or((None, None), |(user, key)| {
            (Some(user.as_str()), Some(key.as_str()))
        });
    let (created_ms, meta) = (crate::ids::unix_ms() as i64, request.meta.to_string());
    let kind = request.kind.as_str();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &kind,
        &request.room,
        &created_ms,
        &idem_user,
        &idem_key,
        &request.fingerprint,
        &meta,
    ];
    let inserted = transaction
        .query_opt(&statements.insert_transfer, &params)
        .await?;
    let Some(row) = inserted else {
        // Another node committed this key since we looked: answer as a retry.
        transaction
            .batch_execute("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")
            .await?;
        let (user, key) = request
            .idempotency
            .as_ref()
            .expect("only keyed inserts conflict");
        let first = find_committed(transaction, user, key).await?;
        return Ok(first.map_or(Err(LedgerError::Conflict), |f| same_request(f, request)));
    };
    let transfer_id: i64 = row.get(0);
    let numbers: Vec<i32> = (0..request.legs.len() as i32).collect();
    let accounts: Vec<String> = request.legs.iter().map(|(a, _)| a.key()).collect();
    let amounts: Vec<Minor> = request.legs.iter().map(|(_, amount)| *amount).collect();
    transaction
        .execute(
            &statements.insert_legs,
            &[&transfer_id, &numbers, &accounts, &amounts],
        )
        .await?;
    // Held money is checked now, row by row; what is only credited waits for the end
    // of the batch, and counts only if this request goes through.
    let (held, credited): (Vec<_>, Vec<_>) = deltas
        .into_iter()
        .partition(|(account, _)| Account::must_stay_non_negative(account));
    for (account, delta) in &held {
        if let Err(error) = add_to_account(transaction, statements, account, *delta).await {
            if error.code() == Some(&SqlState::CHECK_VIOLATION) {
                transaction
                    .batch_execute("ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request")
                    .await?;
                return Ok(Err(LedgerError::InsufficientFunds));
            }
            return Err(error);
        }
    }
    transaction
        .batch_execute("RELEASE SAVEPOINT request")
        .await?;
    for (account, delta) in credited {
        *credits.entry(account).or_insert(0) += delta;
    }
    Ok(Ok(Committed {
        transfer_id,
        duplicate: false,
        fingerprint: request.fingerprint.clone(),
        meta: request.meta.clone(),
    }))
}

fn same_request(first: Committed, request: &TransferRequest) -> Result<Committed, LedgerError> {
    if first.fingerprint == request.fingerprint {
        Ok(first)
    } else {
        Err(LedgerError::Conflict)
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError> {
        let (answer, answered) = oneshot::channel();
        self.submit
            .send(Job { request, answer })
            .map_err(|_| LedgerError::Closed)?;
        answered.await.map_err(|_| LedgerError::Closed)?
    }

    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError> {
        Ok(find_committed(&self.reader, user, key).await?)
    }

    async fn balances(&self) -> Result<Vec<(String, Minor)>, LedgerError> {
        let rows = self
            .reader
            .query(
                "SELECT name, balance FROM accounts WHERE name LIKE 'wallet:%'",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let name: &str = row.get(0);
                (
                    name.trim_start_matches(Account::WALLET).to_owned(),
                    row.get(1),
                )
            })
            .collect())
    }

    async fn shared_balance(&self, user: &str) -> Result<Option<Minor>, LedgerError> {
        let row = self
            .reader
            .query_opt(
                "SELECT balance FROM accounts WHERE name = $1",
                &[&Account::Wallet(user.to_owned()).key()],
            )
            .await?;
        Ok(Some(row.map_or(0, |row| row.get(0))))
    }

    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError> {
        let paid = TransferKind::PAID.map(TransferKind::as_str);
        let gifts: i64 = self
            .reader
            .query_one(
                "SELECT COUNT(*) FROM transfers WHERE room = $1 AND kind IN ($2, $3)",
                &[&broadcaster, &paid[0], &paid[1]],
            )
            .await?
            .get(0);
        let rows = self
            .reader
            .query(
                "SELECT l.account, SUM(l.amount)::BIGINT FROM legs l JOIN transfers t ON t.id = l.transfer_id
                 WHERE t.room = $1 AND t.kind IN ($2, $3) GROUP BY l.account",
                &[&broadcaster, &paid[0], &paid[1]],
            )
            .await?;
        let mut earnings = Earnings {
            gifts: gifts as u64,
            ..Earnings::default()
        };
        for row in rows {
            earnings.add(broadcaster, row.get(0), row.get(1));
        }
        Ok(earnings)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn open_red_packets(&self) -> Result<Vec<Value>, LedgerError> {
        let rows = self
            .reader
            .query(
                "SELECT t.meta FROM accounts a
                 JOIN legs l ON l.account = a.name JOIN transfers t ON t.id = l.transfer_id
                 WHERE a.name LIKE 'escrow:%' AND a.balance > 0 AND t.kind = $1",
                &[&TransferKind::RedPacket.as_str()],
            )
            .await?;
        rows.iter().map(|row| parse_meta(row.get(0))).collect()
    }

    async fn red_packet(&self, room: &str, id: &str) -> Result<Option<Value>, LedgerError> {
        let row = self
            .reader
            .query_opt(
                "SELECT meta FROM transfers
                 WHERE room = $1 AND kind = $2 AND meta::jsonb ->> 'id' = $3",
                &[&room, &TransferKind::RedPacket.as_str(), &id],
            )
            .await?;
        row.map(|row| parse_meta(row.get(0))).transpose()
    }

    async fn check(&self) -> Result<CheckReport, LedgerError> {
        let reader = &self.reader;
        let count = |sql: &'static str| async move {
            Ok::<i64, LedgerError>(reader.query_one(sql, &[]).await?.get(0))
        };
        let accounts = count("SELECT COUNT(DISTINCT account) FROM legs").await?;
        let transfers = count("SELECT COUNT(*) FROM transfers").await?;
        let sum = count("SELECT COALESCE(SUM(amount), 0)::BIGINT FROM legs").await?;
        let mut problems = Vec::new();
        if sum != 0 {
            problems.push(format!("accounts sum to {sum}, not zero"));
        }
        let listed = [
            (
                "SELECT transfer_id::TEXT, SUM(amount)::BIGINT FROM legs GROUP BY transfer_id HAVING SUM(amount) != 0",
                "unbalanced transfer",
            ),
            (
                "SELECT account, SUM(amount)::BIGINT FROM legs WHERE account LIKE 'wallet:%' OR account LIKE 'escrow:%'
                 GROUP BY account HAVING SUM(amount) < 0",
                "account below zero",
            ),
            (
                "SELECT t.id::TEXT, 0::BIGINT FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM legs l WHERE l.transfer_id = t.id)",
                "transfer without legs",
            ),
            (
                "SELECT COALESCE(a.name, l.account), (COALESCE(a.balance, 0) - COALESCE(l.sum, 0))::BIGINT
                 FROM accounts a FULL JOIN (SELECT account, SUM(amount) AS sum FROM legs GROUP BY account) l
                   ON l.account = a.name
                 WHERE COALESCE(a.balance, 0) != COALESCE(l.sum, 0)",
                "account balance differs from its legs by",
            ),
        ];
        for (sql, what) in listed {
            for row in reader.query(sql, &[]).await?.iter().take(20) {
                problems.push(format!(
                    "{what} {}: {}",
                    row.get::<_, &str>(0),
                    row.get::<_, i64>(1)
                ));
            }
        }
        Ok(CheckReport {
            ok: problems.is_empty(),
            accounts: accounts as u64,
            transfers: transfers as u64,
            sum,
            problems,
        })
    }
}
