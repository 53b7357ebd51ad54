//! Battles in the ledger's file: written through the profiles' connection (one
//! connection: a check and the insert that follows it see nothing in between), read
//! (the driver's every tick) through the read connection, which never waits for the
//! ledger writer's lock; a period's gifts through the read connection too.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteLedger;
use crate::ledger::pk::{decode_battle, encode_battle, sum_gifts, unavailable};
use crate::ledger::LedgerError;
use crate::pk::{Battle, GiftSum, PkStore, Refusal, State};

const BATTLE_COLUMNS: &str = "record";

#[async_trait]
impl PkStore for SqliteLedger {
    async fn create_battle(
        &self,
        battle: &Battle,
        since_ms: u64,
        allowed: &(dyn for<'b> Fn(&'b [Battle]) -> Result<(), Refusal> + Sync),
    ) -> Result<(), Refusal> {
        let rooms = battle.rooms.clone();
        let others = self
            .profile_statement(move |c| battles_of(c, &rooms, since_ms))
            .await
            .map_err(unavailable)?;
        let others = others
            .iter()
            .map(|stored| decode_battle(stored))
            .collect::<Result<Vec<_>, _>>()?;
        allowed(&others)?;
        // Rooms are held by key: an invite that slipped in since the check (from the
        // HTTP side of this process) makes the insert fail.
        let battle = battle.clone();
        let kept = self
            .profile_statement(move |c| {
                let transaction = c.unchecked_transaction()?;
                release_rooms_of_closed(&transaction, &battle.rooms, battle.invited_ms)?;
                for room in &battle.rooms {
                    let held = transaction.execute(
                        "INSERT OR IGNORE INTO pk_rooms (room, pk) VALUES (?1, ?2)",
                        params![room, battle.id],
                    )?;
                    if held == 0 {
                        return Ok(Some(room.clone()));
                    }
                }
                transaction.execute(
                    "INSERT INTO pk_battles (id, room_a, room_b, state, invited_ms, record)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        battle.id,
                        battle.rooms[0],
                        battle.rooms[1],
                        battle.state.as_str(),
                        battle.invited_ms as i64,
                        encode_battle(&battle)
                    ],
                )?;
                transaction.commit()?;
                Ok(None)
            })
            .await
            .map_err(unavailable)?;
        match kept {
            None => Ok(()),
            Some(busy) => Err(Refusal::Busy(busy)),
        }
    }

    async fn battle(&self, id: &str) -> Result<Option<Battle>, Refusal> {
        let id = id.to_owned();
        let stored = self
            .read(move |c| {
                Ok(c.query_row(
                    &format!("SELECT {BATTLE_COLUMNS} FROM pk_battles WHERE id = ?1"),
                    [id],
                    |row| row.get::<_, String>(0),
                )
                .optional()?)
            })
            .await
            .map_err(unavailable)?;
        stored.as_deref().map(decode_battle).transpose()
    }

    async fn update_battle(&self, battle: &Battle, was: State) -> Result<bool, Refusal> {
        let battle = battle.clone();
        self.profile_statement(move |c| {
            let transaction = c.unchecked_transaction()?;
            let moved = transaction.execute(
                "UPDATE pk_battles SET state = ?2, record = ?3 WHERE id = ?1 AND state = ?4",
                params![
                    battle.id,
                    battle.state.as_str(),
                    encode_battle(&battle),
                    was.as_str()
                ],
            )?;
            if moved == 1 && !battle.state.holds_rooms() {
                transaction.execute("DELETE FROM pk_rooms WHERE pk = ?1", [&battle.id])?;
            }
            transaction.commit()?;
            Ok(moved == 1)
        })
        .await
        .map_err(unavailable)
    }

    async fn open_battles(&self) -> Result<Vec<Battle>, Refusal> {
        let stored = self
            .read(|c| {
                let mut statement = c.prepare_cached(&format!(
                    "SELECT {BATTLE_COLUMNS} FROM pk_battles WHERE state IN ('invited', 'running')"
                ))?;
                let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .map_err(unavailable)?;
        stored.iter().map(|s| decode_battle(s)).collect()
    }

    /// One process keeps this file (its data directory is its own), so it drives
    /// every battle: no lease is written. (Writing one each tick would wait for the
    /// ledger writer's lock in a gift storm.)
    async fn claim_battle(
        &self,
        _id: &str,
        _node: &str,
        _now_ms: u64,
        _until_ms: u64,
    ) -> Result<bool, Refusal> {
        Ok(true)
    }

    async fn gifts_between(
        &self,
        rooms: &[String; 2],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<GiftSum>, Refusal> {
        let rooms = rooms.clone();
        self.read(move |c| {
            // The writer dates transfers in id order (never backwards), so a period
            // is a range of ids: found by bisection, read without an index on dates.
            let (first, end) = (first_id_from(c, from_ms)?, first_id_from(c, to_ms)?);
            let mut statement = c.prepare_cached(
                "SELECT meta FROM transfers
                 WHERE id >= ?1 AND id < ?2 AND kind = 'gift' AND room IN (?3, ?4)",
            )?;
            let rows = statement.query_map(params![first, end, rooms[0], rooms[1]], |row| {
                row.get::<_, String>(0)
            })?;
            let metas = rows.collect::<Result<Vec<_>, _>>()?;
            sum_gifts(metas.iter().map(String::as_str))
        })
        .await
        .map_err(unavailable)
    }
}

/// The stored battles of either room that hold it or were invited since `since_ms`.
fn battles_of(
    c: &Connection,
    rooms: &[String; 2],
    since_ms: u64,
) -> Result<Vec<String>, LedgerError> {
    let mut statement = c.prepare_cached(&format!(
        "SELECT {BATTLE_COLUMNS} FROM pk_battles
         WHERE (room_a IN (?1, ?2) OR room_b IN (?1, ?2))
           AND (invited_ms >= ?3 OR state IN ('invited', 'running'))"
    ))?;
    let rows = statement.query_map(params![rooms[0], rooms[1], since_ms as i64], |row| {
        row.get::<_, String>(0)
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Lets go of the rooms held by invites that ran out unanswered by `now_ms`.
fn release_rooms_of_closed(
    c: &Connection,
    rooms: &[String; 2],
    now_ms: u64,
) -> Result<(), LedgerError> {
    let held: Vec<String> = {
        let mut statement = c.prepare_cached(
            "SELECT b.record FROM pk_rooms r JOIN pk_battles b ON b.id = r.pk
             WHERE r.room IN (?1, ?2) AND b.state = 'invited'",
        )?;
        let rows = statement.query_map(params![rooms[0], rooms[1]], |row| row.get(0))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    for stored in held {
        let mut battle =
            decode_battle(&stored).map_err(|r| LedgerError::Storage(format!("{r:?}")))?;
        if battle.state_at(now_ms) == State::Expired {
            battle.state = State::Expired;
            c.execute(
                "UPDATE pk_battles SET state = 'expired', record = ?2 WHERE id = ?1 AND state = 'invited'",
                params![battle.id, encode_battle(&battle)],
            )?;
            c.execute("DELETE FROM pk_rooms WHERE pk = ?1", [&battle.id])?;
        }
    }
    Ok(())
}

/// The first transfer dated at or after `ms` (one past the last if none is).
fn first_id_from(c: &Connection, ms: u64) -> Result<i64, LedgerError> {
    let (mut low, mut high): (i64, i64) = c.query_row(
        "SELECT COALESCE(MIN(id), 1), COALESCE(MAX(id), 0) + 1 FROM transfers",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    let mut probe = c.prepare_cached(
        "SELECT id, created_ms FROM transfers WHERE id >= ?1 ORDER BY id LIMIT 1",
    )?;
    // Invariant: every id below `low` is dated before `ms`; `high` and above are not.
    while low < high {
        let middle = low + (high - low) / 2;
        let found: Option<(i64, i64)> = probe
            .query_row([middle], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        match found {
            // No transfer from `middle` to `high`: the answer is at or below `middle`.
            None => high = middle,
            Some((id, _)) if id >= high => high = middle,
            Some((id, created)) if (created as u64) < ms => low = id + 1,
            Some((id, _)) => high = id,
        }
    }
    Ok(low)
}
