//! The ledger's rulebook: every rule about what may be booked, in one place, with no
//! I/O, no clock and no randomness. Both backends execute it; neither decides anything
//! itself.
//!
//! For each request a backend:
//! 1. reads the balances the decision needs (`reads`): from memory (SQLite's single
//!    writer) or locked in the database (PostgreSQL, `SELECT … FOR UPDATE`);
//! 2. asks for a `plan`: a draw resolved, the legs balanced, no held account below
//!    zero — or a refusal;
//! 3. tries to book the plan under the request's idempotency key, or, when the plan
//!    was refused or the key turns out to be taken, looks up what the key holds and
//!    lets `refused` or `retried` say what the answer is;
//! 4. applies a booked plan to its balances (`Plan::apply`), which asserts the
//!    postconditions: legs sum to zero, held accounts at or above zero.

use std::borrow::Cow;
use std::sync::Arc;

use super::account::Account;
use super::facts::TransferMeta;
use super::{Committed, LedgerError};
use crate::money::Minor;

/// A transfer's legs and facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub legs: Vec<(Account, Minor)>,
    pub meta: TransferMeta,
}

/// What a draw takes, decided from its accounts' balances (in the order the draw
/// names them): a transfer, or the reason there is nothing to take.
pub type DrawRule = dyn Fn(&[Minor]) -> Result<Transfer, String> + Send + Sync;

/// A transfer decided by accounts' balances at the moment of commit, for a pot that
/// several nodes draw on at once (a red packet's next share, or its remainder; a
/// refund's coins, from what the wallet holds and what was refunded before). The
/// ledger serialises transfers on the accounts, so each draw sees the balances the
/// previous one left.
#[derive(Clone)]
pub struct Draw {
    pub accounts: Vec<Account>,
    pub rule: Arc<DrawRule>,
}

impl std::fmt::Debug for Draw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draw")
            .field("accounts", &self.accounts)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub enum Content {
    /// Legs and facts known when the request is made.
    Fixed(Transfer),
    /// Legs and facts the draw decides at commit.
    Drawn(Draw),
}

/// (user, key): a second request with the same pair is a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub user: String,
    pub key: String,
}

/// A ceiling on a counter account: the transfer may not take `account` above `most`.
/// A spending cap is one (the coins a user spent in a day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceiling {
    pub account: Account,
    pub most: Minor,
}

/// A transfer to commit.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub content: Content,
    pub idempotency: Option<IdempotencyKey>,
    /// What must match for a retry to be "the same request".
    pub fingerprint: String,
    pub ceiling: Option<Ceiling>,
}

impl TransferRequest {
    pub fn new(legs: Vec<(Account, Minor)>, meta: TransferMeta) -> TransferRequest {
        TransferRequest {
            content: Content::Fixed(Transfer { legs, meta }),
            idempotency: None,
            fingerprint: String::new(),
            ceiling: None,
        }
    }

    /// A transfer that `rule` decides from `account`'s balance when the ledger commits
    /// it; `rule` declines (an `Err`) when there is nothing to take.
    pub fn drawing(
        account: Account,
        rule: impl Fn(Minor) -> Result<Transfer, String> + Send + Sync + 'static,
    ) -> TransferRequest {
        TransferRequest::drawing_on(vec![account], move |balances| rule(balances[0]))
    }

    /// A transfer that `rule` decides from the balances of `accounts` (in that order)
    /// when the ledger commits it.
    pub fn drawing_on(
        accounts: Vec<Account>,
        rule: impl Fn(&[Minor]) -> Result<Transfer, String> + Send + Sync + 'static,
    ) -> TransferRequest {
        TransferRequest {
            content: Content::Drawn(Draw {
                accounts,
                rule: Arc::new(rule),
            }),
            idempotency: None,
            fingerprint: String::new(),
            ceiling: None,
        }
    }

    pub fn idempotent(mut self, user: &str, key: &str, fingerprint: String) -> Self {
        self.idempotency = Some(IdempotencyKey {
            user: user.to_owned(),
            key: key.to_owned(),
        });
        self.fingerprint = fingerprint;
        self
    }

