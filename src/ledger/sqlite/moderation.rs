//! Moderation logs and known users in the ledger's file, through the profiles'
//! connection (short statements; SQLite serialises them with the writer's batches).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteLedger;
use crate::auth::Role;
use crate::ledger::moderation::{decode_record, decode_role, encode_role, store_error};
use crate::moderation::{ModerationStore, StoreError};
use crate::protocol::{to_json, ModerationRecord, UserRef};

impl SqliteLedger {
    /// A room's records by `query`, whose parameters are the room, a `rev` and a limit
    /// (-1: none).
    async fn records(
        &self,
        query: &'static str,
        room: &str,
        rev: u64,
        limit: i64,
    ) -> Result<Vec<ModerationRecord>, StoreError> {
        let room = room.to_owned();
        let rev = rev.min(i64::MAX as u64) as i64;
        self.profile_statement(move |c| {
            let mut statement = c.prepare_cached(query)?;
            let rows = statement.query_map(params![room, rev, limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (rev, record) = row?;
                decode_record(rev, &record)
            })
            .collect()
        })
        .await
        .map_err(store_error)
    }
}

#[async_trait]
impl ModerationStore for SqliteLedger {
    async fn append(
        &self,
        room: &str,
        mut record: ModerationRecord,
    ) -> Result<ModerationRecord, StoreError> {
        let room = room.to_owned();
        self.profile_statement(move |c| {
            // One connection: nothing appends between the read and the insert.
            record.rev = c.query_row(
                "INSERT INTO moderation_log (room, rev, record)
                 SELECT ?1, COALESCE(MAX(rev), 0) + 1, ?2 FROM moderation_log WHERE room = ?1
                 RETURNING rev",
                params![room, to_json(&record)],
                |row| row.get::<_, i64>(0),
            )? as u64;
            Ok(record)
        })
        .await
        .map_err(store_error)
    }

    async fn log(&self, room: &str, after_rev: u64) -> Result<Vec<ModerationRecord>, StoreError> {
        self.records(
            "SELECT rev, record FROM moderation_log WHERE room = ?1 AND rev > ?2 ORDER BY rev LIMIT ?3",
            room,
            after_rev,
            -1,
        )
        .await
    }

    async fn recent(
        &self,
        room: &str,
        before_rev: u64,
        limit: usize,
    ) -> Result<Vec<ModerationRecord>, StoreError> {
        self.records(
            "SELECT rev, record FROM moderation_log WHERE room = ?1 AND rev < ?2
             ORDER BY rev DESC LIMIT ?3",
            room,
            before_rev,
            limit as i64,
        )
        .await
    }

    async fn remember(&self, user: &UserRef, role: Role) -> Result<(), StoreError> {
        let (id, name) = (user.id.clone(), user.name.clone());
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO known_users (user_id, name, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET name = excluded.name, role = excluded.role",
                params![id, name, encode_role(role)],
            )?;
            Ok(())
        })
        .await
        .map_err(store_error)
    }

    async fn user(&self, id: &str) -> Result<Option<(UserRef, Role)>, StoreError> {
        let id = id.to_owned();
        self.profile_statement(move |c| {
            let row = c
                .query_row(
                    "SELECT name, role FROM known_users WHERE user_id = ?1",
                    [&id],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()?;
            row.map(|(name, role)| Ok((UserRef { id, name }, decode_role(&role)?)))
                .transpose()
        })
        .await
        .map_err(store_error)
    }
}
