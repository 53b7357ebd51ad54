//! One room's broadcast on this node: its upstream (the publisher's peer connection,
//! or on an edge the pull from the origin), the tracks it sends, and the viewers its
//! packets go to.
//!
//! The publisher's path never waits for a viewer: each RTP packet is offered to every
//! viewer's bounded queue with `try_send`, and a writer task per viewer drains its own
//! queue into its own tracks. A viewer that falls behind loses packets (counted),
//! asks for a keyframe, and recovers; the others never notice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

use super::continuity::Continuity;
use super::traffic::Traffic;

/// A track the publisher sends, as viewers' tracks must copy it.
#[derive(Debug, Clone)]
pub struct Source {
    pub kind: RTPCodecType,
    pub codec: RTCRtpCodecCapability,
}

/// A packet on its way to one viewer: which source it is from, from which upstream
/// (they count up as an edge pulls again), and the packet.
type Forwarded = (usize, u32, Arc<Packet>);

pub struct Broadcast {
    pub room: String,
    /// Where its packets come from: the publisher's peer connection, or an edge's
    /// current pull from the origin. Keyframe requests go there.
    upstream: Mutex<Option<Arc<RTCPeerConnection>>>,
    /// Media sections the upstream sends; the broadcast is complete when that many
    /// tracks have arrived.
    expected: AtomicUsize,
    sources: watch::Sender<Vec<Source>>,
    viewers: RwLock<HashMap<String, mpsc::Sender<Forwarded>>>,
    /// Viewer sessions started on it, connected or not (an edge lingers at zero).
    watchers: watch::Sender<usize>,
    keyframe_wanted: Notify,
    video_ssrc: AtomicU32,
    /// Packets received, to notice an upstream that went silent.
    received: AtomicU64,
    /// How many upstreams there were before the current one.
    generation: AtomicU32,
    traffic: Arc<Traffic>,
    pub ended: CancellationToken,
}

/// A new upstream track could not continue the broadcast: its codec differs from the
/// one its viewers' tracks were negotiated for.
#[derive(Debug)]
pub struct CodecChanged;

impl Broadcast {
    pub fn new(room: &str, traffic: Arc<Traffic>) -> Broadcast {
        Broadcast {
            room: room.to_owned(),
            upstream: Mutex::new(None),
            expected: AtomicUsize::new(usize::MAX),
            sources: watch::Sender::new(Vec::new()),
            viewers: RwLock::new(HashMap::new()),
            watchers: watch::Sender::new(0),
            keyframe_wanted: Notify::new(),
            video_ssrc: AtomicU32::new(0),
            received: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            traffic,
            ended: CancellationToken::new(),
        }
    }

