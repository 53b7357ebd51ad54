//! What a refund of coins already spent takes back from the creators they paid.
//!
//! The coins are traced to the buyer's latest gifts and questions (newest first, each
//! traced at most up to its value across all refunds, counted on its `Traced`
//! counter). Of each gift traced, every creator's share comes back pro rata
//! (`share * traced / value`, rounded down): out of their held earnings into the
//! platform's account while the hold lasts; once the earnings are available it stays
//! with the creator, and the platform carries it (`Losses`). The app store's and the
//! platform's own shares are not touched. Pure: the ledger's draw calls it on the
//! balances it locked.

use std::collections::HashMap;

use crate::ledger::facts::Clawed;
use crate::ledger::{Account, Payee};
use crate::money::Minor;

/// A gift or question the buyer paid, as the books hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceable {
    pub transfer_id: i64,
    pub room: String,
    /// Its whole value.
    pub value: Minor,
    /// Its creators' shares.
    pub shares: Vec<PaidShare>,
}

/// A creator's share of a payment, and the account it was paid into (held or
/// available).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidShare {
    pub account: Account,
    pub amount: Minor,
}

/// The legs and facts of taking back `owed` (spent coins refunded) from `gifts`
/// (newest first), on the ledger's `balance`s; `still_held` says whether an account's
/// earnings are still held.
pub fn clawback(
    owed: Minor,
    gifts: &[Traceable],
    balance: impl Fn(&Account) -> Minor,
    still_held: impl Fn(&Account) -> bool,
) -> (Vec<(Account, Minor)>, Vec<Clawed>) {
    let (mut legs, mut clawed) = (Vec::new(), Vec::new());
    let mut taken: HashMap<&Account, Minor> = HashMap::new();
    let mut left = owed;
    for gift in gifts {
        if left <= Minor::ZERO {
            break;
        }
        let counter = Account::Traced(gift.transfer_id);
        let untraced = gift.value - balance(&counter);
        let traced = left.min(untraced);
        if traced <= Minor::ZERO {
            continue;
        }
        left -= traced;
        legs.extend([(counter, traced), (Account::Counters, -traced)]);
        for share in &gift.shares {
            let part = pro_rata(share.amount, traced, gift.value);
            let clawable = if still_held(&share.account) {
                let already = taken.get(&share.account).copied().unwrap_or_default();
                (balance(&share.account) - already).clamp(Minor::ZERO, part)
            } else {
                Minor::ZERO
            };
            let lost = part - clawable;
            *taken.entry(&share.account).or_default() += clawable;
            let platform = clawable - lost;
            let moves = [
                (share.account.clone(), -clawable),
                (Account::Platform, platform),
                (Account::Losses, lost),
            ];
            legs.extend(
                moves
                    .into_iter()
                    .filter(|(_, amount)| *amount != Minor::ZERO),
            );
            clawed.push(Clawed {
                transfer_id: gift.transfer_id,
                room: gift.room.clone(),
                payee: Payee::of(&share.account).expect("a creator's share is a payee's"),
                traced,
                clawed: clawable,
                lost,
            });
        }
    }
    (legs, clawed)
}

/// `share * traced / value`, rounded down.
fn pro_rata(share: Minor, traced: Minor, value: Minor) -> Minor {
    let exact = i128::from(share.get()) * i128::from(traced.get()) / i128::from(value.get());
    Minor::new(i64::try_from(exact).expect("a part is never larger than the share"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Day;

    fn day() -> Day {
        Day::parse("2026-12-02").unwrap()
    }

    fn held(user: &str) -> Account {
        Account::Held(day(), Payee::Broadcaster(user.into()))
    }

    fn gift(id: i64, share: Account, value: i64, amount: i64) -> Traceable {
        Traceable {
            transfer_id: id,
            room: "alice".into(),
            value: Minor::new(value),
            shares: vec![PaidShare {
                account: share,
                amount: Minor::new(amount),
            }],
        }
    }

    fn sum(legs: &[(Account, Minor)]) -> Minor {
        legs.iter().map(|(_, amount)| *amount).sum()
    }

    #[test]
    fn held_shares_come_back_pro_rata_and_available_ones_are_the_platforms_loss() {
        // Newest first: a held gift of 1000 (share 350), then an available one.
        let gifts = [
            gift(2, held("alice"), 1000, 350),
            gift(1, Account::Earnings("alice".into()), 1000, 350),
        ];
        let (legs, clawed) = clawback(
            Minor::new(1500),
            &gifts,
            |account| match account {
                Account::Held(..) => Minor::new(350),
                _ => Minor::ZERO,
            },
            |account| matches!(account, Account::Held(..)),
        );
        assert_eq!(sum(&legs), Minor::ZERO);
        assert_eq!(
            clawed
                .iter()
                .map(|c| (c.traced.get(), c.clawed.get(), c.lost.get()))
                .collect::<Vec<_>>(),
            [(1000, 350, 0), (500, 0, 175)]
        );
        assert!(legs.contains(&(held("alice"), Minor::new(-350))));
        assert!(legs.contains(&(Account::Losses, Minor::new(175))));
        assert!(legs.contains(&(Account::Traced(1), Minor::new(500))));
    }

    #[test]
    fn a_gift_is_traced_at_most_up_to_its_value_across_refunds() {
        let gifts = [gift(7, held("alice"), 1000, 350)];
        let balance = |account: &Account| match account {
            Account::Traced(7) => Minor::new(800),
            _ => Minor::new(350),
        };
        let (legs, clawed) = clawback(Minor::new(1000), &gifts, balance, |_| true);
        assert_eq!(clawed[0].traced, Minor::new(200));
        assert_eq!(clawed[0].clawed, Minor::new(70));
        assert_eq!(sum(&legs), Minor::ZERO);
        let traced_out = |_: &Account| Minor::new(1000);
        assert!(clawback(Minor::new(5), &gifts, traced_out, |_| true)
            .1
            .is_empty());
    }

    #[test]
    fn what_the_held_account_no_longer_holds_is_lost_not_taken_twice() {
        // Two gifts paid into the same day's held earnings, which hold 400 of 700.
        let gifts = [
            gift(2, held("alice"), 1000, 350),
            gift(1, held("alice"), 1000, 350),
        ];
        let (legs, clawed) = clawback(
            Minor::new(2000),
            &gifts,
            |account| match account {
                Account::Held(..) => Minor::new(400),
                _ => Minor::ZERO,
            },
            |_| true,
        );
        assert_eq!(clawed[0].clawed + clawed[1].clawed, Minor::new(400));
        assert_eq!(clawed[1].lost, Minor::new(300));
        assert_eq!(sum(&legs), Minor::ZERO);
    }
}
