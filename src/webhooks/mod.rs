//! Outgoing webhooks: endpoints that platforms and broadcasters register, and the
//! worker that delivers every event to them, signed (Standard Webhooks), at least
//! once and never lost. `events` (what a booked transfer is as an event), `schedule`
//! (when a failure is tried again) and `guard` (where deliveries may go) are the
//! rules; `worker` sends. The queue itself is kept beside the books
//! (`ledger::webhooks`), so that a money event is queued with its transfer.

mod events;
mod guard;
mod schedule;
mod worker;

use std::sync::Arc;

use serde::Deserialize;

use crate::clock::Clock;
use crate::ledger::webhooks::{Attempt, Endpoint, NewEvent, Owner};
use crate::ledger::{Ledger, LedgerError};
use crate::payments::standard::Secret;
use crate::protocol::{ErrorCode, Rejection};

pub use events::{describe, is_event_type, EVENT_TYPES};
pub use guard::{is_public, AddressPolicy};
pub use schedule::{outcome, Answer, RETRY_WAITS_S};

/// An owner may register at most this many endpoints.
pub const MAX_ENDPOINTS: usize = 20;
pub const MAX_URL_CHARS: usize = 2000;

/// `[webhooks]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Hosts (names or addresses) deliveries may reach although they are internal
    /// (loopback, private, link-local…).
    pub allow_hosts: Vec<String>,
    /// How long a receiver has to answer a delivery.
    pub timeout_ms: u64,
    /// How often the worker looks for events and due deliveries when idle.
    pub poll_ms: u64,
    /// Deliveries sent at once by one node.
    pub concurrency: usize,
    /// The niceness (0–19) of the worker's threads: deliveries are never urgent,
    /// so when the CPU is short they give way to booking money and fanning out.
    pub nice: i32,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_hosts: Vec::new(),
            timeout_ms: 15_000,
            poll_ms: 200,
            concurrency: 16,
            nice: 10,
        }
    }
}

impl WebhookSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.timeout_ms == 0 || self.poll_ms == 0 || self.concurrency == 0 {
            anyhow::bail!("webhooks.timeout_ms, poll_ms and concurrency must be greater than zero");
        }
        if !(0..=19).contains(&self.nice) {
            anyhow::bail!("webhooks.nice must be from 0 (normal) to 19 (lowest priority)");
        }
        Ok(())
    }
}

/// Registering, listing and replaying endpoints, and queueing events; the worker
/// (`Webhooks::run`) delivers.
pub struct Webhooks {
    books: Arc<dyn Ledger>,
    settings: WebhookSettings,
    policy: AddressPolicy,
    clock: Clock,
}

fn unavailable(error: LedgerError) -> Rejection {
    tracing::warn!(%error, "webhooks' queue");
    Rejection::unavailable("webhooks are unavailable; try again")
}

/// A new endpoint as its owner asks for it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub url: String,
    pub events: Vec<String>,
}

impl Webhooks {
    pub fn new(books: Arc<dyn Ledger>, settings: WebhookSettings, clock: Clock) -> Webhooks {
        Webhooks {
            policy: AddressPolicy::new(&settings.allow_hosts),
            books,
            settings,
            clock,
        }
    }

