//! Profiles in the shared database, through the read connection (single statements).

use async_trait::async_trait;

use super::PostgresLedger;
use crate::ledger::profiles::{new_app_account_token, Profile, Profiles};
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
}
