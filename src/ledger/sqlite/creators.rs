//! Creators' money in the embedded ledger: payees' balances from memory, statements,
//! buyers' gifts and pending payouts from the file (creators' legs are indexed by
//! `creator_legs`, a buyer's transfers by their idempotency keys).

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::reads::account;
use super::schema::CREATOR_LEGS;
use super::SqliteLedger;
use crate::ledger::creators::{Booked, CreatorBooks};
use crate::ledger::{Account, LedgerError, Payee, TransferKind, TransferMeta};
use crate::money::Minor;

#[async_trait]
impl CreatorBooks for SqliteLedger {
    async fn payee_accounts(&self, payee: &Payee) -> Result<Vec<(Account, Minor)>, LedgerError> {
        let creators = self.statements.lock().expect("creators' books lock");
        let accounts = creators.accounts.get(payee);
        Ok(accounts
            .into_iter()
            .flatten()
            .map(|(a, b)| (a.clone(), *b))
            .collect())
    }

    async fn balances_of(&self, accounts: Vec<Account>) -> Result<Vec<Minor>, LedgerError> {
        self.read(move |c| {
            let mut statement = c.prepare_cached(&balance_sql())?;
            let mut sum = |name: String| -> Result<Minor, LedgerError> {
                Ok(Minor::new(statement.query_row([name], |row| row.get(0))?))
            };
            accounts.iter().map(|a| sum(a.key())).collect()
        })
        .await
    }

    async fn paid_by(
        &self,
        user: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Booked>, LedgerError> {
        let user = user.to_owned();
        self.read(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT id, created_ms, meta FROM transfers
                 WHERE idem_user = ?1 AND kind IN (?2, ?3) AND id < ?4 ORDER BY id DESC LIMIT ?5",
            )?;
            let paid = TransferKind::PAID.map(TransferKind::as_str);
            let before = before.unwrap_or(i64::MAX);
            let rows = statement.query(params![user, paid[0], paid[1], before, limit as i64])?;
            booked(c, rows)
        })
        .await
    }

    async fn statement(
        &self,
        payee: &Payee,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Booked>, LedgerError> {
        let names = payee_names(payee);
        self.read(move |c| {
            let mut statement = c.prepare_cached(&statement_sql())?;
            let [available, paid, held, payouts] = names;
            let rows = statement.query(params![
                available,
                paid,
                held,
                payouts,
                from_ms as i64,
                to_ms as i64
            ])?;
            booked(c, rows)
        })
        .await
    }

    async fn pending_payouts(&self) -> Result<Vec<(Account, Minor)>, LedgerError> {
        let creators = self.statements.lock().expect("creators' books lock");
        let accounts = creators.accounts.values().flatten();
        Ok(accounts
            .filter(|(account, balance)| {
                matches!(account, Account::Payout(..)) && **balance > Minor::ZERO
            })
            .map(|(account, balance)| (account.clone(), *balance))
            .collect())
    }
}

/// The sum of one creator's account's legs.
pub(super) fn balance_sql() -> String {
    format!("SELECT COALESCE(SUM(amount), 0) FROM legs WHERE account = ?1 AND {CREATOR_LEGS}")
}

/// The transfers that moved a payee's accounts (`payee_names`) in a period.
pub(super) fn statement_sql() -> String {
    format!(
        "SELECT id, created_ms, meta FROM transfers WHERE id IN (
             SELECT transfer_id FROM legs
             WHERE (account IN (?1, ?2) OR account GLOB ?3 OR account GLOB ?4) AND {CREATOR_LEGS})
           AND created_ms >= ?5 AND created_ms < ?6
         ORDER BY id"
    )
}

/// The stored names of `payee`'s available and paid-out accounts, and `GLOB` patterns
/// of their held and payout accounts.
fn payee_names(payee: &Payee) -> [String; 4] {
    let [held, payouts] = payee.prefixes();
    [
        payee.available().key(),
        Account::PaidOut(payee.clone()).key(),
        format!("{held}*"),
        format!("{payouts}*"),
    ]
}

/// The transfers `rows` (id, created_ms, meta) name, with their legs.
fn booked(
    connection: &Connection,
    mut rows: rusqlite::Rows<'_>,
) -> Result<Vec<Booked>, LedgerError> {
    let mut legs = connection
        .prepare_cached("SELECT account, amount FROM legs WHERE transfer_id = ?1 ORDER BY n")?;
    let mut transfers = Vec::new();
    while let Some(row) = rows.next()? {
        let transfer_id: i64 = row.get(0)?;
        let mut leg_rows = legs.query([transfer_id])?;
        let mut booked_legs = Vec::new();
        while let Some(leg) = leg_rows.next()? {
            booked_legs.push((account(&leg.get::<_, String>(0)?)?, Minor::new(leg.get(1)?)));
        }
        transfers.push(Booked {
            transfer_id,
            created_ms: row.get::<_, i64>(1)? as u64,
            meta: TransferMeta::parse(&row.get::<_, String>(2)?)?,
            legs: booked_legs,
        });
    }
    Ok(transfers)
}
