//! A raw RFC 6455 client over a plain `TcpStream`, for compliance tests: the opening
//! handshake written by hand (any header left out or spoiled), frames built bit by
//! bit (FIN and RSV bits, any opcode, masked or not, any length encoding, even a
//! length that does not match the payload sent), and the server's frames parsed as
//! they arrive, down to the TCP close.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PATIENCE;

/// Appended to the client's key before hashing (RFC 6455 §1.3).
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Opcodes (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// RSV bits, as they sit in the first byte shifted down by four.
pub const RSV1: u8 = 0b100;
pub const RSV2: u8 = 0b010;
pub const RSV3: u8 = 0b001;

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (RFC 6455 §4.2.2).
pub fn accept_for(key: &str) -> String {
    let digest = Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(ACCEPT_GUID.as_bytes())
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// An upgrade request, valid by default; each field can be left out or spoiled.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub path: String,
    pub host: Option<String>,
    pub key: Option<String>,
    pub version: Option<String>,
    /// More header lines, each without its CRLF.
    pub extra: Vec<String>,
}

impl Upgrade {
    /// A valid request for `path` on `addr`, with a Host header and a random key.
    pub fn new(addr: SocketAddr, path: &str) -> Upgrade {
        Upgrade {
            path: path.into(),
            host: Some(addr.to_string()),
            key: Some(random_key()),
            version: Some("13".into()),
            extra: Vec::new(),
        }
    }

    /// A valid request for `/ws`, with `token` if any.
    pub fn ws(addr: SocketAddr, token: Option<&str>) -> Upgrade {
        let path = match token {
            Some(token) => format!("/ws?token={token}"),
            None => "/ws".into(),
        };
        Upgrade::new(addr, &path)
    }

    pub fn without_host(mut self) -> Upgrade {
        self.host = None;
        self
    }

    pub fn key(mut self, key: Option<&str>) -> Upgrade {
        self.key = key.map(Into::into);
        self
    }

    pub fn version(mut self, version: Option<&str>) -> Upgrade {
        self.version = version.map(Into::into);
        self
    }

    /// The request's bytes.
    pub fn render(&self) -> String {
        let mut request = format!("GET {} HTTP/1.1\r\n", self.path);
        if let Some(host) = &self.host {
            request += &format!("Host: {host}\r\n");
        }
        request += "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        if let Some(key) = &self.key {
            request += &format!("Sec-WebSocket-Key: {key}\r\n");
        }
        if let Some(version) = &self.version {
            request += &format!("Sec-WebSocket-Version: {version}\r\n");
        }
        for line in &self.extra {
            request += line;
            request += "\r\n";
        }
        request += "\r\n";
        request
    }

    /// Sends the request on a new connection; returns the response's head and the
    /// connection (with whatever followed the head already buffered in it).
    pub async fn send(&self, addr: SocketAddr) -> (Response, RawWs) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(self.render().as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let head_len = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(at) = find(&received, b"\r\n\r\n") {
                    return at + 4;
                }
                let mut chunk = [0; 4096];
                let n = tcp.read(&mut chunk).await.unwrap_or(0);
                assert!(
                    n > 0,
                    "the connection closed before the response head ended: {:?}",
                    String::from_utf8_lossy(&received)
                );
                received.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("timed out waiting for the handshake response");
        let rest = received.split_off(head_len);
        let response = Response::parse(&received);
        (
            response,
            RawWs {
                tcp,
                received: rest,
            },
        )
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The head of an HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The head as received, for failure messages.
    pub head: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Response {
    fn parse(head: &[u8]) -> Response {
        let head = String::from_utf8_lossy(head).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Response {
            status,
            head,
            headers,
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the comma-separated header `name` holds `token`, ignoring case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }
}

/// How a frame's payload length is written (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// The shortest form, as the RFC requires.
    Minimal,
    /// `126` and a 16-bit length, whatever the length.
    Bits16,
    /// `127` and a 64-bit length, whatever the length.
    Bits64,
}

/// A frame as a client sends it: masked with a fresh random key, FIN set, no RSV bits
/// and the minimal length, unless told otherwise.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    /// RSV1..3 as three bits (`RSV1 | RSV3`, ...).
    pub rsv: u8,
    /// Four bits; any value, reserved ones included.
    pub opcode: u8,
    /// `None` sends the frame unmasked.
    pub mask: Option<[u8; 4]>,
    pub form: LengthForm,
    /// A length to announce instead of the payload's own (to send a header alone, or
    /// lie about the length).
    pub declared_len: Option<u64>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(rand::random()),
            form: LengthForm::Minimal,
            declared_len: None,
            payload: payload.into(),
        }
    }

    pub fn text(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::TEXT, payload)
    }

    pub fn continuation(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::CONTINUATION, payload)
    }

    pub fn binary(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::BINARY, payload)
    }

    pub fn ping(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::PING, payload)
    }

    pub fn pong(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::PONG, payload)
    }

    /// A close frame with `code` and `reason` (RFC 6455 §5.5.1).
    pub fn close(code: u16, reason: &[u8]) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        Frame::new(op::CLOSE, payload)
    }

    /// A close frame with exactly `payload` (empty, one byte, ...).
    pub fn close_raw(payload: impl Into<Vec<u8>>) -> Frame {
        Frame::new(op::CLOSE, payload)
    }

    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    pub fn rsv(mut self, bits: u8) -> Frame {
        self.rsv = bits;
        self
    }

    pub fn unmasked(mut self) -> Frame {
        self.mask = None;
        self
    }

    pub fn mask(mut self, mask: [u8; 4]) -> Frame {
        self.mask = Some(mask);
        self
    }

    pub fn form(mut self, form: LengthForm) -> Frame {
        self.form = form;
        self
    }

    pub fn declare_len(mut self, len: u64) -> Frame {
        self.declared_len = Some(len);
        self
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.declared_len.unwrap_or(self.payload.len() as u64);
        let mut out =
            vec![(u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | (self.opcode & 0x0F)];
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        let form = match self.form {
            LengthForm::Minimal if len < 126 => None,
            LengthForm::Minimal if len <= u64::from(u16::MAX) => Some(LengthForm::Bits16),
            LengthForm::Minimal => Some(LengthForm::Bits64),
            other => Some(other),
        };
        match form {
            None => out.push(masked | len as u8),
            Some(LengthForm::Bits16) => {
                let len = u16::try_from(len).expect("a 16-bit length");
                out.push(masked | 126);
                out.extend_from_slice(&len.to_be_bytes());
            }
            Some(_) => {
                out.push(masked | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        match self.mask {
            Some(mask) => {
                out.extend_from_slice(&mask);
                out.extend(
                    self.payload
                        .iter()
                        .enumerate()
                        .map(|(i, byte)| byte ^ mask[i % 4]),
                );
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn is_close(&self) -> bool {
        self.opcode == op::CLOSE
    }

    /// A close frame's status code; `None` when it has none (or is no close frame).
    pub fn close_code(&self) -> Option<u16> {
        match (self.is_close(), self.payload.as_slice()) {
            (true, [high, low, ..]) => Some(u16::from_be_bytes([*high, *low])),
            _ => None,
        }
    }

    /// A close frame's reason bytes.
    pub fn close_reason(&self) -> &[u8] {
        self.payload.get(2..).unwrap_or_default()
    }

    /// A text frame's JSON.
    pub fn json(&self) -> Option<Value> {
        (self.opcode == op::TEXT && self.fin)
            .then(|| serde_json::from_slice(&self.payload).ok())
            .flatten()
    }
}

/// What reading from the server came to.
#[derive(Debug)]
pub enum Received {
    Frame(ServerFrame),
    /// The TCP connection ended: EOF, or a reset.
    Closed,
    /// Nothing complete within the time allowed.
    TimedOut,
}

/// One raw WebSocket connection, past its handshake.
pub struct RawWs {
    pub tcp: TcpStream,
    /// Bytes read but not parsed yet.
    received: Vec<u8>,
}

impl RawWs {
    /// A connection to `/ws` (with `token`, if any) through a valid handshake, checked.
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> RawWs {
        let upgrade = Upgrade::ws(addr, token);
        let (response, ws) = upgrade.send(addr).await;
        assert_eq!(response.status, 101, "{}", response.head);
        let key = upgrade.key.as_deref().unwrap();
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(accept_for(key).as_str()),
            "{}",
            response.head
        );
        ws
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await?;
        self.tcp.flush().await
    }

    /// Sends `frame`; fails the test if the socket refuses it.
    pub async fn send(&mut self, frame: &Frame) {
        self.send_bytes(&frame.encode())
            .await
            .unwrap_or_else(|error| panic!("sending {frame:?}: {error}"));
    }

    /// Sends `frame`, whether or not the server still takes it.
    pub async fn try_send(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.send_bytes(&frame.encode()).await
    }

    /// The next frame, the end of the connection, or nothing within `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.parse() {
                return Received::Frame(frame);
            }
            let mut chunk = [0; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return Received::TimedOut,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(n)) => self.received.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next frame within `PATIENCE`; fails the test otherwise.
    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.next_within(PATIENCE).await {
            Received::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads until the server's close frame (skipping data and pings) and returns it;
    /// fails the test if the connection ends without one or nothing comes within
    /// `limit`.
    pub async fn close_frame_within(&mut self, limit: Duration) -> ServerFrame {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Received::Frame(frame) if frame.is_close() => return frame,
                Received::Frame(_) => continue,
                Received::Closed => panic!("the connection ended without a close frame"),
                Received::TimedOut => panic!("no close frame within {limit:?}"),
            }
        }
    }

    /// The server's close frame, within `PATIENCE`.
    pub async fn close_frame(&mut self) -> ServerFrame {
        self.close_frame_within(PATIENCE).await
    }

    /// The status code of the server's close frame (`None`: a close without one).
    pub async fn close_code(&mut self) -> Option<u16> {
        self.close_frame().await.close_code()
    }

    /// Whether the server ends the TCP connection within `limit` (frames meanwhile are
    /// read and dropped).
    pub async fn tcp_closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Received::Frame(_) => continue,
                Received::Closed => return true,
                Received::TimedOut => return false,
            }
        }
    }

    /// Sends `message` as one text frame and returns the reply with its `rid` (which
    /// `message` must carry); pongs, pings and other messages meanwhile are dropped.
    pub async fn request(&mut self, message: Value) -> Value {
        self.send(&Frame::text(message.to_string())).await;
        self.reply_to(&message["rid"]).await
    }

    /// The next message whose `rid` is `rid`; fails the test on a close or a timeout.
    pub async fn reply_to(&mut self, rid: &Value) -> Value {
        assert!(!rid.is_null(), "a request needs a rid");
        loop {
            let frame = self.next_frame().await;
            assert!(!frame.masked, "the server masked a frame: {frame:?}");
            if frame.is_close() {
                panic!(
                    "closed with {:?} ({:?}) while waiting for the reply to {rid}",
                    frame.close_code(),
                    String::from_utf8_lossy(frame.close_reason())
                );
            }
            if let Some(reply) = frame.json() {
                if reply["rid"] == *rid {
                    return reply;
                }
            }
        }
    }

    /// Parses one complete frame off the front of what was received.
    fn parse(&mut self) -> Option<ServerFrame> {
        let [first, second, ..] = *self.received.as_slice() else {
            return None;
        };
        let masked = second & 0x80 != 0;
        let (len, mut at) = match second & 0x7F {
            126 => {
                let bytes = self.received.get(2..4)?;
                (u64::from(u16::from_be_bytes(bytes.try_into().unwrap())), 4)
            }
            127 => {
                let bytes = self.received.get(2..10)?;
                (u64::from_be_bytes(bytes.try_into().unwrap()), 10)
            }
            len => (u64::from(len), 2),
        };
        let len = usize::try_from(len).expect("a server frame's length fits in memory");
        let mask = if masked {
            let mask: [u8; 4] = self.received.get(at..at + 4)?.try_into().unwrap();
            at += 4;
            Some(mask)
        } else {
            None
        };
        if self.received.len() < at + len {
            return None;
        }
        let mut payload = self.received[at..at + len].to_vec();
        if let Some(mask) = mask {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        self.received.drain(..at + len);
        Some(ServerFrame {
            fin: first & 0x80 != 0,
            rsv: (first >> 4) & 0b111,
            opcode: first & 0x0F,
            masked,
            payload,
        })
    }
}
