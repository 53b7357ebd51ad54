//! Outgoing webhooks' queue beside the ledger, in `webhooks.sqlite3`: a file of its
//! own, so that its writes never wait for the ledger writer's lock (nor hold it up).
//! The writer thread commits transfers in `id` order, so a cursor over `transfers`
//! sees every booked transfer once, in order: the books are the outbox.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteLedger;
use crate::ledger::facts::TransferMeta;
use crate::ledger::webhooks::{
    decode_events, encode_events, event_id, sqlite_tables, wanting, wants, Attempt, Describe,
    DueDelivery, Endpoint, NewEvent, Owner, QueuedEvent, Subscriber, Tried, WebhookBooks, PRUNE,
};
use crate::ledger::LedgerError;

/// The queue's file, in the ledger's directory.
pub const FILE_NAME: &str = "webhooks.sqlite3";

/// Opens (creating if needed) the queue; a new queue starts after the last transfer
/// `ledger` holds (nobody asked for what was booked before).
pub fn open(path: &std::path::Path, ledger: &Connection) -> Result<Connection, LedgerError> {
    let connection = Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(&sqlite_tables())?;
    let last: i64 = ledger.query_row("SELECT COALESCE(MAX(id), 0) FROM transfers", [], |row| {
        row.get(0)
    })?;
    connection.execute(
        "INSERT OR IGNORE INTO webhook_cursor (name, transfer_id) VALUES ('booked', ?1)",
        [last],
    )?;
    Ok(connection)
}

const ENDPOINT_COLUMNS: &str = "id, owner, url, events, secret, disabled, created_ms";

fn endpoint(row: &Row) -> rusqlite::Result<(Endpoint, String)> {
    endpoint_at(row, 0)
}

fn with_events((mut endpoint, events): (Endpoint, String)) -> Result<Endpoint, LedgerError> {
    endpoint.events = decode_events(&events)?;
    Ok(endpoint)
}

/// Queues `event` for `endpoints` (which want it) at `now_ms`.
fn insert_event(
    c: &Connection,
    transfer: Option<i64>,
    event: &NewEvent,
    endpoints: &[&str],
) -> Result<(), LedgerError> {
    let seq: i64 = c
        .prepare_cached(
            "INSERT INTO webhook_events (transfer_id, kind, room, at_ms, data)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
        )?
        .query_row(
            params![
                transfer,
                event.kind,
                event.room,
                event.at_ms as i64,
                event.data
            ],
            |row| row.get(0),
        )?;
    let mut deliver = c.prepare_cached(
        "INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, next_at_ms)
         VALUES (?1, ?2, 'pending', ?3)",
    )?;
    for endpoint in endpoints {
        deliver.execute(params![endpoint, seq, event.at_ms as i64])?;
    }
    Ok(())
}

/// Every endpoint, as the queue matches events to it.
fn subscribers(c: &Connection) -> Result<Vec<Subscriber>, LedgerError> {
    let mut statement =
        c.prepare_cached("SELECT id, owner, events, disabled IS NULL FROM webhook_endpoints")?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, bool>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (id, owner, events, enabled) = row?;
        Ok(Subscriber {
            id,
            owner: Owner::from_stored(owner),
            events: decode_events(&events)?,
            enabled,
        })
    })
    .collect()
}

#[async_trait]
impl WebhookBooks for SqliteLedger {
    async fn add_endpoint(&self, endpoint: &Endpoint) -> Result<(), LedgerError> {
        let endpoint = endpoint.clone();
        self.webhook_statement(move |c| {
            c.execute(
                "INSERT INTO webhook_endpoints (id, owner, url, events, secret, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    endpoint.id,
                    endpoint.owner.stored(),
                    endpoint.url,
                    encode_events(&endpoint.events),
                    endpoint.secret,
                    endpoint.created_ms as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn endpoints(&self, owner: Option<&Owner>) -> Result<Vec<Endpoint>, LedgerError> {
        let owner = owner.map(|o| o.stored().to_owned());
        self.webhook_statement(move |c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
                 WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_ms, id"
            ))?;
            let rows = statement.query_map([owner], endpoint)?;
            rows.map(|row| with_events(row?)).collect()
        })
        .await
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, LedgerError> {
        let id = id.to_owned();
        self.webhook_statement(move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1"),
                    [id],
                    endpoint,
                )
                .optional()?;
            row.map(with_events).transpose()
        })
        .await
    }

