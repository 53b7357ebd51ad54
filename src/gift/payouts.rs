//! Creators cash out: their earnings by state, payouts asked for (a ledger draw on
//! what is available, so that no two requests, on one node or many, pay out more than
//! there is), settled by the payment system, and their statements.

use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::statement::Statement;
use super::{check_key, ledger_rejection, GiftEngine};
use crate::ledger::facts::{Payout, PayoutSettled, TransferMeta};
use crate::ledger::{Account, LedgerError, Payee, Transfer, TransferRequest, PAYOUT_KEYS};
use crate::money::{Day, Minor};
use crate::protocol::{ErrorCode, Rejection};

/// A payee's earnings by state, in minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EarningsByState {
    /// Still held: refunds can take them back.
    pub held: Minor,
    /// Payable now.
    pub available: Minor,
    /// In payouts the payment system has not settled.
    pub pending: Minor,
    pub paid: Minor,
}

/// A payout and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutView {
    pub payout_id: String,
    pub payee: Payee,
    pub amount: Minor,
    pub status: PayoutStatus,
    pub requested_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Pending,
    Paid,
    Failed,
}

/// Why a settlement cannot be booked.
#[derive(Debug)]
pub enum SettleRefused {
    /// No payout has that id (422).
    UnknownPayout,
    /// It was settled the other way (409).
    SettledOtherwise,
    Ledger(LedgerError),
}

/// A settlement in the books: applied now, or already (`duplicate`).
pub struct Settled {
    pub payout: Payout,
    pub duplicate: bool,
}

impl GiftEngine {
    /// `payee`'s earnings by state today.
    pub async fn earnings_by_state(&self, payee: &Payee) -> Result<EarningsByState, LedgerError> {
        let today = self.today();
        let mut state = EarningsByState::default();
        for (account, balance) in self.ledger.payee_accounts(payee).await? {
            let part = match account {
                Account::Payout(..) => &mut state.pending,
                Account::PaidOut(_) => &mut state.paid,
                held if !self.payouts.is_payable(&held, today) => &mut state.held,
                _ => &mut state.available,
            };
            *part += balance;
        }
        Ok(state)
    }

    /// Whether `user` may act for `payee`: their own earnings, or an agency's they are.
    pub fn payee_for(&self, user: &str, agency: bool) -> Result<Payee, Rejection> {
        if !agency {
            return Ok(Payee::Broadcaster(user.to_owned()));
        }
        if self.split.is_agency(user) {
            Ok(Payee::Agency(user.to_owned()))
        } else {
            Err(Rejection::new(
                ErrorCode::Forbidden,
                "you are not an agency",
            ))
        }
    }

    /// Moves `amount` (minor units) of `payee`'s available earnings into a pending
    /// payout, once per `key`: a retry answers the first payout.
    pub async fn request_payout(
        &self,
        payee: &Payee,
        amount: u64,
        key: &str,
    ) -> Result<PayoutView, Rejection> {
        check_key(key)?;
        let least = self.payouts.minimum();
        let amount = i64::try_from(amount)
            .map(Minor::new)
            .unwrap_or(Minor::new(i64::MAX));
        if amount < least {
            let (coins, cents) = (least.get() / 100, least.get() % 100);
            let message = format!(
                "the smallest payout is {coins}.{cents:02} coins ({} minor units)",
                least.get()
            );
            return Err(Rejection::bad_request(message));
        }
        let payout = Payout {
            payout_id: payout_id(payee, key),
            payee: payee.clone(),
            amount,
            key: key.to_owned(),
            requested_ms: self.clock.now_ms(),
        };
        let request = self.payout_draw(payout).await.map_err(ledger_rejection)?;
        let committed = self.ledger.commit(request).await.map_err(payout_refusal)?;
        let TransferMeta::Payout(payout) = committed.meta else {
            return Err(Rejection::new(
                ErrorCode::Internal,
                "a payout's key holds another transfer",
            ));
        };
        self.payout_view(payout).await.map_err(ledger_rejection)
    }

    /// The draw of a payout on every account it may take from today: the available
    /// earnings and the held ones whose hold has passed (released into available as
    /// it goes). The plan refuses more than they hold (`InsufficientFunds`).
    async fn payout_draw(&self, payout: Payout) -> Result<TransferRequest, LedgerError> {
        let today = self.today();
        let available = payout.payee.available();
        let mut accounts = vec![available.clone()];
        let accounts_held = self.ledger.payee_accounts(&payout.payee).await?;
        accounts.extend(
            (accounts_held.into_iter())
                .filter(|(a, b)| matches!(a, Account::Held(..)) && *b > Minor::ZERO)
                .filter(|(a, _)| self.payouts.is_payable(a, today))
                .map(|(a, _)| a),
        );
        let fingerprint = json!({"payee": payout.payee, "amount": payout.amount}).to_string();
        let (payout_id, drawn) = (payout.payout_id.clone(), accounts.clone());
        Ok(TransferRequest::drawing_on(accounts, move |balances| {
            let released: Vec<(Account, Minor)> = (drawn.iter().skip(1).cloned())
                .zip(balances[1..].iter().copied())
                .filter(|(_, balance)| *balance > Minor::ZERO)
                .collect();
            let total: Minor = released.iter().map(|(_, b)| *b).sum();
            let mut legs: Vec<(Account, Minor)> = released
                .into_iter()
                .map(|(account, b)| (account, -b))
                .collect();
            legs.push((available.clone(), total - payout.amount));
            let pending = Account::Payout(payout.payee.clone(), payout.payout_id.clone());
            legs.push((pending, payout.amount));
            legs.retain(|(_, amount)| *amount != Minor::ZERO);
            Ok(Transfer {
                legs,
                meta: TransferMeta::Payout(payout.clone()),
            })
        })
        .idempotent(PAYOUT_KEYS, &payout_id, fingerprint))
    }

