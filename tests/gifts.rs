//! The gift engine end to end: real server, real SQLite ledger, real WebSocket clients.

mod common;

use common::*;
use ovation::auth::Role;
use ovation::config::FileConfig;
use reqwest::Method;
use serde_json::{json, Value};

/// A catalog with round numbers, so expected balances are easy to read.
fn priced(file: &mut FileConfig) {
    file.catalog = toml::from_str(
        r#"
        question_min_coins = 50
        [[stickers]]
        id = "rose"
        name = "Rose"
        coins = 10
        tier = 1
        [[stickers]]
        id = "castle"
        name = "Castle"
        coins = 5000
        tier = 5
        "#,
    )
    .unwrap();
}

fn gift(room: &str, sticker: &str, count: u32, key: &str) -> Value {
    json!({"type": "gift", "room": room, "sticker": sticker, "count": count, "key": key})
}

/// The broadcaster `alice` in her room and a viewer `bob` with `coins`.
async fn stage(server: &TestServer, coins: u64) -> (Client, Client) {
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    if coins > 0 {
        assert_eq!(server.top_up("bob", coins).await, coins);
    }
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    (alice, bob)
}

#[tokio::test]
async fn a_gift_is_charged_split_fanned_out_and_earned_exactly() {
    let server = TestServer::with_config(priced).await;
    let (mut alice, mut bob) = stage(&server, 1000).await;
    let reply = bob.ok(gift("alice", "rose", 3, "gift-0001")).await;
    assert_eq!(reply["balance"], 970);
    assert_eq!(reply["duplicate"], false);
    let gift_id = reply["gift_id"].as_str().unwrap().to_owned();

    let event = alice.next_of("gift").await;
    assert_eq!(event["id"], gift_id.as_str());
    assert_eq!(event["from"], json!({"id": "bob", "name": "Bob"}));
    assert_eq!(
        (event["sticker"].as_str(), event["count"].as_u64()),
        (Some("rose"), Some(3))
    );
    assert_eq!(
        (event["coins"].as_u64(), event["combo"].as_u64()),
        (Some(30), Some(1))
    );
    assert!(event["seq"].is_u64());
    assert_eq!(bob.next_of("balance").await["coins"], 970);
    assert_eq!(server.wallet("bob").await, 970);

    // 30 coins = 3000 minor units: store 30% = 900, broadcaster half of 2100 = 1050
    // (held for the hold period), the platform keeps the other 1050.
    assert_eq!(
        earnings(&server, "alice").await,
        json!({"gifts": 1, "coins": 30, "broadcaster": 1050, "agency": 0, "platform": 1050, "app_store": 900,
               "held": 1050, "available": 0, "pending": 0, "paid": 0})
    );
    server.books_balance().await;
}

