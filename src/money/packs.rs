//! Packs of coins sold for real money, from configuration.

use std::collections::HashSet;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::Coins;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinPack {
    pub id: String,
    pub coins: Coins,
    /// The price in the currency's minor unit (cents for USD).
    pub amount: u64,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// The App Store product id of this pack (e.g. `com.example.coins100`), when
    /// it is sold in an iOS app; App Store notifications name packs by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_store_product: Option<String>,
}

impl CoinPack {
    pub fn validate_all(packs: &[CoinPack]) -> anyhow::Result<()> {
        let mut ids = HashSet::new();
        for pack in packs {
            if !crate::protocol::is_valid_id(&pack.id) || !ids.insert(&pack.id) {
                bail!("coin_packs: ids must be unique and match [a-z0-9_-]{{1,64}}");
            }
            if pack.coins == Coins::ZERO || pack.coins.to_minor().is_err() {
                bail!(
                    "coin_packs.{}: coins must be at least 1 and fit the ledger",
                    pack.id
                );
            }
            if !is_currency(&pack.currency) {
                bail!(
                    "coin_packs.{}: currency must be an ISO 4217 code such as USD",
                    pack.id
                );
            }
        }
        Ok(())
    }
}

/// Three capital letters, as ISO 4217 codes are.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}
