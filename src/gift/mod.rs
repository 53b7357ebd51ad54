//! The gift engine: turns a viewer's gift, question or top-up into one durable
//! double-entry transfer, and keeps the per-room recognition state (combos, what the
//! broadcaster can acknowledge). Leaderboards are the hub's (`hub::Sequencer`).
//!
//! Order of a charge: idempotency and funds are checked in memory (a reservation),
//! the transfer is group-committed to the ledger, and only then is the reservation
//! settled and the caller told, so an `ok` and a fan-out always follow durability.

mod clawback;
mod combo;
mod packets;
mod payout_rules;
mod payouts;
mod purchases;
mod red_packet;
mod refs;
mod spending;
mod statement;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::json;

use crate::auth::User;
use crate::clock::Clock;
use crate::config::{GiftSettings, PayoutSettings};
use crate::ledger::facts::{self, TransferMeta};
use crate::ledger::{Account, Committed, Ledger, LedgerError, TransferRequest};
use crate::money::{Catalog, Coins, Day, Minor, SplitPolicy, TooLarge, Wallets};
use crate::protocol::{ErrorCode, Rejection, RoomEventBody, UserRef};
use combo::Combos;
use packets::OpenPackets;
pub use packets::{Grabbed, RedPacketOrder, Refunded};
use payout_rules::PayoutRules;
pub use payouts::{EarningsByState, PayoutStatus, PayoutView, SettleRefused, Settled};
pub use purchases::{Credited, RefundRefused};
use refs::Acknowledgeable;
pub use spending::{SpendingCaps, WalletView};
pub use statement::{Statement, StatementLine};

/// Gifts and questions per room that the broadcaster can still acknowledge.
const ACKNOWLEDGEABLE_PER_ROOM: usize = 10_000;

pub struct GiftEngine {
    ledger: Arc<dyn Ledger>,
    wallets: Wallets,
    pub catalog: Catalog,
    split: SplitPolicy,
    settings: GiftSettings,
    caps: SpendingCaps,
    payouts: PayoutRules,
    clock: Clock,
    combos: Mutex<Combos>,
    rooms: DashMap<String, RoomBook>,
    packets: OpenPackets,
}

/// What a room remembers about its paid events.
struct RoomBook {
    acknowledgeable: Acknowledgeable,
}

impl Default for RoomBook {
    fn default() -> Self {
        RoomBook {
            acknowledgeable: Acknowledgeable::new(ACKNOWLEDGEABLE_PER_ROOM),
        }
    }
}

/// The result of a charge: the id clients refer to, the sender's balance after it,
/// and, for a first (not duplicate) charge, the room event to fan out.
pub struct Charge {
    pub id: String,
    pub balance: u64,
    pub duplicate: bool,
    pub event: Option<RoomEventBody>,
}

/// A validated gift.
pub struct GiftOrder<'a> {
    pub room: &'a str,
    pub sticker: &'a str,
    pub count: u32,
    pub key: &'a str,
}

/// A validated paid question.
pub struct QuestionOrder<'a> {
    pub room: &'a str,
    pub text: &'a str,
    pub coins: u64,
    pub key: &'a str,
}

pub const KEY_CHARS: std::ops::RangeInclusive<usize> = 8..=64;
pub const MAX_COUNT: u32 = 9999;

impl GiftEngine {
    /// Rebuilds the in-memory wallets and open red packets from the ledger.
    pub async fn open(
        ledger: Arc<dyn Ledger>,
        catalog: Catalog,
        split: SplitPolicy,
        settings: GiftSettings,
        clock: Clock,
    ) -> Result<GiftEngine, LedgerError> {
        let today = Day::of_unix_ms(clock.now_ms());
        let holdings = ledger.holdings(today).await?;
        let wallets =
            Wallets::load(holdings.wallets, holdings.debts).with_spent(today, holdings.spent);
        let packets = OpenPackets::new(ledger.open_red_packets().await?);
        Ok(GiftEngine {
            ledger,
            wallets,
            catalog,
            split,
            combos: Mutex::new(Combos::new(Duration::from_millis(settings.combo_window_ms))),
            settings,
            caps: SpendingCaps::default(),
            payouts: PayoutRules::default(),
            clock,
            rooms: DashMap::new(),
            packets,
        })
    }

