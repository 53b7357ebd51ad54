//! Server configuration: the CLI flags (see `main.rs`) plus an optional TOML file for
//! everything else. Every limit of the protocol that a deployment may tune lives here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::clock::Clock;
use crate::ledger::LedgerSettings;
use crate::moderation::ModerationSettings;
use crate::money::{Catalog, CoinPack, SplitPolicy};
use crate::payments::PaymentSettings;
use crate::webhooks::WebhookSettings;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// HS256 secret shared with the platform's backend. `None` means dev mode with a
    /// secret generated once and kept in the data directory.
    pub token_secret: Option<String>,
    pub dev: bool,
    /// The shared PostgreSQL ledger of a cluster (`postgres://…`); `None` keeps the
    /// embedded SQLite ledger in `data_dir`.
    pub ledger: Option<String>,
    /// The cluster bus; `None` keeps rooms in this process.
    pub bus: Option<BusConfig>,
    pub file: FileConfig,
    /// The time of day, for the rules that count days (the system's clock but in tests).
    pub clock: Clock,
}

/// How a node joins a cluster's bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `redis://host:port/`.
    pub url: String,
    /// Namespaces the bus's keys and channels: nodes with the same name share rooms.
    pub cluster: String,
    /// This node's base URL as the other nodes' clients reach it (WHEP viewers of a
    /// room whose video this node hosts are sent there). Default: `http://` and the
    /// address it listens on.
    pub node_url: Option<String>,
}

/// The part of the configuration that comes from `--config FILE`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub limits: Limits,
    pub gifts: GiftSettings,
    pub catalog: Catalog,
    pub split: SplitPolicy,
    pub rtc: RtcSettings,
    pub http: HttpSettings,
    pub ledger: LedgerSettings,
    pub payments: PaymentSettings,
    pub payouts: PayoutSettings,
    pub moderation: ModerationSettings,
    pub webhooks: WebhookSettings,
    pub pk: crate::pk::PkSettings,
    /// The packs of coins a viewer can buy (`GET /api/coin-packs`).
    pub coin_packs: Vec<CoinPack>,
}

/// `[payouts]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutSettings {
    /// Earnings of a day stay held (refunds can take them back) for this many whole
    /// days after it; 0 makes them available at once.
    pub hold_days: u32,
    /// The smallest payout, in minor units (1/100 coin).
    pub min_amount: u64,
}

impl Default for PayoutSettings {
    fn default() -> Self {
        PayoutSettings {
            hold_days: 7,
            min_amount: 10_000,
        }
    }
}

/// The longest hold: a year.
const MAX_HOLD_DAYS: u32 = 366;

impl PayoutSettings {
    fn validate(&self) -> anyhow::Result<()> {
        if self.hold_days > MAX_HOLD_DAYS {
            bail!("payouts.hold_days must be at most {MAX_HOLD_DAYS}");
        }
        if self.min_amount == 0 || i64::try_from(self.min_amount).is_err() {
            bail!("payouts.min_amount must be greater than zero and fit the ledger");
        }
        Ok(())
    }
}

/// Cross-origin access: none unless configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Origins (e.g. `https://app.example.com`) whose pages may call the API and
    /// WHIP/WHEP from the browser. Empty: same-origin only.
    pub cors_origins: Vec<String>,
}

