//! `pk`: a PK battle under a gift storm. Two broadcasters publish video (WHIP, the
//! `rtc` scenario's publisher) so their rooms are live; N viewers join each room and
//! read everything; broadcaster A invites B, B accepts; then K senders per side send
//! gifts as the `gifts` scenario does, for `--duration`. Measures the `pk` (running)
//! events each viewer gets a second, how long after a gift's confirmation at its
//! sender a viewer of that room sees a score that includes it, the confirmed gifts a
//! second, and whether the `finished` event's scores equal the coins confirmed per
//! side. `--no-pk` runs the same video, viewers and storm without the battle.
//!
//! The delay is estimated per side from the confirmation times: for each `running`
//! event whose score for the viewer's room rose, the time since the confirmed coins
//! of that side first reached that score. The storm starts only once the battle runs
//! and stops `seconds - duration` before it ends, so every confirmed gift counts.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use memchr::memmem::Finder;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{connect_all, gifts, rtc, tokens, Joined};
use crate::stats::{Counter, Histogram, Latency, Stats};
use crate::target::{join, Cluster, Target};
use crate::ws::{Read, WebSocket};

#[derive(Debug, Clone)]
pub struct PkLoad {
    /// Viewers in each room.
    pub viewers: usize,
    /// Gift senders in each room.
    pub senders: usize,
    /// Gifts each sender keeps unconfirmed.
    pub inflight: usize,
    /// How long the storm lasts.
    pub duration: Duration,
    /// The battle's length; by default `duration + 5` (at least 10).
    pub seconds: Option<u64>,
    /// The same video, viewers and storm without a battle.
    pub no_pk: bool,
    /// The rooms are `{pair}-a` and `{pair}-b`.
    pub pair: String,
    /// Each broadcaster's video bitrate.
    pub video_kbps: u32,
    pub ramp: u32,
}

#[derive(Debug, Serialize)]
pub struct PkReport {
    pub rooms: [String; 2],
    /// 1 with the battle, 0 for `--no-pk`.
    pub pk: u8,
    pub viewers_per_room: usize,
    pub senders_per_side: usize,
    pub gifts_sent: u64,
    pub confirmed: u64,
    pub confirmed_per_s: f64,
    pub confirm_latency: Latency,
    /// Coins of the gifts confirmed to each room (by room).
    pub confirmed_coins: BTreeMap<String, u64>,
    pub errors: u64,
    pub disconnects: u64,
    /// Every message a viewer received during the storm, per second and viewer.
    pub room_events_per_s_per_viewer: f64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub battle: Option<BattleReport>,
}

#[derive(Debug, Serialize)]
pub struct BattleReport {
    pub pk_id: String,
    pub pk_seconds: u64,
    /// Whether B's connection received the `pk_invite` event (B accepts either way).
    pub pk_invite_event: u8,
    /// `pk` events with state `running`, during the storm, per second and viewer
    /// (the server sends at most 4).
    pub pk_events_per_s_per_viewer: f64,
    /// From the confirmation (at its sender) of the gift that brought a side's
    /// confirmed coins to a score, to a viewer of that room receiving that score.
    pub pk_delay: Latency,
    pub pk_delay_samples: u64,
    /// Scores a viewer received before the senders had confirmed that many coins
    /// (recorded as a delay of 0).
    pub pk_events_before_confirm: u64,
    /// Scores above all coins confirmed to that side in the whole run.
    pub pk_scores_above_confirmed: u64,
    /// Whether a `finished` event arrived (waiting up to `seconds + 10` s).
    pub pk_finished: u8,
    pub pk_finished_viewers: usize,
    pub pk_final_scores: BTreeMap<String, u64>,
    /// The winning room, or `draw`.
    pub pk_winner: String,
    /// 1 when the final scores equal `confirmed_coins` on both sides.
    pub pk_score_matches: u8,
}

/// What a viewer's task saw.
#[derive(Default)]
struct ViewerLog {
    /// Messages received while measuring.
    messages: u64,
    /// Every `running` event.
    running: Vec<Instant>,
    /// `running` events whose score for the viewer's room rose, with that score.
    rises: Vec<(Instant, u64)>,
    finished: Option<Value>,
}