    /// Caps what one charge and one day's charges may cost.
    pub fn with_caps(mut self, caps: SpendingCaps) -> GiftEngine {
        self.caps = caps;
        self
    }

    /// Holds creators' earnings and pays them out by `settings`.
    pub fn with_payouts(mut self, settings: &PayoutSettings) -> GiftEngine {
        self.payouts = PayoutRules::from(settings);
        self
    }

    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    pub fn balance(&self, user: &str) -> u64 {
        self.wallets.available(user).whole_coins().get()
    }

    /// What the user owes, in whole coins (rounded up: a part of a coin is owed too).
    pub fn debt(&self, user: &str) -> u64 {
        self.wallets.debt(user).owed_coins().get()
    }

    pub async fn gift(&self, sender: &User, order: GiftOrder<'_>) -> Result<Charge, Rejection> {
        check_key(order.key)?;
        if !(1..=MAX_COUNT).contains(&order.count) {
            return Err(Rejection::bad_request(format!(
                "count must be 1 to {MAX_COUNT}"
            )));
        }
        let sticker = self.catalog.sticker(order.sticker).ok_or_else(|| {
            Rejection::new(
                ErrorCode::NotFound,
                format!("no sticker {:?} in the catalog", order.sticker),
            )
        })?;
        let value = sticker.coins * u64::from(order.count);
        let chosen = json!({
            "room": order.room, "sticker": sticker.id, "count": order.count, "coins": value,
        });
        let meta = TransferMeta::Gift(facts::Gift {
            id: crate::ids::event_id(),
            room: order.room.to_owned(),
            from: sender.as_ref(),
            sticker: sticker.id.clone(),
            count: order.count,
            coins: Coins::new(value),
        });
        let charge = self
            .charge(sender, order.room, order.key, chosen, meta)
            .await?;
        Ok(charge.with_event(|| {
            let combo = self
                .combos()
                .record(order.room, &sender.id, &sticker.id, Instant::now());
            RoomEventBody::Gift {
                from: sender.as_ref(),
                sticker: sticker.id.clone(),
                count: order.count,
                coins: value,
                combo,
                tier: sticker.tier,
            }
        }))
    }

    pub async fn question(
        &self,
        sender: &User,
        order: QuestionOrder<'_>,
    ) -> Result<Charge, Rejection> {
        check_key(order.key)?;
        let minimum = self.catalog.question_min_coins;
        if order.coins < minimum {
            return Err(Rejection::bad_request(format!(
                "a question costs at least {minimum} coins"
            )));
        }
        let chosen = json!({"room": order.room, "text": order.text, "coins": order.coins});
        let meta = TransferMeta::Question(facts::Question {
            id: crate::ids::event_id(),
            room: order.room.to_owned(),
            from: sender.as_ref(),
            text: order.text.to_owned(),
            coins: Coins::new(order.coins),
        });
        let charge = self
            .charge(sender, order.room, order.key, chosen, meta)
            .await?;
        Ok(charge.with_event(|| RoomEventBody::Question {
            from: sender.as_ref(),
            text: order.text.to_owned(),
            coins: order.coins,
            pin_ms: self.catalog.pin_ms(order.coins),
        }))
    }

    /// Charges a gift's or question's value (`meta`) from the sender for `room`, split
    /// by the policy. `chosen` is what the client chose: what a retry must repeat.
    async fn charge(
        &self,
        sender: &User,
        room: &str,
        key: &str,
        chosen: serde_json::Value,
        meta: TransferMeta,
    ) -> Result<Charge, Rejection> {
        let (id, value) = paid(&meta)?;
        let (id, amount) = (id.to_owned(), value.to_minor().map_err(too_large)?);
        let legs = (self.payouts).payment_legs(&self.split, &sender.id, room, amount, self.today());
        let request =
            TransferRequest::new(legs, meta).idempotent(&sender.id, key, chosen.to_string());
        let committed = self.pay(sender, amount, request).await?;
        self.answer(sender, committed).inspect_err(
            |_| tracing::error!(%id, "a payment's key holds a transfer of another kind"),
        )
    }

