//! The two units money is counted in, as distinct types so that they cannot be mixed:
//! whole `Coins`, what clients see and pay with, and `Minor` units (1/100 coin), what
//! the ledger books. Arithmetic that would overflow is a crash, never a wrap.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// Minor units in one coin.
pub const MINOR_PER_COIN: i64 = 100;

/// Whole coins: a price, a purchase, a gift's value. Never negative.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Coins(u64);

/// An amount in the ledger's minor unit, 1/100 coin. Signed, because legs are.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Minor(i64);

/// A number of coins too large for the ledger's minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("amount is too large")]
pub struct TooLarge;

impl Coins {
    pub const ZERO: Coins = Coins(0);

    pub const fn new(coins: u64) -> Coins {
        Coins(coins)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The same value in minor units, if the ledger can hold it.
    pub fn to_minor(self) -> Result<Minor, TooLarge> {
        i64::try_from(self.0)
            .ok()
            .and_then(|coins| coins.checked_mul(MINOR_PER_COIN))
            .map(Minor)
            .ok_or(TooLarge)
    }

    pub fn checked_mul(self, factor: u64) -> Option<Coins> {
        self.0.checked_mul(factor).map(Coins)
    }
}

impl Minor {
    pub const ZERO: Minor = Minor(0);

    pub const fn new(minor: i64) -> Minor {
        Minor(minor)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: Minor) -> Option<Minor> {
        self.0.checked_add(other.0).map(Minor)
    }

    /// The whole coins in a held amount, rounded down (a wallet's spendable coins).
    pub fn whole_coins(self) -> Coins {
        assert!(
            self.0 >= 0,
            "only held amounts are counted in coins: {self}"
        );
        Coins((self.0 / MINOR_PER_COIN) as u64)
    }

    /// The whole coins of an amount owed, rounded up: a part of a coin is owed too.
    pub fn owed_coins(self) -> Coins {
        assert!(
            self.0 >= 0,
            "an amount owed is counted at or above zero: {self}"
        );
        Coins(
            self.0
                .unsigned_abs()
                .div_ceil(MINOR_PER_COIN.unsigned_abs()),
        )
    }
}

impl Add for Minor {
    type Output = Minor;

    fn add(self, other: Minor) -> Minor {
        self.checked_add(other).expect("money overflow")
    }
}

impl Sub for Minor {
    type Output = Minor;

    fn sub(self, other: Minor) -> Minor {
        Minor(self.0.checked_sub(other.0).expect("money overflow"))
    }
}

impl Neg for Minor {
    type Output = Minor;

    fn neg(self) -> Minor {
        Minor(self.0.checked_neg().expect("money overflow"))
    }
}

impl AddAssign for Minor {
    fn add_assign(&mut self, other: Minor) {
        *self = *self + other;
    }
}

impl SubAssign for Minor {
    fn sub_assign(&mut self, other: Minor) {
        *self = *self - other;
    }
}

impl Sum for Minor {
    fn sum<I: Iterator<Item = Minor>>(amounts: I) -> Minor {
        amounts.fold(Minor::ZERO, Add::add)
    }
}

impl Add for Coins {
    type Output = Coins;

    fn add(self, other: Coins) -> Coins {
        Coins(self.0.checked_add(other.0).expect("coin overflow"))
    }
}

impl AddAssign for Coins {
    fn add_assign(&mut self, other: Coins) {
        *self = *self + other;
    }
}

impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} minor", self.0)
    }
}

impl fmt::Display for Coins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} coins", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_convert_to_minor_units_exactly_or_not_at_all() {
        assert_eq!(Coins::new(7).to_minor(), Ok(Minor::new(700)));
        assert_eq!(Coins::new(u64::MAX).to_minor(), Err(TooLarge));
        assert_eq!(
            Coins::new(i64::MAX as u64 / 100 + 1).to_minor(),
            Err(TooLarge)
        );
        assert_eq!(Minor::new(799).whole_coins(), Coins::new(7));
    }

    #[test]
    #[should_panic(expected = "money overflow")]
    fn overflowing_money_crashes_instead_of_wrapping() {
        let _ = Minor::new(i64::MAX) + Minor::new(1);
    }
}
