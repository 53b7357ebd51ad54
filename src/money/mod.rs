//! Money as plain values: the unit, the sticker catalog, the split policy and the
//! in-memory wallets that let the hot path check funds without a read.
//! No floats anywhere: amounts are integer minor units, policies are basis points.

mod catalog;
mod split;
mod wallets;

pub use catalog::{Catalog, Sticker};
pub use split::{AgencyAssignment, Split, SplitPolicy};
pub use wallets::{Insufficient, Reservation, Wallets};

/// An amount in the ledger's minor unit, 1/100 coin. Signed, because legs are.
pub type Minor = i64;

pub const MINOR_PER_COIN: Minor = 100;

/// Basis points: 10,000 is the whole.
pub const BPS_WHOLE: u32 = 10_000;
