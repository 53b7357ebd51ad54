//! Coins bought with real money, credited to the buyer's wallet exactly once, and
//! taken back when the payment is refunded or charged back. Both are ledger draws:
//! a purchase repays what the buyer owes first (a draw on their debt), and a refund
//! takes what the wallet still holds and records the rest as debt (a draw on the
//! wallet), so the ledger decides on the balances as they are when it commits.

use serde_json::json;

use super::GiftEngine;
use crate::ledger::facts::{Purchase, PurchaseRefund, TransferMeta};
use crate::ledger::{Account, LedgerError, Transfer, TransferRequest};
use crate::money::Minor;
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

    /// Takes back a `share` of the purchase `purchase_id` that `provider` notified: what the buyer's wallet holds, and the rest as debt.
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
        let Some(coins) = share.of(purchase.coins) else {
            let bought = purchase.coins.get();
            return Err(RefundRefused::Coins(format!(
                "a refund takes back 1 to {bought} coins of this purchase"
            )));
        };
        let refund = PurchaseRefund {
            provider: provider.to_owned(),
            purchase_id: purchase_id.to_owned(),
            event_id: event_id.to_owned(),
            user: purchase.user,
            coins,
            taken: crate::money::Coins::ZERO,
            owed: crate::money::Coins::ZERO,
            chargeback,
        };
        self.take_back(refund).await.map_err(RefundRefused::Ledger)
    }

    /// Takes `refund.coins` back from the buyer: what the wallet holds, and the rest
    /// as debt. Keyed by the purchase: one refund or chargeback per purchase.
    async fn take_back(&self, refund: PurchaseRefund) -> Result<Credited, LedgerError> {
        let fingerprint =
            json!({"coins": refund.coins, "chargeback": refund.chargeback}).to_string();
        let (user, key) = (refund.user.clone(), refund.purchase_id.clone());
        let payer = format!("refund:{}", refund.provider);
        let request = TransferRequest::drawing(Account::Wallet(user.clone()), move |held| {
            Ok(take_what_is_held(&refund, held))
        })
        .idempotent(&payer, &key, fingerprint);
        let committed = self.ledger.commit(request).await?;
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

/// A refund's legs when the wallet holds `held`: taken from the wallet as far as it
/// goes, the rest owed.
fn take_what_is_held(refund: &PurchaseRefund, held: Minor) -> Transfer {
    let back = minor(refund.coins);
    let taken = held.max(Minor::ZERO).min(back);
    let owed = back - taken;
    let user = &refund.user;
    let mut legs = vec![(Account::Purchases, back)];
    if taken > Minor::ZERO {
        legs.push((Account::Wallet(user.clone()), -taken));
    }
    if owed > Minor::ZERO {
        legs.push((Account::Debt(user.clone()), -owed));
    }
    let refund = PurchaseRefund {
        taken: taken.whole_coins(),
        owed: owed.whole_coins(),
        ..refund.clone()
    };
    Transfer {
        legs,
        meta: TransferMeta::PurchaseRefund(refund),
    }
}
