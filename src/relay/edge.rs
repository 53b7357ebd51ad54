//! An edge: a node serving a room whose publisher is on another node (the origin).
//!
//! The edge pulls the room from the origin once, as a WHEP client with a node
//! credential, and feeds that one copy into a `Broadcast` of its own, which serves
//! its viewers with the same queues and keyframe rules as the origin's. The pull is
//! a standard WebRTC session rather than bare RTP forwarding: it crosses the same
//! networks viewers do (ICE, one UDP port range, 1:1 NAT), is encrypted, repairs
//! loss with NACKs, and carries keyframe requests upstream as RTCP, where the
//! origin folds them with its own viewers' (at most one PLI per interval).
//!
//! The pull's life: started by the first viewer; when it is lost (its connection
//! fails, or no packet comes for `STALL`) it is tried again, looking the origin up
//! afresh each time, so edges follow a publisher who reconnects to another node;
//! after `origin_lost_ms` without the video its viewers are ended. When its last
//! viewer leaves, it lingers `edge_linger_ms`, then ends.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use tokio::sync::watch;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;

use super::broadcast::Broadcast;
use super::{lock, sdp, with_candidates, Relay, RelayError, Watching};
use crate::auth::{NodeKey, NODE_CREDENTIAL_HEADER};
use crate::bus::Bus;

/// A pull that received no packet for this long is taken as lost (a publisher sends
/// audio every 20 ms and video many times a second)...
const STALL: Duration = Duration::from_secs(2);
/// ...which is checked this often.
const STALL_CHECK: Duration = Duration::from_millis(500);
/// The wait between two attempts to pull.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// A node credential is good for this long.
const CREDENTIAL_TTL_S: u64 = 60;
/// The longest wait for the origin's answer.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster as the relay sees it: where rooms' videos are, this node's URL, the
/// key for node credentials, and the HTTP client pulls are made with.
pub struct Mesh {
    pub bus: Arc<dyn Bus>,
    /// This node's base URL.
    pub url: String,
    pub key: NodeKey,
    http: reqwest::Client,
}

impl Mesh {
    pub fn new(bus: Arc<dyn Bus>, url: String, key: NodeKey) -> anyhow::Result<Mesh> {
        let http = reqwest::Client::builder()
            // An origin never redirects a node; a redirect would be a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(ORIGIN_TIMEOUT)
            .build()?;
        Ok(Mesh {
            bus,
            url,
            key,
            http,
        })
    }
}

/// A room this node pulls.
pub struct Edge {
    pub room: String,
    pub broadcast: Arc<Broadcast>,
    /// The origin and the pull's session URL there, while connected.
    pulling: Mutex<Option<(String, String)>>,
}

/// A pull as an operator sees it.
#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    pub room: String,
    /// The origin's base URL; `None` while the edge is looking for it.
    pub origin: Option<String>,
}

/// An edge's session on this node (its origin), as an operator sees it.
#[derive(Debug, serde::Serialize)]
pub struct EdgeReport {
    pub room: String,
    pub session: String,
}

impl Edge {
    pub fn report(&self) -> PullReport {
        PullReport {
            room: self.room.clone(),
            origin: lock(&self.pulling)
                .as_ref()
                .map(|(origin, _)| origin.clone()),
        }
    }
}

/// How a pull ended.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("no node hosts the room's video")]
    NoOrigin,
    #[error("the origin answered {0}")]
    Refused(StatusCode),
    #[error("the origin is unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the bus failed: {0}")]
    Bus(#[from] crate::bus::BusError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("the pull was lost")]
    Lost,
}

impl From<webrtc::Error> for PullError {
    fn from(error: webrtc::Error) -> Self {
        PullError::Relay(error.into())
    }
}

