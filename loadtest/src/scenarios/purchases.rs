//! Purchase notifications: senders post signed Standard Webhooks `purchase.completed`
//! notifications, one at a time each, and time each answer, which the server sends
//! only after the purchase is durably credited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::stats::{Latency, Stats};
use crate::target::Cluster;

#[derive(Debug, Clone)]
pub struct PurchaseLoad {
    pub senders: usize,
    /// The server's `[payments] standard_secret` (`whsec_…`).
    pub secret: String,
    pub pack: String,
    pub duration: Duration,
}

#[derive(Debug, Serialize)]
pub struct PurchaseReport {
    pub senders: usize,
    pub credited: u64,
    pub credited_per_s: f64,
    pub answer_latency: Latency,
    pub errors: u64,
}

pub async fn run(
    cluster: &Cluster,
    load: &PurchaseLoad,
    stats: Arc<Stats>,
) -> anyhow::Result<PurchaseReport> {
    let key = secret_bytes(&load.secret)?;
    let run_id = super::unix_micros();
    let deadline = Instant::now() + load.duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..load.senders)
        .map(|sender| {
            let (target, key, stats) = (cluster.node(sender).clone(), key.clone(), stats.clone());
            let pack = load.pack.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let purchase_id = format!("lt-{run_id}-{sender}-{n}");
                    let body = serde_json::json!({"type": "purchase.completed", "data": {
                        "purchase_id": purchase_id, "user": format!("lt-buyer-{sender}"),
                        "pack": pack, "amount": 99, "currency": "USD", "store": "web",
                    }})
                    .to_string();
                    let id = format!("msg_{purchase_id}");
                    let now = (super::unix_micros() / 1_000_000).to_string();
                    let signature = sign(&key, &id, &now, body.as_bytes());
                    let sent = Instant::now();
                    stats.sent.add(1);
                    let answer = target
                        .request(reqwest::Method::POST, "/api/payments/standard")
                        .header("webhook-id", id)
                        .header("webhook-timestamp", now)
                        .header("webhook-signature", signature)
                        .body(body)
                        .send()
                        .await;
                    match answer {
                        Ok(answer) if answer.status().is_success() => {
                            stats.latency.record(sent.elapsed().as_micros() as u64)
                        }
                        _ => stats.errors.add(1),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let credited = stats.latency.count();
    Ok(PurchaseReport {
        senders: load.senders,
        credited,
        credited_per_s: credited as f64 / started.elapsed().as_secs_f64(),
        answer_latency: stats.latency.summary(),
        errors: stats.errors.get(),
    })
}

fn secret_bytes(secret: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| anyhow::anyhow!("--secret must be a whsec_ secret"))?;
    Ok(BASE64.decode(encoded)?)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's known-answer vector.
    #[test]
    fn signs_as_the_specification_says() {
        let key = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
