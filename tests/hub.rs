//! The real-time hub against a real server: ordering, recovery, limits and errors.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use ovation::auth::Role;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

fn chat(room: &str, text: &str) -> Value {
    json!({"type": "chat", "room": room, "text": text})
}

fn roomy(limits: &mut ovation::config::Limits) {
    limits.chat_burst = 10_000;
}

/// Collects `count` chat events and returns their (seq, text) in arrival order.
async fn chats(client: &mut Client, count: usize) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let event = client.next_of("chat").await;
        seen.push((
            event["seq"].as_u64().unwrap(),
            event["text"].as_str().unwrap().to_owned(),
        ));
    }
    seen
}

#[tokio::test]
async fn every_member_sees_every_event_once_in_seq_order() {
    let server = TestServer::with_limits(roomy).await;
    let mut members = Vec::new();
    for i in 0..20 {
        let mut member = server.viewer(&format!("m{i}")).await;
        member.join("stage").await;
        members.push(member);
    }
    let mut senders = Vec::new();
    for i in 0..3 {
        let mut sender = server.viewer(&format!("s{i}")).await;
        sender.join("stage").await;
        senders.push(sender);
    }
    let send_all = senders
        .iter_mut()
        .enumerate()
        .map(|(i, sender)| async move {
            for n in 0..30 {
                sender.ok(chat("stage", &format!("{i}:{n}"))).await;
            }
        });
    futures_util::future::join_all(send_all).await;

    let mut reference: Option<Vec<(u64, String)>> = None;
    for member in &mut members {
        let seen = chats(member, 90).await;
        let seqs: Vec<u64> = seen.iter().map(|(seq, _)| *seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "gap or reorder: {seqs:?}"
        );
        let texts: HashSet<&String> = seen.iter().map(|(_, text)| text).collect();
        assert_eq!(texts.len(), 90, "duplicates or losses");
        match &reference {
            None => reference = Some(seen),
            Some(first) => assert_eq!(first, &seen, "members disagree on the order"),
        }
    }
    // Each sender's own messages keep the order they were sent in.
    let order = reference.unwrap();
    for i in 0..3 {
        let mine: Vec<&String> = order
            .iter()
            .map(|(_, t)| t)
            .filter(|t| t.starts_with(&format!("{i}:")))
            .collect();
        let expected: Vec<String> = (0..30).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn chat_reply_names_the_event_and_join_snapshot_describes_the_room() {
    let server = TestServer::start().await;
    let mut alice = server.viewer("alice").await;
    let joined = alice.join("lobby").await;
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["seq"], 0);
    assert_eq!(joined["viewers"], 1);
    assert_eq!(joined["live"], false);
    assert!(joined["epoch"].is_string());
    assert_eq!(joined["events"], json!([]));

    let reply = alice.ok(chat("lobby", "  hello  ")).await;
    let event = alice.next_of("chat").await;
    assert_eq!(event["id"], reply["id"]);
    assert_eq!(event["seq"], reply["seq"]);
    assert_eq!(event["text"], "hello", "text is trimmed");
    assert_eq!(event["from"], json!({"id": "alice", "name": "Alice"}));
    assert_eq!(event["room"], "lobby");
    assert!(event["ts"].as_u64().unwrap() > 1_700_000_000_000);

    let mut bob = server.viewer("bob").await;
    let joined = bob.join("lobby").await;
    assert_eq!(joined["seq"], 1);
    assert_eq!(joined["viewers"], 2);
    assert_eq!(joined["recovered"], false);
    assert_eq!(joined["events"][0]["text"], "hello");
}

#[tokio::test]
async fn since_recovers_exactly_the_missed_events() {
    let server = TestServer::with_limits(roomy).await;
    let mut speaker = server.viewer("speaker").await;
    speaker.join("r").await;
    let mut listener = server.viewer("listener").await;
    let joined = listener.join("r").await;
    for n in 0..3 {
        speaker.ok(chat("r", &format!("before {n}"))).await;
    }
    let seen = chats(&mut listener, 3).await;
    let last_seen = seen.last().unwrap().0;
    drop(listener);

    for n in 0..5 {
        speaker.ok(chat("r", &format!("missed {n}"))).await;
    }
    let mut listener = server.viewer("listener").await;
    let rejoined = listener
        .ok(json!({"type": "join", "room": "r", "since": {"epoch": joined["epoch"], "seq": last_seen}}))
        .await;
    assert_eq!(rejoined["recovered"], true);
    let texts: Vec<&str> = rejoined["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["missed 0", "missed 1", "missed 2", "missed 3", "missed 4"]
    );
    assert_eq!(rejoined["seq"], last_seen + 5);

    // Live events continue right after the recovered ones.
    speaker.ok(chat("r", "after")).await;
    let event = listener.next_of("chat").await;
    assert_eq!(event["seq"], last_seen + 6);
}

#[tokio::test]
async fn since_from_another_epoch_or_beyond_the_window_falls_back_to_recent_events() {
    let server = TestServer::with_limits(|l| {
        roomy(l);
        l.history_len = 10;
        l.join_replay = 4;
    })
    .await;
    let mut speaker = server.viewer("speaker").await;
    let joined = speaker.join("r").await;
    for n in 0..15 {
        speaker.ok(chat("r", &format!("m{n}"))).await;
    }
    let mut late = server.viewer("late").await;
    let other_epoch = late
        .ok(json!({"type": "join", "room": "r", "since": {"epoch": "not-this-one", "seq": 14}}))
        .await;
    assert_eq!(other_epoch["recovered"], false);
    let texts: Vec<&str> = other_epoch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m11", "m12", "m13", "m14"]);

    let mut late = server.viewer("late2").await;
    let too_old = late
        .ok(json!({"type": "join", "room": "r", "since": {"epoch": joined["epoch"], "seq": 2}}))
        .await;
    assert_eq!(
        too_old["recovered"], false,
        "seq 3..5 fell out of a 10-event window"
    );
    assert_eq!(too_old["events"].as_array().unwrap().len(), 4);

    let mut ok = server.viewer("late3").await;
    let in_window = ok
        .ok(json!({"type": "join", "room": "r", "since": {"epoch": joined["epoch"], "seq": 5}}))
        .await;
    assert_eq!(in_window["recovered"], true);
    assert_eq!(in_window["events"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn malformed_and_mistyped_messages_answer_bad_request_and_keep_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.viewer("carol").await;
    client.send_text("{not json").await;
    let reply = client.recv().await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    assert_eq!(reply["rid"], Value::Null);
    assert!(reply["message"].as_str().unwrap().contains("JSON"));

    client.error(json!({"type": "dance"}), "bad_request").await;
    client.error(json!({"room": "x"}), "bad_request").await;
    client.error(json!({"type": "join"}), "bad_request").await;
    client
        .error(json!({"type": "join", "room": 7}), "bad_request")
        .await;
    client
        .error(json!({"type": "join", "room": "Bad Room"}), "bad_request")
        .await;
    client
        .error(
            json!({"type": "join", "room": "a", "since": {"epoch": "e", "seq": -1}}),
            "bad_request",
        )
        .await;
    client.send_text("[1,2]").await;
    assert_eq!(client.recv().await["code"], "bad_request");
    client.send_text(r#"{"type":"ping","rid":{"a":1}}"#).await;
    assert_eq!(client.recv().await["code"], "bad_request");

    // Integer and string rids are echoed as given.
    client.send(json!({"type": "ping", "rid": 42})).await;
    assert_eq!(client.recv().await, json!({"type": "ok", "rid": 42}));
    client.send(json!({"type": "ping", "rid": "x-1"})).await;
    assert_eq!(client.recv().await, json!({"type": "ok", "rid": "x-1"}));
}

#[tokio::test]
async fn chat_requires_a_joined_room_and_valid_text() {
    let server = TestServer::start().await;
    let mut dan = server.viewer("dan").await;
    dan.error(chat("nowhere", "hi"), "not_joined").await;
    dan.error(json!({"type": "leave", "room": "nowhere"}), "not_joined")
        .await;
    dan.join("here").await;
    dan.error(chat("here", "   "), "bad_request").await;
    dan.error(chat("here", &"x".repeat(501)), "too_large").await;
    dan.ok(chat("here", &"é".repeat(500))).await;
    dan.ok(json!({"type": "leave", "room": "here"})).await;
    dan.error(chat("here", "hi"), "not_joined").await;
}

/// The platform's blocked terms (`[moderation] blocked_terms`) are refused in every
/// room, whatever their case or width; the sender stays connected and nobody else
/// sees the message.
#[tokio::test]
async fn chat_with_a_blocked_term_is_refused_whatever_its_case_or_width() {
    let server = TestServer::with_config(|file| {
        file.moderation.blocked_terms = vec!["spam".into(), "buy followers".into()];
    })
    .await;
    let mut spammer = server.viewer("spammer").await;
    let mut reader = server.viewer("reader").await;
    spammer.join("here").await;
    reader.join("here").await;
    for text in ["SPAM", "cheap ＳＰＡＭ here", "Buy Followers today"] {
        let refused = spammer.error(chat("here", text), "forbidden").await;
        assert!(
            refused["message"].as_str().unwrap().contains("not allowed"),
            "{refused}"
        );
    }
    spammer.ok(chat("here", "hello everyone")).await;
    // The first chat the reader sees is the allowed one.
    assert_eq!(reader.next_of("chat").await["text"], "hello everyone");
}

#[tokio::test]
async fn a_connection_may_be_in_sixteen_rooms() {
    let server = TestServer::start().await;
    let mut eve = server.viewer("eve").await;
    for i in 0..16 {
        eve.join(&format!("room-{i}")).await;
    }
    eve.join("room-3").await; // joining again is not a new room
    eve.error(json!({"type": "join", "room": "room-16"}), "too_large")
        .await;
    eve.ok(json!({"type": "leave", "room": "room-0"})).await;
    eve.join("room-16").await;
}

#[tokio::test]
async fn chat_is_rate_limited_per_user_across_connections() {
    let server = TestServer::start().await; // 5 per 10 s
    let mut first = server.viewer("fay").await;
    let mut second = server.viewer("fay").await;
    first.join("r").await;
    second.join("r").await;
    for n in 0..3 {
        first.ok(chat("r", &format!("{n}"))).await;
    }
    for n in 3..5 {
        second.ok(chat("r", &format!("{n}"))).await;
    }
    let reply = first.error(chat("r", "six"), "rate_limited").await;
    assert!(reply["message"].as_str().unwrap().contains("5"));
    second.error(chat("r", "seven"), "rate_limited").await;
    // Someone else is not affected.
    let mut gil = server.viewer("gil").await;
    gil.join("r").await;
    gil.ok(chat("r", "hi")).await;
}

#[tokio::test]
async fn guests_watch_but_cannot_write() {
    let server = TestServer::start().await;
    let mut guest = server.guest().await;
    guest.join("show").await;
    let mut host = server.viewer("host").await;
    host.join("show").await;
    host.ok(chat("show", "welcome")).await;
    assert_eq!(guest.next_of("chat").await["text"], "welcome");
    let reply = guest.error(chat("show", "hi"), "unauthorized").await;
    assert!(reply["message"].as_str().unwrap().contains("token"));
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_make_guests() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let server = TestServer::start().await;
    let now = ovation::auth::unix_now_s();
    let claims =
        |exp: u64| json!({"sub": "mallory", "name": "Mallory", "role": "admin", "exp": exp});
    let forged = encode(
        &Header::default(),
        &claims(now + 600),
        &EncodingKey::from_secret(b"guessed-secret-000000"),
    )
    .unwrap();
    let expired = encode(
        &Header::default(),
        &claims(now - 600),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let hs512 = encode(
        &Header::new(jsonwebtoken::Algorithm::HS512),
        &claims(now + 600),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // alg "none": a header and claims with an empty signature.
    let b64 = |v: Value| {
        use base64_helper::encode_url;
        encode_url(v.to_string().as_bytes())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(now + 600))
    );
    for token in [forged, expired, hs512, unsigned, "garbage".to_owned()] {
        let mut client = Client::connect(server.addr, Some(&token)).await;
        client.join("r").await;
        client.error(chat("r", "hi"), "unauthorized").await;
    }
    let valid = server.token("mallory", Role::Viewer);
    let mut client = Client::connect(server.addr, Some(&valid)).await;
    client.join("r").await;
    client.ok(chat("r", "hi")).await;
}

mod base64_helper {
    /// Unpadded base64url, as JWTs use.
    pub fn encode_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn frame_over_16_kib_closes_with_1009() {
    let server = TestServer::start().await;
    let mut client = server.viewer("big").await;
    client.join("r").await;
    let text = chat("r", &"x".repeat(17 * 1024)).to_string();
    client.send_text(text).await;
    assert_eq!(client.closed().await, 1009);
}

#[tokio::test]
async fn a_frame_just_under_16_kib_is_accepted() {
    let server = TestServer::start().await;
    let mut client = server.viewer("edge").await;
    let mut message = json!({"type": "ping", "rid": 1, "pad": ""});
    let overhead = message.to_string().len();
    message["pad"] = json!("p".repeat(16 * 1024 - overhead));
    assert_eq!(message.to_string().len(), 16 * 1024);
    client.send(message).await;
    assert_eq!(client.recv().await["type"], "ok");
}

#[tokio::test]
async fn binary_frames_close_with_1003() {
    let server = TestServer::start().await;
    let mut client = server.viewer("bin").await;
    client
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.closed().await, 1003);
}

/// Sends one raw frame (the client still masks it).
async fn send_frame(client: &mut Client, frame: Frame) {
    client.ws.send(Message::Frame(frame)).await.unwrap();
}

fn text_fragment(bytes: &[u8], opcode: Data, last: bool) -> Frame {
    Frame::message(bytes.to_vec(), OpCode::Data(opcode), last)
}

#[tokio::test]
async fn a_fragmented_message_is_joined_and_pings_between_fragments_are_answered() {
    let server = TestServer::start().await;
    let mut client = server.viewer("frag").await;
    let message = json!({"type": "ping", "rid": "f"}).to_string();
    let (head, tail) = message.as_bytes().split_at(9);
    send_frame(&mut client, text_fragment(head, Data::Text, false)).await;
    client.ws.send(Message::Ping("mid".into())).await.unwrap();
    send_frame(&mut client, text_fragment(tail, Data::Continue, true)).await;
    let mut pong = None;
    let reply = loop {
        match client.ws.next().await.unwrap().unwrap() {
            Message::Pong(payload) => pong = Some(payload),
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        pong.as_deref(),
        Some(b"mid".as_slice()),
        "the pong comes first"
    );
    assert_eq!(
        (reply["type"].as_str(), reply["rid"].as_str()),
        (Some("ok"), Some("f"))
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_reserved_bits_with_1002() {
    let server = TestServer::start().await;
    let mut client = server.viewer("utf").await;
    send_frame(
        &mut client,
        text_fragment(b"{\"type\": \"\xff\"}", Data::Text, true),
    )
    .await;
    assert_eq!(client.closed().await, 1007);

    let mut client = server.viewer("rsv").await;
    let mut frame = text_fragment(b"{}", Data::Text, true);
    frame.header_mut().rsv1 = true;
    send_frame(&mut client, frame).await;
    assert_eq!(client.closed().await, 1002);
}

/// The status line and headers the server answers a raw upgrade request with.
async fn upgrade_response(server: &TestServer, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0; 4096];
    let n = tcp.read(&mut response).await.unwrap();
    String::from_utf8_lossy(&response[..n]).into_owned()
}

#[tokio::test]
async fn a_bad_upgrade_request_is_refused_with_a_clear_status() {
    let server = TestServer::start().await;
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    let plain = upgrade_response(&server, "").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("bad_request"), "{plain}");

    let old = upgrade_response(
        &server,
        &format!("{upgrade}{key}Sec-WebSocket-Version: 8\r\n"),
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_lowercase().contains("sec-websocket-version: 13"),
        "{old}"
    );

    let keyless =
        upgrade_response(&server, &format!("{upgrade}Sec-WebSocket-Version: 13\r\n")).await;
    assert!(keyless.starts_with("HTTP/1.1 400"), "{keyless}");

    // The RFC's own example key gets the RFC's answer.
    let good = upgrade_response(
        &server,
        &format!("{upgrade}{key}Sec-WebSocket-Version: 13\r\n"),
    )
    .await;
    assert!(good.starts_with("HTTP/1.1 101"), "{good}");
    assert!(good.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{good}");
}

#[tokio::test]
async fn twenty_errors_in_ten_seconds_close_with_1008() {
    let server = TestServer::start().await;
    let mut client = server.viewer("noisy").await;
    for _ in 0..19 {
        client.error(json!({"type": "nope"}), "bad_request").await;
    }
    client.send(json!({"type": "nope", "rid": "last"})).await;
    let last = client.recv().await;
    assert_eq!(last["rid"], "last", "the 20th error is still delivered");
    assert_eq!(client.closed().await, 1008);
}

/// A viewer whose kernel receive buffer is 4 KiB, so what it does not read backs
/// up to the server quickly.
async fn viewer_with_tiny_receive_buffer(server: &TestServer, id: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = format!(
        "ws://{}/ws?token={}",
        server.addr,
        server.token(id, Role::Viewer)
    );
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    Client::from_stream(ws)
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_while_others_keep_receiving() {
    // A queue of 64 events of 2 KB: the backlog flushed before the close frame spans
    // several of the writer's 64 KiB encoding steps.
    let server = TestServer::with_limits(|l| {
        roomy(l);
        l.queue_len = 64;
        l.close_grace_ms = 20_000;
    })
    .await;
    // The slow client's socket buffer is tiny, so its backlog reaches the queue fast.
    let mut slow = viewer_with_tiny_receive_buffer(&server, "slow").await;
    slow.join("busy").await;

    let mut steady = server.viewer("steady").await;
    steady.join("busy").await;
    let mut speaker = server.viewer("speaker").await;
    speaker.join("busy").await;
    // 4,000 events of 2 KB: more than the kernel buffers between server and client.
    let text = "😀".repeat(495);
    let total = 4000;
    let speak = async {
        for n in 0..total {
            speaker.ok(chat("busy", &format!("{n} {text}"))).await;
        }
    };
    let listen = async {
        let seen = chats(&mut steady, total).await;
        assert!(seen.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    };
    tokio::join!(speak, listen);
    // Now the slow client reads: its backlog, whole frames in order, then the 4008 close.
    let (backlog, code) = backlog_then_close(&mut slow).await;
    assert_eq!(code, Some(4008));
    assert!(
        backlog.len() > 64,
        "only {} events before the close",
        backlog.len()
    );
    assert!(
        backlog.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in {backlog:?}"
    );
}

/// Reads a client that has not read for a while: the seqs of the chat events held for
/// it, in arrival order, then the code of its close frame (`None`: a close without one).
async fn backlog_then_close(client: &mut Client) -> (Vec<u64>, Option<u16>) {
    let mut backlog = Vec::new();
    loop {
        let frame = tokio::time::timeout(PATIENCE, client.ws.next())
            .await
            .expect("timed out waiting for the close frame")
            .expect("the connection ended without a close frame")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).unwrap();
                if event["type"] == "chat" {
                    backlog.push(event["seq"].as_u64().unwrap());
                }
            }
            Message::Close(frame) => return (backlog, frame.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_a_bounded_backlog() {
    // Without a fixed send buffer, loopback's autotuning lets the kernel hold
    // megabytes for the stalled client before its queue even starts to fill.
    let server = TestServer::with_limits(|l| {
        roomy(l);
        l.queue_len = 16;
        l.socket_send_buffer_bytes = 32 * 1024;
        // The stalled client reads only once everything is sent; until then the
        // server holds its backlog and close frame for it.
        l.close_grace_ms = 20_000;
    })
    .await;
    let mut stalled = viewer_with_tiny_receive_buffer(&server, "stalled").await;
    stalled.join("stall").await;
    let mut speaker = server.viewer("talker").await;
    speaker.join("stall").await;

    // 2 KB events: the kernel's buffers (32 KiB, doubled by Linux, plus the
    // client's 4 KiB) hold about 40, the queue 16, the writer one batch of 16.
    // Far more are sent while the stalled client reads nothing.
    let text = "😀".repeat(495);
    let sent = 200;
    for n in 0..sent {
        speaker.ok(chat("stall", &format!("{n} {text}"))).await;
    }
    // Then it reads what was held for it (the kernel's share, then its queue flushed
    // on closing) and its own close: everything after the overflow was dropped.
    let (backlog, code) = backlog_then_close(&mut stalled).await;
    assert_eq!(code, Some(4008));
    assert!(
        backlog.len() > 16,
        "closed after {} events: before its queue could fill",
        backlog.len()
    );
    assert!(
        backlog.len() < sent,
        "all {sent} events were held for a client that stopped reading"
    );
    assert!(
        backlog.windows(2).all(|w| w[1] == w[0] + 1),
        "a gap in {backlog:?}"
    );
}

#[tokio::test]
async fn presence_is_coalesced_to_the_viewer_count() {
    let server = TestServer::with_limits(|l| l.presence_interval_ms = 100).await;
    let mut first = server.viewer("p1").await;
    first.join("r").await;
    let mut others = Vec::new();
    for i in 2..=4 {
        let mut other = server.viewer(&format!("p{i}")).await;
        other.join("r").await;
        others.push(other);
    }
    // Several joins, at most one presence per interval: the count settles at 4.
    loop {
        let presence = first.next_of("presence").await;
        assert_eq!(presence["room"], "r");
        assert!(presence.get("seq").is_none(), "presence is not sequenced");
        if presence["viewers"] == 4 {
            break;
        }
    }
    others.truncate(1);
    loop {
        if first.next_of("presence").await["viewers"] == 2 {
            break;
        }
    }
}

#[tokio::test]
async fn an_empty_room_is_freed_and_comes_back_as_a_new_epoch() {
    let server = TestServer::with_limits(|l| {
        l.presence_interval_ms = 20;
        l.room_linger_ms = 0;
    })
    .await;
    let mut client = server.viewer("solo").await;
    let first_epoch = client.join("ephemeral").await["epoch"].clone();
    client
        .ok(json!({"type": "leave", "room": "ephemeral"}))
        .await;
    // The sweep runs every 20 ms; poll until the room has been freed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let rooms: Value = reqwest::get(server.url("/api/rooms"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(rooms["rooms"].as_array().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(40)).await;
        let joined = client.join("ephemeral").await;
        client
            .ok(json!({"type": "leave", "room": "ephemeral"}))
            .await;
        if joined["epoch"] != first_epoch {
            assert_eq!(joined["seq"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "room was never freed"
        );
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_live_ones_are_pinged() {
    let server = TestServer::with_limits(|l| {
        l.heartbeat_interval_ms = 50;
        l.idle_timeout_ms = 300;
    })
    .await;
    let mut lively = server.viewer("lively").await;
    let mut silent = server.viewer("silent").await;
    // The lively client reads (and so answers pings) for well over the idle timeout.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(frame) =
        tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut lively.ws)).await
    {
        if let Some(Ok(Message::Ping(_))) = frame {
            pings += 1;
        }
    }
    assert!(pings >= 5, "server pings every 50 ms, saw {pings}");
    lively.ok(json!({"type": "ping"})).await;
    // The silent one never read, so never answered a ping: it was closed.
    assert_eq!(silent.closed().await, 1000);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_stops() {
    let server = TestServer::start().await;
    let mut client = server.viewer("last").await;
    client.join("r").await;
    server.server.shutdown();
    assert_eq!(client.closed().await, 1001);
    tokio::time::timeout(PATIENCE, server.server.stopped())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn dev_tokens_work_on_the_socket_and_only_in_dev_mode() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let reply: Value = http
        .post(server.url("/api/dev/token"))
        .json(&json!({"user": "zoe", "name": "Zoë", "role": "broadcaster"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut zoe = Client::connect(server.addr, reply["token"].as_str()).await;
    zoe.join("zoe").await;
    let sent = zoe.ok(chat("zoe", "hi")).await;
    assert!(sent["seq"].is_u64());
    assert_eq!(zoe.next_of("chat").await["from"]["name"], "Zoë");

    let bad = http
        .post(server.url("/api/dev/token"))
        .json(&json!({"user": "Not Valid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(bad["code"], "bad_request");
}

#[tokio::test]
async fn health_metrics_and_rooms_over_http() {
    let server = TestServer::start().await;
    let mut client = server.viewer("m").await;
    client.join("metered").await;
    client.ok(chat("metered", "count me")).await;
    assert_eq!(
        reqwest::get(server.url("/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let metrics = common::metrics(&server.url("")).await;
    for name in [
        "ovation_connections",
        "ovation_rooms",
        "ovation_messages_in_total{type=\"chat\"}",
        "ovation_messages_out_total{type=\"chat\"}",
        "ovation_fanout_seconds_bucket",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    let rooms: Value = reqwest::get(server.url("/api/rooms"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rooms["rooms"],
        json!([{"room": "metered", "live": false, "viewers": 1}])
    );
}

#[tokio::test]
async fn connections_per_user_are_capped_and_slots_come_back() {
    let server = TestServer::with_limits(|l| l.max_connections_per_user = 2).await;
    let token = server.token("tabs", Role::Viewer);
    let url = format!("ws://{}/ws?token={token}", server.addr);
    let first = server.viewer("tabs").await;
    let _second = server.viewer("tabs").await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("third connection was not refused: {:?}", other.map(|_| ())),
    }
    drop(first);
    // The slot returns once the server has seen the first connection end.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio_tungstenite::connect_async(&url).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pages_are_served_with_security_headers() {
    let server = TestServer::start().await;
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<title>Ovation</title>"));
}
