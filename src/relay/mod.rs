//! The WebRTC relay (an SFU on webrtc-rs 0.17): one WHIP publisher per room, its RTP
//! forwarded packet by packet to every WHEP viewer of the room. No transcoding.
//!
//! In a cluster a room's video reaches viewers on every node: the node the publisher
//! sends to is the room's **origin**; a node asked for the room without it becomes an
//! **edge** (`edge.rs`), pulls one copy from the origin over WHEP and serves its own
//! viewers from it exactly as the origin serves its own. Each node reports its load
//! (`load.rs`) so that a full node sends new viewers elsewhere (`placement.rs`).
//!
//! Sessions end on `DELETE`, when their peer connection fails or closes (ICE notices
//! a vanished peer within seconds), or, for viewers, when their publisher ends. The
//! room's WebSocket members hear `stream` `live:true` when the first track arrives and
//! `live:false` when the publisher goes.

mod broadcast;
mod continuity;
mod edge;
mod engine;
pub mod keyframe;
mod load;
pub mod placement;
pub mod sdp;
mod traffic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use webrtc::api::API;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocal;

use crate::bus::NodeLoad;
use crate::config::RtcSettings;
use crate::protocol::{ErrorCode, Rejection};
use broadcast::{read_viewer_rtcp, write_to_viewer, Broadcast};
pub use edge::Mesh;
use edge::{Edge, EdgeReport, PullReport};
use placement::Placement;
use traffic::{Traffic, TrafficTotals};

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
    #[error("every node has as many viewers as it can take; try again later")]
    NodesFull,
    #[error("the server relays as many rooms as it can take")]
    TooManyPublishers,
    #[error("the publisher's media has not started yet; try again")]
    NotReady,
    #[error("no such session")]
    NoSession,
    #[error("this session belongs to someone else")]
    Forbidden,
    #[error("the node credential is not valid for this room")]
    BadCredential,
    #[error("the relay failed: {0}")]
    Internal(String),
}

