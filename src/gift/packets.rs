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

use serde_json::json;

use super::red_packet::{next_share, split, NoShare, SplitKind, MAX_SHARES};
use super::{check_key, ledger_rejection, too_large, Charge, GiftEngine};
use crate::auth::User;
use crate::ledger::facts::{self, TransferMeta};
use crate::ledger::{Account, LedgerError, Transfer, TransferRequest};
use crate::money::{Coins, Minor};
use crate::protocol::{ErrorCode, Rejection, RoomEventBody, UserRef};

/// A validated `red_packet` request.
pub struct RedPacketOrder<'a> {
    pub room: &'a str,
    pub coins: u64,
    pub shares: u32,
    pub split: SplitKind,
    pub key: &'a str,
}

impl RedPacketOrder<'_> {
    fn check(&self) -> Result<(), Rejection> {
        check_key(self.key)?;
        if !(1..=MAX_SHARES).contains(&self.shares) {
            return Err(Rejection::bad_request(format!(
                "shares must be 1 to {MAX_SHARES}"
            )));
        }
        if u64::from(self.shares) > self.coins {
            return Err(Rejection::bad_request(
                "a red packet needs at least one coin per share",
            ));
        }
        Ok(())
    }
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

impl From<facts::RedPacket> for PacketFacts {
    fn from(packet: facts::RedPacket) -> PacketFacts {
        PacketFacts {
            id: packet.id,
            room: packet.room,
            sender: packet.from,
            expires_ms: packet.expires_ms,
            shares: packet.amounts.into_iter().map(Coins::get).collect(),
        }
    }
}

/// The packets this node knows to be open, by id, and when it last swept for others.
pub(super) struct OpenPackets {
    known: Mutex<HashMap<String, Arc<PacketFacts>>>,
    swept: Mutex<Instant>,
}

impl OpenPackets {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<PacketFacts>>> {
        self.known.lock().expect("open red packets lock")
    }

    /// The packets whose escrows hold money, from their creation facts.
    pub(super) fn new(packets: Vec<facts::RedPacket>) -> OpenPackets {
        let open = OpenPackets {
            known: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        };
        open.learn(packets);
        open
    }

