//! Hostile clients: slow headers and bodies, room churn, cross-origin calls, and
//! money requests built to break the books. After every money attack, the books
//! balance and nobody's wallet moved.

mod common;

use common::*;
use ovation::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the server kept the connection open")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let server = TestServer::with_limits(|l| l.http_header_timeout_ms = 300).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // ...and never the blank line. The server closes the connection.
    read_to_close(&mut tcp).await;
    // Whoever sends whole requests is served as ever.
    let healthy = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(healthy.status(), 200);
}

#[tokio::test]
async fn a_client_trickling_its_body_gets_408() {
    let server = TestServer::with_limits(|l| l.http_request_timeout_ms = 300).await;
    let token = server.token("bob", Role::Viewer);
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/me/topup HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"coins\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut tcp).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(server.wallet("bob").await, 0);
}

#[tokio::test]
async fn a_client_churning_through_room_names_is_slowed_then_closed() {
    let server = TestServer::with_limits(|l| l.join_burst = 10).await;
    let mut client = server.viewer("churner").await;
    let mut refused = 0;
    for n in 0..10_000 {
        let room = format!("room-{n}");
        let reply = client.request(json!({"type": "join", "room": room})).await;
        if reply["type"] == "ok" {
            client.ok(json!({"type": "leave", "room": room})).await;
            continue;
        }
        assert_eq!(reply["code"], "rate_limited", "{reply}");
        refused += 1;
        if refused == 20 {
            break;
        }
    }
    // Ten rooms were joined; then twenty refusals in a row make an error storm.
    assert_eq!(refused, 20);
    assert_eq!(client.closed().await, 1008);
}

#[tokio::test]
async fn the_server_holds_at_most_max_rooms() {
    let server = TestServer::with_limits(|l| l.max_rooms = 20).await;
    let mut clients = Vec::new();
    for n in 0..2 {
        let mut client = server.viewer(&format!("filler-{n}")).await;
        for r in 0..10 {
            client.join(&format!("filled-{n}-{r}")).await;
        }
        clients.push(client);
    }
    let mut late = server.viewer("late").await;
    late.error(
        json!({"type": "join", "room": "one-too-many"}),
        "unavailable",
    )
    .await;
    // Existing rooms can still be joined.
    late.join("filled-0-0").await;
}

