//! Chat load: clients in one room (`fanout`) or many (`rooms`), some of them senders,
//! optionally some that stop reading (`slow`). Every receiver checks it sees each
//! room event once, in `seq` order, and measures end-to-end latency.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::{connect_all, tokens, unix_micros, Joined};
use crate::scan::{sent_micros, seq};
use crate::stats::{Latency, SeqCheck, Stats};
use crate::target::Cluster;
use crate::ws::{Read, WebSocket};

#[derive(Debug, Clone)]
pub struct ChatLoad {
    pub clients: usize,
    pub rooms: usize,
    pub senders_per_room: usize,
    /// Chat messages per second, over all rooms.
    pub rate: u32,
    pub duration: Duration,
    pub ramp: u32,
    /// Bytes of text per message.
    pub size: usize,
    /// Share of clients (not senders) that stop reading once joined.
    pub slow_share: f64,
    /// Load before the measured `duration`.
    pub warmup: Duration,
}

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub clients: usize,
    pub rooms: usize,
    pub slow_clients: usize,
    pub sent: u64,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub latency: Latency,
    pub gaps: u64,
    pub duplicates: u64,
    pub reorders: u64,
    pub errors: u64,
    pub disconnects: u64,
}

/// The kernel receive buffer of a client that stops reading.
const STALLED_RECEIVE_BUFFER: usize = 64 * 1024;

/// What a client does once joined.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    /// Sends chat, staggered by `phase` (a share of its period) from the others.
    Sender {
        phase: f64,
    },
    Reader,
    Stalled,
}

pub async fn run(
    cluster: &Cluster,
    load: &ChatLoad,
    stats: Arc<Stats>,
) -> anyhow::Result<ChatReport> {
    let rooms = load.rooms.max(1);
    let tokens = tokens(cluster, load.clients).await?;
    let room_of = |i: usize| format!("lt-room-{}", i % rooms);
    let clients = connect_all(cluster, &tokens, room_of, load.ramp, &stats).await?;

    let senders = (load.senders_per_room * rooms).min(load.clients);
    let stalled = ((load.clients - senders) as f64 * load.slow_share).round() as usize;
    let part = |i: usize| match i {
        i if i < senders => Part::Sender {
            phase: i as f64 / senders as f64,
        },
        i if i < senders + stalled => Part::Stalled,
        _ => Part::Reader,
    };
    let per_sender = f64::from(load.rate) / senders.max(1) as f64;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for client in clients {
        let role = part(client.index);
        let stats = stats.clone();
        let stopped = stopped.clone();
        let size = load.size;
        tasks.push(tokio::spawn(async move {
            drive(client, role, per_sender, size, stats, stopped).await;
        }));
    }

    if !load.warmup.is_zero() {
        tokio::time::sleep(load.warmup).await;
        stats.latency.reset();
    }
    let delivered_before = stats.delivered.get();
    let started = Instant::now();
    tokio::time::sleep(load.duration).await;
    let elapsed = started.elapsed();
    let delivered = stats.delivered.get() - delivered_before;
    stop.send_replace(true);
    // Messages in flight still count towards correctness, not towards the rate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for task in &tasks {
        task.abort();
    }
    Ok(ChatReport {
        clients: load.clients,
        rooms,
        slow_clients: stalled,
        sent: stats.sent.get(),
        delivered,
        delivered_per_s: delivered as f64 / elapsed.as_secs_f64(),
        latency: stats.latency.summary(),
        gaps: stats.gaps.get(),
        duplicates: stats.duplicates.get(),
        reorders: stats.reorders.get(),
        errors: stats.errors.get(),
        disconnects: stats.disconnects.get(),
    })
}

async fn drive(
    client: Joined,
    part: Part,
    per_second: f64,
    size: usize,
    stats: Arc<Stats>,
    mut stopped: watch::Receiver<bool>,
) {
    let Joined {
        mut socket,
        room,
        seq,
        ..
    } = client;
    let mut check = SeqCheck::after(seq);
    match part {
        Part::Stalled => {
            // Hold the connection without ever reading from it.
            if socket.cap_receive_buffer(STALLED_RECEIVE_BUFFER).is_err() {
                stats.errors.add(1);
            }
            let _keep = socket;
            let _ = stopped.wait_for(|s| *s).await;
        }
        Part::Sender { phase } => {
            let mut chats = Chats::new(room, per_second, phase, size);
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    biased;
                    _ = tick.tick(), if !*stopped.borrow() => {
                        if chats.send_due(&mut socket, &stats).await.is_err() {
                            break;
                        }
                    }
                    read = read_batch(&mut socket, &mut check, &stats) => if !read {
                        break;
                    },
                }
            }
            stats.disconnects.add(1);
        }
        Part::Reader => {
            while read_batch(&mut socket, &mut check, &stats).await {}
            stats.disconnects.add(1);
        }
    }
}