    /// Refuses the transfer (`LimitReached`) if it would take `ceiling.account` above
    /// `ceiling.most`.
    pub fn within(mut self, ceiling: Ceiling) -> Self {
        self.ceiling = Some(ceiling);
        self
    }
}

/// Balances as a decision sees them: the books as committed plus whatever the batch
/// being written has already changed.
pub trait Balances {
    fn balance(&self, account: &Account) -> Minor;
}

/// Balances a booked plan is applied to.
pub trait BalancesMut: Balances {
    fn add(&mut self, account: &Account, delta: Minor);
}

/// The accounts whose balances a decision on `request` reads: the account a draw
/// draws on, every held account a fixed transfer takes money from or owed account it
/// pays into, and the account under a ceiling.
pub fn reads(request: &TransferRequest) -> Vec<Account> {
    let mut read: Vec<Account> = match &request.content {
        Content::Drawn(draw) => draw.accounts.clone(),
        Content::Fixed(transfer) => transfer
            .legs
            .iter()
            .filter(|(account, amount)| bounded_by(account, *amount))
            .map(|(account, _)| account.clone())
            .collect(),
    };
    read.extend(
        request
            .ceiling
            .iter()
            .map(|ceiling| ceiling.account.clone()),
    );
    read.sort();
    read.dedup();
    read
}

/// Whether moving `amount` on `account` could cross the bound the account keeps (held
/// accounts at or above zero, owed accounts at or below): such a leg is decided on
/// the account's balance.
fn bounded_by(account: &Account, amount: Minor) -> bool {
    (account.is_held() && amount.is_negative()) || (account.is_owed() && amount > Minor::ZERO)
}

/// A transfer the rules allow, ready to book: at least one leg, legs summing to zero,
/// and no held account taken below zero by it on the balances it was planned on.
#[derive(Debug)]
pub struct Plan<'a> {
    transfer: Cow<'a, Transfer>,
    /// The net change of each account: the index of its first leg, and the change.
    deltas: Vec<(usize, Minor)>,
}

impl Plan<'_> {
    pub fn legs(&self) -> &[(Account, Minor)] {
        &self.transfer.legs
    }

    pub fn meta(&self) -> &TransferMeta {
        &self.transfer.meta
    }

    /// Each account the transfer changes, once, with its net change.
    pub fn deltas(&self) -> impl Iterator<Item = (&Account, Minor)> {
        self.deltas
            .iter()
            .map(|&(leg, delta)| (&self.transfer.legs[leg].0, delta))
    }

    /// Applies the booked transfer to `books`, asserting what booking it must keep
    /// true (legs sum to zero, held accounts at or above zero, owed accounts at or
    /// below). A failure here is a broken rule, never a client's mistake: it panics.
    pub fn apply(&self, books: &mut impl BalancesMut) {
        let sum: Minor = self.deltas.iter().map(|&(_, delta)| delta).sum();
        assert_eq!(sum, Minor::ZERO, "a booked transfer's legs sum to zero");
        for (account, delta) in self.deltas() {
            books.add(account, delta);
            let balance = books.balance(account);
            assert!(
                !(account.is_held() && balance.is_negative()),
                "held account {account:?} went below zero"
            );
            assert!(
                !(account.is_owed() && balance > Minor::ZERO),
                "owed account {account:?} went above zero"
            );
        }
    }
}

