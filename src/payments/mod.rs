//! Coins bought with real money: payment systems' signed notifications, verified over
//! the raw body before anything is parsed, turned into ledger purchases credited
//! exactly once (`docs/payments.md`). Sans-IO: the HTTP edge (`http/payments.rs`)
//! hands in the headers, the body and the time.

pub mod apple;
pub mod notification;
mod settings;
pub mod standard;
pub mod stripe;

pub use settings::PaymentSettings;

use anyhow::Context;

use crate::ledger::facts::Purchase;
use crate::money::{CoinPack, Coins};
use notification::PurchaseCompleted;

/// What the payment routes need: the secrets and the packs.
pub struct Payments {
    pub standard: Option<standard::Secret>,
    pub stripe: Option<String>,
    pub apple: Option<AppleStore>,
    pub tolerance_s: i64,
    pub max_body_bytes: usize,
    pub checkout_url: Option<String>,
    packs: Vec<CoinPack>,
}

/// The App Store as configured: the root its notifications chain up to, and the app.
pub struct AppleStore {
    pub root: apple::AppleRoot,
    pub bundle_id: String,
    /// Whether sandbox purchases are credited.
    pub sandbox: bool,
}

impl AppleStore {
    fn load(settings: &PaymentSettings) -> anyhow::Result<Option<AppleStore>> {
        let (Some(path), Some(bundle_id)) = (&settings.apple_root, &settings.apple_bundle_id)
        else {
            return Ok(None);
        };
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading payments.apple_root {}", path.display()))?;
        Ok(Some(AppleStore {
            root: apple::AppleRoot::parse(&bytes).context("payments.apple_root")?,
            bundle_id: bundle_id.clone(),
            sandbox: settings.apple_sandbox,
        }))
    }
}

/// The packs a dev server offers when none are configured.
fn sample_packs() -> Vec<CoinPack> {
    [("p100", 100, 99), ("p500", 500, 499), ("p1200", 1200, 999)]
        .map(|(id, coins, amount)| CoinPack {
            id: id.into(),
            coins: Coins::new(coins),
            amount,
            currency: "USD".into(),
            app_store_product: None,
        })
        .into()
}

/// Why a well-signed notification cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unprocessable {
    #[error("no user {0:?}: user ids match [a-z0-9_-]{{1,64}}")]
    User(String),
    #[error("no coin pack {0:?}")]
    Pack(String),
    #[error("{0}")]
    Shape(String),
}

impl Payments {
    /// The configured payment systems and packs. A dev server without a Standard
    /// Webhooks secret makes one up, for its simulated store, and without packs offers
    /// sample ones.
    pub fn new(
        settings: &PaymentSettings,
        mut packs: Vec<CoinPack>,
        dev: bool,
    ) -> anyhow::Result<Payments> {
        let mut standard = (settings.standard_secret.as_deref())
            .map(standard::Secret::parse)
            .transpose()?;
        if dev {
            standard.get_or_insert_with(|| standard::Secret::random(&mut rand::rngs::OsRng));
            if packs.is_empty() {
                packs = sample_packs();
            }
        }
        Ok(Payments {
            standard,
            checkout_url: settings.checkout_url.clone(),
            stripe: settings.stripe_secret.clone(),
            apple: AppleStore::load(settings)?,
            tolerance_s: i64::try_from(settings.tolerance_s)?,
            max_body_bytes: settings.max_body_bytes,
            packs,
        })
    }

    pub fn packs(&self) -> &[CoinPack] {
        &self.packs
    }

    pub fn pack(&self, id: &str) -> Option<&CoinPack> {
        self.packs.iter().find(|pack| pack.id == id)
    }

