//! `rtc`: one WHIP publisher sending VP8-framed video at a set bitrate and frame
//! rate, N WHEP viewers. Reports packet loss (from RTP sequence numbers), the delay
//! from the publisher's send to each viewer's first packet of a frame, and the
//! server's CPU per viewer (from `process_cpu_seconds_total` in `/metrics`).
//!
//! Given several nodes of a cluster, the publisher goes to the first (the room's
//! origin) and the viewers round-robin to the others, which become edges pulling the
//! room from the origin (or to all of them, `--spread all`, so origin and edge
//! viewers run side by side). Each node is then reported on its own: its viewers'
//! loss and delay, its CPU, and its media egress and ingress (from its counters of
//! RTP payload bytes), so one run shows what edges take off the origin.
//!
//! Frames are synthetic (a real VP8 frame tag, then the send time and frame number);
//! the relay does not decode, so they load it exactly like camera frames of that size.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::future::try_join_all;
use serde::Serialize;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::codecs::vp8::Vp8Packet;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;
use webrtc::track::track_local::track_local_static_sample::TrackLocalStaticSample;
use webrtc::track::track_local::TrackLocal;

use super::unix_micros;
use crate::stats::{Histogram, Latency, Stats};
use crate::target::{Cluster, Target};

pub struct RtcLoad {
    pub viewers: usize,
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// New viewers per second.
    pub ramp: u32,
    pub duration: Duration,
    pub spread: Spread,
}

/// Which nodes the viewers ask, when `--url` names several; the publisher always
/// goes to the first (the origin). One node takes every viewer either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    /// Round-robin over the nodes after the first: every viewer is an edge's.
    Edges,
    /// Round-robin over all nodes, the origin included: origin and edge viewers in
    /// the same run, so their delays differ by what the hop adds.
    All,
}

impl Spread {
    /// The node viewer `n` asks.
    fn node(self, cluster: &Cluster, n: usize) -> &Target {
        match (cluster.single(), self) {
            (Some(only), _) => only,
            (None, Spread::Edges) => cluster.node(1 + n % (cluster.len() - 1)),
            (None, Spread::All) => cluster.node(n),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RtcReport {
    pub viewers: usize,
    pub bitrate_kbps: u32,
    pub fps: u32,
    pub frames_sent: u64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub loss_percent: f64,
    /// Publisher send to a viewer's first packet of the frame.
    pub delay: Latency,
    /// Summed over the nodes.
    pub server_cpu_cores: f64,
    pub server_cpu_percent_per_viewer: f64,
    pub loadtest_cpu_cores: f64,
    /// Every process of the machine: the nodes and the tester share its cores with
    /// whatever else runs, and this tells how much that was.
    pub machine_cpu_cores: f64,
    pub spread: Spread,
    /// `origin` (the first URL), then `edge1`, `edge2`... in `--url` order.
    pub per_node: BTreeMap<String, NodeReport>,
}

/// One node over the measured window.
#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub url: String,
    /// Viewers this node served (after any redirect).
    pub viewers: usize,
    pub server_cpu_cores: f64,
    /// `None` on a node without viewers (an origin serving only edges).
    pub server_cpu_percent_per_viewer: Option<f64>,
    /// RTP payload bytes a second to viewers and to edges...
    pub egress_bytes_per_s: f64,
    /// ...and from the publisher or, on an edge, from the origin.
    pub ingress_bytes_per_s: f64,
    /// Edges pulling from this node, and this node's pulls, at the window's end.
    pub edge_sessions: f64,
    pub pull_sessions: f64,
    /// Keyframe requests since the node started (fresh for each run): asked by its
    /// viewers and edges, and sent upstream after coalescing.
    pub keyframes_asked: f64,
    pub keyframes_sent: f64,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub loss_percent: f64,
    pub delay: Latency,
    /// This node's viewers' delay less the origin's viewers' in the same run (when
    /// both have viewers): what a hop through an edge adds.
    pub added_delay_p50_ms: Option<f64>,
    pub added_delay_p99_ms: Option<f64>,
}

/// What viewers count into while the measured window is open: the run's totals and
/// each node's.
struct Reception {
    measuring: AtomicBool,
    total: Tally,
    nodes: Vec<Tally>,
}

/// Packets and delays of some viewers.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    lost: AtomicU64,
    delay: Histogram,
}

impl Tally {
    fn loss_percent(&self) -> f64 {
        let (received, lost) = (self.received.load(Relaxed), self.lost.load(Relaxed));
        100.0 * lost as f64 / (received + lost).max(1) as f64
    }
}

/// A node's counters and gauges at one moment; rates are taken between two.
struct Reading {
    cpu_seconds: f64,
    bytes_forwarded: f64,
    bytes_received: f64,
    edge_sessions: f64,
    pull_sessions: f64,
    keyframes_asked: f64,
    keyframes_sent: f64,
}

impl Reading {
    async fn read(target: &Target) -> anyhow::Result<Reading> {
        let (cpu_seconds, bytes_forwarded, bytes_received) = tokio::try_join!(
            target.metric("process_cpu_seconds_total"),
            target.metric("ovation_rtc_bytes_forwarded_total"),
            target.metric("ovation_rtc_bytes_received_total"),
        )?;
        let (edge_sessions, pull_sessions, keyframes_asked, keyframes_sent) = tokio::try_join!(
            target.metric("ovation_rtc_sessions{role=\"edge\"}"),
            target.metric("ovation_rtc_sessions{role=\"pull\"}"),
            target.metric("ovation_rtc_keyframe_requests_asked_total"),
            target.metric("ovation_rtc_keyframe_requests_total"),
        )?;
        Ok(Reading {
            cpu_seconds,
            bytes_forwarded,
            bytes_received,
            edge_sessions,
            pull_sessions,
            keyframes_asked,
            keyframes_sent,
        })
    }

