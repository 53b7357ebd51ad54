//! `loadtest`: drives a running Ovation server (or a peer speaking the same protocol)
//! over loopback with many real WebSocket clients, checks what they receive, and
//! reports throughput, latency and correctness as a table and JSON.

mod scan;
mod scenarios;
mod stats;
mod target;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use serde_json::json;

use scenarios::chat::{ChatLoad, ChatReport};
use scenarios::gifts::GiftLoad;
use stats::{Counts, Stats};
use target::Cluster;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "Load generator for Ovation (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct Common {
    /// The server's base URL, or a comma-separated list of a cluster's nodes' base
    /// URLs; each must resolve to loopback addresses only. Client i fetches its token,
    /// makes its HTTP calls and opens its WebSocket on node i % (number of URLs);
    /// server memory and CPU are summed over all nodes. `rtc` publishes to the first
    /// URL and spreads its viewers by `--spread`.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Seconds to measure for.
    #[arg(long, global = true, default_value_t = 10)]
    duration: u64,
    /// New connections per second while ramping up.
    #[arg(long, global = true, default_value_t = 5000)]
    ramp: u32,
    /// Tokio worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 1)]
    workers: usize,
    /// Run with the normal scheduling policy. By default the load generator runs as
    /// SCHED_BATCH, so that its wake-ups do not preempt the server it measures on
    /// the same cores.
    #[arg(long, global = true)]
    normal_priority: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Args, Clone)]
struct ChatArgs {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Chat messages per second, over all rooms.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Sending clients per room.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Bytes of chat text per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of load before measuring starts: latency and rate then leave out the
    /// server's start-up (its first touch of fresh memory, growing queues). Sequence
    /// checks cover the warm-up too.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
}

