//! `rtc`: one WHIP publisher sending VP8-framed video at a set bitrate and frame
//! rate, N WHEP viewers. Reports packet loss (from RTP sequence numbers), the delay
//! from the publisher's send to each viewer's first packet of a frame, and the
//! server's CPU per viewer (from `process_cpu_seconds_total` in `/metrics`).
//!
//! Frames are synthetic (a real VP8 frame tag, then the send time and frame number);
//! the relay does not decode, so they load it exactly like camera frames of that size.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
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
use crate::target::Target;

pub struct RtcLoad {
    pub viewers: usize,
    pub bitrate_kbps: u32,
    pub fps: u32,
    /// New viewers per second.
    pub ramp: u32,
    pub duration: Duration,
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
    pub server_cpu_cores: f64,
    pub server_cpu_percent_per_viewer: f64,
    pub loadtest_cpu_cores: f64,
}

/// Counters every viewer adds to; reset when the measured window starts.
#[derive(Default)]
struct Reception {
    measuring: AtomicBool,
    received: AtomicU64,
    lost: AtomicU64,
    delay: Histogram,
}

pub async fn run(target: &Target, load: &RtcLoad, stats: Arc<Stats>) -> anyhow::Result<RtcReport> {
    let api = Arc::new(loopback_api()?);
    let room = "lt-rtc";
    let token = target.token_as(room, "broadcaster").await?;
    let (publisher, frames_sent) =
        publish(target, &api, room, &token, load.fps, load.bitrate_kbps).await?;
    let reception = Arc::new(Reception::default());
    let mut viewers = Vec::with_capacity(load.viewers);
    let started = Instant::now();
    for n in 0..load.viewers {
        let due = started + Duration::from_secs_f64(n as f64 / f64::from(load.ramp.max(1)));
        tokio::time::sleep_until(due.into()).await;
        let viewer = view(target, &api, room, reception.clone(), stats.clone()).await;
        viewers.push(viewer.with_context(|| format!("viewer {n}"))?);
        stats.connected.add(1);
    }
    // Let the last viewers reach their first keyframe before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_before, own_before, frames_before) = (
        target.metric("process_cpu_seconds_total").await?,
        own_cpu_seconds(),
        frames_sent.load(Relaxed),
    );
    reception.measuring.store(true, Relaxed);
    let window = Instant::now();
    tokio::time::sleep(load.duration).await;
    reception.measuring.store(false, Relaxed);
    let seconds = window.elapsed().as_secs_f64();
    let server_cpu = (target.metric("process_cpu_seconds_total").await? - cpu_before) / seconds;
    let own_cpu = (own_cpu_seconds() - own_before) / seconds;
    let frames = frames_sent.load(Relaxed) - frames_before;
    for viewer in viewers {
        viewer.end(target, None).await;
    }
    publisher.end(target, Some(&token)).await;
    let (received, lost) = (
        reception.received.load(Relaxed),
        reception.lost.load(Relaxed),
    );
    Ok(RtcReport {
        viewers: load.viewers,
        bitrate_kbps: load.bitrate_kbps,
        fps: load.fps,
        frames_sent: frames,
        packets_received: received,
        packets_lost: lost,
        loss_percent: 100.0 * lost as f64 / (received + lost).max(1) as f64,
        delay: reception.delay.summary(),
        server_cpu_cores: server_cpu,
        server_cpu_percent_per_viewer: 100.0 * server_cpu / load.viewers.max(1) as f64,
        loadtest_cpu_cores: own_cpu,
    })
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

/// Offers with all candidates, POSTs to `path`, applies the answer; returns the
/// session's `Location`.
async fn negotiate(
    target: &Target,
    pc: &RTCPeerConnection,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let mut request = target
        .request(reqwest::Method::POST, path)
        .header("content-type", "application/sdp")
        .body(sdp);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if response.status().as_u16() != 201 {
        bail!(
            "POST {path} answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("no Location in the answer")?
        .to_owned();
    pc.set_remote_description(RTCSessionDescription::answer(response.text().await?)?)
        .await?;
    Ok(location)
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
    let location = negotiate(target, &pc, &format!("/whip/{room}"), Some(token)).await?;
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

async fn view(
    target: &Target,
    api: &API,
    room: &str,
    reception: Arc<Reception>,
    stats: Arc<Stats>,
) -> anyhow::Result<Session> {
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    pc.add_transceiver_from_kind(
        RTPCodecType::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            send_encodings: vec![],
        }),
    )
    .await?;
    pc.on_track(Box::new(move |track, receiver, _| {
        let (reception, stats) = (reception.clone(), stats.clone());
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
                if !reception.measuring.load(Relaxed) {
                    continue;
                }
                reception.received.fetch_add(1, Relaxed);
                reception.lost.fetch_add(gap, Relaxed);
                // The first packet of a frame (start of partition 0) carries its send time.
                let Ok(payload) = vp8.depacketize(&packet.payload) else {
                    continue;
                };
                if vp8.s == 1 && vp8.pid == 0 && !payload.is_empty() {
                    let at = if payload[0] & 1 == 0 { 10 } else { 3 };
                    if let Some(sent) = payload.get(at..at + 8) {
                        let sent = u64::from_be_bytes(sent.try_into().unwrap_or_default());
                        reception.delay.record(unix_micros().saturating_sub(sent));
                    }
                }
            }
        });
        Box::pin(async {})
    }));
    let location = negotiate(target, &pc, &format!("/whep/{room}"), None).await?;
    Ok(Session { pc, location })
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
