//! The shared ledger on PostgreSQL, for several Ovation nodes (`--ledger postgres://…`).
//!
//! The same rulebook as the embedded ledger (`rules`), executed on balances the
//! database locks, so that the rules hold across processes: a unique constraint on
//! (user, key) makes a key committed by one node a retry on every other, and the
//! `accounts` table keeps each balance, with a CHECK constraint that keeps held
//! accounts at or above zero as a second line of defence. Each node group-commits
//! through its own writer task (`writer`); connections lost are opened again
//! (`connection`).

mod audit;
mod connection;
mod creators;
mod moderation;
mod pk;
mod profiles;
mod webhooks;
mod writer;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::facts::RedPacket;
use super::{
    answered, queue_full, writer_stopped, Account, CheckReport, Committed, Earnings, Holdings, Job,
    Ledger, LedgerError, Standing, StorageFault, TransferKind, TransferMeta, TransferRequest,
    QUEUE_CAPACITY,
};
use crate::clock::Clock;
use crate::money::{Day, Minor};
use connection::{connect, Backoff, Reader};

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
    CONSTRAINT held_money_never_below_zero CHECK (balance >= 0)
);
CREATE INDEX IF NOT EXISTS transfers_by_room ON transfers (room, kind);
-- Version 3 stores a transfer's facts tagged with its kind, and the facts of a grab
-- or a refund name their room. Books written before versions were kept are migrated.
CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL);
UPDATE transfers SET meta = (meta::jsonb || jsonb_build_object('kind', kind))::text
    WHERE NOT EXISTS (SELECT 1 FROM schema_version);
UPDATE transfers SET meta = (meta::jsonb || jsonb_build_object('room', room))::text
    WHERE kind IN ('grab', 'refund') AND room IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM schema_version);
INSERT INTO schema_version SELECT 3 WHERE NOT EXISTS (SELECT 1 FROM schema_version);
-- Version 4 holds earnings (held, available, pending payouts) at or above zero too,
-- and indexes legs by account for prefixes (a payee's accounts share one).
DO $$ BEGIN
IF (SELECT version FROM schema_version) = 3 THEN
    ALTER TABLE accounts DROP CONSTRAINT held_money_never_below_zero;
    ALTER TABLE accounts ADD CONSTRAINT held_money_never_below_zero
        CHECK (balance >= 0 OR NOT (name LIKE 'wallet:%' OR name LIKE 'escrow:%'
            OR name LIKE 'earnings:%' OR name LIKE 'agency:%' OR name LIKE 'held:%'
            OR name LIKE 'payout:%'));
    DROP INDEX IF EXISTS legs_by_account;
    UPDATE schema_version SET version = 4;
END IF;
END $$;
CREATE INDEX IF NOT EXISTS legs_by_account_name ON legs (account text_pattern_ops);
CREATE INDEX IF NOT EXISTS accounts_by_name_pattern ON accounts (name text_pattern_ops);
COMMIT;
";

/// The schema version this server reads and writes.
const SCHEMA_VERSION: i32 = 4;

pub struct PostgresLedger {
    submit: mpsc::Sender<Job>,
    reader: Reader,
}

impl PostgresLedger {
    /// Connects, creates or migrates the tables, and starts the writer task. A panic
    /// of the writer (a broken rule) trips `fault`.
    pub async fn open(
        url: &str,
        fault: StorageFault,
        clock: Clock,
    ) -> Result<PostgresLedger, LedgerError> {
        let client = connect(url).await?;
        client.batch_execute(SCHEMA).await?;
        let (profiles, moderation) = (super::profiles::TABLE, crate::moderation::TABLES);
        let webhooks = super::webhooks::postgres_tables();
        let (battles, gifts_by_room) = (crate::pk::TABLES, pk::GIFTS_BY_ROOM);
        (client.batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7415161718); {profiles} {moderation} {webhooks} \
             {battles} {gifts_by_room} COMMIT;"
        )))
        .await?;
        let version: i32 = client
            .query_one("SELECT version FROM schema_version", &[])
            .await?
            .get(0);
        if version != SCHEMA_VERSION {
            return Err(LedgerError::Storage(format!(
                "ledger schema version {version} is not this server's {SCHEMA_VERSION}"
            )));
        }
        let writer = writer::Writer {
            connection: Some(writer::Connection::open(url).await?),
            url: url.to_owned(),
            backoff: Backoff::new(std::time::Instant::now()),
            clock,
        };
        let (submit, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(writer.run(jobs));
        tokio::spawn(async move {
            if let Err(error) = task.await {
                fault.trip(format!("the ledger writer stopped: {error}"));
            }
        });
        Ok(PostgresLedger {
            submit,
            reader: Reader::new(url, client),
        })
    }
}