#[derive(Subcommand)]
enum Scenario {
    /// One room, every client in it, a few senders.
    Fanout(ChatArgs),
    /// Clients spread over many rooms, senders in each.
    Rooms {
        #[command(flatten)]
        chat: ChatArgs,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
    },
    /// Fanout in pairs of runs: all clients reading, then a share that stops reading;
    /// compares the readers' median p99 over the rounds.
    Slow {
        #[command(flatten)]
        chat: ChatArgs,
        #[arg(long, default_value_t = 0.1)]
        slow_share: f64,
        /// Pairs of runs: one run's p99 moves by tens of percent between runs on a
        /// shared machine, so one pair cannot resolve a 20 % change.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Gift storm: confirmed gifts per second and confirm latency.
    Gifts {
        #[arg(long, default_value_t = 200)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        rooms: usize,
        /// Gifts each client keeps unconfirmed.
        #[arg(long, default_value_t = 1)]
        inflight: usize,
    },
    /// Signed purchase notifications: credited per second and answer latency.
    Purchases {
        #[arg(long, default_value_t = 50)]
        senders: usize,
        /// The server's `[payments] standard_secret` (a dev server's own is random: set
        /// one in its config, as loadtest/payments.toml does).
        #[arg(long, default_value = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
        secret: String,
        #[arg(long, default_value = "p100")]
        pack: String,
    },
    /// One WHIP publisher, many WHEP viewers: loss, delay and server CPU per viewer;
    /// with several --url, the same for each node (the first is the origin).
    Rtc {
        #[arg(long, default_value_t = 200)]
        viewers: usize,
        #[arg(long, default_value_t = 2500)]
        bitrate_kbps: u32,
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// New viewers per second.
        #[arg(long, default_value_t = 50)]
        viewer_ramp: u32,
        /// With several --url: viewers round-robin over the nodes after the first
        /// (`edges`), or over all of them (`all`, origin and edge viewers side by side).
        #[arg(long, value_enum, default_value_t = scenarios::rtc::Spread::Edges)]
        spread: scenarios::rtc::Spread,
    },
    /// Likes: viewers of one room tap hearts together; replies, errors by code, and
    /// the room's coalesced `likes` events (rate, last total against taps sent).
    Likes {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// `like` messages a second over all clients, spread evenly. Keep it under
        /// 30 per client (the server's default per-user limit) unless measuring
        /// `rate_limited`.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Taps per message (1..=15).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Sends likes without `rid`, as a page that does not wait for them does:
        /// the server answers only errors (no latency is measured).
        #[arg(long)]
        no_rid: bool,
        /// The room (default: a fresh `lt-likes-<time>` per run).
        #[arg(long)]
        room: Option<String>,
    },
    /// PK battle during a gift storm: two live rooms (WHIP publishers), N viewers
    /// each, K senders per side; score events' rate and delay, and the final scores
    /// against the coins confirmed.
    Pk {
        /// Viewers in each room.
        #[arg(long, default_value_t = 100)]
        viewers: usize,
        /// Gift senders in each room.
        #[arg(long, default_value_t = 20)]
        senders: usize,
        /// Gifts each sender keeps unconfirmed.
        #[arg(long, default_value_t = 1)]
        inflight: usize,
        /// The battle's length (default: --duration + 5, at least 10).
        #[arg(long)]
        seconds: Option<u64>,
        /// The same video, viewers and storm, without the battle.
        #[arg(long)]
        no_pk: bool,
        /// The rooms are PAIR-a and PAIR-b. A pair may battle again only after the
        /// server's `[pk] cooldown_s` (see loadtest/pk.toml).
        #[arg(long, default_value = "lt-pk")]
        pair: String,
        /// Each broadcaster's video bitrate (it only makes the rooms live).
        #[arg(long, default_value_t = 250)]
        video_kbps: u32,
    },
    /// Idle connections: server memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cluster = Cluster::parse(&cli.common.url)?;
    let open_files = target::raise_open_files();
    eprintln!("open-file limit {open_files}");
    if !cli.common.normal_priority {
        // Before the runtime starts: its threads inherit the policy.
        target::yield_to_the_server()?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.workers.max(1))
        .enable_all()
        .build()?
        .block_on(run(cli, cluster))
}

async fn run(cli: Cli, cluster: Cluster) -> anyhow::Result<()> {
    let common = &cli.common;
    let duration = Duration::from_secs(common.duration);
    let chat = |args: &ChatArgs, rooms: usize, slow_share: f64| ChatLoad {
        clients: args.clients,
        rooms,
        senders_per_room: args.senders,
        rate: args.rate,
        duration,
        ramp: common.ramp,
        size: args.size,
        slow_share,
        warmup: Duration::from_secs(args.warmup),
    };
    let mut report = match &cli.scenario {
        Scenario::Fanout(args) => {
            json!({"scenario": "fanout", "result": chat_run(&cluster, &chat(args, 1, 0.0)).await?})
        }
        Scenario::Rooms { chat: args, rooms } => {
            json!({"scenario": "rooms", "result": chat_run(&cluster, &chat(args, *rooms, 0.0)).await?})
        }
        Scenario::Slow {
            chat: args,
            slow_share,
            rounds,
        } => {
            const CLOSED: &str = "ovation_slow_consumer_disconnects_total";
            let closed_before = cluster.metric(CLOSED).await.unwrap_or_default();
            let mut baseline = Vec::new();
            let mut slowed = Vec::new();
            for _ in 0..(*rounds).max(1) {
                baseline.push(chat_run(&cluster, &chat(args, 1, 0.0)).await?);
                slowed.push(chat_run(&cluster, &chat(args, 1, *slow_share)).await?);
            }
            let mut report = slow_report(&baseline, &slowed);
            // Ovation's own count (absent from a peer's metrics, then 0).
            let closed = cluster.metric(CLOSED).await.unwrap_or_default() - closed_before;
            report["closed_by_server_as_slow"] = json!(closed);
            report
        }
        Scenario::Gifts {
            clients,
            rooms,
            inflight,
        } => {
            let load = GiftLoad {
                clients: *clients,
                rooms: *rooms,
                inflight: *inflight,
                duration,
                ramp: common.ramp,
            };
            let stats = watched(Stats::default());
            json!({"scenario": "gifts", "result": scenarios::gifts::run(&cluster, &load, stats).await?})
        }
        Scenario::Purchases {
            senders,
            secret,
            pack,
        } => {
            let load = scenarios::purchases::PurchaseLoad {
                senders: *senders,
                secret: secret.clone(),
                pack: pack.clone(),
                duration,
            };
            let stats = watched(Stats::default());
            json!({"scenario": "purchases", "result": scenarios::purchases::run(&cluster, &load, stats).await?})
        }
        Scenario::Rtc {
            viewers,
            bitrate_kbps,
            fps,
            viewer_ramp,
            spread,
        } => {
            let load = scenarios::rtc::RtcLoad {
                viewers: *viewers,
                bitrate_kbps: *bitrate_kbps,
                fps: *fps,
                ramp: *viewer_ramp,
                duration,
                spread: *spread,
            };
            let stats = watched(Stats::default());
            json!({"scenario": "rtc", "result": scenarios::rtc::run(&cluster, &load, stats).await?})
        }
        Scenario::Likes {
            clients,
            rate,
            count,
            no_rid,
            room,
        } => {
            let load = scenarios::likes::LikeLoad {
                clients: *clients,
                rate: *rate,
                count: *count,
                no_rid: *no_rid,
                duration,
                ramp: common.ramp,
                room: room.clone(),
            };
            let stats = watched(Stats::default());
            json!({"scenario": "likes", "result": scenarios::likes::run(&cluster, &load, stats).await?})
        }
        Scenario::Pk {
            viewers,
            senders,
            inflight,
            seconds,
            no_pk,
            pair,
            video_kbps,
        } => {
            let load = scenarios::pk::PkLoad {
                viewers: *viewers,
                senders: *senders,
                inflight: *inflight,
                duration,
                seconds: *seconds,
                no_pk: *no_pk,
                pair: pair.clone(),
                video_kbps: *video_kbps,
                ramp: common.ramp,
            };
            let stats = watched(Stats::default());
            json!({"scenario": if *no_pk { "pk-baseline" } else { "pk" }, "result": scenarios::pk::run(&cluster, &load, stats).await?})
        }
        Scenario::Idle { clients, rooms } => {
            let stats = watched(Stats::default());
            let settle = Duration::from_secs(2);
            json!({"scenario": "idle", "result": scenarios::idle::run(&cluster, *clients, *rooms, common.ramp, settle, stats).await?})
        }
    };
    // Every report is a JSON object, so this adds a field.
    report["nodes"] = json!(cluster.len());
    print_table(&report);
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

/// The readers' p99 of each round, their medians and ratio, and the correctness
/// counts summed over all runs.
fn slow_report(baseline: &[ChatReport], slowed: &[ChatReport]) -> serde_json::Value {
    let p99s = |runs: &[ChatReport]| runs.iter().map(|r| r.latency.p99_ms).collect::<Vec<_>>();
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let all = || baseline.iter().chain(slowed);
    let (baseline_p99, slowed_p99) = (median(p99s(baseline)), median(p99s(slowed)));
    json!({
        "scenario": "slow",
        "slow_clients": slowed[0].slow_clients,
        "baseline_p99_ms": p99s(baseline),
        "with_slow_clients_p99_ms": p99s(slowed),
        "baseline_median_p99_ms": baseline_p99,
        "with_slow_clients_median_p99_ms": slowed_p99,
        "p99_ratio": slowed_p99 / baseline_p99.max(0.001),
        "readers_delivered_per_s": slowed.iter().map(|r| r.delivered_per_s).collect::<Vec<_>>(),
        "gaps": all().map(|r| r.gaps).sum::<u64>(),
        "duplicates": all().map(|r| r.duplicates).sum::<u64>(),
        "reorders": all().map(|r| r.reorders).sum::<u64>(),
        "errors": all().map(|r| r.errors).sum::<u64>(),
        "disconnects": all().map(|r| r.disconnects).sum::<u64>(),
    })
}

async fn chat_run(cluster: &Cluster, load: &ChatLoad) -> anyhow::Result<ChatReport> {
    scenarios::chat::run(cluster, load, watched(Stats::default())).await
}

/// Starts the once-a-second progress line on stderr for these stats.
fn watched(stats: Stats) -> Arc<Stats> {
    let stats = Arc::new(stats);
    let seen = Arc::downgrade(&stats);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let mut last = 0;
        let mut last_counts = Counts::empty();
        every.tick().await;
        while let Some(stats) = seen.upgrade() {
            every.tick().await;
            let delivered = stats.delivered.get().max(stats.latency.count());
            let counts = stats.latency.counts();
            let ms = |micros: u64| micros as f64 / 1000.0;
            eprintln!(
                "connected {:>6}  sent {:>9}  delivered {:>10} ({:>9}/s)  \
                 p99 {:>7.1} ms (last second {:>7.1} ms)  errors {}",
                stats.connected.get(),
                stats.sent.get(),
                delivered,
                delivered - last,
                ms(counts.quantile(0.99)),
                ms(counts.since(&last_counts).quantile(0.99)),
                stats.errors.get(),
            );
            last = delivered;
            last_counts = counts;
        }
    });
    stats
}

