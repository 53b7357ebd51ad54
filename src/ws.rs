//! The WebSocket edge: reads frames into the connection's `Session`, and a writer task
//! per connection that drains its outbox in batches (feed many, flush once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::{interval_at, timeout, Instant};
use tokio_util::sync::CancellationToken;

use crate::auth::User;
use crate::config::Limits;
use crate::gift::GiftEngine;
use crate::hub::{Flow, Hub, Next, Outbox, OutboxReceiver, Session};
use crate::protocol::close;

#[derive(Clone, Copy)]
struct Timings {
    idle: Duration,
    heartbeat: Duration,
    close_grace: Duration,
}

/// Runs one connection until it closes.
pub async fn run(
    sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    hub: Arc<Hub>,
    gifts: Arc<GiftEngine>,
    user: Option<User>,
    shutdown: CancellationToken,
) {
    // Only the timings, not all the limits: every idle connection carries these.
    let timings = Timings {
        idle: Limits::ms(hub.limits.idle_timeout_ms),
        heartbeat: Limits::ms(hub.limits.heartbeat_interval_ms),
        close_grace: Limits::ms(hub.limits.close_grace_ms),
    };
    let (outbox, receiver) = hub.connect(user.as_ref().map(|u| u.id.clone()));
    let writer = tokio::spawn(write_loop(sink, receiver, outbox.clone(), timings));
    let mut session = Session::new(hub, gifts, user, outbox.clone());
    let idle = timings.idle;

    loop {
        let next = tokio::select! {
            biased;
            _ = outbox.closing().cancelled() => break,
            _ = shutdown.cancelled() => {
                outbox.close(close::GOING_AWAY);
                break;
            }
            next = timeout(idle, stream.next()) => next,
        };
        let message = match next {
            Err(_silent_too_long) => {
                outbox.close(close::NORMAL);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                if is_too_large(error) {
                    outbox.close(close::MESSAGE_TOO_BIG);
                }
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                // Boxed: handling a message (a gift awaits the ledger) needs far more
                // state than waiting for one, and most connections are waiting.
                if let Flow::Close(code) = Box::pin(session.on_text(text.as_str())).await {
                    outbox.close(code);
                    break;
                }
            }
            Message::Binary(_) => {
                outbox.close(close::UNSUPPORTED_DATA);
                break;
            }
            // Any frame counts as a sign of life; tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => break,
        }
    }
    // Makes the writer finish even when the client simply went away.
    outbox.close(close::NORMAL);
    session.end();
    if let Ok(_sink) = writer.await {
        // Our close frame is out: wait briefly for the client's reply, so the socket is
        // not torn down (and the close frame lost to a reset) while the client still
        // has frames in flight. `_sink` stays alive to answer its pings meanwhile.
        let reply = async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, Message::Close(_)) {
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

fn is_too_large(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    receiver: OutboxReceiver,
    outbox: Arc<Outbox>,
    timings: Timings,
) -> SplitSink<WebSocket, Message> {
    let closing = receiver.closing().clone();
    let heartbeat = timings.heartbeat;
    let mut ping = interval_at(Instant::now() + heartbeat, heartbeat);
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            next = receiver.next_batch(&mut batch) => {
                if next == Next::Closing {
                    break;
                }
                let write = async {
                    for frame in batch.drain(..) {
                        sink.feed(Message::Text(frame)).await?;
                    }
                    sink.flush().await
                };
                // The write first: most complete at once, without waiting on `closing`.
                tokio::select! {
                    biased;
                    written = write => if written.is_err() {
                        outbox.close(close::NORMAL);
                        return sink;
                    },
                    // A client that stopped reading must not keep its writer stuck.
                    _ = closing.cancelled() => break,
                }
                OutboxReceiver::recycle(&mut batch);
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    outbox.close(close::NORMAL);
                    return sink;
                }
            }
        }
    }
    // Closing: what is already queued (the last error, the last events), then the
    // close frame, if the client takes them within the grace period.
    let code = outbox.close_code().unwrap_or(close::NORMAL);
    batch.clear();
    receiver.take_queued(&mut batch);
    let goodbye = async {
        for frame in batch {
            sink.feed(Message::Text(frame)).await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(close_reason(code)),
        })))
        .await
    };
    let _ = timeout(timings.close_grace, goodbye).await;
    sink
}

fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server shutting down",
        close::UNSUPPORTED_DATA => "binary frames are not supported",
        close::POLICY_VIOLATION => "too many errors",
        close::MESSAGE_TOO_BIG => "frame too large",
        close::SLOW_CONSUMER => "slow consumer: reconnect and join with since",
        _ => "",
    }
}