/// The WebRTC relay: ICE addresses and the relay's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcSettings {
    /// The UDP ports peer connections use (one each), for firewalls; both 0 lets the
    /// OS pick. (webrtc-rs 0.17's single-port ICE mux connected but carried no media
    /// in our tests, so it is not offered.)
    pub udp_port_min: u16,
    pub udp_port_max: u16,
    /// Announced instead of the local address by a server behind 1:1 NAT.
    pub public_ip: Option<std::net::IpAddr>,
    /// STUN/TURN servers handed to clients (`GET /api/rtc`, and `Link` headers).
    pub ice_servers: Vec<IceServer>,
    pub max_viewers_per_room: usize,
    pub max_publishing_rooms: usize,
    /// Largest SDP offer accepted (413 beyond).
    pub max_sdp_bytes: usize,
    /// RTP packets queued per viewer; a viewer that falls further behind loses packets
    /// (and recovers at the next keyframe) without slowing anyone else.
    pub viewer_queue_packets: usize,
    /// At most one keyframe request to a publisher per this interval.
    pub keyframe_interval_ms: u64,
    /// How long a WHEP request waits for a just-started publisher's tracks.
    pub track_wait_ms: u64,
    /// This node serves at most this many WHEP viewers; beyond it, new ones are
    /// redirected to a node of the cluster with room (503 when none has, or alone).
    pub max_viewers_per_node: Option<usize>,
    /// In a cluster: above this share of the machine's CPU (0-100), new WHEP viewers
    /// are redirected to a node with room.
    pub max_cpu_percent: f64,
    /// An edge keeps pulling a room's video this long after its last viewer left,
    /// so a viewer who comes back (or the next one) starts at once.
    pub edge_linger_ms: u64,
    /// An edge that lost its origin keeps looking for the room's video (the
    /// publisher may come back on any node) this long before it ends its viewers.
    pub origin_lost_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Default for RtcSettings {
    fn default() -> Self {
        RtcSettings {
            udp_port_min: 0,
            udp_port_max: 0,
            public_ip: None,
            ice_servers: Vec::new(),
            max_viewers_per_room: 1000,
            max_publishing_rooms: 100,
            max_sdp_bytes: 32 * 1024,
            viewer_queue_packets: 512,
            keyframe_interval_ms: 500,
            track_wait_ms: 5_000,
            max_viewers_per_node: None,
            max_cpu_percent: 90.0,
            edge_linger_ms: 10_000,
            origin_lost_ms: 10_000,
        }
    }
}

impl RtcSettings {
    fn validate(&self) -> anyhow::Result<()> {
        if (self.udp_port_min == 0) != (self.udp_port_max == 0)
            || self.udp_port_min > self.udp_port_max
        {
            bail!("rtc.udp_port_min and rtc.udp_port_max must both be set, min <= max");
        }
        if self.max_sdp_bytes == 0 || self.viewer_queue_packets == 0 {
            bail!("rtc.max_sdp_bytes and rtc.viewer_queue_packets must be greater than zero");
        }
        if !(self.max_cpu_percent > 0.0 && self.max_cpu_percent <= 100.0) {
            bail!("rtc.max_cpu_percent must be above 0 and at most 100");
        }
        if self.max_viewers_per_node == Some(0) {
            bail!("rtc.max_viewers_per_node must be at least 1 (leave it out for no cap)");
        }
        Ok(())
    }
}

/// The gift engine's own knobs; the catalog and split policy have their own tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GiftSettings {
    /// Repeats of a sticker by one sender within this window count up a combo.
    pub combo_window_ms: u64,
    /// How long a red packet can be grabbed; then what is left goes back to its sender.
    pub red_packet_ttl_ms: u64,
    /// On a shared ledger, how often a node looks for open red packets it has not
    /// seen (made on another node, perhaps one that died before refunding them).
    pub red_packet_sweep_ms: u64,
}

impl Default for GiftSettings {
    fn default() -> Self {
        GiftSettings {
            combo_window_ms: 3_000,
            red_packet_ttl_ms: 24 * 60 * 60 * 1000,
            red_packet_sweep_ms: 10_000,
        }
    }
}