/// Observes what one read brought; false once the connection is gone. Frames that
/// arrived together share one clock reading (at millions of messages a second,
/// reading it per frame cost 15 % of the load tester).
async fn read_batch(socket: &mut WebSocket, check: &mut SeqCheck, stats: &Stats) -> bool {
    let mut now = None;
    let read = socket
        .read(|text| {
            let now = *now.get_or_insert_with(unix_micros);
            observe(text, now, check, stats);
            ControlFlow::Continue(())
        })
        .await;
    matches!(read, Ok(Read::Open))
}

fn observe(text: &[u8], now: u64, check: &mut SeqCheck, stats: &Stats) {
    if text.starts_with(b"{\"type\":\"ok\"") {
        return;
    }
    if text.starts_with(b"{\"type\":\"error\"") {
        stats.errors.add(1);
        return;
    }
    let Some(seq) = seq(text) else { return };
    check.observe(seq, stats);
    if let Some(sent) = sent_micros(text) {
        stats.delivered.add(1);
        stats.latency.record(now.saturating_sub(sent));
    }
}

/// A sender's schedule: `per_second` chat messages, each stamped with its send time.
struct Chats {
    room: String,
    per_second: f64,
    phase: f64,
    padding: String,
    started: Instant,
    sent: u64,
}

impl Chats {
    fn new(room: String, per_second: f64, phase: f64, size: usize) -> Chats {
        Chats {
            room,
            per_second,
            phase,
            padding: "x".repeat(size.saturating_sub(24)),
            started: Instant::now(),
            sent: 0,
        }
    }

    /// Sends the messages due by now.
    async fn send_due(&mut self, socket: &mut WebSocket, stats: &Stats) -> anyhow::Result<()> {
        let due = due(self.started.elapsed(), self.per_second, self.phase);
        while self.sent < due {
            let text = format!("t={} {}", unix_micros(), self.padding);
            let message =
                serde_json::json!({"type": "chat", "room": self.room, "text": text}).to_string();
            socket.send_text(&message).await?;
            self.sent += 1;
            stats.sent.add(1);
        }
        Ok(())
    }
}

/// How many messages a sender should have sent `elapsed` into the run: its n-th
/// (from 0) is due at (n + phase) / per_second. Senders i of n take phase i / n, so
/// that together they send one message every 1 / rate seconds, the load a rate
/// describes, instead of every sender's message at the same instant.
pub(super) fn due(elapsed: Duration, per_second: f64, phase: f64) -> u64 {
    let periods = elapsed.as_secs_f64() * per_second - phase;
    if periods < 0.0 {
        0
    } else {
        periods as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over two seconds in 1 ms steps, four senders at 51 messages/s together never
    /// send two messages at once and stay within one message of the rate.
    #[test]
    fn staggered_senders_spread_the_rate_evenly() {
        let (senders, rate) = (4, 51.0);
        let per_sender = rate / f64::from(senders);
        let total = |ms: u64| -> u64 {
            (0..senders)
                .map(|i| {
                    let phase = f64::from(i) / f64::from(senders);
                    due(Duration::from_millis(ms), per_sender, phase)
                })
                .sum()
        };
        let mut before = 0;
        for ms in 0..=2000 {
            let sent = total(ms);
            assert!(
                sent - before <= 1,
                "{} messages at once at {ms} ms",
                sent - before
            );
            let expected = ms as f64 / 1000.0 * rate;
            assert!(
                (sent as f64 - expected).abs() <= 1.0,
                "{sent} due by {ms} ms at {rate}/s"
            );
            before = sent;
        }
        // The first at 0 s, then one every 1/51 s.
        assert_eq!(total(2000), 103);
    }
}