    /// Takes `amount` from the sender's wallet by `request` (idempotent on the sender's
    /// key): funds are held in memory, the transfer committed, then the hold settled.
    async fn pay(
        &self,
        sender: &User,
        amount: Minor,
        request: TransferRequest,
    ) -> Result<Committed, Rejection> {
        if let Some(refusal) = self.spending_refusal(sender, amount) {
            return self.retried_or(sender, &request, refusal).await;
        }
        let day = self.today();
        let request = self.counted(&sender.id, amount, day, request).await?;
        let Some(reservation) = self.reserve(&sender.id, amount).await else {
            // Reserving read a shared ledger's standing again: the user may owe coins.
            let refusal = self.in_debt(&sender.id).unwrap_or_else(|| {
                let message = format!(
                    "this costs {} coins; your balance is {}",
                    amount.whole_coins().get(),
                    self.balance(&sender.id)
                );
                Rejection::new(ErrorCode::InsufficientFunds, message)
            });
            return self.retried_or(sender, &request, refusal).await;
        };
        let committed = match self.ledger.commit(request).await {
            Ok(committed) => committed,
            Err(LedgerError::InsufficientFunds) => {
                // Another node spent these coins first: learn the real balance.
                drop(reservation);
                self.resync(&sender.id).await;
                return Err(ledger_rejection(LedgerError::InsufficientFunds));
            }
            Err(LedgerError::LimitReached) => {
                drop(reservation);
                self.resync(&sender.id).await;
                return Err(self.daily_limit_reached(&sender.id).await);
            }
            Err(error) => return Err(ledger_rejection(error)),
        };
        if committed.duplicate {
            // Nothing was charged this time. If the first attempt was answered
            // `unavailable` but did commit (a lost database connection), this node gave
            // its coins back in memory: the books know better (a no-op for a ledger
            // only this process writes).
            drop(reservation);
            self.resync(&sender.id).await;
        } else {
            reservation.settle(day);
        }
        Ok(committed)
    }

    /// A charge the wallet cannot make now: a retry of one that went through still
    /// answers its first result; anything else gets `refusal`.
    async fn retried_or(
        &self,
        sender: &User,
        request: &TransferRequest,
        refusal: Rejection,
    ) -> Result<Committed, Rejection> {
        let key = &request
            .idempotency
            .as_ref()
            .expect("payments are idempotent")
            .key;
        let first = (self.ledger.find(&sender.id, key).await).map_err(ledger_rejection)?;
        match first {
            Some(first) if first.fingerprint != request.fingerprint => Err(conflict()),
            Some(first) => Ok(first),
            None => Err(refusal),
        }
    }