    /// Every node's, read together so that their windows match.
    async fn read_all(cluster: &Cluster) -> anyhow::Result<Vec<Reading>> {
        try_join_all((0..cluster.len()).map(|i| Reading::read(cluster.node(i)))).await
    }
}

pub async fn run(
    cluster: &Cluster,
    load: &RtcLoad,
    stats: Arc<Stats>,
) -> anyhow::Result<RtcReport> {
    let api = Arc::new(loopback_api()?);
    let room = "lt-rtc";
    let origin = cluster.node(0);
    let token = origin.token_as(room, "broadcaster").await?;
    let (publisher, frames_sent) =
        publish(origin, &api, room, &token, load.fps, load.bitrate_kbps).await?;
    let urls = (0..cluster.len())
        .map(|i| base_url(cluster.node(i)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let reception = Arc::new(Reception {
        measuring: AtomicBool::new(false),
        total: Tally::default(),
        nodes: urls.iter().map(|_| Tally::default()).collect(),
    });
    let mut viewers = Vec::with_capacity(load.viewers);
    let mut started = Instant::now();
    for n in 0..load.viewers {
        let due = started + Duration::from_secs_f64(n as f64 / f64::from(load.ramp.max(1)));
        tokio::time::sleep_until(due.into()).await;
        let asked = load.spread.node(cluster, n);
        let viewer = view(asked, &urls, &api, room, reception.clone(), stats.clone()).await;
        viewers.push(viewer.with_context(|| format!("viewer {n}"))?);
        stats.connected.add(1);
        if n == 0 {
            // The first viewer waited for the video (an edge has none before the
            // publisher's first track reaches the origin): the ramp starts now, not
            // with a burst of the viewers that fell due meanwhile.
            started = Instant::now();
        }
    }
    // Let the last viewers reach their first keyframe before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (before, own_before, machine_before, frames_before) = (
        Reading::read_all(cluster).await?,
        own_cpu_seconds(),
        machine_cpu_seconds(),
        frames_sent.load(Relaxed),
    );
    reception.measuring.store(true, Relaxed);
    let window = Instant::now();
    tokio::time::sleep(load.duration).await;
    reception.measuring.store(false, Relaxed);
    let seconds = window.elapsed().as_secs_f64();
    let after = Reading::read_all(cluster).await?;
    let own_cpu = (own_cpu_seconds() - own_before) / seconds;
    let machine_cpu = (machine_cpu_seconds() - machine_before) / seconds;
    let frames = frames_sent.load(Relaxed) - frames_before;
    let mut served = vec![0; urls.len()];
    viewers.iter().for_each(|(node, _)| served[*node] += 1);
    for (node, viewer) in viewers {
        viewer.end(cluster.node(node), None).await;
    }
    publisher.end(origin, Some(&token)).await;
    let per_node = per_node(&urls, &served, &before, &after, seconds, &reception);
    let server_cpu = per_node.values().map(|n| n.server_cpu_cores).sum::<f64>();
    let total = &reception.total;
    Ok(RtcReport {
        viewers: load.viewers,
        bitrate_kbps: load.bitrate_kbps,
        fps: load.fps,
        frames_sent: frames,
        packets_received: total.received.load(Relaxed),
        packets_lost: total.lost.load(Relaxed),
        loss_percent: total.loss_percent(),
        delay: total.delay.summary(),
        server_cpu_cores: server_cpu,
        server_cpu_percent_per_viewer: 100.0 * server_cpu / load.viewers.max(1) as f64,
        loadtest_cpu_cores: own_cpu,
        machine_cpu_cores: machine_cpu,
        spread: load.spread,
        per_node,
    })
}

/// Each node's report, keyed `origin`, `edge1`, `edge2`... in `--url` order.
fn per_node(
    urls: &[String],
    served: &[usize],
    before: &[Reading],
    after: &[Reading],
    seconds: f64,
    reception: &Reception,
) -> BTreeMap<String, NodeReport> {
    let origin = reception.nodes[0].delay.summary();
    let origin_viewed = served[0] > 0;
    (0..urls.len())
        .map(|i| {
            let (then, now, tally) = (&before[i], &after[i], &reception.nodes[i]);
            let rate = |counter: fn(&Reading) -> f64| (counter(now) - counter(then)) / seconds;
            let cpu = rate(|s| s.cpu_seconds);
            let delay = tally.delay.summary();
            let added = |ms: fn(&Latency) -> f64| {
                (i > 0 && origin_viewed && served[i] > 0).then(|| ms(&delay) - ms(&origin))
            };
            let name = if i == 0 {
                "origin".to_owned()
            } else {
                format!("edge{i}")
            };
            let report = NodeReport {
                url: urls[i].clone(),
                viewers: served[i],
                server_cpu_cores: cpu,
                server_cpu_percent_per_viewer: (served[i] > 0)
                    .then(|| 100.0 * cpu / served[i] as f64),
                egress_bytes_per_s: rate(|s| s.bytes_forwarded),
                ingress_bytes_per_s: rate(|s| s.bytes_received),
                edge_sessions: now.edge_sessions,
                pull_sessions: now.pull_sessions,
                keyframes_asked: now.keyframes_asked,
                keyframes_sent: now.keyframes_sent,
                packets_received: tally.received.load(Relaxed),
                packets_lost: tally.lost.load(Relaxed),
                loss_percent: tally.loss_percent(),
                delay,
                added_delay_p50_ms: added(|l| l.p50_ms),
                added_delay_p99_ms: added(|l| l.p99_ms),
            };
            (name, report)
        })
        .collect()
}

/// A node's base URL (`http://host:port`), to tell which node answered a request
/// that was redirected.
fn base_url(target: &Target) -> anyhow::Result<String> {
    let request = target.request(reqwest::Method::GET, "/").build()?;
    Ok(request.url().origin().ascii_serialization())
}

pub(super) fn loopback_api() -> anyhow::Result<API> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// A peer connection and its session's `Location`.
pub(super) struct Session {
    pc: Arc<RTCPeerConnection>,
    location: String,
}

impl Session {
    /// Ends the session on the server (DELETE) and closes the peer connection.
    pub(super) async fn end(self, target: &Target, token: Option<&str>) {
        let mut request = target.request(reqwest::Method::DELETE, &self.location);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let _ = request.send().await;
        let _ = self.pc.close().await;
    }
}

/// How long a viewer keeps asking while its node answers 404 or 503: an edge has no
/// video until the publisher's first track has reached the origin.
const VIEWER_PATIENCE: Duration = Duration::from_secs(10);
/// The wait between two such requests.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// Offers with all candidates, POSTs to `path` (again on 404 or 503 for up to
/// `patience`), applies the answer; returns the session's `Location` and the URL that
/// answered (another node's, when redirected).
async fn negotiate(
    target: &Target,
    pc: &RTCPeerConnection,
    path: &str,
    token: Option<&str>,
    patience: Duration,
) -> anyhow::Result<(String, reqwest::Url)> {
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let give_up = Instant::now() + patience;
    let response = loop {
        let mut request = target
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/sdp")
            .body(sdp.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if matches!(status, 404 | 503) && Instant::now() < give_up {
            tokio::time::sleep(ASK_AGAIN_AFTER).await;
            continue;
        }
        if status != 201 {
            bail!(
                "POST {path} answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        break response;
    };
    let answered_by = response.url().clone();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location in the answer")?
        .to_owned();
    pc.set_remote_description(RTCSessionDescription::answer(response.text().await?)?)
        .await?;
    Ok((location, answered_by))
}

/// A frame of `size` bytes: VP8 frame tag, then the send time and the frame number.
fn frame(number: u64, key: bool, size: usize) -> Bytes {
    let tag = u32::from(!key) | (1 << 4) | ((size as u32 & 0x7_ffff) << 5);
    let mut data = tag.to_le_bytes()[..3].to_vec();
    if key {
        data.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01]); // 640x480
    }
    data.extend_from_slice(&unix_micros().to_be_bytes());
    data.extend_from_slice(&number.to_be_bytes());
    data.resize(size.max(data.len()), 0x5a);
    Bytes::from(data)
}

/// Publishes synthetic video to `room` over WHIP (with its broadcaster's `token`) at
/// `fps` frames a second and `bitrate_kbps`; returns the session and the count of
/// frames sent so far.
pub(super) async fn publish(
    target: &Target,
    api: &API,
    room: &str,
    token: &str,
    fps: u32,
    bitrate_kbps: u32,
) -> anyhow::Result<(Session, Arc<AtomicU64>)> {
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    let video = Arc::new(TrackLocalStaticSample::new(
        RTCRtpCodecCapability {
            mime_type: MIME_TYPE_VP8.into(),
            clock_rate: 90_000,
            ..Default::default()
        },
        "video".into(),
        "loadtest".into(),
    ));
    let sender = pc
        .add_track(video.clone() as Arc<dyn TrackLocal + Send + Sync>)
        .await?;
    let (location, _) = negotiate(
        target,
        &pc,
        &format!("/whip/{room}"),
        Some(token),
        Duration::ZERO,
    )
    .await?;
    let key_wanted = Arc::new(AtomicBool::new(true));
    let wanted = key_wanted.clone();
    tokio::spawn(async move {
        while let Ok((packets, _)) = sender.read_rtcp().await {
            if packets
                .iter()
                .any(|p| p.as_any().is::<PictureLossIndication>())
            {
                wanted.store(true, Relaxed);
            }
        }
    });
    let frames_sent = Arc::new(AtomicU64::new(0));
    let sent = frames_sent.clone();
    let (fps, size) = (
        fps.max(1),
        (bitrate_kbps as usize * 1000 / 8) / fps.max(1) as usize,
    );
    tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / f64::from(fps));
        let mut tick = tokio::time::interval(period);
        let mut number = 0;
        loop {
            tick.tick().await;
            let key = key_wanted.swap(false, Relaxed);
            let sample = Sample {
                data: frame(number, key, size),
                duration: period,
                ..Default::default()
            };
            if video.write_sample(&sample).await.is_err() {
                return;
            }
            number += 1;
            sent.store(number, Relaxed);
        }
    });
    Ok((Session { pc, location }, frames_sent))
}