    /// Registers an endpoint; its id and secret (shown once).
    pub async fn register(
        &self,
        owner: Owner,
        registration: Registration,
    ) -> Result<(Endpoint, String), Rejection> {
        let url = self.checked_url(&registration.url)?;
        let mut events = registration.events;
        if events.is_empty() {
            return Err(Rejection::bad_request(
                "events: name at least one event type",
            ));
        }
        if let Some(unknown) = events.iter().find(|kind| !is_event_type(kind)) {
            return Err(Rejection::bad_request(format!(
                "unknown event type {unknown:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        events.sort();
        events.dedup();
        let existing = self
            .books
            .endpoints(Some(&owner))
            .await
            .map_err(unavailable)?;
        if existing.len() >= MAX_ENDPOINTS {
            return Err(Rejection::new(
                ErrorCode::TooLarge,
                format!("at most {MAX_ENDPOINTS} endpoints; remove one first"),
            ));
        }
        let secret = Secret::random(&mut rand::thread_rng()).encoded();
        let endpoint = Endpoint {
            id: format!("ep_{:016x}", rand::random::<u64>()),
            owner,
            url,
            events,
            secret: secret.clone(),
            disabled: None,
            created_ms: self.clock.now_ms(),
        };
        self.books
            .add_endpoint(&endpoint)
            .await
            .map_err(unavailable)?;
        Ok((endpoint, secret))
    }

    /// An absolute http(s) URL whose host deliveries may reach.
    fn checked_url(&self, url: &str) -> Result<String, Rejection> {
        if url.chars().count() > MAX_URL_CHARS {
            return Err(Rejection::bad_request(format!(
                "url: at most {MAX_URL_CHARS} characters"
            )));
        }
        let parsed =
            reqwest::Url::parse(url).map_err(|e| Rejection::bad_request(format!("url: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Rejection::bad_request(
                "url: only http and https are delivered to",
            ));
        }
        let host = parsed
            .host()
            .ok_or_else(|| Rejection::bad_request("url: a host is needed"))?;
        if !self.policy.allows_url_host(&host) {
            return Err(Rejection::bad_request(
                "url: deliveries may not go to loopback, private or link-local addresses",
            ));
        }
        Ok(parsed.to_string())
    }

    /// The owner's endpoints (every one for `None`).
    pub async fn endpoints(&self, owner: Option<&Owner>) -> Result<Vec<Endpoint>, Rejection> {
        self.books.endpoints(owner).await.map_err(unavailable)
    }

    /// The endpoint, if `owner` (or, for `None`, an admin) may see it.
    pub async fn endpoint_of(
        &self,
        owner: Option<&Owner>,
        id: &str,
    ) -> Result<Endpoint, Rejection> {
        let found = self.books.endpoint(id).await.map_err(unavailable)?;
        found
            .filter(|endpoint| owner.is_none_or(|owner| *owner == endpoint.owner))
            .ok_or_else(|| Rejection::new(ErrorCode::NotFound, format!("no endpoint {id:?}")))
    }

    pub async fn remove(&self, owner: Option<&Owner>, id: &str) -> Result<(), Rejection> {
        let endpoint = self.endpoint_of(owner, id).await?;
        self.books
            .remove_endpoint(&endpoint.id)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn attempts(
        &self,
        owner: Option<&Owner>,
        id: &str,
        limit: usize,
    ) -> Result<Vec<Attempt>, Rejection> {
        let endpoint = self.endpoint_of(owner, id).await?;
        self.books
            .attempts(&endpoint.id, limit)
            .await
            .map_err(unavailable)
    }

    /// Sends again every event since `since_ms` the endpoint wants (and enables it),
    /// up to the last one booked.
    pub async fn replay(
        &self,
        owner: Option<&Owner>,
        id: &str,
        since_ms: u64,
    ) -> Result<usize, Rejection> {
        let endpoint = self.endpoint_of(owner, id).await?;
        while (self.books.queue_booked(&describe, 1000).await).map_err(unavailable)? > 0 {}
        (self.books)
            .replay(&endpoint.id, since_ms, self.clock.now_ms())
            .await
            .map_err(unavailable)
    }

    /// Queues an event that is not a transfer (an acknowledgement, a stream's start
    /// or end, a moderation action), durably, before the caller goes on.
    pub async fn notify(&self, kind: &str, room: Option<&str>, data: serde_json::Value) {
        debug_assert!(is_event_type(kind), "{kind} is an event type");
        let event = NewEvent {
            kind: kind.to_owned(),
            room: room.map(str::to_owned),
            at_ms: self.clock.now_ms(),
            data: data.to_string(),
        };
        if let Err(error) = self.books.enqueue(event).await {
            tracing::error!(%error, kind, "an event was not queued for webhooks");
        }
    }
}