/// Decides whether `request` may be booked on `books`. Does not look at idempotency:
/// see `outcome`.
pub fn plan<'a>(
    request: &'a TransferRequest,
    books: &impl Balances,
) -> Result<Plan<'a>, LedgerError> {
    let transfer = match &request.content {
        Content::Fixed(transfer) => Cow::Borrowed(transfer),
        Content::Drawn(draw) => Cow::Owned(resolve(draw, books)?),
    };
    let deltas = net_changes(&transfer.legs).ok_or(LedgerError::Unbalanced)?;
    for &(leg, delta) in &deltas {
        let account = &transfer.legs[leg].0;
        if account.is_held() && delta.is_negative() {
            let after = books.balance(account).checked_add(delta);
            if after.is_none_or(Minor::is_negative) {
                return Err(LedgerError::InsufficientFunds);
            }
        }
        if account.is_owed() && delta > Minor::ZERO {
            // Paying back more than is owed: the request's arithmetic is wrong.
            let after = books.balance(account).checked_add(delta);
            if after.is_none_or(|after| after > Minor::ZERO) {
                return Err(LedgerError::Unbalanced);
            }
        }
    }
    if let Some(ceiling) = &request.ceiling {
        let delta = (deltas.iter())
            .find(|&&(leg, _)| transfer.legs[leg].0 == ceiling.account)
            .map_or(Minor::ZERO, |&(_, delta)| delta);
        let after = books.balance(&ceiling.account).checked_add(delta);
        if after.is_none_or(|after| after > ceiling.most) {
            return Err(LedgerError::LimitReached);
        }
    }
    Ok(Plan { transfer, deltas })
}

/// A draw's transfer on its accounts' balances. A draw takes held money only from its
/// own accounts, and pays into an owed account only its own: those are the only
/// balances it was decided on.
fn resolve(draw: &Draw, books: &impl Balances) -> Result<Transfer, LedgerError> {
    let balances: Vec<Minor> = draw.accounts.iter().map(|a| books.balance(a)).collect();
    let transfer = (draw.rule)(&balances).map_err(LedgerError::Declined)?;
    let decided_here = |(account, amount): &(Account, Minor)| {
        draw.accounts.contains(account) || !bounded_by(account, *amount)
    };
    assert!(
        transfer.legs.iter().all(decided_here),
        "a draw decides only on the balances of the accounts it draws on"
    );
    Ok(transfer)
}

/// Each account's net change, keyed by its first leg; `None` unless there is a leg
/// and the legs sum to exactly zero.
fn net_changes(legs: &[(Account, Minor)]) -> Option<Vec<(usize, Minor)>> {
    let mut deltas: Vec<(usize, Minor)> = Vec::with_capacity(legs.len());
    let mut sum = Minor::ZERO;
    for (index, (account, amount)) in legs.iter().enumerate() {
        sum = sum.checked_add(*amount)?;
        match deltas
            .iter_mut()
            .find(|(first, _)| legs[*first].0 == *account)
        {
            Some((_, delta)) => *delta = delta.checked_add(*amount)?,
            None => deltas.push((index, *amount)),
        }
    }
    (!legs.is_empty() && sum == Minor::ZERO).then_some(deltas)
}

/// What the books already hold under a request's idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Prior {
    pub transfer_id: i64,
    pub fingerprint: String,
    pub meta: TransferMeta,
}

impl Prior {
    /// The first transfer's result, answered again to a retry.
    pub fn retried(self) -> Committed {
        Committed {
            transfer_id: self.transfer_id,
            duplicate: true,
            fingerprint: self.fingerprint,
            meta: self.meta,
        }
    }
}

/// The idempotency rule, for a request whose key the books already hold: a key used
/// before decides, whatever the books say now. The same request gets its first result
/// again (even when the wallet could no longer pay for it, or a draw finds nothing
/// left); a different one is a conflict.
pub fn retried(request: &TransferRequest, prior: Prior) -> Result<Committed, LedgerError> {
    if prior.fingerprint == request.fingerprint {
        Ok(prior.retried())
    } else {
        Err(LedgerError::Conflict)
    }
}

/// The answer to a request whose plan was refused: what its key holds decides, if it
/// holds anything (`retried`); otherwise the refusal stands. A backend looks the key up
/// only then, or when booking a plan finds the key taken: a plan booked under a free
/// key never needed the lookup.
pub fn refused(
    request: &TransferRequest,
    prior: Option<Prior>,
    refusal: LedgerError,
) -> Result<Committed, LedgerError> {
    match prior {
        Some(prior) => retried(request, prior),
        None => Err(refusal),
    }
}

#[cfg(test)]
mod tests;
