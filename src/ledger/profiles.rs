//! What the books keep about a user besides money: the daily cap they chose, whether
//! a token ever said they are a minor, the account token their in-app purchases
//! carry, and a broadcaster's stream overlay key. Kept beside the books (same file or
//! database), shared by every node.

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
    /// The room's overlay key (what its stream overlay's URL carries, read-only),
    /// made on first request.
    async fn overlay_key(&self, room: &str) -> Result<String, LedgerError>;
    /// Replaces the room's overlay key with a new one (the old one stops working) and
    /// returns it.
    async fn rotate_overlay_key(&self, room: &str) -> Result<String, LedgerError>;
    /// The room's current overlay key, `None` when it never asked for one.
    async fn current_overlay_key(&self, room: &str) -> Result<Option<String>, LedgerError>;
    /// Whether `key` is the room's current overlay key (compared in constant time).
    async fn is_overlay_key(&self, room: &str, key: &str) -> Result<bool, LedgerError> {
        let current = self.current_overlay_key(room).await?;
        Ok(current.is_some_and(|current| same_key(key, &current)))
    }
}

/// A new app account token.
pub fn new_app_account_token() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// A new overlay key: 32 hex digits (122 random bits).
pub fn new_overlay_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `given` is `current`, in time that does not depend on where they differ.
pub fn same_key(given: &str, current: &str) -> bool {
    let (given, current) = (given.as_bytes(), current.as_bytes());
    given.len() == current.len()
        && given
            .iter()
            .zip(current)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The tables both backends keep profiles and overlay keys in (SQL both dialects take).
pub const TABLE: &str = "
CREATE TABLE IF NOT EXISTS profiles (
    user_id TEXT PRIMARY KEY,
    daily_coins BIGINT,
    minor BOOLEAN NOT NULL DEFAULT FALSE,
    app_account_token TEXT UNIQUE
);
CREATE TABLE IF NOT EXISTS overlay_keys (room TEXT PRIMARY KEY, overlay_key TEXT NOT NULL UNIQUE);
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_keys_are_32_hex_digits_and_differ() {
        let (a, b) = (new_overlay_key(), new_overlay_key());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn only_the_same_key_is_the_same() {
        let key = new_overlay_key();
        assert!(same_key(&key, &key.clone()));
        assert!(!same_key(&key, &new_overlay_key()));
        assert!(!same_key(&key, &key[..31]));
        assert!(!same_key("", &key));
    }
}
