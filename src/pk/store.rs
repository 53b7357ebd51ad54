//! Where battles are kept: beside the books (the ledger's file or database), shared
//! by every node, with the gifts their scores are summed from. The backends are
//! `ledger/sqlite/pk.rs` and `ledger/postgres/pk.rs`.

use async_trait::async_trait;

use super::{Battle, GiftSum, Refusal, State};

#[async_trait]
pub trait PkStore: Send + Sync {
    /// Keeps a new invite if `allowed` (given the battles of either room that hold
    /// it or started since `since_ms`) lets it: atomically, so that two invites racing
    /// for one room on two nodes cannot both be kept.
    async fn create_battle(
        &self,
        battle: &Battle,
        since_ms: u64,
        allowed: &(dyn for<'b> Fn(&'b [Battle]) -> Result<(), Refusal> + Sync),
    ) -> Result<(), Refusal>;
    async fn battle(&self, id: &str) -> Result<Option<Battle>, Refusal>;
    /// Replaces a battle that is still in state `was`; false if it is not (another
    /// node moved it first).
    async fn update_battle(&self, battle: &Battle, was: State) -> Result<bool, Refusal>;
    /// Battles invited or running.
    async fn open_battles(&self) -> Result<Vec<Battle>, Refusal>;
    /// Takes (or keeps) the right to drive a battle until `until_ms`: false while
    /// another node holds it.
    async fn claim_battle(
        &self,
        id: &str,
        node: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, Refusal>;
    /// The gifts committed to `rooms` dated from `from_ms` to before `to_ms`, summed
    /// per room and sender.
    async fn gifts_between(
        &self,
        rooms: &[String; 2],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<GiftSum>, Refusal>;
}

/// The tables both backends keep (SQL both dialects take). A battle holding its
/// rooms has a row per room in `pk_rooms`, whose key refuses a second one.
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS pk_battles (
    id TEXT PRIMARY KEY,
    room_a TEXT NOT NULL,
    room_b TEXT NOT NULL,
    state TEXT NOT NULL,
    invited_ms BIGINT NOT NULL,
    record TEXT NOT NULL,
    driver TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pk_battles_by_a ON pk_battles (room_a, invited_ms);
CREATE INDEX IF NOT EXISTS pk_battles_by_b ON pk_battles (room_b, invited_ms);
CREATE INDEX IF NOT EXISTS pk_battles_open ON pk_battles (state);
CREATE TABLE IF NOT EXISTS pk_rooms (
    room TEXT PRIMARY KEY,
    pk TEXT NOT NULL
);
";
