//! A calibration peer for `loadtest fanout`: the minimal broadcast hub the fan-out
//! targets describe (tokio + tungstenite, one task per connection, a broadcast channel
//! per room, everything queued written with one flush; no validation, no history, no
//! limits). Listens on 127.0.0.1:9191; run it and Ovation in one session with the
//! same load to see what this machine allows.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default)]
struct Room {
    seq: u64,
}
struct Hub {
    rooms: Mutex<HashMap<String, (Arc<Mutex<Room>>, broadcast::Sender<Utf8Bytes>)>>,
}

#[tokio::main]
async fn main() {
    let hub = Arc::new(Hub {
        rooms: Mutex::default(),
    });
    let app = Router::new()
        .route(
            "/api/dev/token",
            post(|Json(v): Json<Value>| async move { Json(json!({"token": v["user"]})) }),
        )
        .route(
            "/ws",
            get(
                |ws: WebSocketUpgrade, State(hub): State<Arc<Hub>>| async move {
                    ws.read_buffer_size(4096).on_upgrade(move |s| conn(s, hub))
                },
            ),
        )
        .with_state(hub);
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:9191")
        .await
        .unwrap()
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await.unwrap();
}

async fn conn(socket: WebSocket, hub: Arc<Hub>) {
    let (mut sink, mut stream) = socket.split();
    let mut rx: Option<broadcast::Receiver<Utf8Bytes>> = None;
    let mut room: Option<(String, Arc<Mutex<Room>>, broadcast::Sender<Utf8Bytes>)> = None;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(Ok(Message::Text(text))) = msg else { return };
                let m: Value = serde_json::from_str(&text).unwrap_or_default();
                match m["type"].as_str() {
                    Some("join") => {
                        let name = m["room"].as_str().unwrap_or("").to_owned();
                        let (state, tx) = hub.rooms.lock().unwrap().entry(name.clone())
                            .or_insert_with(|| (Arc::default(), broadcast::channel(4096).0)).clone();
                        rx = Some(tx.subscribe());
                        let seq = state.lock().unwrap().seq;
                        let reply = json!({"type":"ok","rid":m["rid"],"room":name,"epoch":"e","seq":seq,"viewers":1,"live":false,"recovered":false,"events":[]});
                        if sink.send(Message::Text(reply.to_string().into())).await.is_err() { return }
                        room = Some((name, state, tx));
                    }
                    Some("chat") => {
                        let Some((name, state, tx)) = &room else { continue };
                        let mut st = state.lock().unwrap();
                        st.seq += 1;
                        let event = json!({"type":"chat","room":name,"seq":st.seq,"ts":0,"id":format!("c-{}", st.seq),"from":{"id":"u","name":"u"},"text":m["text"]});
                        let _ = tx.send(event.to_string().into());
                    }
                    _ => {}
                }
            }
            ev = async { match &mut rx { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match ev {
                    Ok(frame) => {
                        // Everything already queued goes out with one flush.
                        if sink.feed(Message::Text(frame)).await.is_err() { return }
                        let rx = rx.as_mut().unwrap();
                        while let Ok(frame) = rx.try_recv() {
                            if sink.feed(Message::Text(frame)).await.is_err() { return }
                        }
                        if sink.flush().await.is_err() { return }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        }
    }
}