/// Limits and timings. Durations are in milliseconds so the TOML stays plain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_connections: usize,
    /// Loopback clients count too: raise it for load tests (see loadtest/bench.toml).
    pub max_connections_per_ip: usize,
    pub max_connections_per_user: usize,
    /// Largest text frame a client may send; larger ones close the connection with 1009.
    pub max_frame_bytes: usize,
    pub rooms_per_connection: usize,
    /// New rooms a connection may join per `join_window_ms` (burst), so one client
    /// cannot churn through room names.
    pub join_burst: u32,
    pub join_window_ms: u64,
    /// Rooms the server holds at once; joining a new room beyond answers `unavailable`.
    pub max_rooms: usize,
    /// Sequenced events each room keeps for `since` recovery.
    pub history_len: usize,
    /// Events a `join` without a usable `since` returns.
    pub join_replay: usize,
    /// Outbound messages queued per connection before it is closed as a slow consumer.
    pub queue_len: usize,
    pub chat_burst: u32,
    pub chat_window_ms: u64,
    /// A bot's chat limit (`role: bot` tokens), in place of `chat_burst` per
    /// `chat_window_ms`.
    pub bot_chat_burst: u32,
    pub bot_chat_window_ms: u64,
    /// `like` messages a user may send per `like_window_ms` (each carries up to 15
    /// taps).
    pub like_burst: u32,
    pub like_window_ms: u64,
    pub error_storm_count: usize,
    pub error_storm_window_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub idle_timeout_ms: u64,
    /// How often presence is coalesced and empty rooms are swept.
    pub presence_interval_ms: u64,
    /// How long an empty room keeps its history for clients that reconnect.
    pub room_linger_ms: u64,
    /// How long a closing connection may take to flush its last frames and close frame.
    pub close_grace_ms: u64,
    /// On shutdown, how long to wait for connections and in-flight work to finish.
    pub shutdown_grace_ms: u64,
    /// Tolerated clock skew when checking a token's `exp`.
    pub token_leeway_s: u64,
    /// Lifetime of tokens minted by the dev route.
    pub dev_token_ttl_s: u64,
    /// A request's headers must arrive within this (slowloris).
    pub http_header_timeout_ms: u64,
    /// A request (other than a WebSocket, once upgraded) must be answered within this.
    pub http_request_timeout_ms: u64,
    /// Bytes a WebSocket reader asks the socket for at once. A connection holds no
    /// read buffer while it waits; larger frames take more reads.
    pub ws_read_buffer_bytes: usize,
    /// The kernel's send buffer per connection (SO_SNDBUF; 0 leaves it to the
    /// kernel's autotuning). It bounds what a client that stops reading holds in
    /// the kernel before its queue fills and it is closed as a slow consumer:
    /// autotuning grows it to megabytes on fast links.
    pub socket_send_buffer_bytes: usize,
    /// The most coins one gift, question or red packet may cost; more answers
    /// `limit_reached`. None: no cap.
    pub max_coins_per_charge: Option<u64>,
    /// The most coins a user may spend in a UTC day (gifts, questions, red packets);
    /// a user may set a lower cap for themselves. None: no platform cap.
    pub daily_coins: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_connections_per_ip: 5_000,
            max_connections_per_user: 16,
            max_frame_bytes: 16 * 1024,
            rooms_per_connection: 16,
            join_burst: 32,
            join_window_ms: 10_000,
            max_rooms: 100_000,
            history_len: 1000,
            join_replay: 50,
            queue_len: 1024,
            chat_burst: 5,
            chat_window_ms: 10_000,
            bot_chat_burst: 100,
            bot_chat_window_ms: 30_000,
            like_burst: 30,
            like_window_ms: 1_000,
            error_storm_count: 20,
            error_storm_window_ms: 10_000,
            heartbeat_interval_ms: 20_000,
            idle_timeout_ms: 60_000,
            presence_interval_ms: 1_000,
            room_linger_ms: 30_000,
            close_grace_ms: 5_000,
            shutdown_grace_ms: 10_000,
            token_leeway_s: 30,
            dev_token_ttl_s: 24 * 3600,
            http_header_timeout_ms: 10_000,
            http_request_timeout_ms: 30_000,
            ws_read_buffer_bytes: 512,
            socket_send_buffer_bytes: 256 * 1024,
            max_coins_per_charge: None,
            daily_coins: None,
        }
    }
}

impl Limits {
    pub fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            (
                "max_connections_per_user",
                self.max_connections_per_user as u64,
            ),
            ("max_frame_bytes", self.max_frame_bytes as u64),
            ("rooms_per_connection", self.rooms_per_connection as u64),
            ("join_burst", u64::from(self.join_burst)),
            ("join_window_ms", self.join_window_ms),
            ("max_rooms", self.max_rooms as u64),
            ("history_len", self.history_len as u64),
            ("queue_len", self.queue_len as u64),
            ("chat_burst", u64::from(self.chat_burst)),
            ("chat_window_ms", self.chat_window_ms),
            ("bot_chat_burst", u64::from(self.bot_chat_burst)),
            ("bot_chat_window_ms", self.bot_chat_window_ms),
            ("like_burst", u64::from(self.like_burst)),
            ("like_window_ms", self.like_window_ms),
            ("error_storm_count", self.error_storm_count as u64),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("presence_interval_ms", self.presence_interval_ms),
            ("ws_read_buffer_bytes", self.ws_read_buffer_bytes as u64),
            ("http_header_timeout_ms", self.http_header_timeout_ms),
            ("http_request_timeout_ms", self.http_request_timeout_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                bail!("limits.{name} must be greater than zero");
            }
        }
        if self.idle_timeout_ms <= self.heartbeat_interval_ms {
            bail!("limits.idle_timeout_ms must exceed limits.heartbeat_interval_ms");
        }
        Ok(())
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        FileConfig::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        let config: FileConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        self.catalog.validate()?;
        self.split.validate()?;
        self.rtc.validate()?;
        self.ledger.validate()?;
        self.payments.validate()?;
        self.payouts.validate()?;
        self.moderation.validate()?;
        self.webhooks.validate()?;
        self.pk.validate()?;
        crate::money::CoinPack::validate_all(&self.coin_packs)?;
        for origin in &self.http.cors_origins {
            if origin.parse::<axum::http::HeaderValue>().is_err() || !origin.contains("://") {
                bail!(
                    "http.cors_origins: {origin:?} is not an origin like https://app.example.com"
                );
            }
        }
        Ok(())
    }
}

