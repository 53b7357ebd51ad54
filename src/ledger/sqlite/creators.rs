//! Creators' money in the embedded ledger: payees' balances, refunds' counters and
//! pending payouts from memory; statements from the lines of `lines.rs`; a buyer's
//! gifts by their idempotency keys.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::lines::STATEMENT;
use super::reads::account;
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
        let creators = self.statements.lock().expect("creators' books lock");
        // An account kept here that the books never used holds nothing; one of a kind
        // not kept here cannot be answered from memory.
        let balance = |account: &Account| match (Payee::of(account), account) {
            (Some(payee), _) => Ok((creators.accounts.get(&payee))
                .and_then(|a| a.get(account).copied())
                .unwrap_or(Minor::ZERO)),
            (None, Account::Traced(_) | Account::Losses) => Ok(creators
                .refunds
                .get(account)
                .copied()
                .unwrap_or(Minor::ZERO)),
            (None, other) => Err(LedgerError::Storage(format!(
                "the balance of {other:?} is not kept in memory"
            ))),
        };
        accounts.iter().map(balance).collect()
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
            let mut statement = c.prepare_cached(STATEMENT)?;
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
        let created_ms = row.get::<_, i64>(1)? as u64;
        let meta = TransferMeta::parse(&row.get::<_, String>(2)?)?;
        transfers.push(Booked::read(
            transfer_id,
            created_ms,
            meta,
            Some(booked_legs),
        )?);
    }
    Ok(transfers)
}
