//! The rulebook alone, driven by random books and requests: no storage, no clock.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::ledger::facts::{Topup, TransferMeta};
use crate::ledger::Account;
use crate::money::Coins;

/// The accounts the tests move money between: two held, three not.
fn account(index: usize) -> Account {
    match index % 5 {
        0 => Account::Wallet("amy".into()),
        1 => Account::Escrow("p1".into()),
        2 => Account::Platform,
        3 => Account::Earnings("star".into()),
        _ => Account::TopupSource,
    }
}

#[derive(Debug, Clone, Default)]
struct Books(HashMap<Account, Minor>);

impl Balances for Books {
    fn balance(&self, account: &Account) -> Minor {
        self.0.get(account).copied().unwrap_or_default()
    }
}

impl BalancesMut for Books {
    fn add(&mut self, account: &Account, delta: Minor) {
        *self.0.entry(account.clone()).or_default() += delta;
    }
}

impl Books {
    fn sum(&self) -> Minor {
        self.0.values().copied().sum()
    }
}

fn meta() -> TransferMeta {
    TransferMeta::Topup(Topup {
        coins: Coins::new(1),
    })
}

/// Legs of up to four accounts; about half of them balanced by a last leg.
fn legs() -> impl Strategy<Value = Vec<(Account, Minor)>> {
    (
        proptest::collection::vec((0..5usize, -300i64..300), 0..4),
        any::<bool>(),
        0..5usize,
    )
        .prop_map(|(raw, balance, last)| {
            let mut legs: Vec<(Account, Minor)> = raw
                .into_iter()
                .map(|(a, amount)| (account(a), Minor::new(amount)))
                .collect();
            if balance {
                let sum: Minor = legs.iter().map(|(_, amount)| *amount).sum();
                legs.push((account(last), -sum));
            }
            legs
        })
}

/// Books whose held accounts are at or above zero and whose accounts sum to zero.
fn books() -> impl Strategy<Value = Books> {
    (0i64..400, 0i64..400).prop_map(|(wallet, escrow)| {
        let mut books = Books::default();
        books.add(&account(0), Minor::new(wallet));
        books.add(&account(1), Minor::new(escrow));
        books.add(&account(4), Minor::new(-wallet - escrow));
        books
    })
}

/// What the rules should decide, said the plain way.
fn expected(legs: &[(Account, Minor)], books: &Books) -> Result<(), &'static str> {
    let sum: i64 = legs.iter().map(|(_, amount)| amount.get()).sum();
    if legs.is_empty() || sum != 0 {
        return Err("unbalanced");
    }
    let mut after = books.clone();
    for (account, amount) in legs {
        after.add(account, *amount);
    }
    let overdrawn = after
        .0
        .iter()
        .any(|(account, balance)| account.is_held() && balance.is_negative());
    if overdrawn {
        Err("insufficient")
    } else {
        Ok(())
    }
}