    /// The payment system's word on payout `payout_id`: paid (the money left), or
    /// failed (the amount is available again). Once per payout.
    pub async fn settle_payout(
        &self,
        payout_id: &str,
        paid: bool,
        event_id: &str,
    ) -> Result<Settled, SettleRefused> {
        let found = self.ledger.find(PAYOUT_KEYS, payout_id).await;
        let Some(TransferMeta::Payout(payout)) =
            found.map_err(SettleRefused::Ledger)?.map(|c| c.meta)
        else {
            return Err(SettleRefused::UnknownPayout);
        };
        let settled = PayoutSettled {
            payout_id: payout.payout_id.clone(),
            payee: payout.payee.clone(),
            amount: payout.amount,
            paid,
            event_id: event_id.to_owned(),
            settled_ms: self.clock.now_ms(),
        };
        let pending = Account::Payout(payout.payee.clone(), payout.payout_id.clone());
        let to = match paid {
            true => Account::PaidOut(payout.payee.clone()),
            false => payout.payee.available(),
        };
        let legs = vec![(pending, -payout.amount), (to, payout.amount)];
        let request = TransferRequest::new(legs, TransferMeta::PayoutSettled(settled)).idempotent(
            PAYOUT_KEYS,
            &settled_key(payout_id),
            outcome(paid),
        );
        match self.ledger.commit(request).await {
            Ok(committed) => Ok(Settled {
                payout,
                duplicate: committed.duplicate,
            }),
            Err(LedgerError::Conflict) => Err(SettleRefused::SettledOtherwise),
            Err(error) => Err(SettleRefused::Ledger(error)),
        }
    }

    /// `payee`'s payouts, newest first.
    pub async fn payouts_of(&self, payee: &Payee) -> Result<Vec<PayoutView>, LedgerError> {
        let accounts = self.ledger.payee_accounts(payee).await?;
        let mut views = self
            .payout_views(accounts.into_iter().map(|(a, _)| a))
            .await?;
        views.reverse();
        Ok(views)
    }

    /// Every payout the payment system has yet to settle, oldest first.
    pub async fn pending_payouts(&self) -> Result<Vec<PayoutView>, LedgerError> {
        let accounts = self.ledger.pending_payouts().await?;
        self.payout_views(accounts.into_iter().map(|(a, _)| a))
            .await
    }

    /// The payouts of `accounts` (others are skipped), in the order they were asked for.
    async fn payout_views(
        &self,
        accounts: impl Iterator<Item = Account>,
    ) -> Result<Vec<PayoutView>, LedgerError> {
        let mut views = Vec::new();
        for account in accounts {
            let Account::Payout(_, payout_id) = account else {
                continue;
            };
            let Some(committed) = self.ledger.find(PAYOUT_KEYS, &payout_id).await? else {
                continue;
            };
            if let TransferMeta::Payout(payout) = committed.meta {
                views.push((committed.transfer_id, self.payout_view(payout).await?));
            }
        }
        views.sort_by_key(|(transfer_id, _)| *transfer_id);
        Ok(views.into_iter().map(|(_, view)| view).collect())
    }

    async fn payout_view(&self, payout: Payout) -> Result<PayoutView, LedgerError> {
        let settlement = self
            .ledger
            .find(PAYOUT_KEYS, &settled_key(&payout.payout_id))
            .await?;
        let status = match settlement.map(|c| c.meta) {
            Some(TransferMeta::PayoutSettled(settled)) if settled.paid => PayoutStatus::Paid,
            Some(TransferMeta::PayoutSettled(_)) => PayoutStatus::Failed,
            _ => PayoutStatus::Pending,
        };
        Ok(PayoutView {
            payout_id: payout.payout_id,
            payee: payout.payee,
            amount: payout.amount,
            status,
            requested_ms: payout.requested_ms,
        })
    }

    /// `payee`'s statement of the days `from` to `to` (inclusive).
    pub async fn statement(
        &self,
        payee: &Payee,
        from: Day,
        to: Day,
    ) -> Result<Statement, LedgerError> {
        let booked = (self.ledger)
            .statement(payee, from.start_ms(), to.plus(1).start_ms())
            .await?;
        Ok(Statement::of(payee, &booked))
    }
}

/// A payout the ledger refused, as the protocol says it.
fn payout_refusal(error: LedgerError) -> Rejection {
    match error {
        LedgerError::InsufficientFunds => Rejection::new(
            ErrorCode::InsufficientFunds,
            "that is more than your available earnings",
        ),
        other => ledger_rejection(other),
    }
}

/// A payout's id: the same for the same payee and key, so that a retry finds it.
fn payout_id(payee: &Payee, key: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{key}", payee.available().key()));
    format!("po_{}", &hex::encode(digest)[..24])
}

fn settled_key(payout_id: &str) -> String {
    format!("{payout_id}:settled")
}

fn outcome(paid: bool) -> String {
    if paid { "paid" } else { "failed" }.to_owned()
}
