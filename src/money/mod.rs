//! Money as plain values: the unit, the sticker catalog, the split policy and the
//! in-memory wallets that let the hot path check funds without a read.
//! No floats anywhere: amounts are integer minor units, policies are basis points.

mod amount;
mod catalog;
mod day;
mod packs;
mod split;
mod wallets;

pub use amount::{Coins, Minor, TooLarge, MINOR_PER_COIN};
pub use catalog::{Catalog, Sticker};
pub use day::Day;
pub use packs::{is_currency, CoinPack};
pub use split::{AgencyAssignment, Split, SplitPolicy};
pub use wallets::{Insufficient, Reservation, Wallets};

/// Basis points: 10,000 is the whole.
pub const BPS_WHOLE: u32 = 10_000;
