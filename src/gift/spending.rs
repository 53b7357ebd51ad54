//! Spending protection: a minor never pays, one charge and one UTC day's spending are
//! capped, and a user in debt pays nothing until it is repaid.
//!
//! The per-charge cap and debt are checked here; the daily cap is the ledger's to
//! enforce: every charge counts its coins on the payer's `Spent` account for the day
//! and carries the cap as a ceiling on it, so the cap holds across nodes and retries.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;

use super::{ledger_rejection, GiftEngine};
use crate::auth::User;
use crate::ledger::rules::{Ceiling, Content};
use crate::ledger::{Account, Profile, TransferRequest};
use crate::money::{Coins, Day, Minor};
use crate::protocol::{ErrorCode, Rejection};

/// How long a node trusts a profile it read from a ledger other nodes write: a cap a
/// user lowers on one node holds on the others after at most this long.
const SHARED_PROFILE_TTL: Duration = Duration::from_secs(1);

/// The caps from configuration, and the profiles read so far.
#[derive(Default)]
pub struct SpendingCaps {
    /// The most one charge may cost (`[limits] max_coins_per_charge`).
    pub per_charge: Option<Minor>,
    /// The most a user may spend in a day (`[limits] daily_coins`).
    pub per_day: Option<Coins>,
    profiles: DashMap<String, (Profile, Instant)>,
}

impl SpendingCaps {
    pub fn new(per_charge: Option<u64>, per_day: Option<u64>) -> SpendingCaps {
        SpendingCaps {
            per_charge: per_charge.and_then(|coins| Coins::new(coins).to_minor().ok()),
            per_day: per_day.map(Coins::new),
            profiles: DashMap::new(),
        }
    }
}

/// `GET /api/me/wallet`.
#[derive(Debug, Serialize)]
pub struct WalletView {
    pub coins: u64,
    pub debt: u64,
    pub spent_today: u64,
    /// The cap that applies today: the platform's or the user's own, whichever is
    /// lower; `null` when there is none.
    pub daily_cap: Option<u64>,
}

impl GiftEngine {
    /// The UTC day on the server's clock.
    pub fn today(&self) -> Day {
        Day::of_unix_ms(self.clock.now_ms())
    }

    /// Why `user` may not spend `amount` at all, if so.
    pub(super) fn spending_refusal(&self, user: &User, amount: Minor) -> Option<Rejection> {
        if user.minor {
            let message = "minors may watch and chat, but not pay";
            return Some(Rejection::new(ErrorCode::Forbidden, message));
        }
        if let Some(cap) = self.caps.per_charge.filter(|cap| amount > *cap) {
            let cap = cap.whole_coins().get();
            let message = format!("one payment may cost at most {cap} coins");
            return Some(Rejection::new(ErrorCode::LimitReached, message));
        }
        self.in_debt(&user.id)
    }

    /// The refusal of a paid action while the user owes coins.
    pub(super) fn in_debt(&self, user: &str) -> Option<Rejection> {
        let owed = self.debt(user);
        (owed > 0).then(|| {
            let message =
                format!("you owe {owed} coins from a refunded purchase; buy coins to repay it");
            Rejection::new(ErrorCode::InDebt, message)
        })
    }

    /// `request` counting `amount` on the payer's spending for `day`, within the daily
    /// cap that applies to them.
    pub(super) async fn counted(
        &self,
        payer: &str,
        amount: Minor,
        day: Day,
        mut request: TransferRequest,
    ) -> Result<TransferRequest, Rejection> {
        let Content::Fixed(transfer) = &mut request.content else {
            panic!("a payment is a fixed transfer");
        };
        let counter = Account::Spent(day, payer.to_owned());
        transfer.legs.push((counter.clone(), amount));
        transfer.legs.push((Account::Counters, -amount));
        Ok(match self.daily_cap(payer).await? {
            Some(cap) => request.within(Ceiling {
                account: counter,
                most: cap.to_minor().expect("a daily cap fits the ledger"),
            }),
            None => request,
        })
    }

    /// The refusal of a charge the daily cap stopped.
    pub(super) async fn daily_limit_reached(&self, payer: &str) -> Rejection {
        let spent = self.wallets.spent(payer, self.today()).whole_coins();
        // The cap is only told, never assumed: unread, the message leaves it out.
        let message = match self.daily_cap(payer).await {
            Ok(Some(cap)) => format!(
                "you may spend {} coins a day and spent {} today",
                cap.get(),
                spent.get()
            ),
            _ => format!(
                "this would pass your daily cap; you spent {} today",
                spent.get()
            ),
        };
        Rejection::new(ErrorCode::LimitReached, message)
    }

    /// The lower of the platform's daily cap and the user's own.
    async fn daily_cap(&self, user: &str) -> Result<Option<Coins>, Rejection> {
        let own = self.profile(user).await?.daily_coins;
        Ok(match (self.caps.per_day, own) {
            (Some(platform), Some(own)) => Some(platform.min(own)),
            (platform, own) => platform.or(own),
        })
    }

    /// The user's profile, from memory when fresh enough.
    pub async fn profile(&self, user: &str) -> Result<Profile, Rejection> {
        if let Some(cached) = self.caps.profiles.get(user) {
            let (profile, read) = &*cached;
            if !self.ledger.is_shared() || read.elapsed() < SHARED_PROFILE_TTL {
                return Ok(profile.clone());
            }
        }
        let profile = (self.ledger.profile(user).await).map_err(ledger_rejection)?;
        (self.caps.profiles).insert(user.to_owned(), (profile.clone(), Instant::now()));
        Ok(profile)
    }

    /// Sets the user's own daily cap (`None` clears it); never above the platform's.
    pub async fn set_daily_cap(&self, user: &str, coins: Option<u64>) -> Result<(), Rejection> {
        if let (Some(platform), Some(own)) = (self.caps.per_day, coins) {
            if own > platform.get() {
                let message = format!("the platform's daily cap is {} coins", platform.get());
                return Err(Rejection::bad_request(message));
            }
        }
        let coins = coins.map(Coins::new);
        if coins.is_some_and(|coins| coins.to_minor().is_err()) {
            return Err(Rejection::bad_request("daily_coins is too large"));
        }
        (self.ledger.set_daily_coins(user, coins).await).map_err(ledger_rejection)?;
        self.caps.profiles.remove(user);
        Ok(())
    }

    /// Records that `user` is a minor (a token said so), once per process.
    pub async fn note_minor(&self, user: &str) -> Result<(), Rejection> {
        if self.profile(user).await?.minor {
            return Ok(());
        }
        (self.ledger.mark_minor(user).await).map_err(ledger_rejection)?;
        self.caps.profiles.remove(user);
        Ok(())
    }

    /// The user's wallet as the wallet route reports it.
    pub async fn wallet(&self, user: &str) -> Result<WalletView, Rejection> {
        let coins = self.committed_balance(user).await;
        Ok(WalletView {
            coins,
            debt: self.debt(user),
            spent_today: self.wallets.spent(user, self.today()).whole_coins().get(),
            daily_cap: self.daily_cap(user).await?.map(Coins::get),
        })
    }
}
