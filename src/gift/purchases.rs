//! Coins bought with real money, credited to the buyer's wallet exactly once.

use serde_json::json;

use super::GiftEngine;
use crate::ledger::facts::{Purchase, TransferMeta};
use crate::ledger::{Account, LedgerError, TransferRequest};

/// A purchase in the books: credited now, or already (`duplicate`).
pub struct Credited {
    pub duplicate: bool,
    /// The buyer's balance after it, in whole coins.
    pub balance: u64,
}

impl GiftEngine {
    /// Books `purchase` under its payment system's purchase id: a second notification
    /// of the same purchase (a redelivery, or another event about it) changes nothing;
    /// the same id with different content is a `Conflict`.
    pub async fn credit_purchase(&self, purchase: Purchase) -> Result<Credited, LedgerError> {
        let amount = (purchase.coins.to_minor())
            .expect("a purchase's coins fit the ledger: checked when it was read");
        // Everything the payment system said about the purchase, but not which
        // notification said it.
        let fingerprint = json!({
            "user": purchase.user, "coins": purchase.coins, "pack": purchase.pack,
            "amount": purchase.amount, "currency": purchase.currency, "store": purchase.store,
        })
        .to_string();
        let (user, key) = (purchase.user.clone(), purchase.purchase_id.clone());
        // Keyed under a name no user id can take (ids have no ':').
        let payer = format!("purchase:{}", purchase.provider);
        let request = TransferRequest::new(
            vec![
                (Account::Purchases, -amount),
                (Account::Wallet(user.clone()), amount),
            ],
            TransferMeta::Purchase(purchase),
        )
        .idempotent(&payer, &key, fingerprint);
        let committed = self.ledger.commit(request).await?;
        if !committed.duplicate {
            self.wallets.credit(&user, amount);
        }
        Ok(Credited {
            duplicate: committed.duplicate,
            balance: self.committed_balance(&user).await,
        })
    }
}
