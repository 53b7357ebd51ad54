//! Coins bought with real money, credited to the buyer's wallet exactly once, and
//! taken back when the payment is refunded or charged back. Both are ledger draws:
//! a purchase repays what the buyer owes first (a draw on their debt), and a refund
//! takes what the wallet still holds and records the rest as debt (a draw on the
//! wallet), so the ledger decides on the balances as they are when it commits.

use serde_json::json;

use super::GiftEngine;
use crate::ledger::facts::{Purchase, PurchaseRefund, TransferMeta};
use crate::ledger::rules::Ceiling;
use std::collections::BTreeSet;

use super::clawback::{clawback, PaidShare, Traceable};
use crate::ledger::{Account, Booked, LedgerError, Payee, Transfer, TransferRequest};
use crate::money::{Coins, Minor};
use crate::payments::RefundShare;

/// Why a refund cannot be booked.
#[derive(Debug)]
pub enum RefundRefused {
    /// No purchase with that id was credited (422).
    UnknownPurchase,
    /// More coins than the purchase credited, or none (400).
    Coins(String),
    Ledger(LedgerError),
}

/// A purchase or refund in the books: applied now, or already (`duplicate`).
pub struct Credited {
    /// The buyer.
    pub user: String,
    pub duplicate: bool,
    /// The buyer's balance after it, in whole coins.
    pub balance: u64,
}

impl GiftEngine {
    /// Books `purchase` under its payment system's purchase id: a second notification
    /// of the same purchase (a redelivery, or another event about it) changes nothing;
    /// the same id with different content is a `Conflict`.
    pub async fn credit_purchase(&self, purchase: Purchase) -> Result<Credited, LedgerError> {
        // Everything the payment system said about the purchase, but not which
        // notification said it.
        let fingerprint = json!({
            "user": purchase.user, "coins": purchase.coins, "pack": purchase.pack,
            "amount": purchase.amount, "currency": purchase.currency, "store": purchase.store,
        })
        .to_string();
        let (user, key) = (purchase.user.clone(), purchase.purchase_id.clone());
        let payer = format!("purchase:{}", purchase.provider);
        let request = TransferRequest::drawing(Account::Debt(user.clone()), move |owed| {
            Ok(repay_first(&purchase, -owed))
        })
        .idempotent(&payer, &key, fingerprint);
        let committed = self.ledger.commit(request).await?;
        if let (false, TransferMeta::Purchase(purchase)) = (committed.duplicate, &committed.meta) {
            let repaid = minor(purchase.repaid);
            self.wallets
                .purchased(&user, minor(purchase.coins) - repaid, repaid);
        }
        Ok(Credited {
            duplicate: committed.duplicate,
            balance: self.committed_balance(&user).await,
            user,
        })
    }

    /// Takes back a `share` of the purchase `purchase_id` that `provider` notified in
    /// event `event_id`: what the buyer's wallet holds, and the rest as debt. A
    /// purchase may be refunded in parts, one per event, never beyond its coins.
    pub async fn refund_purchase(
        &self,
        provider: &str,
        event_id: &str,
        purchase_id: &str,
        share: RefundShare,
        chargeback: bool,
    ) -> Result<Credited, RefundRefused> {
        let payer = format!("purchase:{provider}");
        let first = self.ledger.find(&payer, purchase_id).await;
        let Some(TransferMeta::Purchase(purchase)) =
            first.map_err(RefundRefused::Ledger)?.map(|c| c.meta)
        else {
            return Err(RefundRefused::UnknownPurchase);
        };
        let bought = purchase.coins;
        if share.of(bought).is_none() {
            return Err(RefundRefused::Coins(format!(
                "a refund takes back 1 to {bought} coins of this purchase"
            )));
        }
        let refund = PurchaseRefund {
            clawed: Vec::new(),
            provider: provider.to_owned(),
            purchase_id: purchase_id.to_owned(),
            event_id: event_id.to_owned(),
            user: purchase.user,
            coins: Coins::ZERO,
            taken: Coins::ZERO,
            owed: Coins::ZERO,
            chargeback,
        };
        self.take_back(refund, share, bought).await
    }

