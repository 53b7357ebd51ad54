//! What the books keep about a user besides money: the daily cap they chose, whether
//! a token ever said they are a minor, and the account token their in-app purchases
//! carry. Kept beside the books (same file or database), shared by every node.

use async_trait::async_trait;

use super::LedgerError;
use crate::money::Coins;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// The daily cap the user set for themselves (`PUT /api/me/limits`).
    pub daily_coins: Option<Coins>,
    /// Once a token with `"minor": true` is seen, purchases for this user are refused.
    pub minor: bool,
}

#[async_trait]
pub trait Profiles: Send + Sync {
    /// The user's profile; a user never recorded has the default one.
    async fn profile(&self, user: &str) -> Result<Profile, LedgerError>;
    /// Sets (or, with `None`, clears) the user's own daily cap.
    async fn set_daily_coins(&self, user: &str, coins: Option<Coins>) -> Result<(), LedgerError>;
    /// Records that the user is a minor. It is never cleared by a later token.
    async fn mark_minor(&self, user: &str) -> Result<(), LedgerError>;
    /// The user's app account token (a UUID an app hands the store with a purchase,
    /// which comes back in the store's notifications), made on first request.
    async fn app_account_token(&self, user: &str) -> Result<String, LedgerError>;
    /// Whose app account token `token` is.
    async fn user_of_app_account_token(&self, token: &str) -> Result<Option<String>, LedgerError>;
}

/// A new app account token.
pub fn new_app_account_token() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// The table both backends keep profiles in (SQL both dialects take).
pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY,
    daily_coins BIGINT,
    minor BOOLEAN NOT NULL DEFAULT FALSE,
    app_account_token TEXT UNIQUE
);
";