async fn earnings(server: &TestServer, broadcaster: &str) -> Value {
    server
        .http(
            Method::GET,
            "/api/me/earnings",
            broadcaster,
            Role::Broadcaster,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_returns_the_first_result_and_charges_and_fans_out_nothing() {
    let server = TestServer::with_config(priced).await;
    let (mut alice, mut bob) = stage(&server, 100).await;
    let first = bob.ok(gift("alice", "rose", 1, "retry-key-1")).await;
    let again = bob.ok(gift("alice", "rose", 1, "retry-key-1")).await;
    assert_eq!(again["gift_id"], first["gift_id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["balance"], 90);
    assert_eq!(server.wallet("bob").await, 90);
    // The room saw one gift: the next event after it is the chat, not a second gift.
    assert_eq!(alice.next_of("gift").await["id"], first["gift_id"]);
    bob.ok(json!({"type": "chat", "room": "alice", "text": "after"}))
        .await;
    loop {
        let event = alice.recv().await;
        assert_ne!(event["type"], "gift", "a retry was fanned out: {event}");
        if event["type"] == "chat" {
            break;
        }
    }
    // The same key with other content is a conflict, and charges nothing.
    let reply = bob
        .error(gift("alice", "rose", 2, "retry-key-1"), "conflict")
        .await;
    assert!(reply["message"].as_str().unwrap().contains("key"));
    assert_eq!(server.wallet("bob").await, 90);
}

#[tokio::test]
async fn a_retry_answers_its_first_result_even_when_the_wallet_is_now_empty() {
    let server = TestServer::with_config(priced).await;
    let (_alice, mut bob) = stage(&server, 10).await;
    let first = bob.ok(gift("alice", "rose", 1, "last-coins")).await;
    assert_eq!(first["balance"], 0);
    let again = bob.ok(gift("alice", "rose", 1, "last-coins")).await;
    assert_eq!(
        (again["gift_id"].clone(), again["duplicate"].clone()),
        (first["gift_id"].clone(), json!(true))
    );
}

#[tokio::test]
async fn refusals_change_nothing() {
    let server = TestServer::with_config(priced).await;
    let (mut alice, mut bob) = stage(&server, 100).await;
    bob.error(
        gift("alice", "castle", 1, "too-expensive"),
        "insufficient_funds",
    )
    .await;
    bob.error(gift("alice", "unicorn", 1, "no-such-thing"), "not_found")
        .await;
    bob.error(gift("alice", "rose", 0, "zero-count"), "bad_request")
        .await;
    bob.error(gift("alice", "rose", 10_000, "huge-count"), "bad_request")
        .await;
    bob.error(gift("alice", "rose", 1, "short"), "bad_request")
        .await;
    bob.error(gift("alice", "rose", 1, &"k".repeat(65)), "bad_request")
        .await;
    bob.error(json!({"type": "gift", "room": "alice", "sticker": "rose", "count": 1.5, "key": "float-count"}), "bad_request").await;
    bob.error(json!({"type": "gift", "room": "alice", "sticker": "rose", "count": "1", "key": "string-count"}), "bad_request").await;
    bob.error(gift("elsewhere", "rose", 1, "not-joined-1"), "not_joined")
        .await;
    alice
        .error(gift("alice", "rose", 1, "own-room-1"), "forbidden")
        .await;
    let mut guest = server.guest().await;
    guest.join("alice").await;
    guest
        .error(gift("alice", "rose", 1, "guest-gift"), "unauthorized")
        .await;
    assert_eq!(server.wallet("bob").await, 100);
    server.books_balance().await;
}

#[tokio::test]
async fn repeats_count_up_a_combo_and_the_leaderboard_follows() {
    let server = TestServer::with_config(|f| {
        priced(f);
        f.limits.presence_interval_ms = 50;
    })
    .await;
    let (mut alice, mut bob) = stage(&server, 1000).await;
    for n in 1..=3 {
        bob.ok(gift("alice", "rose", 1, &format!("combo-{n:04}")))
            .await;
        assert_eq!(alice.next_of("gift").await["combo"], n);
    }
    let board = loop {
        let board = alice.next_of("leaderboard").await;
        if board["top"][0]["coins"] == 30 {
            break board;
        }
    };
    assert_eq!(board["room"], "alice");
    assert_eq!(
        board["top"],
        json!([{"id": "bob", "name": "Bob", "coins": 30}])
    );
    let http: Value = reqwest::get(server.url("/api/rooms/alice/leaderboard"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(http["top"], board["top"]);
}

#[tokio::test]
async fn the_broadcaster_thanks_a_sender_by_name_and_no_one_else_can() {
    let server = TestServer::with_config(priced).await;
    let (mut alice, mut bob) = stage(&server, 100).await;
    let gift_id = bob.ok(gift("alice", "rose", 1, "thank-me-1")).await["gift_id"].clone();
    let mut carol = server.broadcaster("carol").await;
    carol.join("alice").await;
    let thanks = json!({"type": "ack", "room": "alice", "ref": gift_id, "text": "Thank you!"});
    bob.error(thanks.clone(), "forbidden").await;
    carol.error(thanks.clone(), "forbidden").await;
    alice
        .error(
            json!({"type": "ack", "room": "alice", "ref": "e-unknown", "text": "hi"}),
            "not_found",
        )
        .await;
    alice
        .error(
            json!({"type": "ack", "room": "alice", "ref": gift_id, "text": "x".repeat(201)}),
            "too_large",
        )
        .await;
    let reply = alice.ok(thanks).await;
    let ack = bob.next_of("ack").await;
    assert_eq!(ack["id"], reply["id"]);
    assert_eq!(ack["seq"], reply["seq"]);
    assert_eq!(ack["ref"], gift_id);
    assert_eq!(ack["to"], json!({"id": "bob", "name": "Bob"}));
    assert_eq!(ack["text"], "Thank you!");
}

#[tokio::test]
async fn paid_questions_are_pinned_longer_when_they_pay_more_and_can_be_answered() {
    let server = TestServer::with_config(priced).await;
    let (mut alice, mut bob) = stage(&server, 10_000).await;
    let ask = |coins: u64, key: &str| json!({"type": "question", "room": "alice", "text": "  Favourite song? ", "coins": coins, "key": key});
    bob.error(ask(49, "too-cheap-1"), "bad_request").await;
    let cheap = bob.ok(ask(50, "question-1")).await;
    assert_eq!(cheap["balance"], 9950);
    let first = alice.next_of("question").await;
    assert_eq!(first["id"], cheap["question_id"]);
    assert_eq!(
        (first["text"].as_str(), first["coins"].as_u64()),
        (Some("Favourite song?"), Some(50))
    );
    bob.ok(ask(5000, "question-2")).await;
    let second = alice.next_of("question").await;
    assert!(second["pin_ms"].as_u64().unwrap() > first["pin_ms"].as_u64().unwrap());
    alice
        .ok(json!({"type": "ack", "room": "alice", "ref": first["id"], "text": "Yesterday!"}))
        .await;
    assert_eq!(bob.next_of("ack").await["to"]["id"], "bob");
    server.books_balance().await;
}

#[tokio::test]
async fn many_connections_of_one_wallet_never_overspend() {
    let server = TestServer::with_config(priced).await;
    let (_alice, _bob) = stage(&server, 100).await;
    let mut tabs = Vec::new();
    for _ in 0..5 {
        let mut tab = server.viewer("bob").await;
        tab.join("alice").await;
        tabs.push(tab);
    }
    let storms = tabs.iter_mut().enumerate().map(|(t, tab)| async move {
        let mut ok = 0;
        for n in 0..10 {
            let reply = tab
                .request(gift("alice", "rose", 1, &format!("storm-{t}-{n}")))
                .await;
            match reply["type"].as_str() {
                Some("ok") => ok += 1,
                _ => assert_eq!(reply["code"], "insufficient_funds", "{reply}"),
            }
        }
        ok
    });
    let confirmed: u32 = futures_util::future::join_all(storms)
        .await
        .into_iter()
        .sum();
    assert_eq!(confirmed, 10, "100 coins buy exactly ten 10-coin roses");
    assert_eq!(server.wallet("bob").await, 0);
    server.books_balance().await;
}

#[tokio::test]
async fn top_ups_are_idempotent_and_money_routes_check_who_asks() {
    let server = TestServer::with_config(priced).await;
    let top_up = |key: &str, coins: u64| {
        server
            .http(Method::POST, "/api/me/topup", "dora", Role::Viewer)
            .json(&json!({"coins": coins, "key": key}))
    };
    let first: Value = top_up("topup-dora-1", 70)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again: Value = top_up("topup-dora-1", 70)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (first["coins"].as_u64(), again["coins"].as_u64()),
        (Some(70), Some(70))
    );
    assert_eq!(
        top_up("topup-dora-1", 80).send().await.unwrap().status(),
        409
    );
    assert_eq!(
        top_up("topup-dora-2", 0).send().await.unwrap().status(),
        400
    );
    let negative = server
        .http(Method::POST, "/api/me/topup", "dora", Role::Viewer)
        .json(&json!({"coins": -5, "key": "topup-dora-3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(negative.status(), 400);

    let anonymous = reqwest::Client::new()
        .get(server.url("/api/me/wallet"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = reqwest::Client::new()
        .get(server.url("/api/me/wallet"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let viewer_earnings = server
        .http(Method::GET, "/api/me/earnings", "dora", Role::Viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer_earnings.status(), 403);
    let viewer_check = server
        .http(Method::GET, "/api/admin/ledger/check", "dora", Role::Viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer_check.status(), 403);
    let report = server.books_balance().await;
    assert!(report["transfers"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn outside_dev_mode_there_is_no_free_money() {
    let server =
        TestServer::launch(tempfile::tempdir().unwrap(), false, FileConfig::default()).await;
    let response = server
        .http(Method::POST, "/api/me/topup", "eve", Role::Viewer)
        .json(&json!({"coins": 10, "key": "free-money"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let token = reqwest::Client::new()
        .post(server.url("/api/dev/token"))
        .json(&json!({"user": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 404);
}

#[tokio::test]
async fn balances_earnings_and_idempotency_survive_a_restart() {
    let server = TestServer::with_config(priced).await;
    let (_alice, mut bob) = stage(&server, 100).await;
    let first = bob.ok(gift("alice", "rose", 2, "before-restart")).await;
    drop(bob);
    let earned = earnings(&server, "alice").await;
    assert_eq!(
        (&earned["gifts"], &earned["coins"]),
        (&json!(1), &json!(20))
    );
    let server = server.restart().await;
    assert_eq!(server.wallet("bob").await, 80);
    assert_eq!(earnings(&server, "alice").await, earned);
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    let again = bob.ok(gift("alice", "rose", 2, "before-restart")).await;
    assert_eq!(
        (again["gift_id"].clone(), again["duplicate"].clone()),
        (first["gift_id"].clone(), json!(true))
    );
    assert_eq!(again["balance"], 80);
    assert_eq!(earnings(&server, "alice").await, earned);
    server.books_balance().await;
}

#[tokio::test]
async fn the_catalog_lists_stickers_with_prices_and_tiers() {
    let server = TestServer::start().await;
    let catalog: Value = reqwest::get(server.url("/api/catalog"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stickers = catalog["stickers"].as_array().unwrap();
    assert!(stickers.len() >= 6, "a default catalog of about 8 stickers");
    let prices: Vec<u64> = stickers
        .iter()
        .map(|s| s["coins"].as_u64().unwrap())
        .collect();
    assert_eq!(*prices.iter().min().unwrap(), 1);
    assert!(*prices.iter().max().unwrap() >= 10_000);
    assert!(stickers
        .iter()
        .all(|s| s["id"].is_string() && s["name"].is_string() && s["tier"].is_u64()));
    assert!(catalog["question_min_coins"].as_u64().unwrap() >= 1);
}
