//! Red packets in the gift engine: the money side of `red_packet.rs`.
//!
//! Creation moves the sender's coins into the packet's own escrow account in one
//! durable transfer whose meta stores the shares, decided once; each grab is one
//! transfer from escrow to the grabber; what is left at expiry goes back to the sender
//! in one more. A share is handed out in memory first (so 1,000 simultaneous grabbers
//! of 100 shares get exactly 100 shares without waiting on each other's fsync), then
//! committed, and given back if the commit fails. At start, open packets are rebuilt
//! from their escrow's transfers, so a crash never changes anyone's amount.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

use super::red_packet::{split, GrabRefusal, Packet, Share, SplitKind, MAX_SHARES};
use super::{check_key, coins, conflict, ledger_rejection, minor, stamped, Charge, GiftEngine};
use crate::auth::User;
use crate::ledger::{Account, OpenEscrow, TransferKind, TransferRequest};
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

struct OpenPacket {
    room: String,
    sender: UserRef,
    expires_ms: u64,
    packet: Packet,
    /// Shares handed out whose transfer has not committed yet; expiry waits for them.
    in_flight: u32,
}

impl OpenPacket {
    /// Rebuilds a packet from its creation transfer's meta (the one place it is read).
    fn from_meta(meta: &Value, grabbed: Vec<(String, usize)>) -> Option<OpenPacket> {
        let amounts: Vec<u64> = serde_json::from_value(meta.get("amounts")?.clone()).ok()?;
        Some(OpenPacket {
            room: meta.get("room")?.as_str()?.to_owned(),
            sender: serde_json::from_value(meta.get("from")?.clone()).ok()?,
            expires_ms: meta.get("expires_ms")?.as_u64()?,
            packet: Packet::new(amounts, grabbed),
            in_flight: 0,
        })
    }

