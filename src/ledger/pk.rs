//! What both backends share in keeping battles (`pk::PkStore`): how a battle is
//! stored, and a period's gifts summed per room and sender.

use std::collections::HashMap;

use crate::ledger::facts::TransferMeta;
use crate::pk::{Battle, GiftSum, Refusal};
use crate::protocol::to_json;

use super::LedgerError;

pub fn encode_battle(battle: &Battle) -> String {
    to_json(battle)
}

pub fn decode_battle(stored: &str) -> Result<Battle, Refusal> {
    serde_json::from_str(stored)
        .map_err(|e| Refusal::Unavailable(format!("a stored battle is damaged: {e}")))
}

pub fn unavailable(error: impl Into<LedgerError>) -> Refusal {
    Refusal::Unavailable(format!("the battles' store failed: {}", error.into()))
}

/// Gifts (their stored facts) summed per room and sender; other transfers are left out.
pub fn sum_gifts<'a>(
    metas: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<GiftSum>, LedgerError> {
    let mut sums: HashMap<(String, String), GiftSum> = HashMap::new();
    for stored in metas {
        let TransferMeta::Gift(gift) = TransferMeta::parse(stored)? else {
            continue;
        };
        let key = (gift.room.clone(), gift.from.id.clone());
        let sum = sums.entry(key).or_insert_with(|| GiftSum {
            room: gift.room,
            sender: gift.from,
            coins: 0,
        });
        sum.coins += gift.coins.get();
    }
    Ok(sums.into_values().collect())
}
