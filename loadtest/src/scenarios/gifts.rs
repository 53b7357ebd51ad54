//! Gift storm: every client keeps gifts in flight and times each confirmation, which
//! the server sends only after the gift is durably committed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::{connect_all, tokens, Joined};
use crate::scan::string_field;
use crate::stats::{Latency, Stats};
use crate::target::Cluster;

#[derive(Debug, Clone)]
pub struct GiftLoad {
    pub clients: usize,
    pub rooms: usize,
    /// Gifts each client keeps unconfirmed at once.
    pub inflight: usize,
    pub duration: Duration,
    pub ramp: u32,
}

#[derive(Debug, Serialize)]
pub struct GiftReport {
    pub clients: usize,
    pub rooms: usize,
    pub inflight: usize,
    pub confirmed: u64,
    pub confirmed_per_s: f64,
    pub confirm_latency: Latency,
    pub errors: u64,
}

pub async fn run(
    cluster: &Cluster,
    load: &GiftLoad,
    stats: Arc<Stats>,
) -> anyhow::Result<GiftReport> {
    let rooms = load.rooms.max(1);
    let tokens = tokens(cluster, load.clients).await?;
    // Every node serves the same catalog.
    let (sticker, price) = cluster.node(0).cheapest_sticker().await?;
    // Enough coins that nobody runs dry during the run.
    let coins = price * 1_000_000;
    let run_id = super::unix_micros();
    top_up_all(cluster, &tokens, coins, run_id).await?;
    let clients = connect_all(
        cluster,
        &tokens,
        |i| format!("lt-gifts-{}", i % rooms),
        load.ramp,
        &stats,
    )
    .await?;

    let deadline = Instant::now() + load.duration;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let stats = stats.clone();
            let sticker = sticker.clone();
            let inflight = load.inflight.max(1);
            tokio::spawn(async move {
                storm(client, &sticker, inflight, deadline, run_id, stats, |_| {}).await
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed();
    let confirmed = stats.latency.count();
    Ok(GiftReport {
        clients: load.clients,
        rooms,
        inflight: load.inflight,
        confirmed,
        confirmed_per_s: confirmed as f64 / elapsed.as_secs_f64(),
        confirm_latency: stats.latency.summary(),
        errors: stats.errors.get(),
    })
}

/// Tops up client `i` (token `tokens[i]`, on its node) with `coins`, a few dozen at
/// a time.
pub async fn top_up_all(
    cluster: &Cluster,
    tokens: &[String],
    coins: u64,
    run_id: u64,
) -> anyhow::Result<()> {
    stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| {
            let target = cluster.node(i).clone();
            async move {
                target
                    .top_up(token, coins, &format!("lt-topup-{run_id}-{i}"))
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(())
}

/// Sends gifts of one `sticker` in the client's room, keeping `inflight` unconfirmed,
/// until `deadline`, then waits for the last confirmations. Calls `on_confirm` with
/// the time of each confirmation.
pub async fn storm(
    client: Joined,
    sticker: &str,
    inflight: usize,
    deadline: Instant,
    run_id: u64,
    stats: Arc<Stats>,
    mut on_confirm: impl FnMut(Instant),
) {
    let Joined {
        mut socket,
        room,
        index,
        ..
    } = client;
    let mut next = 0u64;
    // The server answers one connection's messages in order: the oldest send time
    // belongs to the next reply.
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    loop {
        while waiting.len() < inflight && Instant::now() < deadline {
            let message = serde_json::json!({
                "type": "gift", "room": room, "sticker": sticker, "count": 1,
                "key": format!("lt-{run_id}-{index}-{next}"), "rid": next,
            });
            if socket.send_text(&message.to_string()).await.is_err() {
                return;
            }
            waiting.push_back(Instant::now());
            stats.sent.add(1);
            next += 1;
        }
        if waiting.is_empty() {
            return;
        }
        let Ok(Some(text)) = socket.next_text().await else {
            stats.disconnects.add(1);
            return;
        };
        match string_field(&text, "type") {
            Some("ok") if text.contains("\"gift_id\"") => {
                let sent = waiting.pop_front().expect("a reply follows a request");
                let now = Instant::now();
                stats.latency.record((now - sent).as_micros() as u64);
                on_confirm(now);
            }
            Some("error") => {
                waiting.pop_front();
                stats.errors.add(1);
            }
            _ => {}
        }
    }
}
