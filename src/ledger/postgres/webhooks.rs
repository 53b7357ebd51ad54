//! Outgoing webhooks' queue in the shared database. Every statement stands alone (the
//! read connection is shared), so each step that must be atomic is one statement.
//! Nodes take booked transfers from `webhook_outbox` and due deliveries under short
//! leases (`FOR UPDATE SKIP LOCKED`): each is handled by one node at a time, and a
//! node that dies leaves them to another once its lease ends.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::PostgresLedger;
use crate::ledger::facts::TransferMeta;
use crate::ledger::webhooks::{
    decode_events, encode_events, event_id, wanting, wants, Attempt, Describe, DueDelivery,
    Endpoint, NewEvent, Owner, QueuedEvent, Subscriber, Tried, WebhookBooks, PRUNE,
};
use crate::ledger::LedgerError;

/// How long a node holds booked transfers it is queueing.
const OUTBOX_LEASE_MS: u64 = 30_000;

const ENDPOINT_COLUMNS: &str = "w.id, w.owner, w.url, w.events, w.secret, w.disabled, w.created_ms";

fn endpoint_at(row: &Row, at: usize) -> Result<Endpoint, LedgerError> {
    Ok(Endpoint {
        id: row.get(at),
        owner: Owner::from_stored(row.get(at + 1)),
        url: row.get(at + 2),
        events: decode_events(row.get(at + 3))?,
        secret: row.get(at + 4),
        disabled: row.get(at + 5),
        created_ms: row.get::<_, i64>(at + 6) as u64,
    })
}

