//! A minimal WebSocket client (RFC 6455) for the load tester's own sockets.
//!
//! At millions of messages a second the generic client (tokio-tungstenite) cost the
//! load tester as much CPU as the server it measures: a waker proxy per poll, a
//! buffer split and a UTF-8 check per message. This one reads straight into one
//! buffer and hands out each text frame's bytes in place, a whole read at a time.
//! It speaks just what the load tester needs: unfragmented text frames, pings
//! (answered) and close. Anything else from the server ends the connection with an
//! error, so a protocol change shows up as errors rather than wrong figures.

use std::ops::ControlFlow;

use anyhow::bail;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bytes read per call; a read usually holds a whole batch of the server's frames.
const READ_CHUNK: usize = 8192;
/// The largest frame accepted from the server.
const MAX_FRAME: usize = 1 << 20;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

pub struct WebSocket {
    stream: TcpStream,
    /// Received bytes not yet handed out: `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    mask: MaskKeys,
    /// Pongs not yet written: written without waiting, so `read` stays cancel-safe.
    unsent: Vec<u8>,
}

/// Whether the connection is still open after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Open,
    Closed,
}

impl WebSocket {
    /// Opens `ws://{host_port}{path}` (path with its query).
    pub async fn connect(host_port: &str, path: &str) -> anyhow::Result<WebSocket> {
        let mut stream = TcpStream::connect(host_port).await?;
        stream.set_nodelay(true)?;
        let mut mask = MaskKeys::seeded();
        let key = STANDARD.encode(mask.bytes16());
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(READ_CHUNK);
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > 16 * 1024 {
                bail!("handshake reply too long");
            }
            if read_more(&mut stream, &mut buffer).await? == 0 {
                bail!("connection closed during the handshake");
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]);
        if !head.starts_with("HTTP/1.1 101") {
            let status = head.lines().next().unwrap_or_default();
            bail!("WebSocket upgrade refused: {status}");
        }
        // Bytes after the head are the first frames: they stay in the buffer.
        Ok(WebSocket {
            stream,
            buffer,
            start: head_end,
            mask,
            unsent: Vec::new(),
        })
    }

    /// Caps how much the kernel buffers for this socket unread. A phone that stops
    /// reading holds a few hundred KiB at most; on loopback an uncapped buffer grows
    /// to megabytes, charged to the machine the server shares, and the server would
    /// see the stall only after a minute.
    pub fn cap_receive_buffer(&self, bytes: usize) -> std::io::Result<()> {
        socket2::SockRef::from(&self.stream).set_recv_buffer_size(bytes)
    }

    /// Sends one text message (after any pong not yet written).
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        let mut frame = std::mem::take(&mut self.unsent);
        append_client_frame(&mut frame, TEXT, text.as_bytes(), self.mask.next());
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Hands every complete text frame already received to `on_text`, in order, until
    /// it breaks; reads from the socket only when none is buffered. Answers pings.
    /// Cancel-safe: its only wait is for the socket to have bytes.
    pub async fn read(
        &mut self,
        mut on_text: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> anyhow::Result<Read> {
        loop {
            let mut handed_out = false;
            while let Some((frame, len)) = parse(&self.buffer[self.start..])? {
                let payload_at = self.start + frame.header_len;
                let payload = payload_at..payload_at + frame.payload_len;
                self.start += len;
                match frame.opcode {
                    TEXT => {
                        handed_out = true;
                        if on_text(&self.buffer[payload]).is_break() {
                            return Ok(Read::Open);
                        }
                    }
                    PING => {
                        let mask = self.mask.next();
                        append_client_frame(&mut self.unsent, PONG, &self.buffer[payload], mask);
                        self.write_unsent()?;
                    }
                    PONG | BINARY => {}
                    CLOSE => return Ok(Read::Closed),
                    other => bail!("unexpected frame opcode {other:#x}"),
                }
            }
            if handed_out {
                return Ok(Read::Open);
            }
            self.write_unsent()?;
            // Keep only the unparsed tail, at the front.
            self.buffer.drain(..self.start);
            self.start = 0;
            if read_more(&mut self.stream, &mut self.buffer).await? == 0 {
                return Ok(Read::Closed);
            }
        }
    }

    /// The next text message, as an owned string (for request and reply exchanges).
    pub async fn next_text(&mut self) -> anyhow::Result<Option<String>> {
        let mut text = None;
        let read = self
            .read(|bytes| {
                text = Some(String::from_utf8_lossy(bytes).into_owned());
                ControlFlow::Break(())
            })
            .await?;
        Ok(if read == Read::Closed { None } else { text })
    }
}