/// Starts a WHEP viewer of `room` at `target`; returns the index in `urls` of the node
/// that serves it (another, when `target` redirected it) and its session.
async fn view(
    target: &Target,
    urls: &[String],
    api: &API,
    room: &str,
    reception: Arc<Reception>,
    stats: Arc<Stats>,
) -> anyhow::Result<(usize, Session)> {
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    pc.add_transceiver_from_kind(
        RTPCodecType::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            send_encodings: vec![],
        }),
    )
    .await?;
    // Known once the answer says which node serves it, long before measuring starts.
    let serving = Arc::new(OnceLock::<usize>::new());
    let node = serving.clone();
    pc.on_track(Box::new(move |track, receiver, _| {
        let (reception, node, stats) = (reception.clone(), node.clone(), stats.clone());
        tokio::spawn(async move { while receiver.read_rtcp().await.is_ok() {} });
        tokio::spawn(async move {
            let mut vp8 = Vp8Packet::default();
            let mut last_seq: Option<u16> = None;
            while let Ok((packet, _)) = track.read_rtp().await {
                let seq = packet.header.sequence_number;
                let gap = last_seq.map_or(0, |last| seq.wrapping_sub(last).wrapping_sub(1));
                // A big jump back is a reordering, not 60,000 losses.
                let gap = if gap < 0x8000 { u64::from(gap) } else { 0 };
                last_seq = Some(seq);
                stats.delivered.add(1);
                let Some(&node) = node.get() else { continue };
                if !reception.measuring.load(Relaxed) {
                    continue;
                }
                let tallies = [&reception.total, &reception.nodes[node]];
                for tally in tallies {
                    tally.received.fetch_add(1, Relaxed);
                    tally.lost.fetch_add(gap, Relaxed);
                }
                // The first packet of a frame (start of partition 0) carries its send time.
                let Ok(payload) = vp8.depacketize(&packet.payload) else {
                    continue;
                };
                if vp8.s == 1 && vp8.pid == 0 && !payload.is_empty() {
                    let at = if payload[0] & 1 == 0 { 10 } else { 3 };
                    if let Some(sent) = payload.get(at..at + 8) {
                        let sent = u64::from_be_bytes(sent.try_into().unwrap_or_default());
                        let delay = unix_micros().saturating_sub(sent);
                        tallies.iter().for_each(|tally| tally.delay.record(delay));
                    }
                }
            }
        });
        Box::pin(async {})
    }));
    let path = format!("/whep/{room}");
    let (location, answered_by) = negotiate(target, &pc, &path, None, VIEWER_PATIENCE).await?;
    let answered_by = answered_by.origin().ascii_serialization();
    let node = urls
        .iter()
        .position(|url| *url == answered_by)
        .with_context(|| format!("redirected to {answered_by}, which --url does not name"))?;
    let _ = serving.set(node);
    Ok((node, Session { pc, location }))
}

fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or_default()
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time all cores spent busy (not idle or waiting for I/O), from `/proc/stat`.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal: the machine's own processes and
    // interrupts, not the hypervisor's steal (guest time is within user).
    let busy: f64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    busy / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ports of the nodes viewers 0..5 ask.
    fn asked(urls: &str, spread: Spread) -> Vec<String> {
        let cluster = Cluster::parse(urls).expect("loopback");
        (0..5)
            .map(|n| {
                let url = base_url(spread.node(&cluster, n)).expect("a URL");
                url.rsplit(':').next().unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[test]
    fn viewers_go_round_robin_to_the_edges_or_to_every_node() {
        let three = "http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083";
        assert_eq!(
            asked(three, Spread::Edges),
            ["8082", "8083", "8082", "8083", "8082"]
        );
        assert_eq!(
            asked(three, Spread::All),
            ["8081", "8082", "8083", "8081", "8082"]
        );
        for spread in [Spread::Edges, Spread::All] {
            assert_eq!(asked("http://127.0.0.1:8081", spread), ["8081"; 5]);
        }
    }
}