#[async_trait]
impl Ledger for PostgresLedger {
    async fn commit(&self, request: TransferRequest) -> Result<Committed, LedgerError> {
        let (answer, answer_rx) = oneshot::channel();
        self.submit
            .try_send(Job { request, answer })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => queue_full(),
                mpsc::error::TrySendError::Closed(_) => writer_stopped(),
            })?;
        answered(answer_rx).await
    }

    async fn find(&self, user: &str, key: &str) -> Result<Option<Committed>, LedgerError> {
        let row = self
            .reader
            .client()
            .await?
            .query_opt(
                "SELECT id, fingerprint, meta FROM transfers WHERE idem_user = $1 AND idem_key = $2",
                &[&user, &key],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Committed {
            transfer_id: row.get(0),
            duplicate: true,
            fingerprint: row.get(1),
            meta: TransferMeta::parse(row.get(2))?,
        }))
    }

    async fn holdings(&self, day: Day) -> Result<Holdings, LedgerError> {
        let spent_on_day = format!("{}%", Account::Spent(day, String::new()).key());
        let rows = self
            .reader
            .client()
            .await?
            .query(
                "SELECT name, balance FROM accounts WHERE name LIKE $1 OR name LIKE $2 OR name LIKE $3",
                &[&Account::WALLET_PATTERN, &Account::DEBT_PATTERN, &spent_on_day],
            )
            .await?;
        let accounts = rows
            .iter()
            .filter_map(|row| Some((Account::parse(row.get(0))?, Minor::new(row.get(1)))));
        Ok(Holdings::of(day, accounts))
    }

    async fn shared_standing(&self, user: &str, day: Day) -> Result<Option<Standing>, LedgerError> {
        let user = user.to_owned();
        let names = [
            Account::Wallet(user.clone()),
            Account::Debt(user.clone()),
            Account::Spent(day, user),
        ]
        .map(|account| account.key());
        let rows = self
            .reader
            .client()
            .await?
            .query(
                "SELECT name, balance FROM accounts WHERE name = ANY($1)",
                &[&names.as_slice()],
            )
            .await?;
        // No row: never credited, never in debt, nothing spent.
        let mut standing = Standing {
            wallet: Minor::ZERO,
            debt: Minor::ZERO,
            spent: Minor::ZERO,
        };
        for row in rows {
            let balance = Minor::new(row.get(1));
            match Account::parse(row.get(0)) {
                Some(Account::Debt(_)) => standing.debt = -balance,
                Some(Account::Spent(..)) => standing.spent = balance,
                _ => standing.wallet = balance,
            }
        }
        Ok(Some(standing))
    }

    async fn earnings(&self, broadcaster: &str) -> Result<Earnings, LedgerError> {
        let paid = TransferKind::PAID.map(TransferKind::as_str);
        let client = self.reader.client().await?;
        let gifts: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM transfers WHERE room = $1 AND kind IN ($2, $3)",
                &[&broadcaster, &paid[0], &paid[1]],
            )
            .await?
            .get(0);
        let rows = client
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
            let account = Account::stored(row.get(0))?;
            earnings.add(broadcaster, &account, Minor::new(row.get(1)));
        }
        Ok(earnings)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn open_red_packets(&self) -> Result<Vec<RedPacket>, LedgerError> {
        let rows = self
            .reader
            .client()
            .await?
            .query(
                "SELECT t.meta FROM accounts a
                 JOIN legs l ON l.account = a.name JOIN transfers t ON t.id = l.transfer_id
                 WHERE a.name LIKE $1 AND a.balance > 0 AND t.kind = $2",
                &[&Account::ESCROW_PATTERN, &TransferKind::RedPacket.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| RedPacket::parse(row.get(0)))
            .collect()
    }

    async fn red_packet(&self, room: &str, id: &str) -> Result<Option<RedPacket>, LedgerError> {
        let row = self
            .reader
            .client()
            .await?
            .query_opt(
                "SELECT meta FROM transfers
                 WHERE room = $1 AND kind = $2 AND meta::jsonb ->> 'id' = $3",
                &[&room, &TransferKind::RedPacket.as_str(), &id],
            )
            .await?;
        row.map(|row| RedPacket::parse(row.get(0))).transpose()
    }

    async fn check(&self) -> Result<CheckReport, LedgerError> {
        audit::check(&*self.reader.client().await?).await
    }
}