    async fn remove_endpoint(&self, id: &str) -> Result<bool, LedgerError> {
        let id = id.to_owned();
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            transaction.execute(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = ?1 AND state = 'pending'",
                [&id],
            )?;
            let removed =
                transaction.execute("DELETE FROM webhook_endpoints WHERE id = ?1", [&id])?;
            transaction.commit()?;
            Ok(removed > 0)
        })
        .await
    }

    async fn enqueue(&self, event: NewEvent) -> Result<(), LedgerError> {
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            let subscribers = subscribers(&transaction)?;
            let (wanted, now) = wanting(&subscribers, &event);
            if wanted {
                insert_event(&transaction, None, &event, &now)?;
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn queue_booked(&self, describe: &Describe, limit: usize) -> Result<usize, LedgerError> {
        // Read first (a snapshot), described here, then written in one transaction
        // that moves the cursor only if nobody moved it meanwhile.
        let from: i64 = self
            .webhook_statement(|c| {
                Ok(c.query_row(
                    "SELECT transfer_id FROM webhook_cursor WHERE name = 'booked'",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await?;
        let booked = self
            .read(move |c| {
                let mut statement = c.prepare_cached(
                    "SELECT id, created_ms, meta FROM transfers WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = statement.query_map(params![from, limit as i64], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        let Some(&(to, _, _)) = booked.last() else {
            return Ok(0);
        };
        let mut events = Vec::new();
        for (id, created_ms, meta) in &booked {
            if let Some(event) = describe(&TransferMeta::parse(meta)?, *created_ms as u64) {
                events.push((*id, event));
            }
        }
        let taken = booked.len();
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            let moved = transaction.execute(
                "UPDATE webhook_cursor SET transfer_id = ?2 WHERE name = 'booked' AND transfer_id = ?1",
                params![from, to],
            )?;
            if moved == 1 {
                let subscribers = subscribers(&transaction)?;
                for (transfer, event) in &events {
                    let (wanted, now) = wanting(&subscribers, event);
                    if wanted {
                        insert_event(&transaction, Some(*transfer), event, &now)?;
                    }
                }
            }
            transaction.commit()?;
            Ok(taken)
        })
        .await
    }

    /// One process sends from this file, one pass at a time, recording a pass's
    /// attempts before it takes the next: no lease is needed (`_lease_until_ms`).
    async fn due(
        &self,
        now_ms: u64,
        _lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, LedgerError> {
        self.webhook_statement(move |c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT d.attempts, e.seq, e.kind, e.at_ms, e.data, {}
                 FROM webhook_deliveries d
                 JOIN webhook_events e ON e.seq = d.event_seq
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id
                 WHERE d.state = 'pending' AND d.next_at_ms <= ?1 AND d.lease_until_ms <= ?1
                   AND w.disabled IS NULL
                 ORDER BY d.next_at_ms, d.event_seq LIMIT ?2",
                ENDPOINT_COLUMNS
                    .split(", ")
                    .map(|c| format!("w.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
            let rows = statement.query_map(params![now_ms as i64, limit as i64], |row| {
                let seq = row.get::<_, i64>(1)? as u64;
                let event = QueuedEvent {
                    seq,
                    id: event_id(seq),
                    kind: row.get(2)?,
                    at_ms: row.get::<_, i64>(3)? as u64,
                    data: row.get(4)?,
                };
                let endpoint = endpoint_at(row, 5)?;
                Ok((row.get::<_, u32>(0)?, event, endpoint))
            })?;
            let mut due = Vec::new();
            for row in rows {
                let (attempts, event, endpoint) = row?;
                due.push(DueDelivery {
                    endpoint: with_events(endpoint)?,
                    event,
                    attempts,
                });
            }
            drop(statement);
            Ok(due)
        })
        .await
    }

    async fn attempted(&self, tried: Vec<Tried>) -> Result<(), LedgerError> {
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            for tried in &tried {
                let (state, next_at) = tried.outcome.state();
                let (endpoint, seq) = (&tried.endpoint, tried.event_seq as i64);
                let next_at = next_at.map(|n| n as i64);
                transaction
                    .prepare_cached(
                        "INSERT OR REPLACE INTO webhook_attempts
                         (endpoint_id, event_seq, attempt, at_ms, status, error, state, next_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        endpoint,
                        seq,
                        tried.attempt,
                        tried.at_ms as i64,
                        tried.status,
                        tried.error,
                        state,
                        next_at
                    ])?;
                transaction
                    .prepare_cached(
                        "UPDATE webhook_deliveries SET attempts = ?3, state = ?4, next_at_ms = ?5,
                         lease_until_ms = 0 WHERE endpoint_id = ?1 AND event_seq = ?2",
                    )?
                    .execute(params![
                        endpoint,
                        seq,
                        tried.attempt,
                        tried.outcome.delivery_state(),
                        next_at
                    ])?;
                if let Some(reason) = tried.outcome.disables() {
                    transaction.execute(
                        "UPDATE webhook_endpoints SET disabled = ?2 WHERE id = ?1",
                        params![endpoint, reason],
                    )?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>, LedgerError> {
        let endpoint = endpoint.to_owned();
        self.webhook_statement(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT a.event_seq, e.kind, a.attempt, a.at_ms, a.status, a.error, a.state, a.next_at_ms
                 FROM webhook_attempts a JOIN webhook_events e ON e.seq = a.event_seq
                 WHERE a.endpoint_id = ?1 ORDER BY a.at_ms DESC, a.event_seq DESC, a.attempt DESC
                 LIMIT ?2",
            )?;
            let rows = statement.query_map(params![endpoint, limit as i64], |row| {
                Ok(Attempt {
                    event_id: event_id(row.get::<_, i64>(0)? as u64),
                    kind: row.get(1)?,
                    attempt: row.get(2)?,
                    at_ms: row.get::<_, i64>(3)? as u64,
                    status: row.get(4)?,
                    error: row.get(5)?,
                    state: row.get(6)?,
                    next_at_ms: row.get::<_, Option<i64>>(7)?.map(|n| n as u64),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn prune(&self, before_ms: u64) -> Result<usize, LedgerError> {
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            let mut pruned = 0;
            for statement in PRUNE {
                pruned = transaction.execute(statement, [before_ms as i64])?;
            }
            transaction.commit()?;
            Ok(pruned)
        })
        .await
    }

    async fn replay(
        &self,
        endpoint: &str,
        since_ms: u64,
        now_ms: u64,
    ) -> Result<usize, LedgerError> {
        let Some(found) = self.endpoint(endpoint).await? else {
            return Ok(0);
        };
        self.webhook_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            transaction.execute(
                "UPDATE webhook_endpoints SET disabled = NULL WHERE id = ?1",
                [&found.id],
            )?;
            let mut statement = transaction.prepare_cached(
                "SELECT seq, kind, room FROM webhook_events WHERE at_ms >= ?1 ORDER BY seq",
            )?;
            let rows = statement.query_map([since_ms as i64], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                ))
            })?;
            let mut again = Vec::new();
            for row in rows {
                let (seq, kind, room) = row?;
                if wants(&found.owner, &found.events, &kind, room.as_deref()) {
                    again.push(seq);
                }
            }
            drop(statement);
            let mut queue = transaction.prepare_cached(
                "INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, next_at_ms)
                 VALUES (?1, ?2, 'pending', ?3)
                 ON CONFLICT (endpoint_id, event_seq)
                 DO UPDATE SET state = 'pending', next_at_ms = ?3, lease_until_ms = 0",
            )?;
            for seq in &again {
                queue.execute(params![found.id, seq, now_ms as i64])?;
            }
            drop(queue);
            transaction.commit()?;
            Ok(again.len())
        })
        .await
    }
}

/// An endpoint from the columns `ENDPOINT_COLUMNS` starting at `at`.
fn endpoint_at(row: &Row, at: usize) -> rusqlite::Result<(Endpoint, String)> {
    Ok((
        Endpoint {
            id: row.get(at)?,
            owner: Owner::from_stored(row.get(at + 1)?),
            url: row.get(at + 2)?,
            events: Vec::new(),
            secret: row.get(at + 4)?,
            disabled: row.get(at + 5)?,
            created_ms: row.get::<_, i64>(at + 6)? as u64,
        },
        row.get(at + 3)?,
    ))
}