impl Config {
    /// Defaults for a server on `listen`, in dev mode, storing data in `data_dir`.
    pub fn dev(listen: SocketAddr, data_dir: PathBuf) -> Config {
        Config {
            listen,
            data_dir,
            token_secret: None,
            dev: true,
            ledger: None,
            bus: None,
            file: FileConfig::default(),
            clock: Clock::system(),
        }
    }

    /// The rule that keeps dev mode (free tokens, free coins) off the network.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.dev && !self.listen.ip().is_loopback() {
            bail!(
                "dev mode hands out tokens and coins to anyone, so it only listens on loopback; \
                 {} is not a loopback address. Set --token-secret (OVATION_TOKEN_SECRET) and \
                 leave out --dev to listen elsewhere",
                self.listen
            );
        }
        if !self.dev && self.token_secret.is_none() {
            bail!("without dev mode a --token-secret (OVATION_TOKEN_SECRET) is required");
        }
        if let Some(secret) = &self.token_secret {
            if secret.len() < 16 {
                bail!("--token-secret must be at least 16 bytes long");
            }
        }
        if let Some(bus) = &self.bus {
            if !crate::protocol::is_valid_id(&bus.cluster) {
                bail!("--cluster must match [a-z0-9_-]{{1,64}}");
            }
            if bus.node_url.is_none() && self.listen.ip().is_unspecified() {
                bail!(
                    "a cluster node listening on {} needs --node-url: the URL other nodes \
                     send its WHEP viewers to",
                    self.listen
                );
            }
        }
        self.file.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_some_limits_and_keeps_the_rest() {
        let config = FileConfig::parse("[limits]\nchat_burst = 50\n").unwrap();
        assert_eq!(config.limits.chat_burst, 50);
        assert_eq!(config.limits.history_len, 1000);
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        assert!(FileConfig::parse("[limits]\nchat_brust = 5\n").is_err());
        assert!(FileConfig::parse("[limits]\nqueue_len = 0\n").is_err());
        assert!(FileConfig::parse("[ledger]\nwal_limit_mib = 0\n").is_err());
        assert!(FileConfig::parse("[webhooks]\nnice = 20\n").is_err());
        assert!(FileConfig::parse("[webhooks]\nconcurrency = 0\n").is_err());
        assert!(FileConfig::parse("[rtc]\nmax_viewers_per_node = 0\n").is_err());
        assert!(FileConfig::parse("[rtc]\nmax_cpu_percent = 0\n").is_err());
        assert!(FileConfig::parse("[rtc]\nmax_cpu_percent = 101\n").is_err());
        let rtc = FileConfig::parse("[rtc]\nmax_viewers_per_node = 300\nmax_cpu_percent = 85\n")
            .unwrap()
            .rtc;
        assert_eq!(rtc.max_viewers_per_node, Some(300));
        assert_eq!(rtc.max_cpu_percent, 85.0);
        let ledger = FileConfig::parse("[ledger]\nwal_limit_mib = 8\n")
            .unwrap()
            .ledger;
        assert_eq!(ledger.wal_limit_mib, 8);
    }

    #[test]
    fn dev_mode_refuses_a_public_address() {
        let config = Config::dev("0.0.0.0:8080".parse().unwrap(), "d".into());
        assert!(config.validate().is_err());
        let config = Config::dev("127.0.0.1:8080".parse().unwrap(), "d".into());
        assert!(config.validate().is_ok());
    }
}