#[tokio::test]
async fn cross_origin_calls_are_allowed_only_for_configured_origins() {
    let preflight = |server: &TestServer, origin: &str| {
        reqwest::Client::new()
            .request(Method::OPTIONS, server.url("/whep/alice"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let closed = TestServer::start().await;
    assert_eq!(
        allowed(&preflight(&closed, "https://app.example.com").await.unwrap()),
        None
    );

    let open = TestServer::with_config(|file| {
        file.http.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let response = preflight(&open, "https://app.example.com").await.unwrap();
    assert_eq!(
        allowed(&response).as_deref(),
        Some("https://app.example.com")
    );
    let response = preflight(&open, "https://evil.example.net").await.unwrap();
    assert_eq!(allowed(&response), None);
}

/// Bob (1000 coins) in Alice's room, and Alice's gift and packet ids for the attacks.
async fn money_stage(server: &TestServer) -> (Client, Client, String) {
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    server.top_up("bob", 1000).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    let gift = bob
        .ok(json!({"type": "gift", "room": "alice", "sticker": "heart", "count": 1, "key": "first-gift"}))
        .await;
    (alice, bob, gift["gift_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn money_attacks_are_refused_and_the_books_balance_after_each() {
    let server = TestServer::start().await;
    let (_alice, mut bob, _) = money_stage(&server).await;
    let balance = server.wallet("bob").await;
    let gift = |count: Value, key: &str| json!({"type": "gift", "room": "alice", "sticker": "heart", "count": count, "key": key});
    let question = |coins: Value, key: &str| json!({"type": "question", "room": "alice", "text": "why?", "coins": coins, "key": key});
    let packet = |coins: Value, shares: Value, key: &str| json!({"type": "red_packet", "room": "alice", "coins": coins, "shares": shares, "split": "even", "key": key});
    let attacks = [
        (gift(json!(-1), "neg-count-1"), "bad_request"),
        (gift(json!(0), "zero-count-1"), "bad_request"),
        (
            gift(json!(4_294_967_296u64), "overflow-count"),
            "bad_request",
        ),
        (gift(json!(1e3), "float-count-1"), "bad_request"),
        (gift(json!("1"), "string-count-1"), "bad_request"),
        (gift(json!(null), "null-count-1"), "bad_request"),
        (question(json!(-10), "neg-coins-1"), "bad_request"),
        (question(json!(u64::MAX), "max-coins-1"), "too_large"),
        (
            question(json!(18_446_744_073_709_551_616f64), "beyond-u64"),
            "bad_request",
        ),
        (question(json!(10.5), "float-coins-1"), "bad_request"),
        (
            question(json!(1_000_000), "broke-question"),
            "insufficient_funds",
        ),
        (
            packet(json!(1_000_000_000_000_000u64), json!(2), "huge-packet"),
            "insufficient_funds",
        ),
        (
            packet(json!(i64::MAX), json!(2), "overflowing-packet"),
            "too_large",
        ),
        (
            packet(json!(u64::MAX), json!(2), "overflow-packet"),
            "too_large",
        ),
        (packet(json!(10), json!(-2), "neg-shares"), "bad_request"),
        (packet(json!(10), json!(0), "zero-shares"), "bad_request"),
        (
            json!({"type": "gift", "room": "elsewhere", "sticker": "heart", "count": 1, "key": "not-joined-2"}),
            "not_joined",
        ),
    ];
    let texts = attacks
        .into_iter()
        .map(|(attack, code)| (attack.to_string(), code));
    // A field given twice: which one would count? Neither.
    let twice = r#"{"type":"gift","room":"alice","sticker":"heart","count":1,"count":500,"key":"dup-field"}"#;
    for (text, code) in texts.chain([(twice.to_owned(), "bad_request")]) {
        bob.send_text(text.clone()).await;
        let reply = bob.next_of("error").await;
        assert_eq!(reply["code"], code, "{text} answered {reply}");
        assert_eq!(server.wallet("bob").await, balance, "{text} moved money");
        server.books_balance().await;
    }
}

#[tokio::test]
async fn keys_reordered_fields_and_other_rooms_refs_cannot_move_money_twice() {
    let server = TestServer::start().await;
    let (mut alice, mut bob, first_gift) = money_stage(&server).await;
    let balance = server.wallet("bob").await;
    // The same gift with its fields in another order is the same request: a duplicate.
    bob.send_text(r#"{"key":"first-gift","count":1,"sticker":"heart","room":"alice","type":"gift","rid":"r"}"#)
        .await;
    let reply = bob.next_of("ok").await;
    assert_eq!(
        (reply["duplicate"].as_bool(), reply["gift_id"].as_str()),
        (Some(true), Some(first_gift.as_str()))
    );
    // The same key for another kind of charge is a conflict, not a second charge.
    bob.error(json!({"type": "question", "room": "alice", "text": "hi", "coins": 10, "key": "first-gift"}), "conflict")
        .await;
    bob.error(json!({"type": "red_packet", "room": "alice", "coins": 10, "shares": 1, "split": "even", "key": "first-gift"}), "conflict")
        .await;
    assert_eq!(server.wallet("bob").await, balance);

    // A broadcaster cannot acknowledge another room's gift.
    let mut carol = server.broadcaster("carol").await;
    carol.join("carol").await;
    carol
        .error(
            json!({"type": "ack", "room": "carol", "ref": first_gift, "text": "mine now"}),
            "not_found",
        )
        .await;
    alice
        .ok(json!({"type": "ack", "room": "alice", "ref": first_gift, "text": "thanks"}))
        .await;

    // A packet of Alice's room cannot be grabbed from Carol's.
    let dropped = bob
        .ok(json!({"type": "red_packet", "room": "alice", "coins": 10, "shares": 2, "split": "even", "key": "packet-1"}))
        .await;
    let packet = dropped["packet_id"].as_str().unwrap();
    carol
        .error(
            json!({"type": "grab", "room": "carol", "packet": packet}),
            "not_found",
        )
        .await;
    assert_eq!(server.wallet("carol").await, 0);
    server.books_balance().await;

    // Top-ups: only whole, positive, bounded amounts.
    for coins in [
        json!(0),
        json!(-5),
        json!(1.5),
        json!("100"),
        json!(u64::MAX),
        json!(1_000_000_001u64),
    ] {
        let response = server
            .http(Method::POST, "/api/me/topup", "bob", Role::Viewer)
            .json(&json!({"coins": coins, "key": "topup-attack"}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "top-up of {coins} answered {}",
            response.status()
        );
    }
    assert_eq!(server.wallet("bob").await, balance - 10);
    server.books_balance().await;
}

/// The HTTP status a WebSocket upgrade is refused with, or 101.
async fn upgrade_status(
    server: &TestServer,
    token: &str,
) -> (
    u16,
    Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>>,
) {
    let url = format!("ws://{}/ws?token={token}", server.addr);
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, response)) => (response.status().as_u16(), Some(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            (response.status().as_u16(), None)
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn connection_caps_per_address_and_in_total_refuse_before_upgrading() {
    let per_ip = TestServer::with_limits(|l| l.max_connections_per_ip = 2).await;
    let mut open = Vec::new();
    for n in 0..2 {
        let (status, socket) =
            upgrade_status(&per_ip, &per_ip.token(&format!("u{n}"), Role::Viewer)).await;
        assert_eq!(status, 101);
        open.push(socket);
    }
    assert_eq!(
        upgrade_status(&per_ip, &per_ip.token("u2", Role::Viewer))
            .await
            .0,
        429
    );

    let total = TestServer::with_limits(|l| l.max_connections = 1).await;
    let (status, _kept) = upgrade_status(&total, &total.token("v0", Role::Viewer)).await;
    assert_eq!(status, 101);
    assert_eq!(
        upgrade_status(&total, &total.token("v1", Role::Viewer))
            .await
            .0,
        503
    );
}

#[tokio::test]
async fn oversized_json_bodies_answer_413() {
    let server = TestServer::start().await;
    let body = format!(r#"{{"coins":1,"key":"{}"}}"#, "k".repeat(20_000));
    let response = server
        .http(Method::POST, "/api/me/topup", "bob", Role::Viewer)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["code"], "too_large");
    assert_eq!(server.wallet("bob").await, 0);
}
