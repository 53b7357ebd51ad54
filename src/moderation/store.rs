//! Where moderation is kept: each room's log of actions (its rules are the log
//! folded, `RoomRules::fold`), and the users the server has seen write, so that a
//! moderator can name them. Kept beside the books (the ledger's file or database),
//! shared by every node; the backends are `ledger/sqlite/moderation.rs` and
//! `ledger/postgres/moderation.rs`.

use async_trait::async_trait;

use crate::auth::Role;
use crate::protocol::{ModerationRecord, UserRef};

#[derive(Debug, thiserror::Error)]
#[error("the moderation store failed: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait ModerationStore: Send + Sync {
    /// Appends an action to the room's log, numbering it after the last one; the
    /// record as kept.
    async fn append(
        &self,
        room: &str,
        record: ModerationRecord,
    ) -> Result<ModerationRecord, StoreError>;
    /// The room's log, oldest first, from `after_rev` on (0: all of it).
    async fn log(&self, room: &str, after_rev: u64) -> Result<Vec<ModerationRecord>, StoreError>;
    /// The room's newest `limit` records before `before_rev`, newest first.
    async fn recent(
        &self,
        room: &str,
        before_rev: u64,
        limit: usize,
    ) -> Result<Vec<ModerationRecord>, StoreError>;
    /// Records that a user wrote with this name and role.
    async fn remember(&self, user: &UserRef, role: Role) -> Result<(), StoreError>;
    /// A user as last seen writing.
    async fn user(&self, id: &str) -> Result<Option<(UserRef, Role)>, StoreError>;
}

/// The tables both backends keep (SQL both dialects take).
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS moderation_log (
    room TEXT NOT NULL,
    rev BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (room, rev)
);
CREATE TABLE IF NOT EXISTS known_users (
    user_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL
);
";