    /// Books a refund: keyed by its event, drawn on the buyer's wallet and on what was
    /// refunded of the purchase before, under a ceiling of the coins bought.
    async fn take_back(
        &self,
        refund: PurchaseRefund,
        share: RefundShare,
        bought: Coins,
    ) -> Result<Credited, RefundRefused> {
        let fingerprint = json!({
            "purchase": refund.purchase_id, "share": format!("{share:?}"),
            "chargeback": refund.chargeback,
        })
        .to_string();
        let (user, key) = (refund.user.clone(), refund.event_id.clone());
        let payer = format!("refund:{}", refund.provider);
        let refunded = refunds_of(&refund);
        let gifts = self.traceable(&user, minor(bought)).await;
        let gifts = gifts.map_err(RefundRefused::Ledger)?;
        let today = self.today();
        let still_held: BTreeSet<Account> = (gifts.iter().flat_map(|g| &g.shares))
            .map(|share| share.account.clone())
            .filter(|a| matches!(a, Account::Held(..)) && !self.payouts.is_payable(a, today))
            .collect();
        let mut accounts = vec![Account::Wallet(user.clone()), refunded.clone()];
        accounts.extend(gifts.iter().map(|g| Account::Traced(g.transfer_id)));
        accounts.extend(still_held.iter().cloned());
        let drawn = accounts.clone();
        let request = TransferRequest::drawing_on(accounts, move |balances| {
            let back = share_left(share, bought, balances[1])?;
            let mut transfer = take_what_is_held(&refund, back, balances[0]);
            let TransferMeta::PurchaseRefund(facts) = &mut transfer.meta else {
                unreachable!("a refund's facts")
            };
            let balance_of = |account: &Account| {
                let at = drawn.iter().position(|a| a == account);
                at.map_or(Minor::ZERO, |at| balances[at])
            };
            let (legs, clawed) = clawback(minor(facts.owed), &gifts, balance_of, |account| {
                still_held.contains(account)
            });
            transfer.legs.extend(legs);
            facts.clawed = clawed;
            Ok(transfer)
        })
        .idempotent(&payer, &key, fingerprint)
        .within(Ceiling {
            account: refunded,
            most: minor(bought),
        });
        let committed = match self.ledger.commit(request).await {
            Ok(committed) => committed,
            Err(LedgerError::Declined(_)) => return Ok(self.unchanged(user).await),
            Err(LedgerError::LimitReached) => {
                let message =
                    format!("a refund takes back at most the coins left of the {bought} bought");
                return Err(RefundRefused::Coins(message));
            }
            Err(error) => return Err(RefundRefused::Ledger(error)),
        };
        if let (false, TransferMeta::PurchaseRefund(refund)) =
            (committed.duplicate, &committed.meta)
        {
            self.wallets
                .taken_back(&user, minor(refund.taken), minor(refund.owed));
        }
        Ok(Credited {
            duplicate: committed.duplicate,
            balance: self.committed_balance(&user).await,
            user,
        })
    }

    /// `user`'s latest gifts and questions (newest first) that a refund of up to
    /// `bound` spent coins may be traced to: enough of them not traced by refunds
    /// before, looking at `MAX_TRACED` at most.
    async fn traceable(&self, user: &str, bound: Minor) -> Result<Vec<Traceable>, LedgerError> {
        let (mut gifts, mut untraced, mut before) = (Vec::new(), Minor::ZERO, None);
        while untraced < bound && gifts.len() < MAX_TRACED {
            let page = self.ledger.paid_by(user, before, TRACE_PAGE).await?;
            let Some(last) = page.last() else { break };
            before = Some(last.transfer_id);
            let page: Vec<Traceable> = page.iter().filter_map(traceable).collect();
            let counters = page
                .iter()
                .map(|g| Account::Traced(g.transfer_id))
                .collect();
            let traced = self.ledger.balances_of(counters).await?;
            for (gift, traced) in page.into_iter().zip(traced) {
                if untraced < bound && gift.value > traced {
                    untraced += gift.value - traced;
                    gifts.push(gift);
                }
            }
        }
        Ok(gifts)
    }

