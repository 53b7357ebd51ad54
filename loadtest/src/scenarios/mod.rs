//! The scenarios, and what they share: making many connected, joined clients.

pub mod chat;
pub mod gifts;
pub mod idle;
pub mod likes;
pub mod pk;
pub mod purchases;
pub mod rtc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::stream::{self, StreamExt};

use crate::stats::Stats;
use crate::target::{join, Cluster};
use crate::ws::WebSocket;

/// Tokens for users `lt-0` … `lt-{n-1}`, fetched a few dozen at a time, each from
/// the node its client will use.
pub async fn tokens(cluster: &Cluster, count: usize) -> anyhow::Result<Vec<String>> {
    stream::iter(0..count)
        .map(|i| {
            let target = cluster.node(i).clone();
            async move { target.token(&format!("lt-{i}")).await }
        })
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A connected client that has joined its room.
pub struct Joined {
    pub index: usize,
    pub socket: WebSocket,
    pub room: String,
    pub seq: u64,
}

/// Connects and joins `tokens.len()` clients, client `i` to `room_of(i)` on its
/// node, at most `ramp` new connections a second.
pub async fn connect_all(
    cluster: &Cluster,
    tokens: &[String],
    room_of: impl Fn(usize) -> String,
    ramp: u32,
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<Joined>> {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(tokens.len());
    let mut pending = stream::iter(tokens.iter().enumerate())
        .map(|(index, token)| {
            let room = room_of(index);
            let target = cluster.node(index).clone();
            let due = started + Duration::from_secs_f64(index as f64 / f64::from(ramp.max(1)));
            async move {
                tokio::time::sleep_until(due.into()).await;
                let mut socket = target
                    .connect(token)
                    .await
                    .with_context(|| format!("connecting client {index}"))?;
                let seq = join(&mut socket, &room).await?;
                anyhow::Ok(Joined {
                    index,
                    socket,
                    room,
                    seq,
                })
            }
        })
        .buffer_unordered(256);
    while let Some(joined) = pending.next().await {
        clients.push(joined?);
        stats.connected.add(1);
    }
    clients.sort_by_key(|c| c.index);
    Ok(clients)
}

/// Microseconds since the Unix epoch: the clock both ends of a latency share.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}
