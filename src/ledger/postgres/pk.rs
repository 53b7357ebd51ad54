//! Battles in the shared database, through the read connection (single statements:
//! a room is held by a row's key, so two nodes inviting one room at once cannot both
//! succeed); a period's gifts by the index on gifts per room and date.

use async_trait::async_trait;
use tokio_postgres::error::SqlState;

use super::PostgresLedger;
use crate::ledger::pk::{decode_battle, encode_battle, sum_gifts, unavailable};
use crate::pk::{Battle, GiftSum, PkStore, Refusal, State};

/// The index the sums read (created with the tables).
pub const GIFTS_BY_ROOM: &str =
    "CREATE INDEX IF NOT EXISTS gifts_by_room_and_date ON transfers (room, created_ms) WHERE kind = 'gift';";

impl PostgresLedger {
    async fn battle_rows(
        &self,
        query: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Battle>, Refusal> {
        let client = self.reader.client().await.map_err(unavailable)?;
        let rows = client.query(query, params).await.map_err(unavailable)?;
        rows.iter().map(|row| decode_battle(row.get(0))).collect()
    }

    /// Lets go of the rooms held by invites that ran out unanswered by `now_ms`.
    async fn release_rooms_of_closed(
        &self,
        rooms: &[String; 2],
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let held = self
            .battle_rows(
                "SELECT b.record FROM pk_rooms r JOIN pk_battles b ON b.id = r.pk
                 WHERE r.room IN ($1, $2) AND b.state = 'invited'",
                &[&rooms[0], &rooms[1]],
            )
            .await?;
        for mut battle in held {
            if battle.state_at(now_ms) == State::Expired {
                battle.state = State::Expired;
                self.update_battle(&battle, State::Invited).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PkStore for PostgresLedger {
    async fn create_battle(
        &self,
        battle: &Battle,
        since_ms: u64,
        allowed: &(dyn for<'b> Fn(&'b [Battle]) -> Result<(), Refusal> + Sync),
    ) -> Result<(), Refusal> {
        let others = self
            .battle_rows(
                "SELECT record FROM pk_battles
                 WHERE (room_a IN ($1, $2) OR room_b IN ($1, $2))
                   AND (invited_ms >= $3 OR state IN ('invited', 'running'))",
                &[&battle.rooms[0], &battle.rooms[1], &(since_ms as i64)],
            )
            .await?;
        allowed(&others)?;
        self.release_rooms_of_closed(&battle.rooms, battle.invited_ms)
            .await?;
        let client = self.reader.client().await.map_err(unavailable)?;
        let kept = client
            .execute(
                "WITH held AS (
                     INSERT INTO pk_rooms (room, pk) VALUES ($2, $1), ($3, $1) RETURNING room)
                 INSERT INTO pk_battles (id, room_a, room_b, state, invited_ms, record)
                 SELECT $1, $2, $3, $4, $5, $6 WHERE (SELECT count(*) FROM held) = 2",
                &[
                    &battle.id,
                    &battle.rooms[0],
                    &battle.rooms[1],
                    &battle.state.as_str(),
                    &(battle.invited_ms as i64),
                    &encode_battle(battle),
                ],
            )
            .await;
        match kept {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // Which of the two is held, for the message.
                let held: Option<String> = client
                    .query_opt(
                        "SELECT room FROM pk_rooms WHERE room IN ($1, $2) LIMIT 1",
                        &[&battle.rooms[0], &battle.rooms[1]],
                    )
                    .await
                    .map_err(unavailable)?
                    .map(|row| row.get(0));
                Err(Refusal::Busy(
                    held.unwrap_or_else(|| battle.rooms[1].clone()),
                ))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn battle(&self, id: &str) -> Result<Option<Battle>, Refusal> {
        let found = self
            .battle_rows("SELECT record FROM pk_battles WHERE id = $1", &[&id])
            .await?;
        Ok(found.into_iter().next())
    }

    async fn update_battle(&self, battle: &Battle, was: State) -> Result<bool, Refusal> {
        let client = self.reader.client().await.map_err(unavailable)?;
        // One statement: the rooms are let go with the change that ends the battle.
        let moved = client
            .query(
                "WITH moved AS (
                     UPDATE pk_battles SET state = $2, record = $3 WHERE id = $1 AND state = $4
                     RETURNING id),
                 released AS (
                     DELETE FROM pk_rooms WHERE pk IN (SELECT id FROM moved) AND $5
                     RETURNING pk)
                 SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM released)",
                &[
                    &battle.id,
                    &battle.state.as_str(),
                    &encode_battle(battle),
                    &was.as_str(),
                    &!battle.state.holds_rooms(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(moved.first().is_some_and(|row| row.get::<_, i64>(0) == 1))
    }

    async fn open_battles(&self) -> Result<Vec<Battle>, Refusal> {
        self.battle_rows(
            "SELECT record FROM pk_battles WHERE state IN ('invited', 'running')",
            &[],
        )
        .await
    }

    async fn claim_battle(
        &self,
        id: &str,
        node: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, Refusal> {
        let client = self.reader.client().await.map_err(unavailable)?;
        let claimed = client
            .execute(
                "UPDATE pk_battles SET driver = $2, lease_until_ms = $4
                 WHERE id = $1 AND (driver = $2 OR driver IS NULL OR lease_until_ms <= $3)",
                &[&id, &node, &(now_ms as i64), &(until_ms as i64)],
            )
            .await
            .map_err(unavailable)?;
        Ok(claimed == 1)
    }

    async fn gifts_between(
        &self,
        rooms: &[String; 2],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<GiftSum>, Refusal> {
        let client = self.reader.client().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT meta FROM transfers
                 WHERE kind = 'gift' AND room IN ($1, $2) AND created_ms >= $3 AND created_ms < $4",
                &[&rooms[0], &rooms[1], &(from_ms as i64), &(to_ms as i64)],
            )
            .await
            .map_err(unavailable)?;
        let metas: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        sum_gifts(metas.iter().map(String::as_str)).map_err(unavailable)
    }
}