    /// The answer to a refund that finds everything it asks for already taken back.
    async fn unchanged(&self, user: String) -> Credited {
        Credited {
            duplicate: true,
            balance: self.committed_balance(&user).await,
            user,
        }
    }
}

/// The most gifts a refund's coins are traced to, and how many are read at once.
const MAX_TRACED: usize = 256;
const TRACE_PAGE: usize = 64;

/// A gift or question as a refund traces coins to it: its value (what left the
/// payer's wallet) and its creators' shares.
fn traceable(booked: &Booked) -> Option<Traceable> {
    let room = booked.meta.room()?.to_owned();
    let value: Minor = (booked.legs.iter())
        .filter(|(account, _)| matches!(account, Account::Wallet(_)))
        .map(|(_, amount)| -*amount)
        .sum();
    let shares = (booked.legs.iter())
        .filter(|(account, amount)| Payee::of(account).is_some() && *amount > Minor::ZERO)
        .map(|(account, amount)| PaidShare {
            account: account.clone(),
            amount: *amount,
        })
        .collect();
    (value > Minor::ZERO).then_some(Traceable {
        transfer_id: booked.transfer_id,
        room,
        value,
        shares,
    })
}

/// The coins a refund of `share` takes back now, when `refunded` (minor units) of the
/// `bought` coins were taken back before: `All` and `Money` (a payment system's
/// running total) take what is missing, `Coins` that many more. Nothing left to take
/// declines.
fn share_left(share: RefundShare, bought: Coins, refunded: Minor) -> Result<Minor, String> {
    let target = match share {
        RefundShare::Coins(coins) => return Ok(minor(Coins::new(coins))),
        share => minor(share.of(bought).expect("checked when the refund was asked")),
    };
    let back = target - refunded;
    if back > Minor::ZERO {
        Ok(back)
    } else {
        Err("this much of the purchase was taken back already".into())
    }
}

fn minor(coins: crate::money::Coins) -> Minor {
    coins
        .to_minor()
        .expect("a purchase's coins fit the ledger: checked when it was read")
}

/// A purchase's legs when its buyer owes `owed`: the debt is repaid first, the rest
/// goes into the wallet.
fn repay_first(purchase: &Purchase, owed: Minor) -> Transfer {
    let paid = minor(purchase.coins);
    let repaid = owed.min(paid);
    let user = &purchase.user;
    let mut legs = vec![(Account::Purchases, -paid)];
    if repaid > Minor::ZERO {
        legs.push((Account::Debt(user.clone()), repaid));
    }
    if paid > repaid {
        legs.push((Account::Wallet(user.clone()), paid - repaid));
    }
    let purchase = Purchase {
        repaid: repaid.whole_coins(),
        ..purchase.clone()
    };
    Transfer {
        legs,
        meta: TransferMeta::Purchase(purchase),
    }
}

/// The counter of what was taken back of the purchase `refund` is about.
fn refunds_of(refund: &PurchaseRefund) -> Account {
    Account::Refunded(format!("{}:{}", refund.provider, refund.purchase_id))
}

/// A refund's legs when it takes `back` and the wallet holds `held`: taken from the
/// wallet as far as it goes, the rest owed; and counted on the purchase's refunds.
fn take_what_is_held(refund: &PurchaseRefund, back: Minor, held: Minor) -> Transfer {
    let taken = held.max(Minor::ZERO).min(back);
    let owed = back - taken;
    let user = &refund.user;
    let mut legs = vec![
        (Account::Purchases, back),
        (refunds_of(refund), back),
        (Account::Counters, -back),
    ];
    if taken > Minor::ZERO {
        legs.push((Account::Wallet(user.clone()), -taken));
    }
    if owed > Minor::ZERO {
        legs.push((Account::Debt(user.clone()), -owed));
    }
    let refund = PurchaseRefund {
        coins: back.whole_coins(),
        taken: taken.whole_coins(),
        owed: owed.whole_coins(),
        ..refund.clone()
    };
    Transfer {
        legs,
        meta: TransferMeta::PurchaseRefund(refund),
    }
}