impl PostgresLedger {
    async fn subscribers(&self) -> Result<Vec<Subscriber>, LedgerError> {
        let rows = (self.reader.client().await?)
            .query(
                "SELECT id, owner, events, disabled IS NULL FROM webhook_endpoints",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Subscriber {
                    id: row.get(0),
                    owner: Owner::from_stored(row.get(1)),
                    events: decode_events(row.get(2))?,
                    enabled: row.get(3),
                })
            })
            .collect()
    }

    /// Queues one event for `endpoints`; a booked transfer's at most once, and its
    /// outbox row goes in the same statement.
    async fn insert_event(
        &self,
        transfer: Option<i64>,
        event: &NewEvent,
        endpoints: &[&str],
    ) -> Result<(), LedgerError> {
        (self.reader.client().await?)
            .execute(
                "WITH queued AS (
                     INSERT INTO webhook_events (transfer_id, kind, room, at_ms, data)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (transfer_id) DO NOTHING RETURNING seq
                 ), deliveries AS (
                     INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, next_at_ms)
                     SELECT endpoint, queued.seq, 'pending', $4
                     FROM queued, unnest($6::TEXT[]) AS endpoint
                 )
                 DELETE FROM webhook_outbox WHERE transfer_id = $1",
                &[
                    &transfer,
                    &event.kind,
                    &event.room,
                    &(event.at_ms as i64),
                    &event.data,
                    &endpoints,
                ],
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl WebhookBooks for PostgresLedger {
    async fn add_endpoint(&self, endpoint: &Endpoint) -> Result<(), LedgerError> {
        (self.reader.client().await?)
            .execute(
                "INSERT INTO webhook_endpoints (id, owner, url, events, secret, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &endpoint.id,
                    &endpoint.owner.stored(),
                    &endpoint.url,
                    &encode_events(&endpoint.events),
                    &endpoint.secret,
                    &(endpoint.created_ms as i64),
                ],
            )
            .await?;
        Ok(())
    }

    async fn endpoints(&self, owner: Option<&Owner>) -> Result<Vec<Endpoint>, LedgerError> {
        let owner = owner.map(Owner::stored);
        let rows = (self.reader.client().await?)
            .query(
                &format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w
                     WHERE $1::TEXT IS NULL OR w.owner = $1 ORDER BY w.created_ms, w.id"
                ),
                &[&owner],
            )
            .await?;
        rows.iter().map(|row| endpoint_at(row, 0)).collect()
    }

    async fn endpoint(&self, id: &str) -> Result<Option<Endpoint>, LedgerError> {
        let row = (self.reader.client().await?)
            .query_opt(
                &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w WHERE w.id = $1"),
                &[&id],
            )
            .await?;
        row.map(|row| endpoint_at(&row, 0)).transpose()
    }

    async fn remove_endpoint(&self, id: &str) -> Result<bool, LedgerError> {
        let removed = (self.reader.client().await?)
            .execute(
                "WITH pending AS (
                     DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'pending'
                 )
                 DELETE FROM webhook_endpoints WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(removed > 0)
    }

    async fn enqueue(&self, event: NewEvent) -> Result<(), LedgerError> {
        let subscribers = self.subscribers().await?;
        let (wanted, now) = wanting(&subscribers, &event);
        if !wanted {
            return Ok(());
        }
        self.insert_event(None, &event, &now).await
    }

    async fn queue_booked(&self, describe: &Describe, limit: usize) -> Result<usize, LedgerError> {
        let now = crate::ids::unix_ms();
        let client = self.reader.client().await?;
        let claimed: Vec<i64> = client
            .query(
                "UPDATE webhook_outbox SET lease_until_ms = $2 WHERE transfer_id IN (
                     SELECT transfer_id FROM webhook_outbox WHERE lease_until_ms <= $1
                     ORDER BY transfer_id LIMIT $3 FOR UPDATE SKIP LOCKED
                 ) RETURNING transfer_id",
                &[
                    &(now as i64),
                    &((now + OUTBOX_LEASE_MS) as i64),
                    &(limit as i64),
                ],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if claimed.is_empty() {
            return Ok(0);
        }
        let booked = client
            .query(
                "SELECT id, created_ms, meta FROM transfers WHERE id = ANY($1) ORDER BY id",
                &[&claimed],
            )
            .await?;
        let subscribers = self.subscribers().await?;
        let mut nothing_to_send = Vec::new();
        for row in &booked {
            let (id, created_ms): (i64, i64) = (row.get(0), row.get(1));
            let meta = TransferMeta::parse(row.get(2))?;
            match describe(&meta, created_ms as u64) {
                Some(event) => {
                    let (wanted, now) = wanting(&subscribers, &event);
                    if wanted {
                        self.insert_event(Some(id), &event, &now).await?;
                    } else {
                        nothing_to_send.push(id);
                    }
                }
                None => nothing_to_send.push(id),
            }
        }
        client
            .execute(
                "DELETE FROM webhook_outbox WHERE transfer_id = ANY($1)",
                &[&nothing_to_send],
            )
            .await?;
        Ok(claimed.len())
    }

    async fn due(
        &self,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, LedgerError> {
        let rows = (self.reader.client().await?)
            .query(
                &format!(
                    "WITH picked AS (
                         SELECT d.endpoint_id, d.event_seq FROM webhook_deliveries d
                         JOIN webhook_endpoints w ON w.id = d.endpoint_id AND w.disabled IS NULL
                         WHERE d.state = 'pending' AND d.next_at_ms <= $1 AND d.lease_until_ms <= $1
                         ORDER BY d.next_at_ms, d.event_seq LIMIT $3 FOR UPDATE OF d SKIP LOCKED
                     ), leased AS (
                         UPDATE webhook_deliveries d SET lease_until_ms = $2 FROM picked p
                         WHERE d.endpoint_id = p.endpoint_id AND d.event_seq = p.event_seq
                         RETURNING d.endpoint_id, d.event_seq, d.attempts
                     )
                     SELECT l.attempts, e.seq, e.kind, e.at_ms, e.data, {ENDPOINT_COLUMNS}
                     FROM leased l
                     JOIN webhook_events e ON e.seq = l.event_seq
                     JOIN webhook_endpoints w ON w.id = l.endpoint_id
                     ORDER BY e.seq"
                ),
                &[&(now_ms as i64), &(lease_until_ms as i64), &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seq = row.get::<_, i64>(1) as u64;
                Ok(DueDelivery {
                    attempts: row.get::<_, i32>(0) as u32,
                    event: QueuedEvent {
                        seq,
                        id: event_id(seq),
                        kind: row.get(2),
                        at_ms: row.get::<_, i64>(3) as u64,
                        data: row.get(4),
                    },
                    endpoint: endpoint_at(row, 5)?,
                })
            })
            .collect()
    }

    async fn attempted(&self, tried: Vec<Tried>) -> Result<(), LedgerError> {
        let client = self.reader.client().await?;
        for tried in &tried {
            let (state, next_at) = tried.outcome.state();
            let (delivery_state, disable) =
                (tried.outcome.delivery_state(), tried.outcome.disables());
            client
                .execute(
                    "WITH attempt AS (
                     INSERT INTO webhook_attempts
                     (endpoint_id, event_seq, attempt, at_ms, status, error, state, next_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
                 ), disabled AS (
                     UPDATE webhook_endpoints SET disabled = $9 WHERE id = $1 AND $9::TEXT IS NOT NULL
                 )
                 UPDATE webhook_deliveries SET attempts = $3, state = $10, next_at_ms = $8,
                     lease_until_ms = 0
                 WHERE endpoint_id = $1 AND event_seq = $2",
                    &[
                        &tried.endpoint,
                        &(tried.event_seq as i64),
                        &(tried.attempt as i32),
                        &(tried.at_ms as i64),
                        &tried.status.map(i32::from),
                        &tried.error,
                        &state,
                        &next_at.map(|n| n as i64),
                        &disable,
                        &delivery_state,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    async fn attempts(&self, endpoint: &str, limit: usize) -> Result<Vec<Attempt>, LedgerError> {
        let rows = (self.reader.client().await?)
            .query(
                "SELECT a.event_seq, e.kind, a.attempt, a.at_ms, a.status, a.error, a.state, a.next_at_ms
                 FROM webhook_attempts a JOIN webhook_events e ON e.seq = a.event_seq
                 WHERE a.endpoint_id = $1 ORDER BY a.at_ms DESC, a.event_seq DESC, a.attempt DESC
                 LIMIT $2",
                &[&endpoint, &(limit as i64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Attempt {
                event_id: event_id(row.get::<_, i64>(0) as u64),
                kind: row.get(1),
                attempt: row.get::<_, i32>(2) as u32,
                at_ms: row.get::<_, i64>(3) as u64,
                status: row.get::<_, Option<i32>>(4).map(|s| s as u16),
                error: row.get(5),
                state: row.get(6),
                next_at_ms: row.get::<_, Option<i64>>(7).map(|n| n as u64),
            })
            .collect())
    }

    async fn prune(&self, before_ms: u64) -> Result<usize, LedgerError> {
        let client = self.reader.client().await?;
        let mut pruned = 0;
        for statement in PRUNE {
            pruned = client.execute(statement, &[&(before_ms as i64)]).await?;
        }
        Ok(pruned as usize)
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
        let client = self.reader.client().await?;
        let rows = client
            .query(
                "SELECT seq, kind, room FROM webhook_events WHERE at_ms >= $1 ORDER BY seq",
                &[&(since_ms as i64)],
            )
            .await?;
        let again: Vec<i64> = (rows.iter())
            .filter(|row| wants(&found.owner, &found.events, row.get(1), row.get(2)))
            .map(|row| row.get(0))
            .collect();
        client
            .execute(
                "WITH enabled AS (UPDATE webhook_endpoints SET disabled = NULL WHERE id = $1)
                 INSERT INTO webhook_deliveries (endpoint_id, event_seq, state, next_at_ms)
                 SELECT $1, seq, 'pending', $3 FROM unnest($2::BIGINT[]) AS seq
                 ON CONFLICT (endpoint_id, event_seq)
                 DO UPDATE SET state = 'pending', next_at_ms = EXCLUDED.next_at_ms, lease_until_ms = 0",
                &[&found.id, &again, &(now_ms as i64)],
            )
            .await?;
        Ok(again.len())
    }
}
