//! The events outgoing webhooks carry: their type names, and what a booked transfer
//! is as an event. Pure.

use serde_json::json;

use crate::ledger::facts::TransferMeta;
use crate::ledger::webhooks::NewEvent;
use crate::ledger::Payee;

/// Every event type an endpoint may ask for.
pub const EVENT_TYPES: [&str; 12] = [
    "gift.sent",
    "question.asked",
    "ack.sent",
    "red_packet.created",
    "red_packet.finished",
    "stream.started",
    "stream.ended",
    "purchase.completed",
    "purchase.refunded",
    "payout.paid",
    "pk.finished",
    "moderation.action",
];

pub fn is_event_type(kind: &str) -> bool {
    EVENT_TYPES.contains(&kind)
}

/// A booked transfer as a webhook event, for the transfers that are one.
pub fn describe(meta: &TransferMeta, at_ms: u64) -> Option<NewEvent> {
    let (kind, room, data) = match meta {
        TransferMeta::Gift(gift) => (
            "gift.sent",
            Some(gift.room.clone()),
            json!({"gift_id": gift.id, "room": gift.room, "from": gift.from,
                   "sticker": gift.sticker, "count": gift.count, "coins": gift.coins.get()}),
        ),
        TransferMeta::Question(question) => (
            "question.asked",
            Some(question.room.clone()),
            json!({"question_id": question.id, "room": question.room, "from": question.from,
                   "text": question.text, "coins": question.coins.get()}),
        ),
        TransferMeta::RedPacket(packet) => (
            "red_packet.created",
            Some(packet.room.clone()),
            json!({"packet_id": packet.id, "room": packet.room, "from": packet.from,
                   "coins": packet.coins.get(), "shares": packet.shares, "split": packet.split}),
        ),
        TransferMeta::Grab(grab) if grab.left == 0 => (
            "red_packet.finished",
            Some(grab.room.clone()),
            json!({"packet_id": grab.packet, "room": grab.room, "how": "grabbed",
                   "last": grab.by}),
        ),
        TransferMeta::Refund(refund) => (
            "red_packet.finished",
            Some(refund.room.clone()),
            json!({"packet_id": refund.packet, "room": refund.room, "how": "expired",
                   "refunded": refund.coins.get(), "to": refund.to}),
        ),
        TransferMeta::Purchase(purchase) => (
            "purchase.completed",
            None,
            json!({"purchase_id": purchase.purchase_id, "user": purchase.user,
                   "coins": purchase.coins.get(), "pack": purchase.pack, "amount": purchase.amount,
                   "currency": purchase.currency, "store": purchase.store}),
        ),
        TransferMeta::PurchaseRefund(refund) => (
            "purchase.refunded",
            None,
            json!({"purchase_id": refund.purchase_id, "user": refund.user,
                   "coins": refund.coins.get(), "chargeback": refund.chargeback,
                   "debt": refund.owed.get()}),
        ),
        TransferMeta::PayoutSettled(settled) if settled.paid => {
            let (payee, room) = match &settled.payee {
                Payee::Broadcaster(id) => (json!({"broadcaster": id}), Some(id.clone())),
                Payee::Agency(id) => (json!({"agency": id}), None),
            };
            (
                "payout.paid",
                room,
                json!({"payout_id": settled.payout_id, "payee": payee,
                       "amount": settled.amount.get()}),
            )
        }
        _ => return None,
    };
    Some(NewEvent {
        kind: kind.to_owned(),
        room,
        at_ms,
        data: data.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::facts::{PayoutSettled, Topup};
    use crate::money::{Coins, Minor};

    #[test]
    fn only_transfers_that_are_events_are_described() {
        let settled = |paid| {
            TransferMeta::PayoutSettled(PayoutSettled {
                payout_id: "po1".into(),
                payee: Payee::Broadcaster("alice".into()),
                amount: Minor::new(12_345),
                paid,
                event_id: "e1".into(),
                settled_ms: 5,
            })
        };
        let paid = describe(&settled(true), 7).unwrap();
        assert_eq!(
            (paid.kind.as_str(), paid.room.as_deref(), paid.at_ms),
            ("payout.paid", Some("alice"), 7)
        );
        let data: serde_json::Value = serde_json::from_str(&paid.data).unwrap();
        assert_eq!(data["amount"], 12_345);
        assert!(describe(&settled(false), 7).is_none());
        let topup = TransferMeta::Topup(Topup {
            coins: Coins::new(5),
        });
        assert!(describe(&topup, 7).is_none());
        assert!(EVENT_TYPES.iter().all(|kind| is_event_type(kind)));
    }
}
