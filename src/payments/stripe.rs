//! Stripe webhooks: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where each `v1`
//! is the hex HMAC-SHA256 of `{t}.{raw body}` keyed with the endpoint's secret string
//! (`whsec_…`, used as it is). Sans-IO: the caller gives the time. And the events this
//! server takes from Stripe.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::notification::PurchaseCompleted;
use super::standard::SignatureError;
use super::RefundShare;

/// The `Stripe-Signature` header value for a body (what Stripe sends; for tests and
/// the dev store).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks the header's signatures over the raw `body`, and its time against `now_s`.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let field = |name: &'static str| {
        header
            .split(',')
            .filter_map(move |part| part.trim().strip_prefix(name))
    };
    let timestamp = field("t=").next().ok_or(SignatureError::Missing)?;
    let sent_s: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if sent_s.abs_diff(now_s) > tolerance_s.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let matches = field("v1=")
        .filter_map(|tag| hex::decode(tag).ok())
        .any(|tag| mac(secret, timestamp, body).verify_slice(&tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A Stripe event: `{"id": "evt_…", "type": T, "data": {"object": {...}}}`.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// A paid Checkout Session: the platform's checkout put the buyer and the pack in its
/// metadata. Its payment intent is the purchase's id: refunds and disputes name it.
#[derive(Debug, Deserialize)]
struct CheckoutSession {
    payment_intent: String,
    payment_status: String,
    amount_total: u64,
    currency: String,
    metadata: Metadata,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    user: String,
    pack: String,
}

/// A charge some of whose money was given back (`amount_refunded` so far, of
/// `amount`).
#[derive(Debug, Deserialize)]
struct Charge {
    payment_intent: String,
    amount: u64,
    amount_refunded: u64,
}

/// A charge the buyer's bank disputes: its money is held back from the platform.
#[derive(Debug, Deserialize)]
struct Dispute {
    payment_intent: String,
}

/// What a Stripe event means to this server.
pub enum Meaning {
    Purchase(PurchaseCompleted),
    /// Coins of the purchase paid by `payment_intent` to take back.
    Refund {
        payment_intent: String,
        share: RefundShare,
        chargeback: bool,
    },
    /// An event type this server does not act on (Stripe sends what the endpoint is
    /// subscribed to): acknowledged, nothing changes.
    Ignored,
}

impl Event {
    pub const CHECKOUT_COMPLETED: &'static str = "checkout.session.completed";
    pub const CHARGE_REFUNDED: &'static str = "charge.refunded";
    pub const DISPUTE_CREATED: &'static str = "charge.dispute.created";

    /// What the event asks for; `Err` for an event of a handled type whose object is
    /// not what it should be.
    pub fn meaning(&self) -> Result<Meaning, String> {
        match self.kind.as_str() {
            Self::CHECKOUT_COMPLETED => self.checkout(),
            Self::CHARGE_REFUNDED => {
                let charge: Charge = self.object("charge")?;
                Ok(Meaning::Refund {
                    payment_intent: charge.payment_intent,
                    share: RefundShare::Money {
                        refunded: charge.amount_refunded,
                        paid: charge.amount,
                    },
                    chargeback: false,
                })
            }
            Self::DISPUTE_CREATED => {
                let dispute: Dispute = self.object("dispute")?;
                Ok(Meaning::Refund {
                    payment_intent: dispute.payment_intent,
                    share: RefundShare::All,
                    chargeback: true,
                })
            }
            _ => Ok(Meaning::Ignored),
        }
    }

    fn object<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, String> {
        serde_json::from_value(self.data.object.clone())
            .map_err(|error| format!("not a {what}: {error}"))
    }

    fn checkout(&self) -> Result<Meaning, String> {
        let session: CheckoutSession = self.object("checkout session")?;
        if session.payment_status != "paid" {
            // Paid later (a delayed method): Stripe sends another event then.
            return Ok(Meaning::Ignored);
        }
        Ok(Meaning::Purchase(PurchaseCompleted {
            purchase_id: session.payment_intent,
            user: session.metadata.user,
            pack: Some(session.metadata.pack),
            coins: None,
            amount: session.amount_total,
            // Stripe spells currencies in lower case.
            currency: session.currency.to_ascii_uppercase(),
            store: "stripe".into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_signature_over_the_raw_body_verifies_and_nothing_else_does() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_100, 300),
            Ok(())
        );
        // Re-serialised JSON is another body.
        let spaced = br#"{"id": "evt_1"}"#;
        assert_eq!(
            verify(SECRET, Some(&header), spaced, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_other", Some(&header), body, 1_700_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(SECRET, None, body, 0, 300),
            Err(SignatureError::Missing)
        );
        // One of several signatures is enough (a rolled secret).
        let rolled = format!("{header},v1=00ff");
        assert_eq!(
            verify(SECRET, Some(&rolled), body, 1_700_000_000, 300),
            Ok(())
        );
    }
}