/// Shared by the viewers.
#[derive(Default)]
struct Shared {
    measuring: AtomicBool,
    finished: Counter,
}

static PK_EVENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\"pk\""));

pub async fn run(cluster: &Cluster, load: &PkLoad, stats: Arc<Stats>) -> anyhow::Result<PkReport> {
    let (viewers, senders) = (load.viewers, load.senders.max(1));
    let rooms = [format!("{}-a", load.pair), format!("{}-b", load.pair)];
    let hosts = [cluster.node(0).clone(), cluster.node(1).clone()];
    let seconds = load
        .seconds
        .unwrap_or_else(|| (load.duration.as_secs() + 5).max(10));
    let run_id = super::unix_micros();

    // The broadcasters go live.
    let api = rtc::loopback_api()?;
    let mut owners = Vec::new();
    let mut publishers = Vec::new();
    for (room, host) in rooms.iter().zip(&hosts) {
        let token = host.token_as(room, "broadcaster").await?;
        let (session, _) = rtc::publish(host, &api, room, &token, 15, load.video_kbps)
            .await
            .with_context(|| format!("publishing to {room}"))?;
        publishers.push(session);
        owners.push(token);
    }
    for (room, host) in rooms.iter().zip(&hosts) {
        wait_until_live(host, room).await?;
    }
    eprintln!("{} and {} are live", rooms[0], rooms[1]);
    let mut broadcasters = Vec::new();
    for ((room, host), token) in rooms.iter().zip(&hosts).zip(&owners) {
        let mut socket = host.connect(token).await?;
        join(&mut socket, room).await?;
        broadcasters.push(socket);
    }

    // Senders `0..2K` (side `i % 2`), then the viewers (side `i % 2` too).
    let tokens = tokens(cluster, 2 * senders + 2 * viewers).await?;
    let (sticker, price) = cluster.node(0).cheapest_sticker().await?;
    gifts::top_up_all(cluster, &tokens[..2 * senders], price * 1_000_000, run_id).await?;
    let side_of = |i: usize| i % 2;
    let mut clients = connect_all(
        cluster,
        &tokens,
        |i| rooms[side_of(i)].clone(),
        load.ramp,
        &stats,
    )
    .await?;
    let watchers = clients.split_off(2 * senders);

    let shared = Arc::new(Shared::default());
    let (stop, stopped) = watch::channel(false);
    let viewer_tasks: Vec<_> = watchers
        .into_iter()
        .map(|viewer| {
            let (shared, stats, stopped) = (shared.clone(), stats.clone(), stopped.clone());
            tokio::spawn(async move { watch_room(viewer, shared, stats, stopped).await })
        })
        .collect();

    let battle = if load.no_pk {
        None
    } else {
        let [a, b] = &mut broadcasters[..] else {
            unreachable!("two broadcasters")
        };
        Some(start_battle(a, b, &rooms, seconds).await?)
    };
    // Broadcasters hear the storm too: keep reading.
    let drains: Vec<_> = broadcasters
        .into_iter()
        .map(|socket| {
            let stopped = stopped.clone();
            tokio::spawn(drain(socket, stopped))
        })
        .collect();

    // The storm.
    shared.measuring.store(true, Relaxed);
    let started = Instant::now();
    let deadline = started + load.duration;
    let sender_tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let side = side_of(client.index);
            let (stats, sticker) = (stats.clone(), sticker.clone());
            let inflight = load.inflight.max(1);
            tokio::spawn(async move {
                let mut confirmed = Vec::new();
                gifts::storm(client, &sticker, inflight, deadline, run_id, stats, |at| {
                    confirmed.push(at)
                })
                .await;
                (side, confirmed)
            })
        })
        .collect();
    let mut confirms: [Vec<Instant>; 2] = [Vec::new(), Vec::new()];
    for task in sender_tasks {
        let (side, times) = task.await?;
        confirms[side].extend(times);
    }
    let ended = Instant::now();
    shared.measuring.store(false, Relaxed);
    let window = (ended - started).as_secs_f64();
    for times in &mut confirms {
        times.sort();
    }

    if let Some((_, accepted, _)) = &battle {
        let until = *accepted + Duration::from_secs(seconds + 10);
        eprintln!("waiting for the battle's end (up to {seconds} + 10 s after the accept)");
        while shared.finished.get() < 2 * viewers as u64 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        // Messages in flight.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.send_replace(true);
    let mut logs = Vec::with_capacity(viewer_tasks.len());
    for task in viewer_tasks {
        logs.push(task.await?);
    }
    for task in drains {
        let _ = task.await;
    }
    for (session, (host, token)) in publishers.into_iter().zip(hosts.iter().zip(&owners)) {
        session.end(host, Some(token)).await;
    }

    let confirmed = (confirms[0].len() + confirms[1].len()) as u64;
    let coins = [
        confirms[0].len() as u64 * price,
        confirms[1].len() as u64 * price,
    ];
    let viewer_count = logs.len().max(1) as f64;
    let battle = battle.map(|(pk_id, _, invite_event)| {
        battle_report(BattleInputs {
            pk_id,
            seconds,
            invite_event,
            logs: &logs,
            rooms: &rooms,
            confirms: &confirms,
            coins,
            price,
            window: (started, ended),
        })
    });
    Ok(PkReport {
        rooms: rooms.clone(),
        pk: u8::from(!load.no_pk),
        viewers_per_room: viewers,
        senders_per_side: senders,
        gifts_sent: stats.sent.get(),
        confirmed,
        confirmed_per_s: confirmed as f64 / window,
        confirm_latency: stats.latency.summary(),
        confirmed_coins: rooms.iter().cloned().zip(coins).collect(),
        errors: stats.errors.get(),
        disconnects: stats.disconnects.get(),
        room_events_per_s_per_viewer: logs.iter().map(|(_, log)| log.messages).sum::<u64>() as f64
            / (viewer_count * window),
        battle,
    })
}

