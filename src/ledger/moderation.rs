//! What both backends share in keeping moderation (`moderation::ModerationStore`):
//! how a record and a role are stored.

use crate::auth::Role;
use crate::moderation::StoreError;
use crate::protocol::{to_json, ModerationRecord};

use super::LedgerError;

/// A record as stored: its JSON, numbered by its row (the number in the JSON was not
/// known when it was written).
pub fn decode_record(rev: i64, stored: &str) -> Result<ModerationRecord, LedgerError> {
    let mut record: ModerationRecord = serde_json::from_str(stored)
        .map_err(|e| LedgerError::Storage(format!("a stored moderation record is damaged: {e}")))?;
    record.rev = rev as u64;
    Ok(record)
}

pub fn encode_role(role: Role) -> String {
    to_json(&role)
}

pub fn decode_role(stored: &str) -> Result<Role, LedgerError> {
    serde_json::from_str(stored)
        .map_err(|e| LedgerError::Storage(format!("a stored role is damaged: {e}")))
}

pub fn store_error(error: LedgerError) -> StoreError {
    StoreError(error.to_string())
}
