//! Profiles in the shared database, through the read connection (single statements).

use async_trait::async_trait;

use super::PostgresLedger;
use crate::ledger::profiles::{new_app_account_token, new_overlay_key, Profile, Profiles};
use crate::ledger::LedgerError;
use crate::money::Coins;

#[async_trait]
impl Profiles for PostgresLedger {
    async fn profile(&self, user: &str) -> Result<Profile, LedgerError> {
        let row = (self.reader.client().await?)
            .query_opt(
                "SELECT daily_coins, minor FROM profiles WHERE user_id = $1",
                &[&user],
            )
            .await?;
        Ok(row.map_or_else(Profile::default, |row| Profile {
            daily_coins: row.get::<_, Option<i64>>(0).map(|c| Coins::new(c as u64)),
            minor: row.get(1),
        }))
    }

    async fn set_daily_coins(&self, user: &str, coins: Option<Coins>) -> Result<(), LedgerError> {
        let coins = coins.map(|coins| coins.get() as i64);
        (self.reader.client().await?)
            .execute(
                "INSERT INTO profiles (user_id, daily_coins) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET daily_coins = EXCLUDED.daily_coins",
                &[&user, &coins],
            )
            .await?;
        Ok(())
    }

    async fn mark_minor(&self, user: &str) -> Result<(), LedgerError> {
        (self.reader.client().await?)
            .execute(
                "INSERT INTO profiles (user_id, minor) VALUES ($1, TRUE)
                 ON CONFLICT (user_id) DO UPDATE SET minor = TRUE",
                &[&user],
            )
            .await?;
        Ok(())
    }

    async fn app_account_token(&self, user: &str) -> Result<String, LedgerError> {
        let row = (self.reader.client().await?)
            .query_one(
                "INSERT INTO profiles (user_id, app_account_token) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE
                 SET app_account_token = COALESCE(profiles.app_account_token, EXCLUDED.app_account_token)
                 RETURNING app_account_token",
                &[&user, &new_app_account_token()],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn user_of_app_account_token(&self, token: &str) -> Result<Option<String>, LedgerError> {
        let row = (self.reader.client().await?)
            .query_opt(
                "SELECT user_id FROM profiles WHERE app_account_token = $1",
                &[&token],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn overlay_key(&self, room: &str) -> Result<String, LedgerError> {
        // The no-op update makes RETURNING answer the key already there.
        let row = (self.reader.client().await?)
            .query_one(
                "INSERT INTO overlay_keys (room, overlay_key) VALUES ($1, $2)
                 ON CONFLICT (room) DO UPDATE SET overlay_key = overlay_keys.overlay_key
                 RETURNING overlay_key",
                &[&room, &new_overlay_key()],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn rotate_overlay_key(&self, room: &str) -> Result<String, LedgerError> {
        let row = (self.reader.client().await?)
            .query_one(
                "INSERT INTO overlay_keys (room, overlay_key) VALUES ($1, $2)
                 ON CONFLICT (room) DO UPDATE SET overlay_key = EXCLUDED.overlay_key
                 RETURNING overlay_key",
                &[&room, &new_overlay_key()],
            )
            .await?;
        Ok(row.get(0))
    }

    async fn current_overlay_key(&self, room: &str) -> Result<Option<String>, LedgerError> {
        let row = (self.reader.client().await?)
            .query_opt(
                "SELECT overlay_key FROM overlay_keys WHERE room = $1",
                &[&room],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }
}
