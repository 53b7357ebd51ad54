//! The WebRTC relay (an SFU on webrtc-rs 0.17): one WHIP publisher per room, its RTP
//! forwarded packet by packet to every WHEP viewer of the room. No transcoding.
//!
//! Sessions end on `DELETE`, when their peer connection fails or closes (ICE notices
//! a vanished peer within seconds), or, for viewers, when their publisher ends. The
//! room's WebSocket members hear `stream` `live:true` when the first track arrives and
//! `live:false` when the publisher goes.

mod broadcast;
mod engine;
pub mod keyframe;
pub mod sdp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use webrtc::api::API;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

use crate::config::RtcSettings;
use crate::protocol::{ErrorCode, Rejection};
use broadcast::{read_viewer_rtcp, write_to_viewer, Broadcast};

/// Why the relay refused a request. Mapped to protocol error codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the SDP offer is not usable: {0}")]
    BadSdp(String),
    #[error("this room is not live")]
    NotLive,
    #[error("this room already has a publisher; DELETE its session first")]
    AlreadyPublishing,
    #[error("this room has as many viewers as it can take")]
    TooManyViewers,
    #[error("the server relays as many rooms as it can take")]
    TooManyPublishers,
    #[error("the publisher's media has not started yet; try again")]
    NotReady,
    #[error("no such session")]
    NoSession,
    #[error("this session belongs to someone else")]
    Forbidden,
    #[error("the relay failed: {0}")]
    Internal(String),
}

impl From<RelayError> for Rejection {
    fn from(error: RelayError) -> Rejection {
        let code = match &error {
            RelayError::BadSdp(_) => ErrorCode::BadRequest,
            RelayError::NotLive | RelayError::NoSession => ErrorCode::NotFound,
            RelayError::AlreadyPublishing => ErrorCode::Conflict,
            RelayError::TooManyViewers | RelayError::TooManyPublishers | RelayError::NotReady => {
                ErrorCode::Unavailable
            }
            RelayError::Forbidden => ErrorCode::Forbidden,
            RelayError::Internal(_) => ErrorCode::Internal,
        };
        Rejection::new(code, error.to_string())
    }
}

impl From<webrtc::Error> for RelayError {
    fn from(error: webrtc::Error) -> Self {
        RelayError::Internal(error.to_string())
    }
}

/// A negotiated session: its id (the last part of its `Location`) and the SDP answer.
pub struct Negotiated {
    pub session: String,
    pub answer: String,
}

/// Which side of a session a `DELETE` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Whip,
    Whep,
}

struct Viewer {
    room: String,
    /// The signed-in user who started it; guests' sessions are ended by their URL alone.
    user: Option<String>,
    pc: Arc<RTCPeerConnection>,
    broadcast: Weak<Broadcast>,
}

/// Tells the rooms when a broadcast goes live or ends.
pub type LiveListener = Box<dyn Fn(&str, bool) + Send + Sync>;

pub struct Relay {
    api: API,
    settings: RtcSettings,
    broadcasts: Mutex<HashMap<String, Arc<Broadcast>>>,
    viewers: Mutex<HashMap<String, Viewer>>,
    on_live: LiveListener,
    /// Peer connections ended but still shutting down.
    closing: AtomicUsize,
    /// The counts, republished on every change, so anyone can await one.
    census: watch::Sender<Counts>,
}

