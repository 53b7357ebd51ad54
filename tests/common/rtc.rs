//! Real webrtc-rs peers for the relay tests: a publisher sending synthetic VP8 frames
//! (and Opus-sized audio) over WHIP, and viewers receiving over WHEP. ICE is limited to
//! 127.0.0.1, so no media leaves the machine.
#![allow(dead_code)] // each test binary uses its own part of this kit

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::media::Sample;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
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

use crate::common::{Api, PATIENCE};

pub fn api() -> API {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip: IpAddr| ip.is_loopback()));
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_ice_timeouts(
        Some(Duration::from_secs(2)),
        Some(Duration::from_secs(4)),
        Some(Duration::from_millis(500)),
    );
    APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build()
}

/// The offer with every candidate in it (WHIP/WHEP without trickle).
pub async fn full_offer(pc: &RTCPeerConnection) -> String {
    let offer = pc.create_offer(None).await.unwrap();
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(PATIENCE, gathered.recv()).await;
    pc.local_description().await.unwrap().sdp
}

/// A bare peer with one video transceiver in `direction`: enough for an offer.
pub async fn video_peer(direction: RTCRtpTransceiverDirection) -> RTCPeerConnection {
    let pc = api()
        .new_peer_connection(RTCConfiguration::default())
        .await
        .unwrap();
    let init = RTCRtpTransceiverInit {
        direction,
        send_encodings: vec![],
    };
    pc.add_transceiver_from_kind(RTPCodecType::Video, Some(init))
        .await
        .unwrap();
    pc
}

/// POSTs an offer; returns the status, the `Location`, and the body.
pub async fn post_sdp(
    server: &Api,
    path: &str,
    token: Option<&str>,
    offer: String,
) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/sdp")
        .body(offer);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, response.text().await.unwrap())
}

/// A viewer's WHEP offer for `room` (with `query`, and a node credential if given)
/// posted to `server`, without following redirects.
pub async fn whep_offer(
    server: &Api,
    room: &str,
    query: &str,
    credential: Option<&str>,
) -> reqwest::Response {
    let pc = video_peer(RTCRtpTransceiverDirection::Recvonly).await;
    let mut request = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(server.url(&format!("/whep/{room}{query}")))
        .header("content-type", "application/sdp")
        .body(full_offer(&pc).await);
    if let Some(credential) = credential {
        request = request.header("ovation-node", credential);
    }
    let response = request.send().await.unwrap();
    pc.close().await.unwrap();
    response
}