struct BattleInputs<'a> {
    pk_id: String,
    seconds: u64,
    invite_event: bool,
    /// Each viewer's side and log.
    logs: &'a [(usize, ViewerLog)],
    rooms: &'a [String; 2],
    /// Each side's confirmation times, in order.
    confirms: &'a [Vec<Instant>; 2],
    coins: [u64; 2],
    price: u64,
    /// The storm's start and end.
    window: (Instant, Instant),
}

fn battle_report(inputs: BattleInputs<'_>) -> BattleReport {
    let BattleInputs {
        logs,
        rooms,
        confirms,
        coins,
        price,
        window: (started, ended),
        ..
    } = inputs;
    let delay = Histogram::default();
    let (mut early, mut above) = (0, 0);
    for (side, log) in logs {
        let times = &confirms[*side];
        for &(at, score) in &log.rises {
            // The confirmation that brought the side's confirmed coins to `score`.
            let gifts = score.div_ceil(price.max(1)) as usize;
            let Some(confirmed) = gifts.checked_sub(1).and_then(|i| times.get(i)) else {
                above += u64::from(gifts > 0);
                continue;
            };
            if at < *confirmed {
                early += 1;
            }
            delay.record(at.saturating_duration_since(*confirmed).as_micros() as u64);
        }
    }
    let running: usize = logs
        .iter()
        .map(|(_, log)| {
            log.running
                .iter()
                .filter(|at| **at >= started && **at <= ended)
                .count()
        })
        .sum();
    let seconds = (ended - started).as_secs_f64();
    let finished = logs.iter().find_map(|(_, log)| log.finished.as_ref());
    let final_scores: BTreeMap<String, u64> = rooms
        .iter()
        .filter_map(|room| {
            let score = finished?["scores"][room.as_str()].as_u64()?;
            Some((room.clone(), score))
        })
        .collect();
    let matches = rooms
        .iter()
        .zip(coins)
        .all(|(room, coins)| final_scores.get(room) == Some(&coins));
    BattleReport {
        pk_id: inputs.pk_id,
        pk_seconds: inputs.seconds,
        pk_invite_event: u8::from(inputs.invite_event),
        pk_events_per_s_per_viewer: running as f64 / (logs.len().max(1) as f64 * seconds),
        pk_delay: delay.summary(),
        pk_delay_samples: delay.count(),
        pk_events_before_confirm: early,
        pk_scores_above_confirmed: above,
        pk_finished: u8::from(finished.is_some()),
        pk_finished_viewers: logs.iter().filter(|(_, l)| l.finished.is_some()).count(),
        pk_winner: finished
            .map(|f| f["winner"].as_str().unwrap_or("draw").to_owned())
            .unwrap_or_default(),
        pk_final_scores: final_scores,
        pk_score_matches: u8::from(finished.is_some() && matches),
    }
}

