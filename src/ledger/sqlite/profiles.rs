//! Profiles in the ledger's file, written through a connection of their own (short
//! statements; SQLite serialises them with the writer's batches).

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteLedger;
use crate::ledger::profiles::{new_app_account_token, new_overlay_key, Profile, Profiles};
use crate::ledger::LedgerError;
use crate::money::Coins;

#[async_trait]
impl Profiles for SqliteLedger {
    async fn profile(&self, user: &str) -> Result<Profile, LedgerError> {
        let user = user.to_owned();
        self.profile_statement(move |c| {
            let row = c
                .query_row(
                    "SELECT daily_coins, minor FROM profiles WHERE user_id = ?1",
                    [&user],
                    |row| Ok((row.get::<_, Option<i64>>(0)?, row.get::<_, bool>(1)?)),
                )
                .optional()?;
            Ok(row.map_or_else(Profile::default, |(daily, minor)| Profile {
                daily_coins: daily.map(|coins| Coins::new(coins as u64)),
                minor,
            }))
        })
        .await
    }

    async fn set_daily_coins(&self, user: &str, coins: Option<Coins>) -> Result<(), LedgerError> {
        let user = user.to_owned();
        let coins = coins.map(|coins| coins.get() as i64);
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO profiles (user_id, daily_coins) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET daily_coins = excluded.daily_coins",
                params![user, coins],
            )?;
            Ok(())
        })
        .await
    }

    async fn mark_minor(&self, user: &str) -> Result<(), LedgerError> {
        let user = user.to_owned();
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO profiles (user_id, minor) VALUES (?1, TRUE)
                 ON CONFLICT (user_id) DO UPDATE SET minor = TRUE",
                [user],
            )?;
            Ok(())
        })
        .await
    }

    async fn app_account_token(&self, user: &str) -> Result<String, LedgerError> {
        let (user, fresh) = (user.to_owned(), new_app_account_token());
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO profiles (user_id, app_account_token) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE
                 SET app_account_token = COALESCE(app_account_token, excluded.app_account_token)",
                params![user, fresh],
            )?;
            Ok(c.query_row(
                "SELECT app_account_token FROM profiles WHERE user_id = ?1",
                [user],
                |row| row.get(0),
            )?)
        })
        .await
    }

    async fn user_of_app_account_token(&self, token: &str) -> Result<Option<String>, LedgerError> {
        let token = token.to_owned();
        self.profile_statement(move |c| {
            Ok(c.query_row(
                "SELECT user_id FROM profiles WHERE app_account_token = ?1",
                [token],
                |row| row.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn overlay_key(&self, room: &str) -> Result<String, LedgerError> {
        let (room, fresh) = (room.to_owned(), new_overlay_key());
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO overlay_keys (room, overlay_key) VALUES (?1, ?2)
                 ON CONFLICT (room) DO NOTHING",
                params![room, fresh],
            )?;
            Ok(c.query_row(
                "SELECT overlay_key FROM overlay_keys WHERE room = ?1",
                [room],
                |row| row.get(0),
            )?)
        })
        .await
    }

    async fn rotate_overlay_key(&self, room: &str) -> Result<String, LedgerError> {
        let (room, fresh) = (room.to_owned(), new_overlay_key());
        self.profile_statement(move |c| {
            c.execute(
                "INSERT INTO overlay_keys (room, overlay_key) VALUES (?1, ?2)
                 ON CONFLICT (room) DO UPDATE SET overlay_key = excluded.overlay_key",
                params![room, fresh],
            )?;
            Ok(fresh)
        })
        .await
    }

    async fn current_overlay_key(&self, room: &str) -> Result<Option<String>, LedgerError> {
        let room = room.to_owned();
        self.profile_statement(move |c| {
            Ok(c.query_row(
                "SELECT overlay_key FROM overlay_keys WHERE room = ?1",
                [room],
                |row| row.get(0),
            )
            .optional()?)
        })
        .await
    }
}
