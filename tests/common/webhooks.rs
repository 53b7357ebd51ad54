//! Signed Standard Webhooks notifications, as a payment backend sends them.

use ovation::payments::standard::Secret;
use serde_json::{json, Value};

use super::Api;

/// The Standard Webhooks specification's example secret.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A notification as the payment backend sends it; `sign` decides its headers.
pub struct Notification {
    pub id: String,
    pub timestamp: i64,
    pub body: String,
}

impl Notification {
    pub fn new(id: &str, body: Value) -> Notification {
        Notification {
            id: id.into(),
            timestamp: now_s(),
            body: body.to_string(),
        }
    }

    pub fn signature(&self) -> String {
        let secret = Secret::parse(WEBHOOK_SECRET).unwrap();
        secret.sign(&self.id, self.timestamp, self.body.as_bytes())
    }

    pub async fn send_signed_as(&self, api: &Api, signature: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(api.url("/api/payments/standard"))
            .header("content-type", "application/json")
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", self.timestamp.to_string())
            .body(self.body.clone());
        if let Some(signature) = signature {
            request = request.header("webhook-signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(&self, api: &Api) -> (u16, Value) {
        self.send_signed_as(api, Some(&self.signature())).await
    }
}

pub fn purchase(purchase_id: &str, user: &str, pack: &str) -> Value {
    json!({"type": "purchase.completed", "data": {
        "purchase_id": purchase_id, "user": user, "pack": pack,
        "amount": 99, "currency": "USD", "store": "web",
    }})
}