    /// The peer connection packets now come from, sending `expected` tracks.
    pub fn set_upstream(&self, pc: Arc<RTCPeerConnection>, expected: usize) {
        self.expected.store(expected, Ordering::Relaxed);
        let mut upstream = self.upstream.lock().unwrap_or_else(|p| p.into_inner());
        if upstream.replace(pc).is_some() {
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn upstream(&self) -> Option<Arc<RTCPeerConnection>> {
        self.upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new track from the upstream. The first of its kind is added (true for the
    /// broadcast's very first: now live); a later one of a kind already here (an
    /// edge's new pull) continues it, if its codec is the same.
    pub fn add_source(self: &Arc<Self>, track: Arc<TrackRemote>) -> Result<bool, CodecChanged> {
        let kind = track.kind();
        let codec = track.codec().capability;
        if kind == RTPCodecType::Video {
            self.video_ssrc.store(track.ssrc(), Ordering::Relaxed);
        }
        let (mut index, mut first, mut changed) = (0, false, false);
        self.sources.send_modify(|sources| {
            first = sources.is_empty();
            match sources.iter().position(|s| s.kind == kind) {
                Some(known) => {
                    index = known;
                    changed = !sources[known]
                        .codec
                        .mime_type
                        .eq_ignore_ascii_case(&codec.mime_type);
                }
                None => {
                    index = sources.len();
                    sources.push(Source { kind, codec });
                }
            }
        });
        if changed {
            return Err(CodecChanged);
        }
        let generation = self.generation.load(Ordering::Relaxed);
        tokio::spawn(self.clone().forward(index, generation, track));
        Ok(first)
    }

    /// The upstream's tracks once all have arrived, or whatever arrived within
    /// `wait`; `None` when none did.
    pub async fn sources(&self, wait: Duration) -> Option<Vec<Source>> {
        let mut sources = self.sources.subscribe();
        let complete = sources.wait_for(|s| s.len() >= self.expected.load(Ordering::Relaxed));
        let _ = tokio::time::timeout(wait, complete).await;
        let sources = sources.borrow().clone();
        (!sources.is_empty()).then_some(sources)
    }

    /// Packets received from upstreams so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Counts a viewer session started on this broadcast (`started` true) or ended.
    pub fn watch(&self, started: bool) {
        self.watchers
            .send_modify(|n| *n = if started { *n + 1 } else { n.saturating_sub(1) });
    }

    /// Follows the number of viewer sessions.
    pub fn watchers(&self) -> watch::Receiver<usize> {
        self.watchers.subscribe()
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
        self.traffic.keyframe_asked();
        self.keyframe_wanted.notify_one();
    }

    /// Reads one publisher track and offers each packet to every viewer's queue.
    async fn forward(self: Arc<Self>, index: usize, generation: u32, track: Arc<TrackRemote>) {
        while let Ok((packet, _)) = track.read_rtp().await {
            let bytes = packet.payload.len() as u64;
            self.received.fetch_add(1, Ordering::Relaxed);
            self.traffic.received(bytes);
            let packet = Arc::new(packet);
            let (mut sent, mut dropped) = (0, 0);
            for queue in self
                .viewers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
            {
                match queue.try_send((index, generation, packet.clone())) {
                    Ok(()) => sent += 1,
                    Err(TrySendError::Full(_)) => dropped += 1,
                    Err(TrySendError::Closed(_)) => {}
                }
            }
            self.traffic.forwarded(sent, sent * bytes);
            if dropped > 0 {
                crate::metrics::rtc_dropped(dropped);
                // Whoever lost a packet needs a fresh picture.
                self.request_keyframe();
            }
        }
    }

    /// Sends the upstream a picture loss indication when asked, at most once per
    /// `interval`: requests in between are folded into one sent after it. This is
    /// what keeps a thousand joining viewers, on this node or on its edges (whose
    /// requests arrive as one viewer's), from costing the publisher a thousand
    /// keyframes.
    pub async fn request_keyframes(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::select! {
                _ = self.ended.cancelled() => return,
                _ = self.keyframe_wanted.notified() => {}
            }
            let media_ssrc = self.video_ssrc.load(Ordering::Relaxed);
            if let (Some(upstream), true) = (self.upstream(), media_ssrc != 0) {
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                if upstream.write_rtcp(&[Box::new(pli)]).await.is_ok() {
                    self.traffic.keyframe_sent();
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
    let is_video = |source: &Source| source.kind == RTPCodecType::Video;
    let mut started: Vec<bool> = tracks.iter().map(|(_, s)| !is_video(s)).collect();
    let mut continuity: Vec<Continuity> = tracks
        .iter()
        .map(|(_, s)| Continuity::new(s.codec.clock_rate))
        .collect();
    while let Some((index, upstream, packet)) = queue.recv().await {
        let Some((track, source)) = tracks.get(index) else {
            continue;
        };
        let numbering = &mut continuity[index];
        if numbering.switched(upstream) && is_video(source) {
            started[index] = false;
        }
        if !started[index] {
            if !super::keyframe::starts_keyframe(&source.codec.mime_type, &packet.payload) {
                continue;
            }
            started[index] = true;
        }
        let header = &packet.header;
        let (seq, timestamp) =
            numbering.rewrite(upstream, header.sequence_number, header.timestamp);
        let written = if (seq, timestamp) == (header.sequence_number, header.timestamp) {
            track.write_rtp(&packet).await
        } else {
            let mut renumbered = Packet::clone(&packet);
            renumbered.header.sequence_number = seq;
            renumbered.header.timestamp = timestamp;
            track.write_rtp(&renumbered).await
        };
        if let Err(error) = written {
            if error != webrtc::Error::ErrClosedPipe {
                tracing::debug!(%error, "viewer write failed; ending its writer");
                return;
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
