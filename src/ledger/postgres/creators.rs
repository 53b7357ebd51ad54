//! Creators' money in the shared ledger: payees' balances and pending payouts from the
//! `accounts` table, statements and buyers' gifts from the transfers and their legs
//! (legs are indexed by account for prefixes: a payee's accounts share one).

use std::collections::HashMap;

use async_trait::async_trait;
use tokio_postgres::{Client, Row};

use super::PostgresLedger;
use crate::ledger::creators::{Booked, CreatorBooks};
use crate::ledger::{Account, LedgerError, Payee, TransferKind, TransferMeta};
use crate::money::Minor;

#[async_trait]
impl CreatorBooks for PostgresLedger {
    async fn payee_accounts(&self, payee: &Payee) -> Result<Vec<(Account, Minor)>, LedgerError> {
        let [names, held, payouts] = payee_names(payee);
        let rows = (self.reader.client().await?)
            .query(
                "SELECT name, balance FROM accounts
                 WHERE name = ANY($1) OR name LIKE $2 OR name LIKE $3",
                &[&names, &held[0], &payouts[0]],
            )
            .await?;
        rows.iter().map(balance).collect()
    }

    async fn balances_of(&self, accounts: Vec<Account>) -> Result<Vec<Minor>, LedgerError> {
        let names: Vec<String> = accounts.iter().map(Account::key).collect();
        let rows = (self.reader.client().await?)
            .query(
                "SELECT name, balance FROM accounts WHERE name = ANY($1)",
                &[&names],
            )
            .await?;
        let found: Vec<(Account, Minor)> = rows.iter().map(balance).collect::<Result<_, _>>()?;
        Ok(accounts
            .iter()
            .map(|account| {
                let row = found.iter().find(|(a, _)| a == account);
                row.map_or(Minor::ZERO, |(_, b)| *b)
            })
            .collect())
    }

    async fn paid_by(
        &self,
        user: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Booked>, LedgerError> {
        let client = self.reader.client().await?;
        let paid = TransferKind::PAID.map(TransferKind::as_str);
        let rows = client
            .query(
                "SELECT id, created_ms, meta FROM transfers
                 WHERE idem_user = $1 AND kind IN ($2, $3) AND id < $4 ORDER BY id DESC LIMIT $5",
                &[
                    &user,
                    &paid[0],
                    &paid[1],
                    &before.unwrap_or(i64::MAX),
                    &(limit as i64),
                ],
            )
            .await?;
        booked(&client, rows).await
    }

    async fn statement(
        &self,
        payee: &Payee,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Booked>, LedgerError> {
        let [names, held, payouts] = payee_names(payee);
        let client = self.reader.client().await?;
        let rows = client
            .query(
                "SELECT id, created_ms, meta FROM transfers WHERE id IN (
                     SELECT transfer_id FROM legs
                     WHERE account = ANY($1) OR account LIKE $2 OR account LIKE $3)
                   AND created_ms >= $4 AND created_ms < $5
                 ORDER BY id",
                &[
                    &names,
                    &held[0],
                    &payouts[0],
                    &(from_ms as i64),
                    &(to_ms as i64),
                ],
            )
            .await?;
        booked(&client, rows).await
    }

    async fn pending_payouts(&self) -> Result<Vec<(Account, Minor)>, LedgerError> {
        let rows = (self.reader.client().await?)
            .query(
                "SELECT name, balance FROM accounts WHERE name LIKE 'payout:%' AND balance > 0",
                &[],
            )
            .await?;
        rows.iter().map(balance).collect()
    }
}

/// The stored names of `payee`'s available and paid-out accounts, and `LIKE` patterns
/// of their held and payout accounts (each alone in its array).
fn payee_names(payee: &Payee) -> [Vec<String>; 3] {
    let [held, payouts] = payee
        .prefixes()
        .map(|prefix| vec![format!("{}%", escape_like(&prefix))]);
    let names = vec![
        payee.available().key(),
        Account::PaidOut(payee.clone()).key(),
    ];
    [names, held, payouts]
}

/// `text` matched literally by `LIKE` (ids may hold `_`, which `LIKE` reads as any
/// character).
fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

fn balance(row: &Row) -> Result<(Account, Minor), LedgerError> {
    Ok((Account::stored(row.get(0))?, Minor::new(row.get(1))))
}

/// The transfers `rows` (id, created_ms, meta) name, with their legs.
async fn booked(client: &Client, rows: Vec<Row>) -> Result<Vec<Booked>, LedgerError> {
    let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let leg_rows = client
        .query(
            "SELECT transfer_id, account, amount FROM legs WHERE transfer_id = ANY($1)
             ORDER BY transfer_id, n",
            &[&ids],
        )
        .await?;
    let mut legs: HashMap<i64, Vec<(Account, Minor)>> = HashMap::new();
    for leg in leg_rows {
        let account = Account::stored(leg.get(1))?;
        legs.entry(leg.get(0))
            .or_default()
            .push((account, Minor::new(leg.get(2))));
    }
    rows.iter()
        .map(|row| {
            let transfer_id: i64 = row.get(0);
            let created_ms = row.get::<_, i64>(1) as u64;
            let meta = TransferMeta::parse(row.get(2))?;
            Booked::read(transfer_id, created_ms, meta, legs.remove(&transfer_id))
        })
        .collect()
}