impl Relay {
    /// A viewer's hold on this node's pull of `room`, starting the pull if there is
    /// none. `NotLive` when no node hosts the room's video (or there is no cluster).
    pub(super) async fn watch_edge(self: &Arc<Self>, room: &str) -> Result<Watching, RelayError> {
        let mesh = self.mesh.as_ref().ok_or(RelayError::NotLive)?;
        if let Some(edge) = lock(&self.edges).get(room) {
            return Ok(Watching::new(edge.broadcast.clone()));
        }
        let origin = mesh.bus.video_host(room).await.unwrap_or_else(|error| {
            tracing::warn!(%error, room, "looking up the room's video host failed");
            None
        });
        if origin.is_none() {
            return Err(RelayError::NotLive);
        }
        let (edge, watching) = {
            let mut edges = lock(&self.edges);
            if let Some(edge) = edges.get(room) {
                return Ok(Watching::new(edge.broadcast.clone()));
            }
            let edge = Arc::new(Edge {
                room: room.to_owned(),
                broadcast: Arc::new(Broadcast::new(room, self.traffic.clone())),
                pulling: Mutex::new(None),
            });
            edges.insert(room.to_owned(), edge.clone());
            // Counted before the lock is let go, so the edge cannot linger out first.
            (edge.clone(), Watching::new(edge.broadcast.clone()))
        };
        self.recount();
        let interval = Duration::from_millis(self.settings.keyframe_interval_ms);
        tokio::spawn(edge.broadcast.clone().request_keyframes(interval));
        tokio::spawn(self.clone().keep_pulling(edge.clone()));
        tokio::spawn(self.clone().linger(edge));
        Ok(watching)
    }

    /// Ends an edge and its viewers; with `if_idle`, only if it has none (a viewer
    /// may have come while its linger ran out).
    pub(super) fn end_edge(self: &Arc<Self>, edge: &Arc<Edge>, if_idle: bool) {
        {
            let mut edges = lock(&self.edges);
            let current = edges.get(&edge.room).is_some_and(|e| Arc::ptr_eq(e, edge));
            if !current || (if_idle && *edge.broadcast.watchers().borrow() > 0) {
                return;
            }
            edges.remove(&edge.room);
        }
        self.end_viewers_of(&edge.broadcast);
        self.recount();
    }

