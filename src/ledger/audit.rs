//! What `ledger check` finds the same way on every backend.

use super::{Account, CheckReport};
use crate::money::Minor;

/// The problems with accounts' balances (`(stored name, sum of its legs)`): names no
/// account has, held accounts below zero and owed accounts above it (of each kind,
/// the first `LISTED`).
pub fn account_problems<'a>(balances: impl Iterator<Item = (&'a str, i64)>) -> Vec<String> {
    let (mut unknown, mut out_of_bounds) = (Vec::new(), Vec::new());
    for (name, sum) in balances {
        let Some(account) = Account::parse(name) else {
            unknown.push(format!("unknown account {name}"));
            continue;
        };
        let balance = Minor::new(sum);
        if (account.is_held() && balance.is_negative()) || (account.is_owed() && sum > 0) {
            out_of_bounds.push(format!("account out of its bounds {name}: {sum}"));
        }
    }
    unknown.truncate(CheckReport::LISTED);
    out_of_bounds.truncate(CheckReport::LISTED);
    unknown.extend(out_of_bounds);
    unknown
}
