//! One room's broadcast: the publisher's peer connection, the tracks it sends, and
//! the viewers its packets go to.
//!
//! The publisher's path never waits for a viewer: each RTP packet is offered to every
//! viewer's bounded queue with `try_send`, and a writer task per viewer drains its own
//! queue into its own tracks. A viewer that falls behind loses packets (counted),
//! asks for a keyframe, and recovers; the others never notice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;

/// A track the publisher sends, as viewers' tracks must copy it.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: RTPCodecType,
    pub codec: RTCRtpCodecCapability,
}

/// A packet on its way to one viewer: which source it is from, and the packet.
type Forwarded = (usize, Arc<Packet>);

pub struct Broadcast {
    pub room: String,
    /// The broadcaster's user id.
    pub owner: String,
    pub session: String,
    pub pc: Arc<RTCPeerConnection>,
    /// Media sections the publisher's offer sends; the broadcast is complete when
    /// that many tracks have arrived.
    expected: usize,
    sources: watch::Sender<Vec<Source>>,
    viewers: RwLock<HashMap<String, mpsc::Sender<Forwarded>>>,
    keyframe_wanted: Notify,
    video_ssrc: AtomicU32,
    pub ended: CancellationToken,
}

impl Broadcast {
    pub fn new(
        room: &str,
        owner: &str,
        session: String,
        pc: Arc<RTCPeerConnection>,
        expected: usize,
    ) -> Broadcast {
        Broadcast {
            room: room.to_owned(),
            owner: owner.to_owned(),
            session,
            pc,
            expected,
            sources: watch::Sender::new(Vec::new()),
            viewers: RwLock::new(HashMap::new()),
            keyframe_wanted: Notify::new(),
            video_ssrc: AtomicU32::new(0),
            ended: CancellationToken::new(),
        }
    }

    /// A new track from the publisher; returns true for the first one (now live).
    pub fn add_source(self: &Arc<Self>, track: Arc<TrackRemote>) -> bool {
        let kind = track.kind();
        if kind == RTPCodecType::Video {
            self.video_ssrc.store(track.ssrc(), Ordering::Relaxed);
        }
        let mut index = 0;
        let mut first = false;
        self.sources.send_modify(|sources| {
            index = sources.len();
            first = sources.is_empty();
            sources.push(Source {
                kind,
                codec: track.codec().capability,
            });
        });
        tokio::spawn(self.clone().forward(index, track));
        first
    }

    /// The publisher's tracks once all have arrived, or whatever arrived within
    /// `wait`; `None` when none did.
    pub async fn sources(&self, wait: Duration) -> Option<Vec<Source>> {
        let mut sources = self.sources.subscribe();
        let complete = sources.wait_for(|s| s.len() >= self.expected);
        let _ = tokio::time::timeout(wait, complete).await;
        let sources = sources.borrow().clone();
        (!sources.is_empty()).then_some(sources)
    }

    pub fn add_viewer(&self, session: &str, queue: mpsc::Sender<Forwarded>) {
        self.viewers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.to_owned(), queue);
    }

    pub fn remove_viewer(&self, session: &str) {
        self.viewers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }

    pub fn request_keyframe(&self) {
        self.keyframe_wanted.notify_one();
    }

    /// Reads one publisher track and offers each packet to every viewer's queue.
    async fn forward(self: Arc<Self>, index: usize, track: Arc<TrackRemote>) {
        while let Ok((packet, _)) = track.read_rtp().await {
            let bytes = packet.payload.len() as u64;
            let packet = Arc::new(packet);
            let (mut sent, mut dropped) = (0, 0);
            for queue in self
                .viewers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                match queue.try_send((index, packet.clone())) {
                    Ok(()) => sent += 1,
                    Err(TrySendError::Full(_)) => dropped += 1,
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            crate::metrics::rtc_forwarded(sent, sent * bytes);
            if dropped > 0 {
                crate::metrics::rtc_dropped(dropped);
                // Whoever lost a packet needs a fresh picture.
                self.request_keyframe();
            }
        }
    }

    /// Sends the publisher a picture loss indication when asked, at most once per
    /// `interval`: requests in between are folded into one sent after it.
    pub async fn request_keyframes(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = self.keyframe_wanted.notified() => {}
            }
            let media_ssrc = self.video_ssrc.load(Ordering::Relaxed);
            if media_ssrc != 0 {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if self.pc.write_rtcp(&[Box::new(pli)]).await.is_ok() {
                    crate::metrics::rtc_keyframe_requested();
                }
            }
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// Drains one viewer's queue into its tracks (one per source, same order). Video
/// starts at a keyframe: the packets before it could not be decoded anyway.
pub async fn write_to_viewer(
    tracks: Vec<(Arc<TrackLocalStaticRTP>, Source)>,
    mut queue: mpsc::Receiver<Forwarded>,
) {
    let mut started: Vec<bool> = tracks
        .iter()
        .map(|(_, source)| source.kind != RTPCodecType::Video)
        .collect();
    while let Some((index, packet)) = queue.recv().await {
        let Some((track, source)) = tracks.get(index) else {
            continue;
        };
        if !started[index] {
            if !super::keyframe::starts_keyframe(&source.codec.mime_type, &packet.payload) {
                continue;
            }
            started[index] = true;
        }
        {
            if let Err(error) = track.write_rtp(&packet).await {
                if error != webrtc::Error::ErrClosedPipe {
                    tracing::debug!(%error, "viewer write failed; ending its writer");
                    return;
                }
            }
        }
    }
}

/// Reads a viewer's RTCP so its buffers never fill (the NACK responder answers NACKs
/// as they pass), and turns its keyframe requests into one for the publisher.
pub async fn read_viewer_rtcp(sender: Arc<RTCRtpSender>, broadcast: std::sync::Weak<Broadcast>) {
    while let Ok((packets, _)) = sender.read_rtcp().await {
        for packet in packets {
            let packet = packet.as_any();
            if packet.is::<PictureLossIndication>() || packet.is::<FullIntraRequest>() {
                match broadcast.upgrade() {
                    Some(broadcast) => broadcast.request_keyframe(),
                    None => return,
                }
            } else if let Some(nack) = packet.downcast_ref::<TransportLayerNack>() {
                crate::metrics::rtc_nacks(nack.nacks.len() as u64);
            }
        }
    }
}