impl From<RelayError> for Rejection {
    fn from(error: RelayError) -> Rejection {
        let code = match &error {
            RelayError::BadSdp(_) => ErrorCode::BadRequest,
            RelayError::NotLive | RelayError::NoSession => ErrorCode::NotFound,
            RelayError::AlreadyPublishing => ErrorCode::Conflict,
            RelayError::TooManyViewers
            | RelayError::NodesFull
            | RelayError::TooManyPublishers
            | RelayError::NotReady => ErrorCode::Unavailable,
            RelayError::Forbidden | RelayError::BadCredential => ErrorCode::Forbidden,
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

/// A room published to this node.
struct Published {
    /// The broadcaster's user id.
    owner: String,
    session: String,
    pc: Arc<RTCPeerConnection>,
    broadcast: Arc<Broadcast>,
}

/// Who a WHEP session plays to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// A viewer of a room published here.
    Local,
    /// A viewer of a room this node pulls as an edge.
    Pulled,
    /// An edge node pulling a room published here.
    Edge,
}

/// A viewer session's hold on its broadcast: counted while it lives, so an edge
/// knows when its last viewer left.
struct Watching(Arc<Broadcast>);

impl Watching {
    fn new(broadcast: Arc<Broadcast>) -> Watching {
        broadcast.watch(true);
        Watching(broadcast)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watch(false);
    }
}

struct Viewer {
    room: String,
    /// The signed-in user who started it; guests' and edges' sessions are ended by
    /// their URL alone.
    user: Option<String>,
    audience: Audience,
    pc: Arc<RTCPeerConnection>,
    watching: Watching,
}

/// Tells the rooms when a broadcast goes live or ends.
pub type LiveListener = Box<dyn Fn(&str, bool) + Send + Sync>;

pub struct Relay {
    api: API,
    settings: RtcSettings,
    broadcasts: Mutex<HashMap<String, Published>>,
    /// Rooms this node pulls from their origin, as an edge.
    edges: Mutex<HashMap<String, Arc<Edge>>>,
    viewers: Mutex<HashMap<String, Viewer>>,
    on_live: LiveListener,
    /// Peer connections ended but still shutting down.
    closing: AtomicUsize,
    /// The counts, republished on every change, so anyone can await one.
    census: watch::Sender<Counts>,
    traffic: Arc<Traffic>,
    /// The cluster's nodes, when there is a cluster.
    mesh: Option<Mesh>,
    /// The other nodes' loads as last reported (and counted on since, for the
    /// viewers sent to them).
    loads: Mutex<Vec<NodeLoad>>,
    /// This node's CPU and egress as last measured.
    meter: Mutex<load::LoadMeter>,
}

/// Open sessions, and ended ones whose peer connection is still closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub publishers: usize,
    /// WHEP viewers, of rooms published here or pulled.
    pub viewers: usize,
    /// Of `viewers`, those watching a room this node pulls.
    pub viewers_pulled: usize,
    /// Rooms this node pulls from their origins.
    pub pulls: usize,
    /// Edge nodes pulling rooms published here.
    pub edges: usize,
    pub closing: usize,
}

/// What `GET /api/admin/rtc` shows an operator.
#[derive(Debug, serde::Serialize)]
pub struct RelayReport {
    pub publishers: usize,
    pub viewers: usize,
    pub viewers_local: usize,
    pub viewers_pulled: usize,
    /// Rooms pulled from their origin, and from where.
    pub pulls: Vec<PullReport>,
    /// Edges pulling rooms from this node, by session.
    pub edges: Vec<EdgeReport>,
    pub traffic: TrafficTotals,
    pub cpu_percent: f64,
    pub egress_bytes_per_s: u64,
    /// The cluster's nodes' loads as last reported (this one's included).
    pub nodes: Vec<NodeLoad>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Relay {
    pub async fn new(
        listen: SocketAddr,
        settings: RtcSettings,
        on_live: LiveListener,
        mesh: Option<Mesh>,
    ) -> anyhow::Result<Arc<Relay>> {
        let traffic = Arc::new(Traffic::default());
        Ok(Arc::new(Relay {
            api: engine::build(listen, &settings).await?,
            settings,
            broadcasts: Mutex::new(HashMap::new()),
            edges: Mutex::new(HashMap::new()),
            viewers: Mutex::new(HashMap::new()),
            on_live,
            closing: AtomicUsize::new(0),
            census: watch::Sender::new(Counts::default()),
            meter: Mutex::new(load::LoadMeter::new(traffic.totals())),
            traffic,
            mesh,
            loads: Mutex::new(Vec::new()),
        }))
    }

    pub fn settings(&self) -> &RtcSettings {
        &self.settings
    }

    /// Whether this node is one of a cluster's.
    pub fn in_cluster(&self) -> bool {
        self.mesh.is_some()
    }

    pub fn counts(&self) -> Counts {
        let (mut viewers, mut viewers_pulled, mut edges) = (0, 0, 0);
        for viewer in lock(&self.viewers).values() {
            match viewer.audience {
                Audience::Local => viewers += 1,
                Audience::Pulled => {
                    viewers += 1;
                    viewers_pulled += 1;
                }
                Audience::Edge => edges += 1,
            }
        }
        Counts {
            publishers: lock(&self.broadcasts).len(),
            viewers,
            viewers_pulled,
            pulls: lock(&self.edges).len(),
            edges,
            closing: self.closing.load(Ordering::SeqCst),
        }
    }

    pub fn report(&self) -> RelayReport {
        let counts = self.counts();
        let edges = lock(&self.viewers)
            .iter()
            .filter(|(_, v)| v.audience == Audience::Edge)
            .map(|(session, v)| EdgeReport {
                room: v.room.clone(),
                session: session.clone(),
            })
            .collect();
        let pulls = lock(&self.edges).values().map(|e| e.report()).collect();
        let meter = lock(&self.meter);
        RelayReport {
            publishers: counts.publishers,
            viewers: counts.viewers,
            viewers_local: counts.viewers - counts.viewers_pulled,
            viewers_pulled: counts.viewers_pulled,
            pulls,
            edges,
            traffic: self.traffic.totals(),
            cpu_percent: meter.cpu_percent,
            egress_bytes_per_s: meter.egress_bytes_per_s,
            nodes: lock(&self.loads).clone(),
        }
    }

    /// The origins (`scheme://host:port`) of the cluster's other nodes as last
    /// reported: where a viewer's page may be redirected.
    pub fn node_origins(&self) -> Vec<String> {
        let own = self.mesh.as_ref().map(|m| m.url.as_str());
        lock(&self.loads)
            .iter()
            .filter(|load| Some(load.url.as_str()) != own)
            .filter_map(|load| url::Url::parse(&load.url).ok())
            .map(|url| url.origin().ascii_serialization())
            .collect()
    }

    /// Follows the counts: every session opened, ended or finished closing.
    pub fn census(&self) -> watch::Receiver<Counts> {
        self.census.subscribe()
    }

    /// Republishes the counts after a change (and the session gauges with them).
    fn recount(&self) {
        let counts = self.counts();
        crate::metrics::rtc_sessions([
            ("publisher", counts.publishers),
            ("viewer", counts.viewers - counts.viewers_pulled),
            ("viewer_pulled", counts.viewers_pulled),
            ("pull", counts.pulls),
            ("edge", counts.edges),
        ]);
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
        let broadcast = Arc::new(Broadcast::new(room, self.traffic.clone()));
        broadcast.set_upstream(pc.clone(), expected);
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
            broadcasts.insert(
                room.to_owned(),
                Published {
                    owner: owner.to_owned(),
                    session: session.clone(),
                    pc: pc.clone(),
                    broadcast: broadcast.clone(),
                },
            );
        }
        self.recount();
        let (relay, weak) = (Arc::downgrade(self), Arc::downgrade(&broadcast));
        pc.on_track(Box::new(move |track, _, _| {
            if let (Some(relay), Some(broadcast)) = (relay.upgrade(), weak.upgrade()) {
                // A publisher's tracks are all new: each kind is added once.
                if let Ok(true) = broadcast.add_source(track) {
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
        broadcasts: &HashMap<String, Published>,
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

    fn published(&self, room: &str) -> Option<Arc<Broadcast>> {
        lock(&self.broadcasts)
            .get(room)
            .map(|p| p.broadcast.clone())
    }

    /// Where a new WHEP viewer of `room` who was redirected `redirects` times goes.
    pub fn place(&self, room: &str, redirects: u32) -> Placement {
        let here = self.load();
        // Alone, a node has nowhere to send a viewer: only its cap refuses one.
        let max_cpu = match self.mesh {
            Some(_) => self.settings.max_cpu_percent,
            None => f64::INFINITY,
        };
        let mut others = lock(&self.loads);
        let placement = placement::place(room, &here, &others, redirects, max_cpu);
        if let Placement::Elsewhere(url) = &placement {
            // Counted on until that node's next report, so a burst of viewers
            // spreads over the nodes with room instead of all going to the first.
            if let Some(other) = others.iter_mut().find(|o| &o.url == url) {
                other.viewers += 1;
            }
        }
        placement
    }

    /// This node's load now: its viewers counted live, its rates as last measured.
    fn load(&self) -> NodeLoad {
        let meter = lock(&self.meter);
        NodeLoad {
            url: self
                .mesh
                .as_ref()
                .map(|m| m.url.clone())
                .unwrap_or_default(),
            viewers: self.counts().viewers,
            max_viewers: self.settings.max_viewers_per_node,
            cpu_percent: meter.cpu_percent,
            egress_bytes_per_s: meter.egress_bytes_per_s,
            rooms: self.rooms(),
        }
    }

    /// The rooms whose video this node has: published here or pulled.
    fn rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = lock(&self.broadcasts).keys().cloned().collect();
        rooms.extend(lock(&self.edges).keys().cloned());
        rooms
    }

    /// Measures this node's load and, in a cluster, reports it and learns the other
    /// nodes' (every second until `shutdown`).
    pub async fn report_loads(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(load::REPORT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            lock(&self.meter).sample(self.traffic.totals());
            let Some(mesh) = &self.mesh else { continue };
            let load = self.load();
            match mesh.bus.report_load(&load, load::REPORT_TTL_MS).await {
                Ok(loads) => *lock(&self.loads) = loads,
                Err(error) => tracing::warn!(%error, "reporting this node's load failed"),
            }
        }
    }

    /// WHEP: a viewer (signed in or not) starts playing `room`: from its publisher
    /// here, or in a cluster from this node's pull of it (started if need be).
    pub async fn play(
        self: &Arc<Self>,
        room: &str,
        user: Option<&str>,
        offer: String,
    ) -> Result<Negotiated, RelayError> {
        let (watching, audience) = match self.published(room) {
            Some(broadcast) => (Watching::new(broadcast), Audience::Local),
            None => (self.watch_edge(room).await?, Audience::Pulled),
        };
        let watching_room = lock(&self.viewers)
            .values()
            .filter(|v| v.room == room && v.audience != Audience::Edge)
            .count();
        if watching_room >= self.settings.max_viewers_per_room {
            return Err(RelayError::TooManyViewers);
        }
        self.attach(room, user, audience, watching, offer).await
    }

    /// WHEP from an edge node, with its credential: plays a room published here
    /// (never one this node pulls itself, so pulls never chain or loop).
    pub async fn serve_edge(
        self: &Arc<Self>,
        room: &str,
        credential: &str,
        offer: String,
    ) -> Result<Negotiated, RelayError> {
        let key = &self.mesh.as_ref().ok_or(RelayError::BadCredential)?.key;
        if !key.verify(room, credential, crate::auth::unix_now_s()) {
            return Err(RelayError::BadCredential);
        }
        let broadcast = self.published(room).ok_or(RelayError::NotLive)?;
        self.attach(room, None, Audience::Edge, Watching::new(broadcast), offer)
            .await
    }

    /// Starts a WHEP session on a broadcast: one track per source, a queue drained by
    /// its own writer, packets once the transport is up.
    async fn attach(
        self: &Arc<Self>,
        room: &str,
        user: Option<&str>,
        audience: Audience,
        watching: Watching,
        offer: String,
    ) -> Result<Negotiated, RelayError> {
        let broadcast = watching.0.clone();
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
        if broadcast.ended.is_cancelled() {
            self.close(pc);
            return Err(RelayError::NotLive);
        }
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
                audience,
                pc: pc.clone(),
                watching,
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
        let published = {
            let mut broadcasts = lock(&self.broadcasts);
            match broadcasts.get(room) {
                Some(b) if b.session == session => broadcasts.remove(room),
                _ => None,
            }
        };
        let Some(published) = published else { return };
        self.end_viewers_of(&published.broadcast);
        (self.on_live)(room, false);
        self.close(published.pc);
    }

    /// Ends a broadcast's viewers (edges pulling it included).
    fn end_viewers_of(self: &Arc<Self>, broadcast: &Arc<Broadcast>) {
        broadcast.ended.cancel();
        let viewers: Vec<String> = lock(&self.viewers)
            .iter()
            .filter(|(_, v)| Arc::ptr_eq(&v.watching.0, broadcast))
            .map(|(session, _)| session.clone())
            .collect();
        for viewer in viewers {
            self.end_viewer(&viewer);
        }
    }

    fn end_viewer(self: &Arc<Self>, session: &str) {
        let Some(viewer) = lock(&self.viewers).remove(session) else {
            return;
        };
        viewer.watching.0.remove_viewer(session);
        self.close(viewer.pc);
    }

    /// Ends every session (server shutdown).
    pub fn close_all(self: &Arc<Self>) {
        let broadcasts: Vec<(String, String)> = lock(&self.broadcasts)
            .iter()
            .map(|(room, p)| (room.clone(), p.session.clone()))
            .collect();
        for (room, session) in broadcasts {
            self.end_broadcast(&room, &session);
        }
        let edges: Vec<Arc<Edge>> = lock(&self.edges).values().cloned().collect();
        for edge in edges {
            self.end_edge(&edge, false);
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
        with_candidates(pc, answer).await
    }
}

/// Sets `description` (an offer or answer of ours) and returns it with every
/// candidate gathered: WHIP and WHEP do not trickle.
async fn with_candidates(
    pc: &RTCPeerConnection,
    description: RTCSessionDescription,
) -> Result<String, RelayError> {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await?;
    let _ = tokio::time::timeout(GATHERING, gathered.recv()).await;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| RelayError::Internal("no local description".into()))?;
    Ok(local.sdp)
}

/// The longest wait for ICE candidates before an offer or answer goes out.
const GATHERING: Duration = Duration::from_secs(5);

fn ended(state: RTCPeerConnectionState) -> bool {
    matches!(
        state,
        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
    )
}
