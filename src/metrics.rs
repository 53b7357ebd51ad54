//! Prometheus metrics. Every metric name is spelled here and nowhere else.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::ErrorCode;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once; later servers in the same process (tests)
/// share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("ovation_fanout_seconds".into()),
                    &[1e-6, 5e-6, 2e-5, 1e-4, 5e-4, 1e-3, 5e-3, 2e-2, 0.1],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("ovation_ledger_batch_size".into()),
                    &[1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("no other metrics recorder is installed");
            handle
        })
        .clone()
}

/// The text for `GET /metrics`.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Some(rss) = resident_memory_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Some(seconds) = cpu_seconds() {
        gauge!("process_cpu_seconds_total").set(seconds);
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        gauge!("ovation_runtime_workers").set(runtime.metrics().num_workers() as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// Resident set size from /proc (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// User plus system CPU time of this process from /proc (Linux); `None` elsewhere.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Threads of the writer pool (`ws::WriterPool`), set once at start.
pub fn writer_threads(threads: usize) {
    gauge!("ovation_runtime_writer_threads").set(threads as f64);
}

pub fn connection_opened() {
    gauge!("ovation_connections").increment(1.0);
    counter!("ovation_connections_total").increment(1);
}

pub fn connection_closed() {
    gauge!("ovation_connections").decrement(1.0);
}

pub fn rooms_changed(delta: i64) {
    gauge!("ovation_rooms").increment(delta as f64);
}

pub fn message_in(kind: &'static str) {
    counter!("ovation_messages_in_total", "type" => kind).increment(1);
}

pub fn message_out(kind: &'static str, count: u64) {
    counter!("ovation_messages_out_total", "type" => kind).increment(count);
}

pub fn error_sent(code: ErrorCode) {
    counter!("ovation_errors_total", "code" => code.as_str()).increment(1);
    message_out("error", 1);
}

/// A webhook delivery attempt, by the receiver's status (`none`: no answer).
pub fn webhook_attempt(status: Option<u16>) {
    let status = status.map_or("none".to_owned(), |s| s.to_string());
    counter!("ovation_webhook_attempts_total", "status" => status).increment(1);
}

/// A moderation action taken (on this node).
pub fn moderation_action(action: crate::protocol::ModAction) {
    let action = crate::protocol::to_json(&action)
        .trim_matches('"')
        .to_owned();
    counter!("ovation_moderation_actions_total", "action" => action).increment(1);
}

pub fn slow_consumer_closed() {
    counter!("ovation_slow_consumer_disconnects_total").increment(1);
}

pub fn connection_closed_with(code: u16) {
    counter!("ovation_closes_total", "code" => code.to_string()).increment(1);
}

/// One group commit of `size` transfers.
pub fn ledger_batch(size: usize) {
    histogram!("ovation_ledger_batch_size").record(size as f64);
    counter!("ovation_ledger_commits_total").increment(1);
}

/// The ledger's WAL started again from its beginning.
pub fn ledger_wal_restarted() {
    counter!("ovation_ledger_wal_restarts_total").increment(1);
}

/// One event fanned out to `delivered` members in `took` (serialize and enqueue).
pub fn event_fanned_out(kind: &'static str, delivered: u64, took: Duration) {
    message_out(kind, delivered);
    histogram!("ovation_fanout_seconds").record(took.as_secs_f64());
}

/// Open WHIP publisher and WHEP viewer sessions.
/// 1 while the node is subscribed to the cluster bus.
pub fn bus_connected(connected: bool) {
    gauge!("ovation_bus_connected").set(if connected { 1.0 } else { 0.0 });
}

/// An announcement to the cluster (`kind`: `video` or `user`) dropped because the
/// queue to the bus was full: the bus has not kept up for thousands of them.
pub fn bus_announcement_dropped(kind: &'static str) {
    counter!("ovation_bus_announcements_dropped_total", "kind" => kind).increment(1);
}

/// Open relay sessions by role: `publisher` (WHIP here), `viewer` (WHEP of a video
/// published here), `viewer_pulled` (WHEP of a video this node pulls as an edge),
/// `pull` (this node pulling a room from its origin), `edge` (an edge pulling from
/// this node).
pub fn rtc_sessions(sessions: [(&'static str, usize); 5]) {
    for (role, count) in sessions {
        gauge!("ovation_rtc_sessions", "role" => role).set(count as f64);
    }
}

/// RTP payload bytes received from publishers and, on an edge, from origins.
pub fn rtc_received(bytes: u64) {
    counter!("ovation_rtc_bytes_received_total").increment(bytes);
}

/// RTP packets handed to viewers' queues, and their bytes.
pub fn rtc_forwarded(packets: u64, bytes: u64) {
    counter!("ovation_rtc_packets_forwarded_total").increment(packets);
    counter!("ovation_rtc_bytes_forwarded_total").increment(bytes);
}

/// Packets a viewer's full queue could not take: that viewer lost them, nobody else.
pub fn rtc_dropped(packets: u64) {
    counter!("ovation_rtc_packets_dropped_total").increment(packets);
}

/// Keyframe requests asked for: by viewers and edges (PLI, FIR), on joining, and for
/// lost packets. At most one per interval per broadcast goes upstream.
pub fn rtc_keyframe_asked() {
    counter!("ovation_rtc_keyframe_requests_asked_total").increment(1);
}

/// Keyframe requests sent upstream, to the publisher or an edge's origin (after
/// coalescing).
pub fn rtc_keyframe_requested() {
    counter!("ovation_rtc_keyframe_requests_total").increment(1);
}

/// NACKs received from viewers (answered from the sender's retransmission buffer).
pub fn rtc_nacks(count: u64) {
    counter!("ovation_rtc_nacks_total").increment(count);
}