    /// Pulls the room until the edge ends, again after every loss, and gives up
    /// (ending the edge's viewers) after `origin_lost_ms` without the video.
    async fn keep_pulling(self: Arc<Self>, edge: Arc<Edge>) {
        let give_up_after = Duration::from_millis(self.settings.origin_lost_ms);
        let mut lost_since = Instant::now();
        while !edge.broadcast.ended.is_cancelled() {
            match self.pull(&edge).await {
                Ok(()) => return,
                Err(PullError::Lost) => lost_since = Instant::now(),
                Err(error) => tracing::info!(room = edge.room, %error, "pulling the room failed"),
            }
            *lock(&edge.pulling) = None;
            if lost_since.elapsed() >= give_up_after {
                tracing::warn!(
                    room = edge.room,
                    "the room's video is gone: ending its viewers here"
                );
                self.end_edge(&edge, false);
                return;
            }
            tokio::select! {
                _ = edge.broadcast.ended.cancelled() => return,
                _ = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    }

    /// One pull from the room's origin: `Ok` when the edge ended, `Lost` when the
    /// pull broke after it worked, any other error when it never did.
    async fn pull(self: &Arc<Self>, edge: &Arc<Edge>) -> Result<(), PullError> {
        let mesh = self.mesh.as_ref().ok_or(RelayError::NotLive)?;
        let origin = mesh
            .bus
            .video_host(&edge.room)
            .await?
            .ok_or(PullError::NoOrigin)?;
        let pc = self.peer_connection().await?;
        // Only the latest state matters to the watcher: a watch holds just that.
        let (states_tx, mut states) = watch::channel(RTCPeerConnectionState::New);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            states_tx.send_replace(state);
            Box::pin(async {})
        }));
        let result = self
            .pull_on(edge, mesh, &origin, pc.clone(), &mut states)
            .await;
        let location = lock(&edge.pulling).take().map(|(_, location)| location);
        self.close(pc);
        if let Some(location) = location {
            // The origin would notice the closed connection within seconds; telling
            // it frees the session at once.
            let request = mesh.http.delete(location);
            tokio::spawn(async move { request.send().await });
        }
        result
    }

    async fn pull_on(
        self: &Arc<Self>,
        edge: &Arc<Edge>,
        mesh: &Mesh,
        origin: &str,
        pc: Arc<RTCPeerConnection>,
        states: &mut watch::Receiver<RTCPeerConnectionState>,
    ) -> Result<(), PullError> {
        for kind in [RTPCodecType::Video, RTPCodecType::Audio] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                send_encodings: vec![],
            };
            pc.add_transceiver_from_kind(kind, Some(init)).await?;
        }
        let (relay, weak_edge) = (Arc::downgrade(self), Arc::downgrade(edge));
        pc.on_track(Box::new(move |track, _, _| {
            add_pulled_track(&relay, &weak_edge, track);
            Box::pin(async {})
        }));
        let offer = with_candidates(&pc, pc.create_offer(None).await?).await?;
        let base = origin.trim_end_matches('/');
        let credential = mesh
            .key
            .mint(&edge.room, crate::auth::unix_now_s() + CREDENTIAL_TTL_S);
        let response = mesh
            .http
            .post(format!("{base}/whep/{}", edge.room))
            .header(CONTENT_TYPE, "application/sdp")
            .header(NODE_CREDENTIAL_HEADER, credential)
            .body(offer)
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(PullError::Refused(response.status()));
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| format!("{base}{l}"));
        let answer = response.text().await?;
        *lock(&edge.pulling) = Some((origin.to_owned(), location.unwrap_or_default()));
        let expected = sdp::sent_tracks(&answer);
        let answer =
            RTCSessionDescription::answer(answer).map_err(|e| RelayError::BadSdp(e.to_string()))?;
        pc.set_remote_description(answer).await?;
        edge.broadcast.set_upstream(pc, expected);
        self.recount();
        self.watch_pull(edge, states).await
    }

    /// Waits while the pull works: `Ok` when the edge ends, `Lost` when the
    /// connection fails or goes quiet.
    async fn watch_pull(
        &self,
        edge: &Edge,
        states: &mut watch::Receiver<RTCPeerConnectionState>,
    ) -> Result<(), PullError> {
        let mut check = tokio::time::interval(STALL_CHECK);
        check.reset();
        let (mut received, mut moved) = (edge.broadcast.received(), Instant::now());
        loop {
            tokio::select! {
                _ = edge.broadcast.ended.cancelled() => return Ok(()),
                changed = states.changed() => match changed.map(|()| *states.borrow_and_update()) {
                    Ok(RTCPeerConnectionState::Connected) => {
                        // The edge's viewers continue from a fresh picture.
                        edge.broadcast.request_keyframe();
                    }
                    Ok(
                        RTCPeerConnectionState::Disconnected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed,
                    )
                    | Err(_) => return Err(PullError::Lost),
                    Ok(_) => {}
                },
                _ = check.tick() => {
                    let now = edge.broadcast.received();
                    if now != received {
                        (received, moved) = (now, Instant::now());
                    } else if moved.elapsed() >= STALL {
                        return Err(PullError::Lost);
                    }
                }
            }
        }
    }

    /// Ends the edge once it has had no viewer for `edge_linger_ms`.
    async fn linger(self: Arc<Self>, edge: Arc<Edge>) {
        let linger = Duration::from_millis(self.settings.edge_linger_ms);
        let mut watchers = edge.broadcast.watchers();
        loop {
            tokio::select! {
                _ = edge.broadcast.ended.cancelled() => return,
                _ = watchers.wait_for(|n| *n == 0) => {}
            }
            tokio::select! {
                _ = edge.broadcast.ended.cancelled() => return,
                _ = watchers.wait_for(|n| *n > 0) => continue,
                _ = tokio::time::sleep(linger) => {}
            }
            self.end_edge(&edge, true);
            if edge.broadcast.ended.is_cancelled() {
                return;
            }
        }
    }
}

/// A track of the pull arrived: it starts or continues the edge's broadcast. One
/// whose codec changed (the publisher came back with another) cannot feed the
/// viewers' negotiated tracks: they are ended, and come back as new viewers.
fn add_pulled_track(
    relay: &Weak<Relay>,
    edge: &Weak<Edge>,
    track: Arc<webrtc::track::track_remote::TrackRemote>,
) {
    let (Some(relay), Some(edge)) = (relay.upgrade(), edge.upgrade()) else {
        return;
    };
    if edge.broadcast.add_source(track).is_err() {
        tracing::info!(
            room = edge.room,
            "the room's codec changed: its viewers here start again"
        );
        relay.end_edge(&edge, false);
    }
}
