#![allow(dead_code)] // each test binary uses its own part of this kit
//! A webhook receiver on loopback: it verifies each delivery's signature with an
//! independent implementation (the `standardwebhooks` crate), records what arrived,
//! and answers as the test tells it to (fail, `410`, `Retry-After`, too slowly).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;

/// How the receiver answers the next deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    Fail(u16),
    /// `429` with `Retry-After` in seconds.
    SlowDown(u64),
    /// Answers after this long.
    Sleep(Duration),
}

/// One delivery that arrived, with a valid signature.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub hook: String,
    pub id: String,
    pub body: Value,
    /// Answered with a success.
    pub accepted: bool,
}

#[derive(Default)]
struct Inner {
    secrets: HashMap<String, String>,
    mode: Option<Mode>,
    /// Every delivery that arrived signed, in arrival order, whatever was answered.
    arrived: Vec<Delivery>,
    /// Deliveries whose signature did not verify.
    forged: usize,
}

#[derive(Clone, Default)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    arrivals: Arc<Notify>,
}

impl Receiver {
    /// Serves on `addr` (an ephemeral port when `None`); the URL base.
    pub async fn start(addr: Option<SocketAddr>) -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/hook/{name}", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    /// The secret the endpoint at `/hook/{name}` signs with.
    pub fn expect(&self, name: &str, secret: &str) {
        self.inner
            .lock()
            .unwrap()
            .secrets
            .insert(name.into(), secret.into());
    }

    pub fn answer(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    pub fn arrived(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().arrived.clone()
    }

    pub fn forged(&self) -> usize {
        self.inner.lock().unwrap().forged
    }

    /// Waits until `count` deliveries arrived (signed) at all.
    pub async fn wait_for(&self, count: usize) -> Vec<Delivery> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let notified = self.arrivals.notified();
                let arrived = self.arrived();
                if arrived.len() >= count {
                    return arrived;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let (arrived, forged) = (self.arrived(), self.forged());
            let ids: Vec<&str> = arrived.iter().map(|d| d.id.as_str()).collect();
            panic!("{count} deliveries did not arrive ({forged} forged): {ids:?}")
        })
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (verified, mode) = {
        let inner = receiver.inner.lock().unwrap();
        let verified = inner.secrets.get(&name).is_some_and(|secret| {
            standardwebhooks::Webhook::new(secret)
                .and_then(|hook| hook.verify(&body, &headers))
                .is_ok()
        });
        (verified, inner.mode.unwrap_or(Mode::Accept))
    };
    {
        let mut inner = receiver.inner.lock().unwrap();
        if verified {
            inner.arrived.push(Delivery {
                hook: name,
                id: headers["webhook-id"].to_str().unwrap().to_owned(),
                body: serde_json::from_slice(&body).unwrap(),
                accepted: mode == Mode::Accept,
            });
        } else {
            inner.forged += 1;
        }
    }
    receiver.arrivals.notify_waiters();
    match mode {
        Mode::Accept => StatusCode::NO_CONTENT.into_response(),
        Mode::Fail(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::SlowDown(seconds) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", seconds.to_string())],
        )
            .into_response(),
        Mode::Sleep(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