proptest! {
    #[test]
    fn a_plan_is_exactly_a_balanced_transfer_that_keeps_held_accounts_at_or_above_zero(
        legs in legs(), books in books(),
    ) {
        let request = TransferRequest::new(legs.clone(), meta());
        let planned = plan(&request, &books);
        match (expected(&legs, &books), &planned) {
            (Ok(()), Ok(plan)) => {
                let mut after = books.clone();
                plan.apply(&mut after);
                prop_assert_eq!(after.sum(), books.sum());
                for (account, amount) in &legs {
                    prop_assert!(plan.deltas().any(|(a, _)| a == account), "{:?} {:?}", account, amount);
                }
            }
            (Err("unbalanced"), Err(LedgerError::Unbalanced)) => {}
            (Err("insufficient"), Err(LedgerError::InsufficientFunds)) => {}
            (expected, planned) => prop_assert!(false, "expected {:?}, planned {:?}", expected, planned),
        }
    }

    #[test]
    fn a_used_key_answers_its_first_result_whatever_the_books_say_now(
        legs in legs(), books in books(), same in any::<bool>(),
    ) {
        let request = TransferRequest::new(legs, meta()).idempotent("amy", "k1", "f".into());
        let prior = Prior {
            transfer_id: 7,
            fingerprint: if same { "f".into() } else { "other".into() },
            meta: meta(),
        };
        let answer = match plan(&request, &books) {
            Ok(_) => retried(&request, prior),
            Err(refusal) => refused(&request, Some(prior), refusal),
        };
        match answer {
            Ok(first) => prop_assert!(same && first.duplicate && first.transfer_id == 7),
            Err(LedgerError::Conflict) => prop_assert!(!same),
            Err(other) => prop_assert!(false, "answered {:?}", other),
        }
    }

    #[test]
    fn a_draw_decides_on_the_balance_it_finds_and_never_overdraws(
        books in books(), wanted in 1i64..600,
    ) {
        // Takes what it wants, or what is left if that is less.
        let escrow = account(1);
        let request = TransferRequest::drawing(escrow.clone(), move |held| {
            if held <= Minor::ZERO {
                return Err("empty".into());
            }
            let take = held.min(Minor::new(wanted));
            Ok(Transfer {
                legs: vec![(Account::Escrow("p1".into()), -take), (account(0), take)],
                meta: meta(),
            })
        });
        let held = books.balance(&escrow);
        match plan(&request, &books) {
            Ok(plan) => {
                let mut after = books.clone();
                plan.apply(&mut after);
                prop_assert_eq!(after.balance(&escrow), held - held.min(Minor::new(wanted)));
            }
            Err(LedgerError::Declined(_)) => prop_assert_eq!(held, Minor::ZERO),
            Err(other) => prop_assert!(false, "{:?}", other),
        }
        prop_assert_eq!(reads(&request), vec![escrow]);
    }

    /// A whole ledger executing the rules the way both backends do: whatever is asked,
    /// in whatever order, no money is created or destroyed, no held account goes below
    /// zero, a key books at most once, and a retry changes nothing.
    #[test]
    fn books_kept_by_the_rules_always_balance(
        requests in proptest::collection::vec((legs(), 0..4u8, any::<bool>()), 1..60),
    ) {
        let mut books = Books::default();
        let mut keys: HashMap<u8, Prior> = HashMap::new();
        let mut next_id = 1;
        for (legs, key, keyed) in requests {
            let fingerprint = format!("{legs:?}");
            let mut request = TransferRequest::new(legs, meta());
            if keyed {
                request = request.idempotent("amy", &key.to_string(), fingerprint.clone());
            }
            let before = books.clone();
            let prior = keyed.then(|| keys.get(&key).cloned()).flatten();
            let booked = match (plan(&request, &books), prior) {
                (Ok(_), Some(prior)) => retried(&request, prior).map(|_| false),
                (Ok(plan), None) => {
                    plan.apply(&mut books);
                    if keyed {
                        keys.insert(key, Prior { transfer_id: next_id, fingerprint, meta: meta() });
                    }
                    next_id += 1;
                    Ok(true)
                }
                (Err(refusal), prior) => refused(&request, prior, refusal).map(|_| false),
            };
            prop_assert_eq!(books.sum(), Minor::ZERO);
            prop_assert!(matches!(booked, Ok(true)) || books.0 == before.0, "only a booking changes the books");
            for (account, balance) in &books.0 {
                prop_assert!(!(account.is_held() && balance.is_negative()), "{:?} {:?}", account, balance);
            }
        }
    }
}

#[test]
fn a_draw_that_takes_held_money_from_another_account_is_a_broken_rule() {
    let request = TransferRequest::drawing(account(1), |held| {
        Ok(Transfer {
            legs: vec![
                (account(1), held),
                (account(0), -held - Minor::new(1)),
                (account(2), Minor::new(1)),
            ],
            meta: meta(),
        })
    });
    let books = Books::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan(&request, &books).map(|_| ())
    }));
    assert!(outcome.is_err(), "the rulebook must refuse to plan it");
}

#[test]
fn an_owed_account_is_paid_back_at_most_what_it_owes() {
    let debt = Account::Debt("amy".into());
    let mut books = Books::default();
    books.add(&debt, Minor::new(-70));
    books.add(&Account::Purchases, Minor::new(70));
    let repay = |amount: i64| {
        let legs = vec![
            (Account::Purchases, Minor::new(-amount)),
            (debt.clone(), Minor::new(amount)),
        ];
        TransferRequest::new(legs, meta())
    };
    assert_eq!(reads(&repay(70)), vec![debt.clone()]);
    let exact = repay(70);
    let plan = plan(&exact, &books).unwrap();
    let mut after = books.clone();
    plan.apply(&mut after);
    assert_eq!(after.balance(&debt), Minor::ZERO);
    assert!(matches!(
        super::plan(&repay(71), &books),
        Err(LedgerError::Unbalanced)
    ));
}

proptest! {
    /// A ceiling refuses exactly the spending that would pass it, and however the
    /// spending comes, the counter never ends above it.
    #[test]
    fn a_ceiling_holds_the_counter_at_or_below_it_whatever_is_spent(
        most in 0i64..500,
        spends in proptest::collection::vec(1i64..120, 1..20),
    ) {
        let day = crate::money::Day::parse("2026-12-01").unwrap();
        let counter = Account::Spent(day, "amy".into());
        let ceiling = Ceiling { account: counter.clone(), most: Minor::new(most) };
        let mut books = Books::default();
        for spend in spends {
            let legs = vec![
                (counter.clone(), Minor::new(spend)),
                (Account::Counters, Minor::new(-spend)),
            ];
            let request = TransferRequest::new(legs, meta()).within(ceiling.clone());
            prop_assert_eq!(reads(&request), vec![counter.clone()]);
            let before = books.balance(&counter).get();
            match plan(&request, &books) {
                Ok(plan) => {
                    prop_assert!(before + spend <= most);
                    plan.apply(&mut books);
                }
                Err(LedgerError::LimitReached) => prop_assert!(before + spend > most),
                Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
            }
            prop_assert!(books.balance(&counter).get() <= most);
            prop_assert_eq!(books.sum(), Minor::ZERO);
        }
    }
}
