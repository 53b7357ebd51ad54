//! `likes`: N viewers in one room tap hearts together at a set rate of `like`
//! messages a second, spread evenly over them. Counts the messages answered `ok`,
//! the errors by code (`rate_limited` is counted, not fatal), how often each viewer
//! hears the room's coalesced `likes` event (at most once a second), and compares the
//! last `total` seen with the taps sent.
//!
//! A client answered `rate_limited` does as a page should: it sends none of its
//! messages due within `retry_after_ms` (counted as `likes_skipped`). Ignoring the
//! limit would get it closed: 20 errors within 10 s close a connection (1008).

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::chat::due;
use super::{connect_all, tokens, Joined};
use crate::scan::string_field;
use crate::stats::{Counter, Latency, Stats};
use crate::target::Cluster;
use crate::ws::Read;

/// The server's default per-user limit: `limits.like_burst` messages per second.
pub const SERVER_LIKES_PER_USER_S: f64 = 30.0;

#[derive(Debug, Clone)]
pub struct LikeLoad {
    pub clients: usize,
    /// `like` messages a second, over all clients.
    pub rate: u32,
    /// Taps per message (1..=15).
    pub count: u32,
    /// Likes go without `rid`: the server answers only errors.
    pub no_rid: bool,
    pub duration: Duration,
    pub ramp: u32,
    /// The room; by default a fresh one per run, so its `total` starts at 0.
    pub room: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LikeReport {
    pub room: String,
    pub clients: usize,
    pub rate: u32,
    pub count: u32,
    pub likes_per_client_per_s: f64,
    /// `like` messages sent, and answered `ok`.
    pub likes_sent: u64,
    pub likes_ok: u64,
    /// Messages a client did not send while backing off after `rate_limited`.
    pub likes_skipped: u64,
    /// Messages answered `ok` per second of the sending window.
    pub likes_per_s: f64,
    /// Send to `ok`.
    pub like_latency: Latency,
    pub taps_sent: u64,
    pub taps_ok: u64,
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// `likes` events all clients received during the sending window.
    pub likes_events: u64,
    /// Should be at most 1 (the room gets at most one a second).
    pub likes_events_per_s_per_client: f64,
    /// The shortest time between two `likes` events at one client.
    pub likes_events_min_gap_ms: f64,
    /// Consecutive `likes` events at one client less than 900 ms apart (more than one
    /// a second, beyond delivery jitter).
    pub likes_events_gaps_under_900ms: u64,
    /// The room's `total` before this run's taps: the first event's `total - recent`.
    pub likes_total_start: u64,
    /// The last (largest) `total` any client saw.
    pub likes_total_seen: u64,
    /// `likes_total_seen - likes_total_start`: to compare with `taps_ok`.
    pub likes_total_counted: u64,
    pub likes_total_matches: u8,
    /// Clients whose last `total` is below `likes_total_seen`.
    pub clients_behind: usize,
    pub disconnects: u64,
}

/// What all clients share while running.
struct Shared {
    ok: Counter,
    skipped: Counter,
    codes: Mutex<BTreeMap<String, u64>>,
    /// The largest `total` seen.
    total: AtomicU64,
    /// The smallest `total - recent` seen: the room's total before the first event.
    base: AtomicU64,
}

/// One client's sending schedule: its n-th message (from 0) is due at
/// `started + (n + phase) / per_second`, none from `until` on.
#[derive(Clone, Copy)]
struct Plan {
    started: Instant,
    until: Instant,
    per_second: f64,
    phase: f64,
    count: u32,
    no_rid: bool,
}

impl Plan {
    fn next_due(&self, sent: u64) -> Instant {
        self.started + Duration::from_secs_f64((sent as f64 + self.phase) / self.per_second)
    }
}

/// A `likes` event as one client received it.
struct LikesEvent {
    at: Instant,
    total: u64,
}

pub async fn run(
    cluster: &Cluster,
    load: &LikeLoad,
    stats: Arc<Stats>,
) -> anyhow::Result<LikeReport> {
    let clients = load.clients.max(1);
    let room = load
        .room
        .clone()
        .unwrap_or_else(|| format!("lt-likes-{}", super::unix_micros()));
    let per_client = f64::from(load.rate) / clients as f64;
    if per_client >= SERVER_LIKES_PER_USER_S {
        eprintln!(
            "warning: {per_client:.1} likes/s per client reaches the server's default \
             per-user limit ({SERVER_LIKES_PER_USER_S}/s): expect rate_limited; use more --clients"
        );
    }
    let tokens = tokens(cluster, clients).await?;
    let joined = connect_all(cluster, &tokens, |_| room.clone(), load.ramp, &stats).await?;
    let shared = Arc::new(Shared {
        ok: Counter::default(),
        skipped: Counter::default(),
        codes: Mutex::new(BTreeMap::new()),
        total: AtomicU64::new(0),
        base: AtomicU64::new(u64::MAX),
    });
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let until = started + load.duration;
    let tasks: Vec<_> = joined
        .into_iter()
        .map(|client| {
            let plan = Plan {
                started,
                until,
                per_second: per_client,
                phase: client.index as f64 / clients as f64,
                count: load.count,
                no_rid: load.no_rid,
            };
            let (shared, stats, stopped) = (shared.clone(), stats.clone(), stopped.clone());
            tokio::spawn(async move { tap(client, plan, shared, stats, stopped).await })
        })
        .collect();

    tokio::time::sleep_until(until.into()).await;
    let window = started.elapsed().min(load.duration).as_secs_f64();
    let answered = || shared.ok.get() + stats.errors.get();
    // The last replies, then the event that counts the last taps.
    let waited = Instant::now();
    while answered() < stats.sent.get() && waited.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without `rid` only errors are answered: every like sent and not refused counted.
    let answered_ok = match load.no_rid {
        true => stats.sent.get().saturating_sub(stats.errors.get()),
        false => shared.ok.get(),
    };
    let taps_ok = answered_ok * u64::from(load.count);
    let waited = Instant::now();
    loop {
        let base = shared.base.load(Relaxed);
        let counted = shared
            .total
            .load(Relaxed)
            .saturating_sub(if base == u64::MAX { 0 } else { base });
        if counted >= taps_ok || waited.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The others hear that event too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send_replace(true);
    let mut views = Vec::with_capacity(tasks.len());
    for task in tasks {
        views.push(task.await?);
    }

    let in_window = |e: &LikesEvent| e.at >= started && e.at <= until;
    let likes_events: u64 = views
        .iter()
        .map(|v| v.iter().filter(|e| in_window(e)).count() as u64)
        .sum();
    let gaps: Vec<Duration> = views
        .iter()
        .flat_map(|v| v.windows(2).map(|w| w[1].at - w[0].at))
        .collect();
    let seen = shared.total.load(Relaxed);
    let start = match shared.base.load(Relaxed) {
        u64::MAX => 0,
        base => base,
    };
    let likes_ok = shared.ok.get();
    let sent = stats.sent.get();
    Ok(LikeReport {
        room,
        clients,
        rate: load.rate,
        count: load.count,
        likes_per_client_per_s: per_client,
        likes_sent: sent,
        likes_ok,
        likes_skipped: shared.skipped.get(),
        likes_per_s: likes_ok as f64 / window,
        like_latency: stats.latency.summary(),
        taps_sent: sent * u64::from(load.count),
        taps_ok,
        errors: stats.errors.get(),
        errors_by_code: shared.codes.lock().map(|c| c.clone()).unwrap_or_default(),
        likes_events,
        likes_events_per_s_per_client: likes_events as f64 / (clients as f64 * window),
        likes_events_min_gap_ms: gaps
            .iter()
            .min()
            .map_or(0.0, |gap| gap.as_secs_f64() * 1000.0),
        likes_events_gaps_under_900ms: gaps
            .iter()
            .filter(|gap| **gap < Duration::from_millis(900))
            .count() as u64,
        likes_total_start: start,
        likes_total_seen: seen,
        likes_total_counted: seen.saturating_sub(start),
        likes_total_matches: u8::from(seen.saturating_sub(start) == taps_ok),
        clients_behind: views
            .iter()
            .filter(|v| v.last().map_or(0, |e| e.total) < seen)
            .count(),
        disconnects: stats.disconnects.get(),
    })
}

/// One client: sends its likes on schedule and reads everything until stopped;
/// returns the `likes` events it received.
async fn tap(
    client: Joined,
    plan: Plan,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    mut stopped: watch::Receiver<bool>,
) -> Vec<LikesEvent> {
    let Joined {
        mut socket, room, ..
    } = client;
    let room = serde_json::to_string(&room).unwrap_or_default();
    let mut events = Vec::new();
    // The server answers one connection's messages in order: the oldest send time
    // belongs to the next reply.
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    // Due messages until then are skipped (after `rate_limited`).
    let mut paused_until: Option<Instant> = None;
    let mut sent = 0u64;
    let first = if plan.per_second > 0.0 {
        plan.next_due(0)
    } else {
        plan.until
    };
    let mut sending = first < plan.until;
    let next = tokio::time::sleep_until(first.into());
    tokio::pin!(next);
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            () = &mut next, if sending => {
                let now = Instant::now();
                let due = due(now.min(plan.until) - plan.started, plan.per_second, plan.phase);
                let paused = paused_until.is_some_and(|until| now < until);
                while sent < due {
                    if paused {
                        shared.skipped.add(1);
                        sent += 1;
                        continue;
                    }
                    let message = match plan.no_rid {
                        true => format!(
                            "{{\"type\":\"like\",\"room\":{room},\"count\":{}}}",
                            plan.count
                        ),
                        false => format!(
                            "{{\"type\":\"like\",\"room\":{room},\"count\":{},\"rid\":{sent}}}",
                            plan.count
                        ),
                    };
                    if socket.send_text(&message).await.is_err() {
                        stats.disconnects.add(1);
                        return events;
                    }
                    if !plan.no_rid {
                        waiting.push_back(Instant::now());
                    }
                    stats.sent.add(1);
                    sent += 1;
                }
                let at = plan.next_due(sent);
                sending = at < plan.until;
                if sending {
                    next.as_mut().reset(at.into());
                }
            }
            read = socket.read(|bytes| {
                observe(bytes, &mut waiting, &mut events, &mut paused_until, &shared, &stats);
                ControlFlow::Continue(())
            }) => if !matches!(read, Ok(Read::Open)) {
                stats.disconnects.add(1);
                break;
            },
        }
    }
    events
}

