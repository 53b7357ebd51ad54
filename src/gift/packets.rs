//! Red packets in the gift engine: the money side of `red_packet.rs`.
//!
//! Creation moves the sender's coins into the packet's own escrow account in one
//! durable transfer whose meta stores the shares, decided once. Each grab is one
//! transfer from escrow to the grabber, and what is left at expiry goes back to the
//! sender in one more. Both are ledger draws: the ledger decides the amount from the
//! escrow's balance at commit time, under its lock. So the ledger is the packet's only
//! state, and the nodes of a cluster (or a restarted node) can hand out shares of the
//! same packet without ever handing one out twice. Each node keeps only the packets'
//! creation facts, to answer `not_found` and `expired` and to know when to refund.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::red_packet::{next_share, split, NoShare, SplitKind, MAX_SHARES};
use super::{check_key, coins, ledger_rejection, minor, stamped, Charge, GiftEngine};
use crate::auth::User;
use crate::ledger::{Account, Drawn, LedgerError, TransferKind, TransferRequest};
use crate::protocol::{ErrorCode, Rejection, RoomEventBody, UserRef};

/// A validated `red_packet` request.
pub struct RedPacketOrder<'a> {
    pub room: &'a str,
    pub coins: u64,
    pub shares: u32,
    pub split: SplitKind,
    pub key: &'a str,
}

/// A successful grab: the grabber's share, their new balance, the event to fan out.
pub struct Grabbed {
    pub coins: u64,
    pub balance: u64,
    pub event: RoomEventBody,
}

/// An expired packet's remainder returned to its sender.
pub struct Refunded {
    pub sender: String,
    pub coins: u64,
    pub balance: u64,
}

/// What a packet's creation fixed, read from its creation transfer's meta.
struct PacketFacts {
    id: String,
    room: String,
    sender: UserRef,
    expires_ms: u64,
    shares: Arc<[u64]>,
}

impl PacketFacts {
    fn from_meta(meta: &Value) -> Option<PacketFacts> {
        Some(PacketFacts {
            id: meta.get("id")?.as_str()?.to_owned(),
            room: meta.get("room")?.as_str()?.to_owned(),
            sender: serde_json::from_value(meta.get("from")?.clone()).ok()?,
            expires_ms: meta.get("expires_ms")?.as_u64()?,
            shares: serde_json::from_value::<Vec<u64>>(meta.get("amounts")?.clone())
                .ok()?
                .into(),
        })
    }
}

/// The packets this node knows to be open, by id, and when it last swept for others.
pub(super) struct OpenPackets {
    known: Mutex<HashMap<String, Arc<PacketFacts>>>,
    swept: Mutex<Instant>,
}

impl OpenPackets {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<PacketFacts>>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The packets whose escrows hold money, from their creation metas.
    pub(super) fn new(metas: Vec<Value>) -> OpenPackets {
        let packets = OpenPackets {
            known: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        };
        packets.learn(metas);
        packets
    }

    fn learn(&self, metas: Vec<Value>) {
        for meta in metas {
            match PacketFacts::from_meta(&meta) {
                Some(facts) => {
                    self.remember(facts);
                }
                // Its coins stay in escrow for an operator; nothing is paid out of it.
                None => tracing::error!(%meta, "red packet with incomplete creation meta"),
            }
        }
    }

    fn remember(&self, facts: PacketFacts) -> Arc<PacketFacts> {
        let mut known = self.lock();
        known
            .entry(facts.id.clone())
            .or_insert(Arc::new(facts))
            .clone()
    }

    fn get(&self, id: &str) -> Option<Arc<PacketFacts>> {
        self.lock().get(id).cloned()
    }

    fn due(&self, now_ms: u64) -> Vec<Arc<PacketFacts>> {
        let known = self.lock();
        known
            .values()
            .filter(|facts| now_ms >= facts.expires_ms)
            .cloned()
            .collect()
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Whether a sweep is due now (and if so, the next one starts counting).
    fn sweep_due(&self, every: Duration) -> bool {
        let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
        let due = swept.elapsed() >= every;
        if due {
            *swept = Instant::now();
        }
        due
    }
}

fn not_found(id: &str) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!("no open red packet {id:?} in this room"),
    )
}