    /// Reopens a packet from its escrow account, checking that memory and ledger agree.
    fn restore(escrow: &OpenEscrow) -> Result<OpenPacket, String> {
        let mut transfers = escrow.transfers.iter();
        let Some((TransferKind::RedPacket, created)) = transfers.next() else {
            return Err("its first transfer is not a red packet".into());
        };
        let grabbed = transfers
            .filter(|(kind, _)| *kind == TransferKind::Grab)
            .map(|(_, meta)| {
                let by = meta["by"]["id"].as_str()?.to_owned();
                Some((by, usize::try_from(meta["index"].as_u64()?).ok()?))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("a grab has no grabber or share index")?;
        let open =
            OpenPacket::from_meta(created, grabbed).ok_or("its creation meta is incomplete")?;
        let left = minor(open.packet.remainder()).map_err(|r| r.message)?;
        if left != escrow.balance {
            return Err(format!(
                "escrow holds {} but the unclaimed shares make {left}",
                escrow.balance
            ));
        }
        Ok(open)
    }
}

/// Open packets by id.
#[derive(Default)]
pub(super) struct OpenPackets(Mutex<HashMap<String, OpenPacket>>);

impl OpenPackets {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, OpenPacket>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reopens every packet whose escrow still holds coins.
    pub(super) fn restore(escrows: Vec<OpenEscrow>) -> OpenPackets {
        let packets = escrows
            .into_iter()
            .filter_map(|escrow| match OpenPacket::restore(&escrow) {
                Ok(open) => Some((escrow.id, open)),
                Err(problem) => {
                    // Its coins stay in escrow for an operator; nothing is paid out of it.
                    tracing::error!(packet = %escrow.id, %problem, "red packet not reopened");
                    None
                }
            })
            .collect();
        OpenPackets(Mutex::new(packets))
    }

    /// Hands `user` the next share of a packet of `room`, and how many are left.
    fn take(
        &self,
        id: &str,
        room: &str,
        user: &str,
        now_ms: u64,
    ) -> Result<(Share, u32), Rejection> {
        let mut packets = self.lock();
        let open = packets
            .get_mut(id)
            .filter(|open| open.room == room)
            .ok_or_else(|| {
                Rejection::new(
                    ErrorCode::NotFound,
                    format!("no open red packet {id:?} in this room"),
                )
            })?;
        if now_ms >= open.expires_ms {
            return Err(Rejection::new(
                ErrorCode::Exhausted,
                "this red packet has expired",
            ));
        }
        let share = open.packet.take(user).map_err(|refusal| match refusal {
            GrabRefusal::AlreadyGrabbed => {
                Rejection::new(ErrorCode::Conflict, "you already grabbed this red packet")
            }
            GrabRefusal::Exhausted => Rejection::new(
                ErrorCode::Exhausted,
                "every share of this red packet is taken",
            ),
        })?;
        open.in_flight += 1;
        Ok((share, open.packet.left()))
    }

    /// Ends a grab's commit; a grab that did not commit gives its share back.
    fn settle(&self, id: &str, user: &str, committed: bool) {
        let mut packets = self.lock();
        let open = packets
            .get_mut(id)
            .expect("a packet with grabs in flight stays open");
        open.in_flight -= 1;
        if !committed {
            open.packet.release(user);
        }
    }

    /// Removes the packets whose time is up and that have no grab in flight.
    fn close_expired(&self, now_ms: u64) -> Vec<(String, OpenPacket)> {
        let mut packets = self.lock();
        let due: Vec<String> = packets
            .iter()
            .filter(|(_, open)| now_ms >= open.expires_ms && open.in_flight == 0)
            .map(|(id, _)| id.clone())
            .collect();
        due.into_iter()
            .filter_map(|id| packets.remove_entry(&id))
            .collect()
    }
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
            let open = OpenPacket::from_meta(&committed.meta, Vec::new())
                .expect("the meta was built above");
            self.packets.lock().insert(id.clone(), open);
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

    /// Gives `user` the next share of packet `id` in `room`, durably.
    pub async fn grab(&self, user: &User, room: &str, id: &str) -> Result<Grabbed, Rejection> {
        let (share, left) = self
            .packets
            .take(id, room, &user.id, crate::ids::unix_ms())?;
        let amount = minor(share.coins)?;
        let escrow = Account::Escrow(id.to_owned());
        // Keyed by the packet, under a name no user id can take (ids have no ':'), so
        // the ledger itself refuses a second grab by the same user.
        let request = TransferRequest::new(
            TransferKind::Grab,
            vec![
                (escrow.clone(), -amount),
                (Account::Wallet(user.id.clone()), amount),
            ],
        )
        .in_room(room)
        .idempotent(&escrow.key(), &format!("grab:{}", user.id), "grab".into())
        .with_meta(json!({
            "packet": id, "index": share.index, "coins": share.coins,
            "by": {"id": user.id, "name": user.name},
        }));
        let outcome = self.ledger.commit(request).await;
        let committed = matches!(&outcome, Ok(c) if !c.duplicate);
        self.packets.settle(id, &user.id, committed);
        match outcome {
            Ok(c) if c.duplicate => Err(conflict()),
            Err(error) => Err(ledger_rejection(error)),
            Ok(_) => {
                self.wallets.credit(&user.id, amount);
                Ok(Grabbed {
                    coins: share.coins,
                    balance: self.balance(&user.id),
                    event: RoomEventBody::Grab {
                        packet: id.to_owned(),
                        by: user.as_ref(),
                        coins: share.coins,
                        left,
                    },
                })
            }
        }
    }

    /// Returns what is left of every expired packet to its sender. A refund that
    /// fails to commit reopens its packet, to be tried again next time.
    pub async fn refund_expired(&self, now_ms: u64) -> Vec<Refunded> {
        let mut refunded = Vec::new();
        for (id, open) in self.packets.close_expired(now_ms) {
            let remainder = open.packet.remainder();
            if remainder == 0 {
                continue;
            }
            let amount = minor(remainder).expect("a packet's remainder fit when it was created");
            let escrow = Account::Escrow(id.clone());
            let request = TransferRequest::new(
                TransferKind::Refund,
                vec![
                    (escrow.clone(), -amount),
                    (Account::Wallet(open.sender.id.clone()), amount),
                ],
            )
            .in_room(&open.room)
            .idempotent(&escrow.key(), "refund", "refund".into())
            .with_meta(json!({"packet": id, "coins": remainder, "to": open.sender}));
            match self.ledger.commit(request).await {
                Ok(committed) => {
                    if !committed.duplicate {
                        self.wallets.credit(&open.sender.id, amount);
                    }
                    refunded.push(Refunded {
                        balance: coins(self.wallets.available(&open.sender.id)),
                        sender: open.sender.id,
                        coins: remainder,
                    });
                }
                Err(error) => {
                    tracing::warn!(packet = %id, %error, "red packet refund failed; retrying later");
                    self.packets.lock().insert(id, open);
                }
            }
        }
        refunded
    }
}