/// Polls the node's `/api/rooms` until `room` is live (its video reached the relay).
async fn wait_until_live(host: &Target, room: &str) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(15);
    while Instant::now() < give_up {
        let rooms: Value = host
            .request(reqwest::Method::GET, "/api/rooms")
            .send()
            .await?
            .json()
            .await?;
        let live = rooms["rooms"]
            .as_array()
            .is_some_and(|rooms| rooms.iter().any(|r| r["room"] == room && r["live"] == true));
        if live {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{room} did not go live within 15 s of its WHIP publish")
}

/// A invites B, B accepts: the battle's id, when it was accepted, and whether B's
/// connection got the `pk_invite` event.
async fn start_battle(
    a: &mut WebSocket,
    b: &mut WebSocket,
    rooms: &[String; 2],
    seconds: u64,
) -> anyhow::Result<(String, Instant, bool)> {
    let mut attempt = 0;
    let pk = loop {
        let rid = format!("invite-{attempt}");
        let invite = json!({
            "type": "pk_invite", "room": rooms[0], "opponent": rooms[1],
            "seconds": seconds, "rid": rid,
        });
        let reply = ask(a, &invite, &rid).await?;
        if reply["type"] == "ok" {
            break reply["pk"]
                .as_str()
                .context("pk_invite answered without pk")?
                .to_owned();
        }
        match reply["code"].as_str() {
            // The opponent's liveness may take a moment to reach the inviter's node.
            Some("not_found") if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some("rate_limited") => bail!(
                "pk_invite refused by the battle rules ({reply}); use a fresh server, another \
                 --pair, or a server configured with loadtest/pk.toml"
            ),
            _ => bail!("pk_invite refused: {reply}"),
        }
    };
    let invited = wait_for_invite(b, &pk).await;
    let accept = json!({"type": "pk_accept", "pk": pk, "rid": "accept"});
    let reply = ask(b, &accept, "accept").await?;
    if reply["type"] != "ok" {
        bail!("pk_accept refused: {reply}");
    }
    eprintln!("battle {pk} running for {seconds} s");
    Ok((pk, Instant::now(), invited))
}

/// Sends `message` and returns the reply carrying `rid` (other messages skipped).
async fn ask(socket: &mut WebSocket, message: &Value, rid: &str) -> anyhow::Result<Value> {
    socket.send_text(&message.to_string()).await?;
    let needle = format!("\"rid\":\"{rid}\"");
    let reply = async {
        while let Some(text) = socket.next_text().await? {
            if text.contains(&needle) {
                return Ok(serde_json::from_str(&text)?);
            }
        }
        bail!("connection closed waiting for the reply to {rid}")
    };
    tokio::time::timeout(Duration::from_secs(10), reply)
        .await
        .with_context(|| format!("no reply to {rid} within 10 s"))?
}

/// Whether the `pk_invite` event for `pk` arrives within 5 s.
async fn wait_for_invite(socket: &mut WebSocket, pk: &str) -> bool {
    let wait = async {
        while let Ok(Some(text)) = socket.next_text().await {
            if text.contains("\"type\":\"pk_invite\"") && text.contains(pk) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

/// Reads (and forgets) everything until stopped.
async fn drain(mut socket: WebSocket, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            biased;
            _ = stopped.changed() => return,
            read = socket.read(|_| ControlFlow::Continue(())) => {
                if !matches!(read, Ok(Read::Open)) {
                    return;
                }
            }
        }
    }
}

/// A viewer: reads everything until stopped, noting the `pk` events.
async fn watch_room(
    viewer: Joined,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    mut stopped: watch::Receiver<bool>,
) -> (usize, ViewerLog) {
    let side = viewer.index % 2;
    let Joined {
        mut socket, room, ..
    } = viewer;
    let mut log = ViewerLog::default();
    let mut score = 0;
    loop {
        let mut batch: Option<(Instant, bool)> = None;
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            read = socket.read(|text| {
                let (now, measuring) =
                    *batch.get_or_insert_with(|| (Instant::now(), shared.measuring.load(Relaxed)));
                stats.delivered.add(1);
                log.messages += u64::from(measuring);
                if PK_EVENT.find(text).is_some() {
                    observe_pk(text, now, &room, &mut score, &mut log, &shared);
                }
                ControlFlow::Continue(())
            }) => if !matches!(read, Ok(Read::Open)) {
                stats.disconnects.add(1);
                break;
            },
        }
    }
    (side, log)
}

fn observe_pk(
    text: &[u8],
    now: Instant,
    room: &str,
    score: &mut u64,
    log: &mut ViewerLog,
    shared: &Shared,
) {
    // The fields read, borrowed: a viewer sees up to 4 of these a second, and the
    // load tester shares the server's cores.
    #[derive(serde::Deserialize)]
    struct Seen<'a> {
        #[serde(borrow)]
        state: &'a str,
        #[serde(borrow, default)]
        scores: std::collections::HashMap<&'a str, u64>,
    }
    let Ok(seen) = serde_json::from_slice::<Seen>(text) else {
        return;
    };
    match seen.state {
        "running" => {
            log.running.push(now);
            let now_score = seen.scores.get(room).copied().unwrap_or_default();
            if now_score > *score {
                *score = now_score;
                log.rises.push((now, now_score));
            }
        }
        "finished" if log.finished.is_none() => {
            log.finished = serde_json::from_slice::<Value>(text).ok();
            shared.finished.add(1);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_runs_from_the_confirmation_that_reached_the_score() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let rooms = ["x-a".to_owned(), "x-b".to_owned()];
        let shared = Shared::default();
        let mut log = ViewerLog::default();
        let mut score = 0;
        for (at, text) in [
            (
                5,
                r#"{"type":"pk","state":"running","scores":{"x-a":0,"x-b":0}}"#,
            ),
            (
                40,
                r#"{"type":"pk","state":"running","scores":{"x-a":20,"x-b":10}}"#,
            ),
            (
                60,
                r#"{"type":"pk","state":"running","scores":{"x-a":20,"x-b":30}}"#,
            ),
            (
                90,
                r#"{"type":"pk","state":"running","scores":{"x-a":50,"x-b":30}}"#,
            ),
            (
                900,
                r#"{"type":"pk","state":"finished","winner":"x-a","scores":{"x-a":30,"x-b":30}}"#,
            ),
        ] {
            assert!(PK_EVENT.find(text.as_bytes()).is_some());
            observe_pk(
                text.as_bytes(),
                ms(at),
                "x-a",
                &mut score,
                &mut log,
                &shared,
            );
        }
        assert_eq!(log.running.len(), 4);
        assert_eq!(log.rises, [(ms(40), 20), (ms(90), 50)]);
        assert_eq!(shared.finished.get(), 1);
        // Gifts of 10 coins to x-a confirmed at 10, 30 and 100 ms.
        let confirms = [vec![ms(10), ms(30), ms(100)], vec![ms(20), ms(35), ms(50)]];
        let logs = [(0, log)];
        let report = battle_report(BattleInputs {
            pk_id: "pk_1".into(),
            seconds: 10,
            invite_event: true,
            logs: &logs,
            rooms: &rooms,
            confirms: &confirms,
            coins: [30, 30],
            price: 10,
            window: (t0, ms(1000)),
        });
        // 20 coins reached at 30 ms, seen at 40; 50 never confirmed.
        assert_eq!(report.pk_delay_samples, 1);
        assert_eq!(report.pk_delay.max_ms, 10.0);
        assert_eq!(report.pk_scores_above_confirmed, 1);
        assert_eq!(report.pk_events_per_s_per_viewer, 4.0);
        assert_eq!(report.pk_score_matches, 1);
        assert_eq!(report.pk_winner, "x-a");
        assert!(PK_EVENT
            .find(br#"{"type":"pk_invite","pk":"pk_1"}"#)
            .is_none());
    }
}