impl GiftEngine {
    /// Moves the sender's coins into a new packet's escrow and opens it for grabs.
    pub async fn red_packet(
        &self,
        sender: &User,
        order: RedPacketOrder<'_>,
    ) -> Result<Charge, Rejection> {
        check_key(order.key)?;
        if !(1..=MAX_SHARES).contains(&order.shares) {
            return Err(Rejection::bad_request(format!(
                "shares must be 1 to {MAX_SHARES}"
            )));
        }
        if u64::from(order.shares) > order.coins {
            return Err(Rejection::bad_request(
                "a red packet needs at least one coin per share",
            ));
        }
        let amount = minor(order.coins)?;
        let id = crate::ids::event_id();
        let chosen = json!({
            "room": order.room, "coins": order.coins, "shares": order.shares, "split": order.split,
        });
        let (fingerprint, mut meta) = stamped(chosen, &id, sender);
        // A secure source: nobody can predict who gets the big share.
        meta["amounts"] = json!(split(
            order.coins,
            order.shares,
            order.split,
            &mut rand::rngs::OsRng
        ));
        meta["expires_ms"] =
            json!(crate::ids::unix_ms().saturating_add(self.settings.red_packet_ttl_ms));
        let request = TransferRequest::new(
            TransferKind::RedPacket,
            vec![
                (Account::Wallet(sender.id.clone()), -amount),
                (Account::Escrow(id), amount),
            ],
        )
        .in_room(order.room)
        .idempotent(&sender.id, order.key, fingerprint)
        .with_meta(meta);
        let committed = self.pay(sender, amount, request).await?;
        let id = committed.meta["id"].as_str().unwrap_or_default().to_owned();
        let event = if committed.duplicate {
            None
        } else {
            self.packets.learn(vec![committed.meta]);
            Some(RoomEventBody::RedPacket {
                from: sender.as_ref(),
                coins: order.coins,
                shares: order.shares,
                split: order.split,
            })
        };
        Ok(Charge {
            id,
            balance: self.balance(&sender.id),
            duplicate: committed.duplicate,
            event,
        })
    }

    /// The facts of packet `id` of `room`: known here, or created on another node.
    async fn packet(&self, room: &str, id: &str) -> Result<Arc<PacketFacts>, Rejection> {
        if let Some(facts) = self.packets.get(id) {
            return if facts.room == room {
                Ok(facts)
            } else {
                Err(not_found(id))
            };
        }
        let meta = self
            .ledger
            .red_packet(room, id)
            .await
            .map_err(ledger_rejection)?
            .ok_or_else(|| not_found(id))?;
        let facts = PacketFacts::from_meta(&meta).ok_or_else(|| not_found(id))?;
        // Past its TTL, it is refunded or about to be: as good as gone.
        if crate::ids::unix_ms() >= facts.expires_ms {
            return Err(not_found(id));
        }
        Ok(self.packets.remember(facts))
    }

