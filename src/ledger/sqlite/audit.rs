//! `ledger check` on the embedded ledger: every invariant of the books, from disk.

use rusqlite::Connection;

use crate::ledger::audit::account_problems;
use crate::ledger::{CheckReport, LedgerError};

pub fn check(connection: &Connection) -> Result<CheckReport, LedgerError> {
    let count = |sql: &str| -> Result<i64, LedgerError> {
        Ok(connection.query_row(sql, [], |row| row.get(0))?)
    };
    let mut problems = Vec::new();
    let accounts = count("SELECT COUNT(DISTINCT account) FROM legs")?;
    let transfers = count("SELECT COUNT(*) FROM transfers")?;
    let sum = count("SELECT COALESCE(SUM(amount), 0) FROM legs")?;
    let listed: [(&str, &str); 4] = [
        (
            "SELECT CAST(transfer_id AS TEXT), SUM(amount) FROM legs GROUP BY transfer_id HAVING SUM(amount) != 0",
            "unbalanced transfer",
        ),
        (
            "SELECT idem_user || '/' || idem_key, COUNT(*) FROM transfers WHERE idem_key IS NOT NULL
             GROUP BY idem_user, idem_key HAVING COUNT(*) > 1",
            "idempotency key used twice",
        ),
        (
            "SELECT CAST(t.id AS TEXT), 0 FROM transfers t WHERE NOT EXISTS (SELECT 1 FROM legs l WHERE l.transfer_id = t.id)",
            "transfer without legs",
        ),
        (
            "SELECT CAST(id AS TEXT), 0 FROM transfers
             WHERE json_valid(meta) = 0 OR json_extract(meta, '$.kind') IS NOT kind",
            "transfer whose facts do not name its kind",
        ),
    ];
    for (sql, what) in listed {
        let mut statement = connection.prepare(sql)?;
        let mut rows = statement.query([])?;
        let mut shown = 0;
        while let (true, Some(row)) = (shown < CheckReport::LISTED, rows.next()?) {
            let (subject, amount): (String, i64) = (row.get(0)?, row.get(1)?);
            problems.push(format!("{what} {subject}: {amount}"));
            shown += 1;
        }
    }
    let mut statement =
        connection.prepare("SELECT account, SUM(amount) FROM legs GROUP BY account")?;
    let balances: Vec<(String, i64)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    problems.extend(account_problems(
        balances.iter().map(|(n, s)| (n.as_str(), *s)),
    ));
    Ok(CheckReport::new(accounts, transfers, sum, problems))
}
