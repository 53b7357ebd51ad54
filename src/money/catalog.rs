//! The sticker catalog and the price of a paid question.

use std::collections::HashSet;

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sticker {
    pub id: String,
    pub name: String,
    /// Price in whole coins.
    pub coins: u64,
    /// Animation tier, 1 (small) to 5 (full screen).
    pub tier: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    pub stickers: Vec<Sticker>,
    pub question_min_coins: u64,
}

/// Shortest and longest time a paid question stays pinned.
const PIN_BASE_MS: u64 = 10_000;
const PIN_MAX_MS: u64 = 300_000;

impl Default for Catalog {
    fn default() -> Self {
        let sticker = |id: &str, name: &str, coins, tier| Sticker {
            id: id.into(),
            name: name.into(),
            coins,
            tier,
        };
        Catalog {
            stickers: vec![
                sticker("heart", "Heart", 1, 1),
                sticker("rose", "Rose", 5, 1),
                sticker("applause", "Applause", 20, 2),
                sticker("star", "Star", 100, 2),
                sticker("crown", "Crown", 500, 3),
                sticker("fireworks", "Fireworks", 2_000, 4),
                sticker("rocket", "Rocket", 10_000, 5),
                sticker("castle", "Castle", 30_000, 5),
            ],
            question_min_coins: 10,
        }
    }
}

impl Catalog {
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut ids = HashSet::new();
        if self.stickers.is_empty() {
            bail!("catalog: at least one sticker");
        }
        for sticker in &self.stickers {
            let id_ok =
                (1..=32).contains(&sticker.id.len()) && crate::protocol::is_valid_id(&sticker.id);
            if !id_ok {
                bail!(
                    "catalog: sticker id {:?} must match [a-z0-9_-]{{1,32}}",
                    sticker.id
                );
            }
            if !ids.insert(&sticker.id) {
                bail!("catalog: sticker id {:?} appears twice", sticker.id);
            }
            if sticker.coins == 0 || sticker.coins > 1_000_000_000 {
                bail!(
                    "catalog: sticker {:?} must cost 1 to 1,000,000,000 coins",
                    sticker.id
                );
            }
            if !(1..=5).contains(&sticker.tier) {
                bail!("catalog: sticker {:?} tier must be 1 to 5", sticker.id);
            }
            if !(1..=40).contains(&sticker.name.chars().count()) {
                bail!(
                    "catalog: sticker {:?} name must be 1 to 40 characters",
                    sticker.id
                );
            }
        }
        if self.question_min_coins == 0 {
            bail!("catalog: question_min_coins must be at least 1");
        }
        Ok(())
    }

    pub fn sticker(&self, id: &str) -> Option<&Sticker> {
        self.stickers.iter().find(|s| s.id == id)
    }

    /// How long clients pin a paid question: 10 s at the minimum price, 10 s more for
    /// every doubling of the price, at most 5 minutes.
    pub fn pin_ms(&self, coins: u64) -> u64 {
        let ratio = (coins / self.question_min_coins.max(1)).max(1);
        let doublings = u64::from(63 - ratio.leading_zeros());
        (PIN_BASE_MS + PIN_BASE_MS * doublings).min(PIN_MAX_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_catalog_is_valid_and_spans_one_to_tens_of_thousands() {
        let catalog = Catalog::default();
        catalog.validate().unwrap();
        assert_eq!(catalog.stickers.first().unwrap().coins, 1);
        assert!(catalog.stickers.last().unwrap().coins >= 10_000);
    }

    #[test]
    fn pin_time_grows_with_the_price_and_is_capped() {
        let catalog = Catalog::default(); // minimum 10 coins
        assert_eq!(catalog.pin_ms(10), 10_000);
        assert_eq!(catalog.pin_ms(19), 10_000);
        assert_eq!(catalog.pin_ms(20), 20_000);
        assert_eq!(catalog.pin_ms(10_000), 100_000);
        assert_eq!(catalog.pin_ms(u64::MAX), 300_000);
    }

    #[test]
    fn duplicate_ids_and_free_stickers_are_refused() {
        let mut catalog = Catalog::default();
        catalog.stickers[1].id = "heart".into();
        assert!(catalog.validate().is_err());
        let mut catalog = Catalog::default();
        catalog.stickers[0].coins = 0;
        assert!(catalog.validate().is_err());
    }
}