fn observe(
    bytes: &[u8],
    waiting: &mut VecDeque<Instant>,
    events: &mut Vec<LikesEvent>,
    paused_until: &mut Option<Instant>,
    shared: &Shared,
    stats: &Stats,
) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match string_field(text, "type") {
        Some("ok") => {
            if let Some(sent) = waiting.pop_front() {
                stats.latency.record(sent.elapsed().as_micros() as u64);
                shared.ok.add(1);
            }
        }
        Some("error") => {
            waiting.pop_front();
            stats.errors.add(1);
            let code = string_field(text, "code").unwrap_or("unknown").to_owned();
            if code == "rate_limited" {
                let error: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                let wait = Duration::from_millis(error["retry_after_ms"].as_u64().unwrap_or(0));
                *paused_until = Some(Instant::now() + wait);
            }
            if let Ok(mut codes) = shared.codes.lock() {
                *codes.entry(code).or_default() += 1;
            }
        }
        Some("likes") => {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(text) else {
                return;
            };
            let total = event["total"].as_u64().unwrap_or_default();
            let recent = event["recent"].as_u64().unwrap_or_default();
            shared.total.fetch_max(total, Relaxed);
            shared.base.fetch_min(total.saturating_sub(recent), Relaxed);
            stats.delivered.add(1);
            events.push(LikesEvent {
                at: Instant::now(),
                total,
            });
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_events_are_counted() {
        let shared = Shared {
            ok: Counter::default(),
            skipped: Counter::default(),
            codes: Mutex::new(BTreeMap::new()),
            total: AtomicU64::new(0),
            base: AtomicU64::new(u64::MAX),
        };
        let stats = Stats::default();
        let mut waiting: VecDeque<Instant> = (0..3).map(|_| Instant::now()).collect();
        let mut events = Vec::new();
        let mut paused = None;
        for text in [
            r#"{"type":"ok","rid":0}"#,
            r#"{"type":"error","rid":1,"code":"rate_limited","message":"slow down","retry_after_ms":20}"#,
            r#"{"type":"likes","room":"r","total":40,"recent":30}"#,
            r#"{"type":"presence","room":"r","viewers":3}"#,
            r#"{"type":"likes","room":"r","total":52,"recent":12}"#,
        ] {
            let before = Instant::now();
            observe(
                text.as_bytes(),
                &mut waiting,
                &mut events,
                &mut paused,
                &shared,
                &stats,
            );
            if text.contains("rate_limited") {
                let until = paused.expect("backing off");
                assert!(until >= before + Duration::from_millis(20));
            }
        }
        assert_eq!((shared.ok.get(), stats.errors.get()), (1, 1));
        assert_eq!(shared.codes.lock().expect("codes")["rate_limited"], 1);
        assert_eq!(waiting.len(), 1);
        assert_eq!(events.len(), 2);
        assert_eq!(shared.total.load(Relaxed), 52);
        assert_eq!(
            shared.base.load(Relaxed),
            10,
            "the total before the first event"
        );
    }
}