    /// Holds `amount` of the user's coins. When the wallet looks too low, a ledger
    /// shared with other nodes is asked first: a top-up may have landed elsewhere.
    async fn reserve(&self, user: &str, amount: Minor) -> Option<crate::money::Reservation<'_>> {
        if let Ok(reservation) = self.wallets.reserve(user, amount) {
            return Some(reservation);
        }
        self.resync(user).await;
        self.wallets.reserve(user, amount).ok()
    }

    /// The balance as the ledger has it: on a shared ledger, read again, since other
    /// nodes may have charged or credited the wallet.
    pub async fn committed_balance(&self, user: &str) -> u64 {
        self.resync(user).await;
        self.balance(user)
    }

    /// Takes a wallet's committed balance from a shared ledger (a no-op for a ledger
    /// only this process writes).
    async fn resync(&self, user: &str) {
        let today = self.today();
        match self.ledger.shared_standing(user, today).await {
            Ok(Some(standing)) => {
                let spent = (today, standing.spent);
                (self.wallets).resync(user, standing.wallet, standing.debt, spent)
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "reading a shared balance failed"),
        }
    }

    /// Records a first charge in its room's book and builds the answer.
    fn answer(&self, sender: &User, committed: Committed) -> Result<Charge, Rejection> {
        let (id, _) = paid(&committed.meta)?;
        if !committed.duplicate {
            let room = committed.meta.room().expect("payments are made in a room");
            let mut book = self.rooms.entry(room.to_owned()).or_default();
            book.acknowledgeable
                .remember(id.to_owned(), sender.as_ref());
        }
        Ok(Charge {
            id: id.to_owned(),
            balance: self.balance(&sender.id),
            duplicate: committed.duplicate,
            event: None,
        })
    }

    /// Credits a simulated store purchase (dev mode).
    pub async fn top_up(&self, user: &User, coins: u64, key: &str) -> Result<u64, Rejection> {
        check_key(key)?;
        let coins = Coins::new(coins);
        let amount = coins.to_minor().map_err(too_large)?;
        let fingerprint = json!({"coins": coins}).to_string();
        let request = TransferRequest::new(
            vec![
                (Account::TopupSource, -amount),
                (Account::Wallet(user.id.clone()), amount),
            ],
            TransferMeta::Topup(facts::Topup { coins }),
        )
        .idempotent(&user.id, key, fingerprint);
        let committed = self
            .ledger
            .commit(request)
            .await
            .map_err(ledger_rejection)?;
        if !committed.duplicate {
            self.wallets.credit(&user.id, amount);
        }
        Ok(self.balance(&user.id))
    }

    /// Who sent the gift or question `reference` of `room`, if the broadcaster can still
    /// acknowledge it.
    pub fn acknowledgeable(&self, room: &str, reference: &str) -> Option<UserRef> {
        self.rooms
            .get(room)
            .and_then(|book| book.acknowledgeable.sender(reference).cloned())
    }

    /// Forgets combos whose window has passed.
    pub fn expire_combos(&self) {
        self.combos().expire(Instant::now());
    }

    fn combos(&self) -> std::sync::MutexGuard<'_, Combos> {
        self.combos
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Charge {
    fn with_event(mut self, event: impl FnOnce() -> RoomEventBody) -> Charge {
        if !self.duplicate {
            self.event = Some(event());
        }
        self
    }
}

fn check_key(key: &str) -> Result<(), Rejection> {
    if KEY_CHARS.contains(&key.chars().count()) {
        Ok(())
    } else {
        Err(Rejection::bad_request("key must be 8 to 64 characters"))
    }
}

fn too_large(_: TooLarge) -> Rejection {
    Rejection::new(ErrorCode::TooLarge, "amount is too large")
}

/// The id and value of a gift or question, from its facts.
fn paid(meta: &TransferMeta) -> Result<(&str, Coins), Rejection> {
    match meta {
        TransferMeta::Gift(gift) => Ok((&gift.id, gift.coins)),
        TransferMeta::Question(question) => Ok((&question.id, question.coins)),
        _ => Err(Rejection::new(
            ErrorCode::Internal,
            "this key holds a payment of another kind",
        )),
    }
}

fn conflict() -> Rejection {
    Rejection::new(
        ErrorCode::Conflict,
        "this key was already used for a different request; use a new key",
    )
}

/// The one place ledger errors become protocol errors.
pub fn ledger_rejection(error: LedgerError) -> Rejection {
    match error {
        LedgerError::Conflict => conflict(),
        LedgerError::InsufficientFunds => Rejection::new(
            ErrorCode::InsufficientFunds,
            "your balance is too low for this",
        ),
        LedgerError::LimitReached => Rejection::new(
            ErrorCode::LimitReached,
            "this would pass your daily spending cap",
        ),
        other => {
            tracing::warn!(error = %other, "ledger failure");
            Rejection::unavailable("payments are unavailable right now; try again")
        }
    }
}