impl WebSocket {
    /// Writes what of the pending pongs the socket takes now; the rest waits for the
    /// next read or send (a client's send buffer is all but empty, so it rarely does).
    fn write_unsent(&mut self) -> anyhow::Result<()> {
        while !self.unsent.is_empty() {
            match self.stream.try_write(&self.unsent) {
                Ok(written) => drop(self.unsent.drain(..written)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    buffer.reserve(READ_CHUNK);
    stream.read_buf(buffer).await
}

struct FrameHead {
    opcode: u8,
    header_len: usize,
    payload_len: usize,
}

/// The head of the first frame in `bytes` and the frame's whole length, once all of
/// it has arrived.
fn parse(bytes: &[u8]) -> anyhow::Result<Option<(FrameHead, usize)>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    if first & 0x80 == 0 {
        bail!("fragmented message from the server");
    }
    if second & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    let (payload_len, header_len) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (usize::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(len) => (
                usize::try_from(u64::from_be_bytes(len.try_into()?)).unwrap_or(usize::MAX),
                10,
            ),
            None => return Ok(None),
        },
        len => (usize::from(len), 2),
    };
    if payload_len > MAX_FRAME {
        bail!("frame of {payload_len} bytes from the server");
    }
    let len = header_len + payload_len;
    let head = FrameHead {
        opcode: first & 0x0F,
        header_len,
        payload_len,
    };
    Ok((bytes.len() >= len).then_some((head, len)))
}

/// Appends a final, masked client frame to `frame`.
fn append_client_frame(frame: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    frame.reserve(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// Masking keys: RFC 6455 asks for unpredictable ones against cache poisoning by
/// proxies; on loopback to our own server a per-connection xorshift is plenty.
struct MaskKeys(u64);

impl MaskKeys {
    fn seeded() -> MaskKeys {
        use std::hash::{BuildHasher, RandomState};
        MaskKeys(RandomState::new().hash_one(0u8) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn next(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_be_bytes()
    }

    fn bytes16(&mut self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_be_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn frames_are_parsed_only_once_complete() {
        let mut frame = vec![0x81, 126, 0x01, 0x00];
        frame.extend(std::iter::repeat_n(b'x', 256));
        for cut in [0, 1, 3, 4, 259] {
            assert!(parse(&frame[..cut]).expect("valid").is_none(), "{cut}");
        }
        let (head, len) = parse(&frame).expect("valid").expect("complete");
        assert_eq!(
            (head.opcode, head.header_len, head.payload_len, len),
            (1, 4, 256, 260)
        );
        assert!(parse(&[0x01, 0x00]).is_err(), "a fragment");
        assert!(parse(&[0x81, 0x80]).is_err(), "masked");
    }

    /// Against a real WebSocket server (tungstenite's): the handshake, masked
    /// messages of all three length forms, frames split across reads, pings answered,
    /// a reader that stops mid-batch keeps the rest, and the close.
    #[tokio::test]
    async fn talks_to_a_real_websocket_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let sizes = [5, 200, 70_000];
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut socket = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            for size in sizes {
                let Some(Ok(Message::Text(text))) = socket.next().await else {
                    panic!("expected text");
                };
                assert_eq!(text.len(), size);
                assert!(text.bytes().all(|b| b == b'a'));
            }
            socket.send(Message::Ping("hb".into())).await.expect("ping");
            let Some(Ok(Message::Pong(payload))) = socket.next().await else {
                panic!("expected the pong");
            };
            assert_eq!(&payload[..], b"hb");
            for i in 0..3 {
                socket
                    .feed(Message::text(format!("m{i}")))
                    .await
                    .expect("feed");
            }
            socket.flush().await.expect("flush");
            socket
                .send(Message::text("z".repeat(70_000)))
                .await
                .expect("big");
            socket.close(None).await.expect("close");
        });

        let mut client = WebSocket::connect(&address, "/ws?token=t")
            .await
            .expect("connect");
        for size in sizes {
            client.send_text(&"a".repeat(size)).await.expect("send");
        }
        assert_eq!(
            client.next_text().await.expect("read").as_deref(),
            Some("m0")
        );
        let mut rest = Vec::new();
        let on_text = |text: &[u8]| {
            rest.push(text.len());
            ControlFlow::Continue(())
        };
        let mut on_text = on_text;
        while client.read(&mut on_text).await.expect("read") == Read::Open {}
        assert_eq!(rest, [2, 2, 70_000], "every text, then the close");
        server.await.expect("server");
    }
}
