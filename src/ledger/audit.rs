//! What `ledger check` finds the same way on every backend.

use super::{Account, CheckReport};

/// A problem for each stored account name no account has (the first `LISTED`).
pub fn unknown_accounts<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .filter(|name| Account::parse(name).is_none())
        .take(CheckReport::LISTED)
        .map(|name| format!("unknown account {name}"))
        .collect()
}