pub async fn delete(server: &Api, location: &str, token: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().delete(server.url(location));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn connected(pc: &RTCPeerConnection) -> mpsc::UnboundedReceiver<RTCPeerConnectionState> {
    let (tx, rx) = mpsc::unbounded_channel();
    pc.on_peer_connection_state_change(Box::new(move |state| {
        let _ = tx.send(state);
        Box::pin(async {})
    }));
    rx
}

/// Waits until the connection reaches `want`.
pub async fn wait_for_state(
    states: &mut mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    want: RTCPeerConnectionState,
) {
    tokio::time::timeout(PATIENCE * 2, async {
        while let Some(state) = states.recv().await {
            if state == want {
                return;
            }
        }
        panic!("connection state events ended before {want}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {want}"));
}

/// A synthetic VP8 frame: a real frame tag (keyframe bit, show_frame, partition
/// size), the keyframe start code and size, then bytes naming the frame number.
pub fn vp8_frame(number: u64, key: bool) -> Bytes {
    let body_len: u32 = if key { 6000 } else { 1500 };
    let tag = (u32::from(!key)) | (1 << 4) | (body_len << 5);
    let mut frame = tag.to_le_bytes()[..3].to_vec();
    if key {
        frame.extend_from_slice(&[0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00]); // 320x240
    }
    frame.extend_from_slice(&number.to_be_bytes());
    frame.resize(body_len as usize, (number % 251) as u8);
    Bytes::from(frame)
}

/// Whether a depacketized VP8 frame start is a keyframe, and its number.
pub fn parse_frame(first_payload: &[u8]) -> (bool, u64) {
    let key = first_payload[0] & 1 == 0;
    let at = if key { 10 } else { 3 };
    let number = u64::from_be_bytes(first_payload[at..at + 8].try_into().unwrap());
    (key, number)
}

pub struct Publisher {
    pub pc: Arc<RTCPeerConnection>,
    pub location: String,
    pub states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    /// Keyframe requests received from the relay.
    pub plis: Arc<AtomicU64>,
    pub frames_sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// How a test publisher publishes.
pub struct Publishing {
    /// The number of its first frame (to tell publishers apart).
    pub first_frame: u64,
    /// Whether it sends audio beside its video.
    pub audio: bool,
}

impl Default for Publishing {
    fn default() -> Self {
        Publishing {
            first_frame: 0,
            audio: true,
        }
    }
}

impl Publisher {
    /// Publishes to `room` and starts sending 30 frames/s: a keyframe first, then only
    /// when the relay asks for one, plus 50 audio packets/s.
    pub async fn start(server: &Api, room: &str, token: &str) -> Publisher {
        Publisher::start_with(server, room, token, Publishing::default()).await
    }

    /// As `start`, as `publishing` says.
    pub async fn start_with(
        server: &Api,
        room: &str,
        token: &str,
        publishing: Publishing,
    ) -> Publisher {
        let Publishing { first_frame, audio } = publishing;
        let pc = Arc::new(
            api()
                .new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        let video = Arc::new(TrackLocalStaticSample::new(
            codec(MIME_TYPE_VP8, 90_000, 0),
            "video".into(),
            "publisher".into(),
        ));
        let audio = audio.then(|| {
            Arc::new(TrackLocalStaticSample::new(
                codec(MIME_TYPE_OPUS, 48_000, 2),
                "audio".into(),
                "publisher".into(),
            ))
        });
        let video_sender = pc
            .add_track(video.clone() as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
        if let Some(audio) = &audio {
            pc.add_track(audio.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await
                .unwrap();
        }
        for transceiver in pc.get_transceivers().await {
            transceiver
                .set_direction(RTCRtpTransceiverDirection::Sendonly)
                .await;
        }
        let mut states = connected(&pc).await;
        let (status, location, answer) = post_sdp(
            server,
            &format!("/whip/{room}"),
            Some(token),
            full_offer(&pc).await,
        )
        .await;
        assert_eq!(status, 201, "WHIP answered {status}: {answer}");
        pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        wait_for_state(&mut states, RTCPeerConnectionState::Connected).await;

        let plis = Arc::new(AtomicU64::new(0));
        let key_wanted = Arc::new(AtomicBool::new(true));
        let (plis2, key_wanted2) = (plis.clone(), key_wanted.clone());
        tokio::spawn(async move {
            while let Ok((packets, _)) = video_sender.read_rtcp().await {
                for packet in packets {
                    if packet.as_any().is::<PictureLossIndication>() {
                        plis2.fetch_add(1, Ordering::SeqCst);
                        key_wanted2.store(true, Ordering::SeqCst);
                    }
                }
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let frames_sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), frames_sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut tick_number, mut frame) = (0u64, first_frame);
            while !stop2.load(Ordering::SeqCst) {
                tick.tick().await;
                let sample = |data, ms| Sample {
                    data,
                    duration: Duration::from_millis(ms),
                    ..Default::default()
                };
                if let Some(audio) = &audio {
                    let _ = audio
                        .write_sample(&sample(Bytes::from(vec![0xfc; 80]), 20))
                        .await;
                }
                // Two frames per three audio packets: 33 frames/s.
                if tick_number % 3 < 2 {
                    let key = key_wanted.swap(false, Ordering::SeqCst);
                    if video
                        .write_sample(&sample(vp8_frame(frame, key), 30))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    frame += 1;
                    sent2.store(frame, Ordering::SeqCst);
                }
                tick_number += 1;
            }
        });
        Publisher {
            pc,
            location: location.expect("a Location header"),
            states,
            plis,
            frames_sent,
            stop,
        }
    }

    pub async fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pc.close().await.unwrap();
    }
}

fn codec(mime: &str, clock_rate: u32, channels: u16) -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: mime.into(),
        clock_rate,
        channels,
        ..Default::default()
    }
}

/// A video frame as a viewer saw it begin.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub key: bool,
    pub number: u64,
}

pub struct Viewer {
    pub pc: Arc<RTCPeerConnection>,
    pub location: String,
    /// The relay's SDP answer.
    pub answer: String,
    pub states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    pub frames: mpsc::UnboundedReceiver<Frame>,
    pub audio_packets: Arc<AtomicU64>,
}

impl Viewer {
    /// Plays `room`. A `reading` viewer reads its RTP and RTCP; one that is not reads
    /// nothing at all (a stalled client).
    pub async fn start(server: &Api, room: &str, token: Option<&str>, reading: bool) -> Viewer {
        let pc = Arc::new(
            api()
                .new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(kind, Some(init))
                .await
                .unwrap();
        }
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let audio_packets = Arc::new(AtomicU64::new(0));
        let audio_count = audio_packets.clone();
        pc.on_track(Box::new(move |track, receiver, _| {
            let (frames_tx, audio_count) = (frames_tx.clone(), audio_count.clone());
            if reading {
                tokio::spawn(async move {
                    let mut depacketizer = Vp8Packet::default();
                    while let Ok((packet, _)) = track.read_rtp().await {
                        if track.kind() == RTPCodecType::Audio {
                            audio_count.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        let Ok(payload) = depacketizer.depacketize(&packet.payload) else {
                            continue;
                        };
                        // The start of partition 0 is the first packet of a frame.
                        if depacketizer.s == 1 && depacketizer.pid == 0 {
                            let (key, number) = parse_frame(&payload);
                            let _ = frames_tx.send(Frame { key, number });
                        }
                    }
                });
                tokio::spawn(async move { while receiver.read_rtcp().await.is_ok() {} });
            } else {
                // Never read: keep the track and receiver alive and idle.
                tokio::spawn(async move {
                    let _held = (track, receiver);
                    std::future::pending::<()>().await;
                });
            }
            Box::pin(async {})
        }));
        let mut states = connected(&pc).await;
        let (status, location, answer) = post_sdp(
            server,
            &format!("/whep/{room}"),
            token,
            full_offer(&pc).await,
        )
        .await;
        assert_eq!(status, 201, "WHEP answered {status}: {answer}");
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone()).unwrap())
            .await
            .unwrap();
        wait_for_state(&mut states, RTCPeerConnectionState::Connected).await;
        Viewer {
            pc,
            location: location.expect("a Location header"),
            answer,
            states,
            frames,
            audio_packets,
        }
    }

    /// The next `count` frames as they arrive, and the earliest of them by number:
    /// under load a frame's first packet may come late (a retransmission), so order of
    /// arrival is not order of frames.
    pub async fn frames(&mut self, count: usize) -> (Vec<Frame>, Frame) {
        let mut frames = Vec::with_capacity(count);
        for _ in 0..count {
            frames.push(self.next_frame().await);
        }
        let earliest = *frames.iter().min_by_key(|f| f.number).unwrap();
        (frames, earliest)
    }

    pub async fn next_frame(&mut self) -> Frame {
        tokio::time::timeout(PATIENCE, self.frames.recv())
            .await
            .expect("timed out waiting for a video frame")
            .expect("the viewer's track ended")
    }
}
