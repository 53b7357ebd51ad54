//! Moderation logs and known users in the shared database, through the read
//! connection (single statements).

use async_trait::async_trait;

use super::PostgresLedger;
use crate::auth::Role;
use crate::ledger::moderation::{decode_record, decode_role, encode_role, store_error};
use crate::ledger::LedgerError;
use crate::moderation::{ModerationStore, StoreError};
use crate::protocol::{to_json, ModerationRecord, UserRef};

/// Appends racing on other nodes for the same room's next number: tries before
/// giving up.
const APPEND_TRIES: usize = 8;

impl PostgresLedger {
    async fn records(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ModerationRecord>, LedgerError> {
        let rows = (self.reader.client().await?).query(query, params).await?;
        rows.iter()
            .map(|row| decode_record(row.get(0), row.get(1)))
            .collect()
    }
}

#[async_trait]
impl ModerationStore for PostgresLedger {
    async fn append(
        &self,
        room: &str,
        mut record: ModerationRecord,
    ) -> Result<ModerationRecord, StoreError> {
        let stored = to_json(&record);
        for _ in 0..APPEND_TRIES {
            let client = self.reader.client().await.map_err(store_error)?;
            let inserted = client
                .query_one(
                    "INSERT INTO moderation_log (room, rev, record)
                     SELECT $1, COALESCE(MAX(rev), 0) + 1, $2 FROM moderation_log WHERE room = $1
                     RETURNING rev",
                    &[&room, &stored],
                )
                .await;
            match inserted {
                Ok(row) => {
                    record.rev = row.get::<_, i64>(0) as u64;
                    return Ok(record);
                }
                // Another node took that number first: read the new last one again.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
                Err(e) => return Err(store_error(e.into())),
            }
        }
        Err(StoreError(format!(
            "room {room:?}: {APPEND_TRIES} appends to its moderation log collided"
        )))
    }

    async fn log(&self, room: &str, after_rev: u64) -> Result<Vec<ModerationRecord>, StoreError> {
        self.records(
            "SELECT rev, record FROM moderation_log WHERE room = $1 AND rev > $2 ORDER BY rev",
            &[&room, &(after_rev as i64)],
        )
        .await
        .map_err(store_error)
    }

    async fn recent(
        &self,
        room: &str,
        before_rev: u64,
        limit: usize,
    ) -> Result<Vec<ModerationRecord>, StoreError> {
        let before = before_rev.min(i64::MAX as u64) as i64;
        self.records(
            "SELECT rev, record FROM moderation_log WHERE room = $1 AND rev < $2
             ORDER BY rev DESC LIMIT $3",
            &[&room, &before, &(limit as i64)],
        )
        .await
        .map_err(store_error)
    }

    async fn remember(&self, user: &UserRef, role: Role) -> Result<(), StoreError> {
        let client = self.reader.client().await.map_err(store_error)?;
        client
            .execute(
                "INSERT INTO known_users (user_id, name, role) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role",
                &[&user.id, &user.name, &encode_role(role)],
            )
            .await
            .map_err(|e| store_error(e.into()))?;
        Ok(())
    }

    async fn user(&self, id: &str) -> Result<Option<(UserRef, Role)>, StoreError> {
        let client = self.reader.client().await.map_err(store_error)?;
        let row = client
            .query_opt(
                "SELECT name, role FROM known_users WHERE user_id = $1",
                &[&id],
            )
            .await
            .map_err(|e| store_error(e.into()))?;
        row.map(|row| {
            let user = UserRef {
                id: id.to_owned(),
                name: row.get(0),
            };
            Ok((user, decode_role(row.get(1)).map_err(store_error)?))
        })
        .transpose()
    }
}
