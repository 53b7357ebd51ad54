//! A real server on an ephemeral port and real WebSocket clients for the tests.
#![allow(dead_code)] // each test binary uses its own part of this kit

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ovation::auth::{Role, Tokens, User};
use ovation::config::{Config, FileConfig, Limits};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef";
/// Upper bound for anything the tests wait for; only hit when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub mod apple;
pub mod node;
pub mod raw_ws;
pub mod webhooks;

pub struct TestServer {
    pub server: ovation::Server,
    pub data_dir: tempfile::TempDir,
    pub dev: bool,
    pub file: FileConfig,
    api: Api,
}

/// A server's HTTP and WebSocket API as its users reach it, with tokens minted from
/// the shared test secret (so it works for in-process servers and node processes).
pub struct Api {
    pub addr: SocketAddr,
    tokens: Tokens,
}

impl std::ops::Deref for TestServer {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_limits(|_| {}).await
    }

    pub async fn with_limits(tweak: impl FnOnce(&mut Limits)) -> TestServer {
        TestServer::with_config(|file| tweak(&mut file.limits)).await
    }

    pub async fn with_config(tweak: impl FnOnce(&mut FileConfig)) -> TestServer {
        let mut file = FileConfig::default();
        tweak(&mut file);
        TestServer::launch(tempfile::tempdir().unwrap(), true, file).await
    }

    /// As `restart`, the new server reading the time from `clock`.
    pub async fn restart_with_clock(self, clock: ovation::clock::Clock) -> TestServer {
        self.server.shutdown();
        self.server.stopped().await.unwrap();
        TestServer::launch_with_clock(self.data_dir, self.dev, self.file, None, clock).await
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestServer {
        self.server.shutdown();
        self.server.stopped().await.unwrap();
        TestServer::launch(self.data_dir, self.dev, self.file).await
    }

    pub async fn launch(data_dir: tempfile::TempDir, dev: bool, file: FileConfig) -> TestServer {
        TestServer::launch_on(data_dir, dev, file, None).await
    }

    /// A node of a cluster whose ledger is the PostgreSQL database at `ledger`.
    pub async fn node(ledger: &str) -> TestServer {
        TestServer::node_with_config(ledger, FileConfig::default()).await
    }

    /// As `node`, with `file` as its configuration.
    pub async fn node_with_config(ledger: &str, file: FileConfig) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        TestServer::launch_on(data_dir, true, file, Some(ledger.into())).await
    }

    async fn launch_on(
        data_dir: tempfile::TempDir,
        dev: bool,
        file: FileConfig,
        ledger: Option<String>,
    ) -> TestServer {
        let clock = ovation::clock::Clock::system();
        TestServer::launch_with_clock(data_dir, dev, file, ledger, clock).await
    }

    /// A server that reads the time from `clock` (a manual one, in tests of days).
    pub async fn launch_with_clock(
        data_dir: tempfile::TempDir,
        dev: bool,
        file: FileConfig,
        ledger: Option<String>,
        clock: ovation::clock::Clock,
    ) -> TestServer {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_owned(),
            token_secret: Some(SECRET.into()),
            dev,
            ledger,
            bus: None,
            file: file.clone(),
            clock,
        };
        let server = ovation::start(config).await.unwrap();
        TestServer {
            api: Api::new(server.addr()),
            server,
            data_dir,
            dev,
            file,
        }
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api {
            addr,
            tokens: Tokens::new(SECRET.as_bytes(), 0),
        }
    }

    pub fn token(&self, id: &str, role: Role) -> String {
        self.token_of(User {
            id: id.into(),
            name: display_name(id),
            role,
            minor: false,
        })
    }

    /// A token for `user` as given (a minor's, say).
    pub fn token_of(&self, user: User) -> String {
        self.tokens.mint(&user, 3600)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn viewer(&self, id: &str) -> Client {
        Client::connect(self.addr, Some(&self.token(id, Role::Viewer))).await
    }

    pub async fn broadcaster(&self, id: &str) -> Client {
        Client::connect(self.addr, Some(&self.token(id, Role::Broadcaster))).await
    }

    /// An HTTP request with `id`'s bearer token.
    pub fn http(
        &self,
        method: reqwest::Method,
        path: &str,
        id: &str,
        role: Role,
    ) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, self.url(path))
            .bearer_auth(self.token(id, role))
    }

    /// Tops up `coins` for viewer `id` and returns the new balance.
    pub async fn top_up(&self, id: &str, coins: u64) -> u64 {
        let key = format!("topup-{id}-{}", rand_key());
        let response = self
            .http(reqwest::Method::POST, "/api/me/topup", id, Role::Viewer)
            .json(&json!({"coins": coins, "key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["coins"].as_u64().unwrap()
    }

    pub async fn wallet(&self, id: &str) -> u64 {
        let token = self.token(id, Role::Viewer);
        get_json(&self.url("/api/me/wallet"), &token).await["coins"]
            .as_u64()
            .unwrap()
    }

    /// The admin's view of the books; asserts they balance.
    pub async fn books_balance(&self) -> Value {
        let report: Value = self
            .http(
                reqwest::Method::GET,
                "/api/admin/ledger/check",
                "auditor",
                Role::Admin,
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["sum"], 0, "{report}");
        report
    }

    pub async fn guest(&self) -> Client {
        Client::connect(self.addr, None).await
    }
}

/// `GET url` with a bearer token, as JSON.
pub async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The Prometheus text of the server at `base` (`http://host:port`).
pub async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series (name and labels, exactly as rendered) in `metrics`.
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A fresh idempotency key.
pub fn rand_key() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "key-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn display_name(id: &str) -> String {
    let mut name: String = id.chars().take(40).collect();
    if let Some(first) = name.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    name
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_rid: u64,
    /// Messages that arrived while waiting for a reply, in arrival order.
    pub pending: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Client {
        let url = match token {
            Some(token) => format!("ws://{addr}/ws?token={token}"),
            None => format!("ws://{addr}/ws"),
        };
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client::from_stream(ws)
    }

    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_rid: 0,
            pending: Default::default(),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::text(text.into())).await.unwrap();
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    /// The next JSON message from the server (queued ones first). Skips pings.
    pub async fn recv(&mut self) -> Value {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        self.recv_from_socket().await
    }

    async fn recv_from_socket(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("websocket error");
            match frame {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Sends `message` with a fresh `rid` and returns the reply carrying it; other
    /// messages received meanwhile stay queued for `recv`.
    pub async fn request(&mut self, mut message: Value) -> Value {
        self.next_rid += 1;
        let rid = format!("r{}", self.next_rid);
        message["rid"] = json!(rid);
        self.send(message).await;
        loop {
            let reply = self.recv_from_socket().await;
            if reply["rid"] == json!(rid) {
                return reply;
            }
            self.pending.push_back(reply);
        }
    }

    /// Like `request`, but fails the test unless the reply is `ok`.
    pub async fn ok(&mut self, message: Value) -> Value {
        let reply = self.request(message.clone()).await;
        assert_eq!(reply["type"], "ok", "{message} was answered with {reply}");
        reply
    }

    /// Expects an `error` reply with `code`.
    pub async fn error(&mut self, message: Value, code: &str) -> Value {
        let reply = self.request(message.clone()).await;
        assert_eq!(
            reply["type"], "error",
            "{message} was answered with {reply}"
        );
        assert_eq!(reply["code"], code, "{message} was answered with {reply}");
        reply
    }

    pub async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "join", "room": room})).await
    }

    /// Grabs a share of a red packet: the coins won, or the refusal's code.
    pub async fn grab(&mut self, room: &str, packet: &str) -> Result<u64, String> {
        let reply = self
            .request(json!({"type": "grab", "room": room, "packet": packet}))
            .await;
        match reply["type"].as_str() {
            Some("ok") => Ok(reply["coins"].as_u64().unwrap()),
            _ => Err(reply["code"].as_str().unwrap_or_default().to_owned()),
        }
    }

    /// Waits for the next message of `kind`, dropping others (for example presence).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("timed out waiting for the close");
            match frame {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }
}