    /// The ledger purchase a completed payment makes: its coins from the pack it names,
    /// or as given. `Shape` is the body's fault (400); `User` and `Pack` are unknown
    /// names (422).
    pub fn purchase(
        &self,
        provider: &str,
        event_id: &str,
        completed: PurchaseCompleted,
    ) -> Result<Purchase, Unprocessable> {
        completed.check().map_err(Unprocessable::Shape)?;
        if !crate::protocol::is_valid_id(&completed.user) {
            return Err(Unprocessable::User(completed.user));
        }
        let coins = match (&completed.pack, completed.coins) {
            (Some(id), None) => {
                let pack = self.pack(id);
                pack.ok_or_else(|| Unprocessable::Pack(id.clone()))?.coins
            }
            (None, Some(coins)) if coins > 0 && Coins::new(coins).to_minor().is_ok() => {
                Coins::new(coins)
            }
            _ => {
                return Err(Unprocessable::Shape(
                    "a purchase names a pack or a number of coins (at least 1), not both".into(),
                ))
            }
        };
        Ok(Purchase {
            provider: provider.to_owned(),
            purchase_id: completed.purchase_id,
            event_id: event_id.to_owned(),
            user: completed.user,
            coins,
            pack: completed.pack,
            amount: completed.amount,
            currency: completed.currency,
            store: completed.store,
            repaid: Coins::ZERO,
        })
    }
}

impl Payments {
    /// The completed purchase an App Store transaction of `quantity` packs (the pack
    /// with that `app_store_product`) is, bought by `user`. Apple's prices are
    /// in thousandths of the currency; the books keep hundredths.
    pub fn apple_purchase(
        &self,
        transaction: apple::AppleTransaction,
        user: String,
    ) -> Result<PurchaseCompleted, Unprocessable> {
        let product = &transaction.product_id;
        let pack = (self.packs.iter())
            .find(|pack| pack.app_store_product.as_ref() == Some(product))
            .ok_or_else(|| Unprocessable::Pack(product.clone()))?;
        let quantity = transaction.quantity;
        let too_many = || Unprocessable::Shape(format!("{quantity} packs is too many coins"));
        let (pack_id, coins) = match quantity {
            1 => (Some(pack.id.clone()), None),
            _ => (
                None,
                Some(
                    pack.coins
                        .get()
                        .checked_mul(quantity)
                        .ok_or_else(too_many)?,
                ),
            ),
        };
        let amount = match transaction.price_milli {
            Some(milli) => milli / 10,
            None => pack.amount.checked_mul(quantity).ok_or_else(too_many)?,
        };
        Ok(PurchaseCompleted {
            purchase_id: transaction.transaction_id,
            user,
            pack: pack_id,
            coins,
            amount,
            currency: transaction
                .currency
                .unwrap_or_else(|| pack.currency.clone()),
            store: "app_store".into(),
        })
    }
}

/// How much of a purchase a refund takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundShare {
    All,
    Coins(u64),
    /// `refunded` of the `paid` money: that share of the coins, rounded up.
    Money {
        refunded: u64,
        paid: u64,
    },
}

impl RefundShare {
    /// The coins taken back of a purchase of `bought` coins; `None` for none or more
    /// than were bought.
    pub fn of(self, bought: crate::money::Coins) -> Option<crate::money::Coins> {
        let coins = match self {
            RefundShare::All => bought.get(),
            RefundShare::Coins(coins) => coins,
            RefundShare::Money { refunded, paid } if paid > 0 => {
                let share = u128::from(bought.get()) * u128::from(refunded);
                u64::try_from(share.div_ceil(u128::from(paid))).ok()?
            }
            RefundShare::Money { .. } => return None,
        };
        (1..=bought.get())
            .contains(&coins)
            .then_some(crate::money::Coins::new(coins))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_takes_back_its_share_of_the_coins_rounded_up_never_more() {
        let bought = Coins::new(1200);
        let money = |refunded, paid| RefundShare::Money { refunded, paid }.of(bought);
        assert_eq!(RefundShare::All.of(bought), Some(bought));
        assert_eq!(RefundShare::Coins(5).of(bought), Some(Coins::new(5)));
        assert_eq!(money(333, 999), Some(Coins::new(400)));
        assert_eq!(money(1, 999), Some(Coins::new(2)));
        assert_eq!(money(999, 999), Some(bought));
        for refused in [money(0, 999), money(1000, 999), money(1, 0)] {
            assert_eq!(refused, None);
        }
        assert_eq!(RefundShare::Coins(1201).of(bought), None);
        assert_eq!(RefundShare::Coins(0).of(bought), None);
    }
}
