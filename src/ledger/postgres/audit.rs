//! `ledger check` on the shared ledger: every invariant of the books, and the
//! `accounts` table against the sum of the legs.

use tokio_postgres::Client;

use crate::ledger::audit::account_problems;
use crate::ledger::{CheckReport, LedgerError};

const PROBLEMS: [(&str, &str); 4] = [
    (
        "SELECT transfer_id::TEXT, SUM(amount)::BIGINT FROM legs GROUP BY transfer_id HAVING SUM(amount) != 0",
        "unbalanced transfer",
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
    (
        "SELECT id::TEXT, 0::BIGINT FROM transfers WHERE meta::jsonb ->> 'kind' IS DISTINCT FROM kind",
        "transfer whose facts do not name its kind",
    ),
];

pub async fn check(client: &Client) -> Result<CheckReport, LedgerError> {
    let count = |sql: &'static str| async move {
        Ok::<i64, LedgerError>(client.query_one(sql, &[]).await?.get(0))
    };
    let accounts = count("SELECT COUNT(DISTINCT account) FROM legs").await?;
    let transfers = count("SELECT COUNT(*) FROM transfers").await?;
    let sum = count("SELECT COALESCE(SUM(amount), 0)::BIGINT FROM legs").await?;
    let mut problems = Vec::new();
    for (sql, what) in PROBLEMS {
        for row in client
            .query(sql, &[])
            .await?
            .iter()
            .take(CheckReport::LISTED)
        {
            problems.push(format!(
                "{what} {}: {}",
                row.get::<_, &str>(0),
                row.get::<_, i64>(1)
            ));
        }
    }
    let balances = client
        .query(
            "SELECT account, SUM(amount)::BIGINT FROM legs GROUP BY account",
            &[],
        )
        .await?;
    problems.extend(account_problems(
        balances.iter().map(|row| (row.get(0), row.get(1))),
    ));
    Ok(CheckReport::new(accounts, transfers, sum, problems))
}
