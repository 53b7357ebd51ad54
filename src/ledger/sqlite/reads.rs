//! What the embedded ledger reads back: balances and statements to rebuild memory at
//! open, a key's first transfer, red packets' creation facts.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::ledger::facts::RedPacket;
use crate::ledger::rules::Prior;
use crate::ledger::{Account, Earnings, LedgerError, TransferKind, TransferMeta};
use crate::money::Minor;

/// A red packet's creation facts by room and id. The kind is spelled out, not bound,
/// so that the planner can use the partial index.
pub const RED_PACKET_BY_ID: &str = "SELECT meta FROM transfers
     WHERE room = ?1 AND kind = 'red_packet' AND json_extract(meta, '$.id') = ?2";

/// A stored account name, as an account; a name no account has is a damaged ledger.
pub fn account(name: &str) -> Result<Account, LedgerError> {
    Account::stored(name)
}

pub fn all_balances(connection: &Connection) -> Result<HashMap<Account, Minor>, LedgerError> {
    let mut statement =
        connection.prepare("SELECT account, SUM(amount) FROM legs GROUP BY account")?;
    let mut rows = statement.query([])?;
    let mut balances = HashMap::new();
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        balances.insert(account(&name)?, Minor::new(row.get(1)?));
    }
    Ok(balances)
}

/// Every broadcaster's statement: their room's paid transfers, summed by account.
pub fn all_statements(connection: &Connection) -> Result<HashMap<String, Earnings>, LedgerError> {
    let paid = TransferKind::PAID.map(TransferKind::as_str);
    let mut statements: HashMap<String, Earnings> = HashMap::new();
    let mut counts = connection.prepare(
        "SELECT room, COUNT(*) FROM transfers WHERE room IS NOT NULL AND kind IN (?1, ?2) GROUP BY room",
    )?;
    let mut rows = counts.query(params![paid[0], paid[1]])?;
    while let Some(row) = rows.next()? {
        let (room, gifts): (String, i64) = (row.get(0)?, row.get(1)?);
        statements.entry(room).or_default().gifts = gifts as u64;
    }
    let mut sums = connection.prepare(
        "SELECT t.room, l.account, SUM(l.amount) FROM legs l JOIN transfers t ON t.id = l.transfer_id
         WHERE t.room IS NOT NULL AND t.kind IN (?1, ?2) GROUP BY t.room, l.account",
    )?;
    let mut rows = sums.query(params![paid[0], paid[1]])?;
    while let Some(row) = rows.next()? {
        let (room, name, sum): (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let statement = statements.entry(room.clone()).or_default();
        statement.add(&room, &account(&name)?, Minor::new(sum));
    }
    Ok(statements)
}

/// What the idempotency key (user, key) holds, if anything.
pub fn find_prior(
    connection: &Connection,
    user: &str,
    key: &str,
) -> Result<Option<Prior>, LedgerError> {
    let found = connection
        .prepare_cached(
            "SELECT id, fingerprint, meta FROM transfers WHERE idem_user = ?1 AND idem_key = ?2",
        )?
        .query_row(params![user, key], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((transfer_id, fingerprint, meta)) = found else {
        return Ok(None);
    };
    Ok(Some(Prior {
        transfer_id,
        fingerprint,
        meta: TransferMeta::parse(&meta)?,
    }))
}

pub fn open_red_packets(connection: &Connection) -> Result<Vec<RedPacket>, LedgerError> {
    let mut statement = connection.prepare(
        "WITH open AS (SELECT account FROM legs WHERE account LIKE ?1
                       GROUP BY account HAVING SUM(amount) > 0)
         SELECT t.meta FROM open JOIN legs l ON l.account = open.account
         JOIN transfers t ON t.id = l.transfer_id AND t.kind = ?2",
    )?;
    let mut rows = statement.query(params![
        Account::ESCROW_PATTERN,
        TransferKind::RedPacket.as_str()
    ])?;
    let mut packets = Vec::new();
    while let Some(row) = rows.next()? {
        packets.push(RedPacket::parse(&row.get::<_, String>(0)?)?);
    }
    Ok(packets)
}

pub fn red_packet(
    connection: &Connection,
    room: &str,
    id: &str,
) -> Result<Option<RedPacket>, LedgerError> {
    let meta: Option<String> = connection
        .prepare_cached(RED_PACKET_BY_ID)?
        .query_row(params![room, id], |row| row.get(0))
        .optional()?;
    meta.as_deref().map(RedPacket::parse).transpose()
}
