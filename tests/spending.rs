//! Spending protection end to end: daily caps (the platform's and a user's own) that
//! hold across a restart, a new UTC day and the nodes of a cluster; minors who may
//! watch but never pay nor be credited.

mod common;

use common::node::PgSchema;
use common::*;
use ovation::auth::{Role, User};
use ovation::clock::Clock;
use ovation::config::FileConfig;
use serde_json::{json, Value};

/// 2025-12-01 23:00 UTC.
const LATE_EVENING_MS: u64 = 1_764_630_000_000;
const HOUR_MS: u64 = 3_600_000;

fn capped(per_day: u64) -> FileConfig {
    let mut file = FileConfig::default();
    file.limits.daily_coins = Some(per_day);
    file
}

fn question(coins: u64, key: &str) -> Value {
    json!({"type": "question", "room": "star", "text": "hi?", "coins": coins, "key": key})
}

async fn wallet(api: &Api, user: &str) -> Value {
    get_json(&api.url("/api/me/wallet"), &api.token(user, Role::Viewer)).await
}

async fn set_limit(api: &Api, user: &str, daily_coins: Value) -> (u16, Value) {
    let response = api
        .http(reqwest::Method::PUT, "/api/me/limits", user, Role::Viewer)
        .json(&json!({ "daily_coins": daily_coins }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_daily_cap_stops_spending_until_the_next_utc_day_even_after_a_restart() {
    let clock = Clock::manual(LATE_EVENING_MS);
    let data_dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::launch_with_clock(data_dir, true, capped(100), None, clock.clone()).await;
    server.top_up("amy", 1_000).await;
    let mut amy = server.viewer("amy").await;
    amy.join("star").await;
    amy.ok(question(60, "ask-0001")).await;
    amy.ok(question(40, "ask-0002")).await;
    let refused = amy.error(question(10, "ask-0003"), "limit_reached").await;
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("100") && message.contains("spent 100"),
        "{refused}"
    );
    // A retry of a charge that went through is still its first answer.
    assert_eq!(amy.ok(question(40, "ask-0002")).await["duplicate"], true);
    assert_eq!(
        wallet(&server, "amy").await,
        json!({"coins": 900, "debt": 0, "spent_today": 100, "daily_cap": 100})
    );

    // The count is in the books: a restart still refuses.
    server.server.shutdown();
    server.server.stopped().await.unwrap();
    let (data_dir, file) = (server.data_dir, server.file);
    let server = TestServer::launch_with_clock(data_dir, true, file, None, clock.clone()).await;
    let mut amy = server.viewer("amy").await;
    amy.join("star").await;
    amy.error(question(10, "ask-0003"), "limit_reached").await;

    // Midnight UTC: a new day, a new allowance.
    clock.set(LATE_EVENING_MS + 2 * HOUR_MS);
    assert_eq!(wallet(&server, "amy").await["spent_today"], 0);
    amy.ok(question(100, "ask-0003")).await;
    amy.error(question(10, "ask-0004"), "limit_reached").await;
    assert_eq!(wallet(&server, "amy").await["coins"], 800);
    // 1 top-up and 3 questions; the books balance.
    assert_eq!(server.books_balance().await["transfers"], 4);
}

#[tokio::test]
async fn a_user_lowers_their_own_cap_but_never_above_the_platforms() {
    let server = TestServer::with_config(|file| *file = capped(500)).await;
    server.top_up("amy", 1_000).await;
    assert_eq!(wallet(&server, "amy").await["daily_cap"], 500);
    let (status, body) = set_limit(&server, "amy", json!(501)).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    let (status, body) = set_limit(&server, "amy", json!(50)).await;
    assert_eq!((status, &body["daily_cap"]), (200, &json!(50)), "{body}");
    for bad in [json!(-1), json!("ten"), json!(1.5)] {
        assert_eq!(set_limit(&server, "amy", bad).await.0, 400);
    }

    let mut amy = server.viewer("amy").await;
    amy.join("star").await;
    amy.ok(question(50, "ask-0001")).await;
    amy.error(question(10, "ask-0002"), "limit_reached").await;
    // Clearing her own cap leaves the platform's.
    let (status, body) = set_limit(&server, "amy", Value::Null).await;
    assert_eq!((status, &body["daily_cap"]), (200, &json!(500)), "{body}");
    amy.ok(question(10, "ask-0002")).await;
    assert_eq!(wallet(&server, "amy").await["spent_today"], 60);

    // Without a platform cap, a user may still set one.
    let free = TestServer::start().await;
    free.top_up("bob", 100).await;
    assert_eq!(wallet(&free, "bob").await["daily_cap"], Value::Null);
    assert_eq!(set_limit(&free, "bob", json!(20)).await.0, 200);
    let mut bob = free.viewer("bob").await;
    bob.join("star").await;
    bob.error(question(30, "ask-0001"), "limit_reached").await;
    assert_eq!(wallet(&free, "bob").await["coins"], 100);
}

/// A minor's purchase is not credited (422) and changes nothing in the books.
#[tokio::test]
async fn a_purchase_for_a_minor_is_refused_and_books_nothing() {
    let server = TestServer::start().await;
    let kid = User {
        id: "kid".into(),
        name: "Kid".into(),
        role: Role::Viewer,
        minor: true,
    };
    let mut page = Client::connect(server.addr, Some(&server.token_of(kid.clone()))).await;
    page.join("star").await;
    let before = server.books_balance().await["transfers"].clone();
    // The simulated store pays through the signed route, which refuses the credit.
    let response = reqwest::Client::new()
        .post(server.url("/api/dev/store"))
        .bearer_auth(server.token_of(kid))
        .json(&json!({"pack": "p100"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("minor"),
        "{body}"
    );
    assert_eq!(server.books_balance().await["transfers"], before);
    assert_eq!(wallet(&server, "kid").await["coins"], 0);
}

/// Two nodes spend one user's coins at once: the daily cap holds exactly.
#[tokio::test]
async fn the_daily_cap_holds_across_the_nodes_of_a_cluster() {
    let Some(schema) = PgSchema::create("spending").await else {
        return;
    };
    let a = TestServer::node_with_config(&schema.url, capped(100)).await;
    let b = TestServer::node_with_config(&schema.url, capped(100)).await;
    a.top_up("amy", 1_000).await;
    let mut pages = Vec::new();
    for node in [&a, &b] {
        let mut page = node.viewer("amy").await;
        page.join("star").await;
        pages.push(page);
    }
    let spend = pages.iter_mut().enumerate().map(|(n, page)| async move {
        let mut paid = 0;
        for i in 0..10 {
            let answer = page.request(question(10, &format!("ask-{n}-{i:04}"))).await;
            match answer["type"].as_str() {
                Some("ok") => paid += 10,
                _ => assert_eq!(answer["code"], "limit_reached", "{answer}"),
            }
        }
        paid
    });
    let paid: u64 = futures_util::future::join_all(spend)
        .await
        .into_iter()
        .sum();
    assert_eq!(paid, 100);
    assert_eq!(wallet(&b, "amy").await["spent_today"], 100);
    assert_eq!(wallet(&a, "amy").await["coins"], 900);
    a.books_balance().await;
    drop((a, b));
    schema.drop().await;
}