/// The report as `key  value` lines, nested keys joined with dots.
fn print_table(report: &serde_json::Value) {
    fn walk(prefix: &str, value: &serde_json::Value, rows: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&name, value, rows);
                }
            }
            serde_json::Value::Number(n) if n.is_f64() => rows.push((
                prefix.into(),
                format!("{:.2}", n.as_f64().unwrap_or_default()),
            )),
            other => rows.push((prefix.into(), other.to_string())),
        }
    }
    let mut rows = Vec::new();
    walk("", report, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("{key:width$}  {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats::Latency;

    fn run(p99_ms: f64, gaps: u64) -> ChatReport {
        ChatReport {
            clients: 10,
            rooms: 1,
            slow_clients: 1,
            sent: 100,
            delivered: 900,
            delivered_per_s: 90.0,
            latency: Latency {
                p50_ms: 1.0,
                p90_ms: 2.0,
                p99_ms,
                max_ms: 50.0,
            },
            gaps,
            duplicates: 0,
            reorders: 0,
            errors: 0,
            disconnects: 0,
        }
    }

    #[test]
    fn the_slow_ratio_compares_medians_and_one_outlier_does_not_move_it() {
        let baseline = [run(20.0, 0), run(45.0, 1), run(18.0, 0)];
        let slowed = [run(22.0, 0), run(21.0, 0), run(90.0, 2)];
        let report = slow_report(&baseline, &slowed);
        assert_eq!(report["baseline_median_p99_ms"], 20.0);
        assert_eq!(report["with_slow_clients_median_p99_ms"], 22.0);
        assert_eq!(report["p99_ratio"], 1.1);
        assert_eq!(report["gaps"], 3, "correctness counts cover every run");
    }
}