    fn learn(&self, packets: Vec<facts::RedPacket>) {
        for packet in packets {
            self.remember(packet.into());
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
        let mut swept = self.swept.lock().expect("red packet sweep lock");
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
        order.check()?;
        let amount = Coins::new(order.coins).to_minor().map_err(too_large)?;
        let id = crate::ids::event_id();
        let chosen = json!({
            "room": order.room, "coins": order.coins, "shares": order.shares, "split": order.split,
        });
        // A secure source: nobody can predict who gets the big share.
        let amounts = split(
            order.coins,
            order.shares,
            order.split,
            &mut rand::rngs::OsRng,
        );
        let packet = facts::RedPacket {
            id: id.clone(),
            room: order.room.to_owned(),
            from: sender.as_ref(),
            coins: Coins::new(order.coins),
            shares: order.shares,
            split: order.split,
            amounts: amounts.into_iter().map(Coins::new).collect(),
            expires_ms: crate::ids::unix_ms().saturating_add(self.settings.red_packet_ttl_ms),
        };
        let request = TransferRequest::new(
            vec![
                (Account::Wallet(sender.id.clone()), -amount),
                (Account::Escrow(id), amount),
            ],
            TransferMeta::RedPacket(packet),
        )
        .idempotent(&sender.id, order.key, chosen.to_string());
        let committed = self.pay(sender, amount, request).await?;
        let TransferMeta::RedPacket(packet) = committed.meta else {
            return Err(Rejection::new(
                ErrorCode::Internal,
                "this key holds a payment of another kind",
            ));
        };
        let id = packet.id.clone();
        let event = if committed.duplicate {
            None
        } else {
            self.packets.learn(vec![packet]);
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
        let facts: PacketFacts = self
            .ledger
            .red_packet(room, id)
            .await
            .map_err(ledger_rejection)?
            .ok_or_else(|| not_found(id))?
            .into();
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
        // Keyed by the packet, under a name no user id can take (ids have no ':'), so
        // the ledger itself refuses a second grab by the same user.
        let request = TransferRequest::drawing(escrow.clone(), grab_rule(&facts, user)).idempotent(
            &escrow.key(),
            &format!("grab:{}", user.id),
            "grab".into(),
        );
        let grab = match self.ledger.commit(request).await {
            Ok(committed) if committed.duplicate => {
                return Err(Rejection::new(
                    ErrorCode::Conflict,
                    "you already grabbed this red packet",
                ))
            }
            Ok(committed) => match committed.meta {
                TransferMeta::Grab(grab) => grab,
                other => return Err(ledger_rejection(unexpected(&other))),
            },
            Err(LedgerError::Declined(reason)) => {
                return Err(Rejection::new(ErrorCode::Exhausted, reason))
            }
            Err(error) => return Err(ledger_rejection(error)),
        };
        self.wallets
            .credit(&user.id, grab.coins.to_minor().map_err(too_large)?);
        Ok(Grabbed {
            coins: grab.coins.get(),
            balance: self.committed_balance(&user.id).await,
            event: RoomEventBody::Grab {
                packet: id.to_owned(),
                by: user.as_ref(),
                coins: grab.coins.get(),
                left: grab.left,
            },
        })
    }

    /// Returns what is left of every expired packet to its sender. Every node that
    /// knows a packet tries; the ledger refunds it once. A refund that fails to commit
    /// is tried again next time.
    pub async fn refund_expired(&self, now_ms: u64) -> Vec<Refunded> {
        let sweep_every = Duration::from_millis(self.settings.red_packet_sweep_ms);
        if self.ledger.is_shared() && self.packets.sweep_due(sweep_every) {
            match self.ledger.open_red_packets().await {
                Ok(packets) => self.packets.learn(packets),
                Err(error) => tracing::warn!(%error, "looking for open red packets failed"),
            }
        }
        let mut refunded = Vec::new();
        for facts in self.packets.due(now_ms) {
            let escrow = Account::Escrow(facts.id.clone());
            let request = TransferRequest::drawing(escrow.clone(), refund_rule(&facts)).idempotent(
                &escrow.key(),
                "refund",
                "refund".into(),
            );
            match self.ledger.commit(request).await {
                Ok(committed) => {
                    if let (false, TransferMeta::Refund(refund)) =
                        (committed.duplicate, &committed.meta)
                    {
                        let amount = refund
                            .coins
                            .to_minor()
                            .expect("a refund fits: its packet did");
                        self.wallets.credit(&facts.sender.id, amount);
                        refunded.push(Refunded {
                            balance: self.committed_balance(&facts.sender.id).await,
                            sender: facts.sender.id.clone(),
                            coins: refund.coins.get(),
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

/// A grab's draw: the next share of what the escrow holds, to the grabber.
fn grab_rule(
    facts: &PacketFacts,
    user: &User,
) -> impl Fn(Minor) -> Result<Transfer, String> + Send + Sync + 'static {
    let escrow = Account::Escrow(facts.id.clone());
    let wallet = Account::Wallet(user.id.clone());
    let (packet, room, by, shares) = (
        facts.id.clone(),
        facts.room.clone(),
        user.as_ref(),
        facts.shares.clone(),
    );
    move |held| {
        let share =
            next_share(&shares, held.whole_coins().get()).map_err(|refusal| match refusal {
                NoShare::Exhausted => "every share of this red packet is taken".to_owned(),
                NoShare::Inconsistent => {
                    tracing::error!(%packet, %held, "escrow holds no share boundary");
                    "this red packet cannot be grabbed".to_owned()
                }
            })?;
        let coins = Coins::new(share.coins);
        let amount = coins.to_minor().expect("a share fits: its packet did");
        Ok(Transfer {
            legs: vec![(escrow.clone(), -amount), (wallet.clone(), amount)],
            meta: TransferMeta::Grab(facts::Grab {
                packet: packet.clone(),
                room: room.clone(),
                index: share.index as u32,
                coins,
                left: share.left,
                by: by.clone(),
            }),
        })
    }
}

/// An expired packet's draw: whatever the escrow holds, back to the sender.
fn refund_rule(
    facts: &PacketFacts,
) -> impl Fn(Minor) -> Result<Transfer, String> + Send + Sync + 'static {
    let escrow = Account::Escrow(facts.id.clone());
    let wallet = Account::Wallet(facts.sender.id.clone());
    let (packet, room, to) = (facts.id.clone(), facts.room.clone(), facts.sender.clone());
    move |held| {
        if held <= Minor::ZERO {
            return Err("nothing is left in this red packet".into());
        }
        Ok(Transfer {
            legs: vec![(escrow.clone(), -held), (wallet.clone(), held)],
            meta: TransferMeta::Refund(facts::Refund {
                packet: packet.clone(),
                room: room.clone(),
                coins: held.whole_coins(),
                to: to.clone(),
            }),
        })
    }
}

/// A draw answered with the facts of another kind of transfer: a damaged ledger.
fn unexpected(meta: &TransferMeta) -> LedgerError {
    LedgerError::Storage(format!(
        "a red packet's key holds the facts of a {}",
        meta.kind().as_str()
    ))
}
