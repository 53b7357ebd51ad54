//! Idle connections: what the servers' resident memory (all nodes together) grows by
//! per joined, idle connection.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{connect_all, tokens};
use crate::stats::Stats;
use crate::target::Cluster;

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub clients: usize,
    pub rooms: usize,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub bytes_per_connection: f64,
}

pub async fn run(
    cluster: &Cluster,
    clients: usize,
    rooms: usize,
    ramp: u32,
    settle: Duration,
    stats: Arc<Stats>,
) -> anyhow::Result<IdleReport> {
    let rooms = rooms.max(1);
    let tokens = tokens(cluster, clients).await?;
    let before = cluster.server_rss().await?;
    let connected = connect_all(
        cluster,
        &tokens,
        |i| format!("lt-idle-{}", i % rooms),
        ramp,
        &stats,
    )
    .await?;
    tokio::time::sleep(settle).await;
    let after = cluster.server_rss().await?;
    drop(connected);
    Ok(IdleReport {
        clients,
        rooms,
        rss_before_bytes: before,
        rss_after_bytes: after,
        bytes_per_connection: after.saturating_sub(before) as f64 / clients as f64,
    })
}
