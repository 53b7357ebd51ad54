//! The delivery worker: it queues the events of newly booked transfers, takes the
//! deliveries that are due (leased, so that each goes out from one node at a time),
//! sends each signed, and records what the receiver did and when to try again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::schedule::{outcome, Answer};
use super::{describe, Webhooks};
use crate::ledger::webhooks::{DueDelivery, Tried};
use crate::payments::standard::Secret;
use crate::protocol::to_json;

/// Transfers queued per pass.
const BOOKED_PER_PASS: usize = 2000;
/// While there is work, a pass starts at most this often: each commits the queue's
/// writes (a sync each), and fewer, larger ones leave the disk to the ledger writer.
const BUSY_PASS_EVERY: Duration = Duration::from_millis(50);
/// A delivery stays leased this long after its receiver's time is up.
const LEASE_SLACK_MS: u64 = 10_000;
/// How long finished deliveries and their events are kept (replays reach this far).
pub const KEPT_MS: u64 = 30 * 24 * 3600 * 1000;
/// How often old events are forgotten.
const PRUNE_EVERY_MS: u64 = 3600 * 1000;
/// Deliveries taken per pass, per delivery in flight.
const DUE_PER_SENDER: usize = 32;
/// The most of a receiver's answer kept in the delivery log.
const MAX_ERROR_CHARS: usize = 300;

/// The worker's thread, with a runtime of its own whose threads run at the
/// configured niceness.
pub struct DeliveryThread {
    stopped: tokio::sync::oneshot::Receiver<()>,
}

impl DeliveryThread {
    /// Resolves when the worker has stopped (after `shutdown`) and let go of the
    /// books, or after `grace`.
    pub async fn stopped(self, grace: Duration) {
        if tokio::time::timeout(grace, self.stopped).await.is_err() {
            tracing::warn!("the webhook worker did not stop within the shutdown grace period");
        }
    }
}

impl Webhooks {
    /// Starts the worker on its own thread; it delivers until `shutdown`. A pass in
    /// progress is dropped then: what it sent and did not record goes out again
    /// (at least once, with the same `webhook-id`).
    pub fn start(
        self: Arc<Self>,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> std::io::Result<DeliveryThread> {
        let nice = self.settings.nice;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("webhooks")
            .on_thread_start(move || lower_priority(nice))
            .build()?;
        let (done, stopped) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                lower_priority(nice);
                runtime.block_on(async {
                    tokio::select! {
                        _ = self.run(shutdown.clone()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                });
                runtime.shutdown_timeout(grace);
                let _ = done.send(());
            })?;
        Ok(DeliveryThread { stopped })
    }

    /// Delivers until `shutdown`.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_millis(self.settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(self.policy.resolver())
            .user_agent("Ovation-Webhooks/1")
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "no HTTP client: webhooks are not delivered");
                return;
            }
        };
        let idle = Duration::from_millis(self.settings.poll_ms);
        let mut pruned_at = 0;
        while !shutdown.is_cancelled() {
            let now = self.clock.now_ms();
            if now >= pruned_at + PRUNE_EVERY_MS {
                pruned_at = now;
                if let Err(error) = self.books.prune(now.saturating_sub(KEPT_MS)).await {
                    tracing::warn!(%error, "old webhook events were not forgotten");
                }
            }
            let started = tokio::time::Instant::now();
            let busy = self.pass(&client).await;
            let next = match busy {
                true => started + BUSY_PASS_EVERY,
                false => tokio::time::Instant::now() + idle,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// One pass: queue what was booked, send what is due; whether there was work.
    async fn pass(&self, client: &reqwest::Client) -> bool {
        let queued = match self.books.queue_booked(&describe, BOOKED_PER_PASS).await {
            Ok(taken) => taken,
            Err(error) => {
                tracing::warn!(%error, "booked events were not queued for webhooks");
                0
            }
        };
        let now = self.clock.now_ms();
        let lease = now + self.settings.timeout_ms + LEASE_SLACK_MS;
        let limit = self.settings.concurrency * DUE_PER_SENDER;
        let due = match self.books.due(now, lease, limit).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "due webhook deliveries were not read");
                Vec::new()
            }
        };
        let sent = due.len();
        let tried: Vec<Tried> = futures_util::stream::iter(due)
            .map(|delivery| self.deliver(client, delivery))
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await;
        if !tried.is_empty() {
            if let Err(error) = self.books.attempted(tried).await {
                // Their leases run out and they are sent again: at least once.
                tracing::warn!(%error, "webhook attempts were not recorded");
            }
        }
        queued > 0 || sent > 0
    }

    /// Sends one delivery; what to record of it.
    async fn deliver(&self, client: &reqwest::Client, delivery: DueDelivery) -> Tried {
        let (answer, error) = self.send(client, &delivery).await;
        let status = match answer {
            Answer::Status { code, .. } => Some(code),
            Answer::Failed => None,
        };
        crate::metrics::webhook_attempt(status);
        let now = self.clock.now_ms();
        let attempt = delivery.attempts + 1;
        Tried {
            endpoint: delivery.endpoint.id,
            event_seq: delivery.event.seq,
            attempt,
            at_ms: now,
            status,
            error,
            outcome: outcome(&answer, attempt, now, rand::random()),
        }
    }

    /// Posts the event; the receiver's answer, and what went wrong if anything did.
    async fn send(
        &self,
        client: &reqwest::Client,
        delivery: &DueDelivery,
    ) -> (Answer, Option<String>) {
        let endpoint = &delivery.endpoint;
        let url = match reqwest::Url::parse(&endpoint.url) {
            Ok(url) => url,
            Err(error) => return (Answer::Failed, Some(format!("bad url: {error}"))),
        };
        // Addresses written as such are never resolved, so the resolver cannot check them.
        if url
            .host()
            .is_none_or(|host| !self.policy.allows_url_host(&host))
        {
            return (Answer::Failed, Some("the address is not allowed".into()));
        }
        let secret = match Secret::parse(&endpoint.secret) {
            Ok(secret) => secret,
            Err(error) => {
                return (
                    Answer::Failed,
                    Some(format!("the endpoint's secret: {error}")),
                )
            }
        };
        let event = &delivery.event;
        let body = format!(
            r#"{{"type":{},"timestamp":{},"data":{}}}"#,
            to_json(&event.kind),
            to_json(&rfc3339(event.at_ms)),
            event.data
        );
        // The signing time is the transport's, read from the system: receivers
        // compare it with their own clocks.
        let timestamp = (crate::ids::unix_ms() / 1000) as i64;
        let signature = secret.sign(&event.id, timestamp, body.as_bytes());
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match response {
            Err(error) => (Answer::Failed, Some(error_chain(&error))),
            Ok(response) => {
                let code = response.status().as_u16();
                let retry_after_s = (response.headers().get("retry-after"))
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.trim().parse().ok());
                let error = (!response.status().is_success()).then(|| format!("HTTP {code}"));
                (
                    Answer::Status {
                        code,
                        retry_after_s,
                    },
                    error,
                )
            }
        }
    }
}

/// Lowers the calling thread's priority to `nice` (Linux: niceness is per thread).
fn lower_priority(nice: i32) {
    // SAFETY: plain system calls on the calling thread; no memory is shared.
    let result = unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, nice)
    };
    if result != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "the webhook worker runs at normal priority");
    }
}

/// What went wrong, with its causes (a timeout, a refused or reset connection).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// `2026-12-02T04:50:26.123Z`.
fn rfc3339(unix_ms: u64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