    /// Gives `user` the next share of packet `id` in `room`, durably.
    pub async fn grab(&self, user: &User, room: &str, id: &str) -> Result<Grabbed, Rejection> {
        let facts = self.packet(room, id).await?;
        if crate::ids::unix_ms() >= facts.expires_ms {
            return Err(Rejection::new(
                ErrorCode::Exhausted,
                "this red packet has expired",
            ));
        }
        let escrow = Account::Escrow(id.to_owned());
        let wallet = Account::Wallet(user.id.clone());
        let (packet, by, shares) = (id.to_owned(), user.as_ref(), facts.shares.clone());
        let draw_account = escrow.clone();
        let request = TransferRequest::drawing(TransferKind::Grab, escrow.clone(), move |held| {
            let share = next_share(&shares, coins(held)).map_err(|refusal| match refusal {
                NoShare::Exhausted => "every share of this red packet is taken".to_owned(),
                NoShare::Inconsistent => {
                    tracing::error!(%packet, held, "escrow holds no share boundary");
                    "this red packet cannot be grabbed".to_owned()
                }
            })?;
            let amount = share.coins as i64 * crate::money::MINOR_PER_COIN;
            Ok(Drawn {
                legs: vec![(draw_account.clone(), -amount), (wallet.clone(), amount)],
                meta: json!({
                    "packet": packet, "index": share.index, "coins": share.coins,
                    "left": share.left, "by": by,
                }),
            })
        })
        .in_room(room)
        // Keyed by the packet, under a name no user id can take (ids have no ':'), so
        // the ledger itself refuses a second grab by the same user.
        .idempotent(&escrow.key(), &format!("grab:{}", user.id), "grab".into());
        match self.ledger.commit(request).await {
            Ok(committed) if committed.duplicate => Err(Rejection::new(
                ErrorCode::Conflict,
                "you already grabbed this red packet",
            )),
            Ok(committed) => {
                let share = |field: &str| committed.meta[field].as_u64().unwrap_or_default();
                let (coins, left) = (share("coins"), share("left") as u32);
                self.wallets.credit(&user.id, minor(coins)?);
                Ok(Grabbed {
                    coins,
                    balance: self.committed_balance(&user.id).await,
                    event: RoomEventBody::Grab {
                        packet: id.to_owned(),
                        by: user.as_ref(),
                        coins,
                        left,
                    },
                })
            }
            Err(LedgerError::Declined(reason)) => Err(Rejection::new(ErrorCode::Exhausted, reason)),
            Err(error) => Err(ledger_rejection(error)),
        }
    }

    /// Returns what is left of every expired packet to its sender. Every node that
    /// knows a packet tries; the ledger refunds it once. A refund that fails to commit
    /// is tried again next time.
    pub async fn refund_expired(&self, now_ms: u64) -> Vec<Refunded> {
        let sweep_every = Duration::from_millis(self.settings.red_packet_sweep_ms);
        if self.ledger.is_shared() && self.packets.sweep_due(sweep_every) {
            match self.ledger.open_red_packets().await {
                Ok(metas) => self.packets.learn(metas),
                Err(error) => tracing::warn!(%error, "looking for open red packets failed"),
            }
        }
        let mut refunded = Vec::new();
        for facts in self.packets.due(now_ms) {
            let escrow = Account::Escrow(facts.id.clone());
            let wallet = Account::Wallet(facts.sender.id.clone());
            let (packet, to, draw_account) =
                (facts.id.clone(), facts.sender.clone(), escrow.clone());
            let request =
                TransferRequest::drawing(TransferKind::Refund, escrow.clone(), move |held| {
                    if held <= 0 {
                        return Err("nothing is left in this red packet".into());
                    }
                    Ok(Drawn {
                        legs: vec![(draw_account.clone(), -held), (wallet.clone(), held)],
                        meta: json!({"packet": packet, "coins": coins(held), "to": to}),
                    })
                })
                .in_room(&facts.room)
                .idempotent(&escrow.key(), "refund", "refund".into());
            match self.ledger.commit(request).await {
                Ok(committed) => {
                    if !committed.duplicate {
                        let coins = committed.meta["coins"].as_u64().unwrap_or_default();
                        let amount = minor(coins).expect("a refund fits: its packet did");
                        self.wallets.credit(&facts.sender.id, amount);
                        refunded.push(Refunded {
                            balance: self.committed_balance(&facts.sender.id).await,
                            sender: facts.sender.id.clone(),
                            coins,
                        });
                    }
                    self.packets.forget(&facts.id);
                }
                // Grabbed to the last share, or refunded by another node.
                Err(LedgerError::Declined(_)) => self.packets.forget(&facts.id),
                Err(error) => {
                    tracing::warn!(packet = %facts.id, %error, "red packet refund failed; retrying later");
                }
            }
        }
        refunded
    }
}