/// Open sessions, and ended ones whose peer connection is still closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub publishers: usize,
    pub viewers: usize,
    pub closing: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    pub async fn new(
        listen: SocketAddr,
        settings: RtcSettings,
        on_live: LiveListener,
    ) -> anyhow::Result<Arc<Relay>> {
        Ok(Arc::new(Relay {
            api: engine::build(listen, &settings).await?,
            settings,
            broadcasts: Mutex::new(HashMap::new()),
            viewers: Mutex::new(HashMap::new()),
            on_live,
            closing: AtomicUsize::new(0),
            census: watch::Sender::new(Counts::default()),
        }))
    }

    pub fn settings(&self) -> &RtcSettings {
        &self.settings
    }

    pub fn counts(&self) -> Counts {
        Counts {
            publishers: lock(&self.broadcasts).len(),
            viewers: lock(&self.viewers).len(),
            closing: self.closing.load(Ordering::SeqCst),
        }
    }

    /// Follows the counts: every session opened, ended or finished closing.
    pub fn census(&self) -> watch::Receiver<Counts> {
        self.census.subscribe()
    }

    /// Republishes the counts after a change (and the session gauges with them).
    fn recount(&self) {
        let counts = self.counts();
        crate::metrics::rtc_sessions(counts.publishers, counts.viewers);
        self.census
            .send_if_modified(|known| std::mem::replace(known, counts) != counts);
    }

    /// Closes a peer connection off the caller's path (closing waits for its tasks).
    fn close(self: &Arc<Self>, pc: Arc<RTCPeerConnection>) {
        self.closing.fetch_add(1, Ordering::SeqCst);
        self.recount();
        let relay = self.clone();
        tokio::spawn(async move {
            if let Err(error) = pc.close().await {
                tracing::debug!(%error, "closing a peer connection");
            }
            relay.closing.fetch_sub(1, Ordering::SeqCst);
            relay.recount();
        });
    }

    /// WHIP: `owner` starts publishing to `room` with an SDP offer.
    pub async fn publish(
        self: &Arc<Self>,
        room: &str,
        owner: &str,
        offer: String,
    ) -> Result<Negotiated, RelayError> {
        self.check_can_publish(room)?;
        let expected = sdp::sending_media(&offer);
        if expected == 0 {
            return Err(RelayError::BadSdp(
                "the offer sends no audio or video".into(),
            ));
        }
        let pc = self.peer_connection().await?;
        let session = crate::ids::session_id();
        let broadcast = Arc::new(Broadcast::new(
            room,
            owner,
            session.clone(),
            pc.clone(),
            expected,
        ));
        let answer = match self.answer(&pc, offer).await {
            Ok(answer) => answer,
            Err(error) => {
                self.close(pc);
                return Err(error);
            }
        };
        {
            let mut broadcasts = lock(&self.broadcasts);
            // Checked again: another publisher may have won the race meanwhile.
            if let Err(error) = self.check_can_publish_locked(&broadcasts, room) {
                self.close(pc);
                return Err(error);
            }
            broadcasts.insert(room.to_owned(), broadcast.clone());
        }
        self.recount();
        let (relay, weak) = (Arc::downgrade(self), Arc::downgrade(&broadcast));
        pc.on_track(Box::new(move |track, _, _| {
            if let (Some(relay), Some(broadcast)) = (relay.upgrade(), weak.upgrade()) {
                if broadcast.add_source(track) {
                    (relay.on_live)(&broadcast.room, true);
                }
            }
            Box::pin(async {})
        }));
        let (relay, room_name, id) = (Arc::downgrade(self), room.to_owned(), session.clone());
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if ended(state) {
                if let Some(relay) = relay.upgrade() {
                    relay.end_broadcast(&room_name, &id);
                }
            }
            Box::pin(async {})
        }));
        let interval = Duration::from_millis(self.settings.keyframe_interval_ms);
        tokio::spawn(broadcast.request_keyframes(interval));
        Ok(Negotiated { session, answer })
    }

    fn check_can_publish(&self, room: &str) -> Result<(), RelayError> {
        self.check_can_publish_locked(&lock(&self.broadcasts), room)
    }

    fn check_can_publish_locked(
        &self,
        broadcasts: &HashMap<String, Arc<Broadcast>>,
        room: &str,
    ) -> Result<(), RelayError> {
        if broadcasts.contains_key(room) {
            return Err(RelayError::AlreadyPublishing);
        }
        if broadcasts.len() >= self.settings.max_publishing_rooms {
            return Err(RelayError::TooManyPublishers);
        }
        Ok(())
    }

    /// Whether `room`'s video is published to this node.
    pub fn is_live(&self, room: &str) -> bool {
        lock(&self.broadcasts).contains_key(room)
    }

    /// WHEP: a viewer (signed in or not) starts playing `room`.
    pub async fn play(
        self: &Arc<Self>,
        room: &str,
        user: Option<&str>,
        offer: String,
    ) -> Result<Negotiated, RelayError> {
        let broadcast = lock(&self.broadcasts)
            .get(room)
            .cloned()
            .ok_or(RelayError::NotLive)?;
        let watching = lock(&self.viewers)
            .values()
            .filter(|v| v.room == room)
            .count();
        if watching >= self.settings.max_viewers_per_room {
            return Err(RelayError::TooManyViewers);
        }
        let wait = Duration::from_millis(self.settings.track_wait_ms);
        let sources = broadcast.sources(wait).await.ok_or(RelayError::NotReady)?;
        let pc = self.peer_connection().await?;
        let mut tracks = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let track = Arc::new(TrackLocalStaticRTP::new(
                source.codec.clone(),
                format!("{}-{index}", source.kind),
                format!("ovation-{room}"),
            ));
            let sender = match pc
                .add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>)
                .await
            {
                Ok(sender) => sender,
                Err(error) => {
                    self.close(pc);
                    return Err(error.into());
                }
            };
            tokio::spawn(read_viewer_rtcp(sender, Arc::downgrade(&broadcast)));
            tracks.push((track, source.clone()));
        }
        let answer = match self.answer(&pc, offer).await {
            Ok(answer) => answer,
            Err(error) => {
                self.close(pc);
                return Err(error);
            }
        };
        let session = crate::ids::session_id();
        let (queue, packets) = mpsc::channel(self.settings.viewer_queue_packets);
        // Packets flow only once the viewer's transport is up: anything written before
        // would be dropped by the track, keyframe included.
        let unconnected = Mutex::new(Some(queue));
        lock(&self.viewers).insert(
            session.clone(),
            Viewer {
                room: room.to_owned(),
                user: user.map(str::to_owned),
                pc: pc.clone(),
                broadcast: Arc::downgrade(&broadcast),
            },
        );
        self.recount();
        tokio::spawn(write_to_viewer(tracks, packets));
        let (relay, weak, id) = (
            Arc::downgrade(self),
            Arc::downgrade(&broadcast),
            session.clone(),
        );
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if state == RTCPeerConnectionState::Connected {
                // A new viewer starts with a fresh picture.
                if let Some(broadcast) = weak.upgrade() {
                    if let Some(queue) = lock(&unconnected).take() {
                        broadcast.add_viewer(&id, queue);
                    }
                    broadcast.request_keyframe();
                }
            } else if ended(state) {
                if let Some(relay) = relay.upgrade() {
                    relay.end_viewer(&id);
                }
            }
            Box::pin(async {})
        }));
        Ok(Negotiated { session, answer })
    }

    /// `DELETE` on a session's `Location`, by `user` (if signed in).
    pub fn delete(
        self: &Arc<Self>,
        side: Side,
        room: &str,
        session: &str,
        user: Option<&str>,
    ) -> Result<(), RelayError> {
        match side {
            Side::Whip => {
                let owner = lock(&self.broadcasts)
                    .get(room)
                    .filter(|b| b.session == session)
                    .map(|b| b.owner.clone())
                    .ok_or(RelayError::NoSession)?;
                if user != Some(owner.as_str()) {
                    return Err(RelayError::Forbidden);
                }
                self.end_broadcast(room, session);
            }
            Side::Whep => {
                let started_by = lock(&self.viewers)
                    .get(session)
                    .filter(|v| v.room == room)
                    .map(|v| v.user.clone())
                    .ok_or(RelayError::NoSession)?;
                if started_by.is_some() && started_by.as_deref() != user {
                    return Err(RelayError::Forbidden);
                }
                self.end_viewer(session);
            }
        }
        Ok(())
    }

    /// Ends a publisher's session and every viewer of it.
    fn end_broadcast(self: &Arc<Self>, room: &str, session: &str) {
        let broadcast = {
            let mut broadcasts = lock(&self.broadcasts);
            match broadcasts.get(room) {
                Some(b) if b.session == session => broadcasts.remove(room),
                _ => None,
            }
        };
        let Some(broadcast) = broadcast else { return };
        broadcast.ended.cancel();
        let viewers: Vec<String> = lock(&self.viewers)
            .iter()
            .filter(|(_, v)| std::ptr::eq(v.broadcast.as_ptr(), Arc::as_ptr(&broadcast)))
            .map(|(session, _)| session.clone())
            .collect();
        for viewer in viewers {
            self.end_viewer(&viewer);
        }
        (self.on_live)(room, false);
        self.close(broadcast.pc.clone());
    }

    fn end_viewer(self: &Arc<Self>, session: &str) {
        let Some(viewer) = lock(&self.viewers).remove(session) else {
            return;
        };
        if let Some(broadcast) = viewer.broadcast.upgrade() {
            broadcast.remove_viewer(session);
        }
        self.close(viewer.pc);
    }

    /// Ends every session (server shutdown).
    pub fn close_all(self: &Arc<Self>) {
        let broadcasts: Vec<(String, String)> = lock(&self.broadcasts)
            .values()
            .map(|b| (b.room.clone(), b.session.clone()))
            .collect();
        for (room, session) in broadcasts {
            self.end_broadcast(&room, &session);
        }
    }

    /// The relay's own side needs no STUN or TURN: its host candidates (or its 1:1 NAT
    /// address) are what clients reach. `ice_servers` are for the clients.
    async fn peer_connection(&self) -> Result<Arc<RTCPeerConnection>, RelayError> {
        let configuration = RTCConfiguration::default();
        Ok(Arc::new(self.api.new_peer_connection(configuration).await?))
    }

    /// Applies the offer and answers it with every candidate gathered (WHIP and WHEP
    /// clients do not trickle by default).
    async fn answer(&self, pc: &RTCPeerConnection, offer: String) -> Result<String, RelayError> {
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| RelayError::BadSdp(e.to_string()))?;
        pc.set_remote_description(offer)
            .await
            .map_err(|e| RelayError::BadSdp(e.to_string()))?;
        let answer = pc
            .create_answer(None)
            .await
            .map_err(|e| RelayError::BadSdp(e.to_string()))?;
        let mut gathered = pc.gathering_complete_promise().await;
        pc.set_local_description(answer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gathered.recv()).await;
        let local = pc
            .local_description()
            .await
            .ok_or_else(|| RelayError::Internal("no local description".into()))?;
        Ok(local.sdp)
    }
}

fn ended(state: RTCPeerConnectionState) -> bool {
    matches!(
        state,
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
    )
}
