//! The WebSocket edge. Each connection has a reader (this task: frames in, through the
//! connection's `Session`) and a writer task that drains its outbox, encoding a batch
//! of frames into one buffer and writing it with one call. Each owns one half of the
//! socket, so neither waits on the other; the reader asks the writer for pongs. A
//! client's close is answered at once with its own code, without what is queued, and
//! ends the TCP connection (RFC 6455 §5.5.1).

pub mod codec;
mod writers;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{interval_at, timeout, Instant};
use tokio_util::sync::CancellationToken;

pub use writers::WriterPool;

use crate::auth::User;
use crate::config::Limits;
use crate::gift::GiftEngine;
use crate::hub::{Batch, Flow, Hub, Next, Outbox, OutboxReceiver, Session};
use crate::protocol::close;
use codec::{encode, encode_close, Decoder, Event, Opcode, Violation};

/// A socket upgraded to WebSocket by the HTTP side (`http/upgrade.rs`), with what
/// the client sent after its request.
pub struct UpgradedSocket {
    pub tcp: tokio::net::TcpStream,
    pub received: bytes::Bytes,
}

#[derive(Clone, Copy)]
struct Timings {
    idle: Duration,
    heartbeat: Duration,
    close_grace: Duration,
}

/// Runs one connection until it closes.
pub async fn run(
    socket: UpgradedSocket,
    hub: Arc<Hub>,
    gifts: Arc<GiftEngine>,
    user: Option<User>,
    shutdown: CancellationToken,
    writers: tokio::runtime::Handle,
) {
    // Only the timings, not all the limits: every idle connection carries these.
    let timings = Timings {
        idle: Limits::ms(hub.limits.idle_timeout_ms),
        heartbeat: Limits::ms(hub.limits.heartbeat_interval_ms),
        close_grace: Limits::ms(hub.limits.close_grace_ms),
    };
    let (read_half, write_half) = socket.tcp.into_split();
    let mut reader = Reader {
        socket: read_half,
        received: BytesMut::from(socket.received),
        decoder: Decoder::new(hub.limits.max_frame_bytes),
        read_chunk: hub.limits.ws_read_buffer_bytes,
    };
    let (outbox, receiver) = hub.connect(user.as_ref().map(|u| u.id.clone()));
    let writer = writers.spawn(write_loop(write_half, receiver, outbox.clone(), timings));
    let mut session = Session::new(hub, gifts, user, outbox.clone());

    loop {
        let next = tokio::select! {
            biased;
            _ = outbox.closing().cancelled() => break,
            _ = shutdown.cancelled() => {
                outbox.close(close::GOING_AWAY);
                break;
            }
            next = timeout(timings.idle, reader.next()) => next,
        };
        let event = match next {
            Err(_silent_too_long) => {
                outbox.close(close::NORMAL);
                break;
            }
            Ok(Err(violation)) => {
                outbox.close(violation.close_code());
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(event))) => event,
        };
        match event {
            Event::Text(text) => {
                // Boxed: handling a message (a gift awaits the ledger) needs far more
                // state than waiting for one, and most connections are waiting.
                if let Flow::Close(code) = Box::pin(session.on_text(&text)).await {
                    outbox.close(code);
                    break;
                }
            }
            Event::Ping(payload) => outbox.pong(payload),
            // Any frame counts as a sign of life.
            Event::Pong => {}
            Event::Close(code) => {
                outbox.answer_close(code.unwrap_or(close::NORMAL));
                break;
            }
        }
    }
    // Makes the writer finish even when the client simply went away.
    outbox.close(close::NORMAL);
    session.end();
    let written = writer.await;
    if let (Ok(_write_half), false) = (written, outbox.answering_close()) {
        // Our close frame is out: wait briefly for the client's reply, so the socket is
        // not torn down (and the close frame lost to a reset) while the client still
        // has frames in flight. `_write_half` keeps the socket open meanwhile. A
        // client's close, once answered, ends the TCP connection at once.
        let reply = async {
            while let Ok(Some(event)) = reader.next().await {
                if matches!(event, Event::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(timings.close_grace, reply).await;
    }
    if let Some(code) = outbox.close_code() {
        crate::metrics::connection_closed_with(code);
    }
}

/// The reading half: bytes from the socket, decoded into events.
struct Reader {
    socket: OwnedReadHalf,
    received: BytesMut,
    decoder: Decoder,
    read_chunk: usize,
}

impl Reader {
    /// The client's next event; `Ok(None)` once the connection is gone. Cancel-safe:
    /// it waits only in `readable` and `read_buf`, and neither loses data when
    /// cancelled.
    async fn next(&mut self) -> Result<Option<Event>, Violation> {
        loop {
            if let Some(event) = self.decoder.decode(&mut self.received)? {
                return Ok(Some(event));
            }
            if self.received.is_empty() {
                // Waiting connections hold no receive buffer.
                self.received = BytesMut::new();
            }
            if self.socket.readable().await.is_err() {
                return Ok(None);
            }
            self.received.reserve(self.read_chunk);
            // Readable, so this reads at once. Unlike `try_read_buf`, it takes a read
            // that did not fill the buffer as proof the socket is drained, which saves
            // the second `recv` (the one that would only say "would block").
            match self.socket.read_buf(&mut self.received).await {
                Ok(read) if read > 0 => {}
                _closed_or_failed => return Ok(None),
            }
        }
    }
}

async fn write_loop(
    mut socket: OwnedWriteHalf,
    receiver: OutboxReceiver,
    outbox: Arc<Outbox>,
    timings: Timings,
) -> OwnedWriteHalf {
    let closing = receiver.closing().clone();
    let heartbeat = timings.heartbeat;
    let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
    let mut batch = Batch::default();
    let mut unsent = Unsent::default();
    loop {
        tokio::select! {
            biased;
            next = receiver.next_batch(&mut batch) => {
                if next == Next::Closing {
                    break;
                }
            }
            _ = ping.tick() => encode(&mut unsent.bytes, Opcode::Ping, b""),
        }
        // The write first: most complete at once, without waiting on `closing`.
        let written = tokio::select! {
            biased;
            written = unsent.write_batch(&mut socket, &mut batch) => written,
            // A client that stopped reading must not keep its writer stuck.
            _ = closing.cancelled() => break,
        };
        if written.is_err() {
            outbox.close(close::NORMAL);
            return socket;
        }
        OutboxReceiver::recycle(&mut batch);
    }
    // Closing: the rest of a write cut short, what is already queued (the last error,
    // the last events), then the close frame, if the client takes them within the
    // grace period.
    let code = outbox.close_code().unwrap_or(close::NORMAL);
    let answering = outbox.answering_close();
    if answering {
        // No data frames after a close: only the rest of one already started.
        batch.frames.clear();
    } else {
        receiver.take_queued(&mut batch);
    }
    let reason = if answering { "" } else { close_reason(code) };
    let goodbye = async {
        unsent.write_batch(&mut socket, &mut batch).await?;
        encode_close(&mut unsent.bytes, code, reason);
        unsent.write_to(&mut socket).await
    };
    let _ = timeout(timings.close_grace, goodbye).await;
    socket
}

/// Encoded bytes the socket has not taken yet. A write cut short by closing leaves its
/// rest here, so the close frame never follows half a frame.
#[derive(Default)]
struct Unsent {
    bytes: Vec<u8>,
    written: usize,
}

/// Frames are encoded at most this far ahead of the socket: a long backlog (a client
/// that reads slowly, or one closed as slow) is copied as the socket takes it, not all
/// at once.
const ENCODED_AHEAD: usize = 64 * 1024;

impl Unsent {
    /// Writes the batch's pong and frames, taking them out of the batch as they are
    /// encoded. Cancel-safe, like `write_to`: what was taken is in `self`.
    async fn write_batch(
        &mut self,
        socket: &mut OwnedWriteHalf,
        batch: &mut Batch,
    ) -> std::io::Result<()> {
        if let Some(payload) = batch.pong.take() {
            encode(&mut self.bytes, Opcode::Pong, &payload);
        }
        const LARGEST_HEADER: usize = 10;
        loop {
            // Sized for what this step encodes, looking no further into a long backlog.
            let mut wanted = 0;
            for frame in batch.frames.iter() {
                wanted += frame.as_bytes().len() + LARGEST_HEADER;
                if wanted >= ENCODED_AHEAD {
                    break;
                }
            }
            self.bytes.reserve(wanted.min(ENCODED_AHEAD));
            while self.bytes.len() - self.written < ENCODED_AHEAD {
                let Some(frame) = batch.frames.pop_front() else {
                    break;
                };
                encode(&mut self.bytes, Opcode::Text, frame.as_bytes());
            }
            self.write_to(socket).await?;
            if batch.frames.is_empty() {
                return Ok(());
            }
        }
    }

    /// Writes everything encoded; cancel-safe, since each `write` either happened or
    /// did not.
    async fn write_to(&mut self, socket: &mut OwnedWriteHalf) -> std::io::Result<()> {
        while self.written < self.bytes.len() {
            match socket.write(&self.bytes[self.written..]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => self.written += n,
            }
        }
        // Between writes a connection holds no buffer.
        *self = Unsent::default();
        Ok(())
    }
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::PROTOCOL_ERROR => "invalid frame",
        close::UNSUPPORTED_DATA => "binary frames are not supported",
        close::INVALID_DATA => "text is not valid UTF-8",
        close::POLICY_VIOLATION => "too many errors",
        close::MESSAGE_TOO_BIG => "frame too large",
        close::SLOW_CONSUMER => "slow consumer: reconnect and join with since",
        _ => "",
    }
}
