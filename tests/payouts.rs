//! Broadcasters cash out, end to end on a real server: earnings held for the hold
//! period (a test clock moves the days), payouts asked for once per key and never
//! beyond what is available (on one node, and on two nodes of a cluster at once),
//! settled by signed notifications, refunds clawing back what is still held, and
//! statements as JSON and CSV. Every refused request leaves the books unchanged.

mod common;

use common::node::PgSchema;
use common::webhooks::{purchase, Notification, WEBHOOK_SECRET};
use common::*;
use ovation::auth::Role;
use ovation::clock::Clock;
use ovation::config::FileConfig;
use ovation::money::{AgencyAssignment, CoinPack, Coins};
use serde_json::{json, Value};

const DAY_MS: u64 = 86_400_000;
/// 2026-12-02 10:00 UTC.
const START_MS: u64 = 1_796_205_600_000;

fn config(hold_days: u32) -> FileConfig {
    let mut file = FileConfig::default();
    file.payouts.hold_days = hold_days;
    file.payouts.min_amount = 1_000;
    file.payments.standard_secret = Some(WEBHOOK_SECRET.into());
    file.coin_packs = vec![CoinPack {
        id: "p100".into(),
        coins: Coins::new(100),
        amount: 99,
        currency: "USD".into(),
        app_store_product: None,
    }];
    file
}

fn question(room: &str, coins: u64, key: &str) -> Value {
    json!({"type": "question", "room": room, "text": "hi?", "coins": coins, "key": key})
}

/// `viewer` pays `coins` to `room` with a question (the default split: 30 % to the
/// app store, half of the rest to the broadcaster).
async fn pay(api: &Api, viewer: &str, room: &str, coins: u64, key: &str) {
    let mut page = api.viewer(viewer).await;
    page.join(room).await;
    page.ok(question(room, coins, key)).await;
}

async fn send(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    user: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = api.http(method, path, user, Role::Broadcaster);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /api/me/earnings?as=agency` as `user`.
async fn as_agency(api: &Api, user: &str) -> (u16, Value) {
    let path = "/api/me/earnings?as=agency";
    send(api, reqwest::Method::GET, path, user, None).await
}

async fn earnings(api: &Api, user: &str) -> Value {
    send(api, reqwest::Method::GET, "/api/me/earnings", user, None)
        .await
        .1
}

fn states(earnings: &Value) -> [i64; 4] {
    ["held", "available", "pending", "paid"].map(|state| earnings[state].as_i64().unwrap())
}

async fn cash_out(api: &Api, user: &str, amount: u64, key: &str) -> (u16, Value) {
    let body = json!({"amount": amount, "key": key});
    send(
        api,
        reqwest::Method::POST,
        "/api/me/payouts",
        user,
        Some(body),
    )
    .await
}

async fn settle(api: &Api, event: &str, kind: &str, payout_id: &Value) -> (u16, Value) {
    let body = json!({"type": kind, "data": {"payout_id": payout_id}});
    Notification::new(event, body).send(api).await
}

async fn transfers(api: &Api) -> u64 {
    api.books_balance().await["transfers"].as_u64().unwrap()
}

#[tokio::test]
async fn earnings_are_held_then_cashed_out_once_and_settled_by_the_payment_system() {
    let clock = Clock::manual(START_MS);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::launch_with_clock(dir, true, config(7), None, clock.clone()).await;
    server.top_up("bob", 1_000).await;
    // 100 coins = 10000 minor units: 3000 to the store, 3500 to alice, 3500 kept.
    pay(&server, "bob", "alice", 100, "ask-00001").await;
    assert_eq!(states(&earnings(&server, "alice").await), [3500, 0, 0, 0]);
    assert_eq!(earnings(&server, "alice").await["broadcaster"], 3500);

    // Held earnings cannot be cashed out; the refusal books nothing.
    let before = transfers(&server).await;
    let (status, body) = cash_out(&server, "alice", 1_000, "cash-0001").await;
    assert_eq!(
        (status, &body["code"]),
        (402, &json!("insufficient_funds")),
        "{body}"
    );
    // Seven whole days after the day of the gift, not a day sooner.
    clock.set(START_MS + 7 * DAY_MS);
    assert_eq!(states(&earnings(&server, "alice").await), [3500, 0, 0, 0]);
    clock.set(START_MS + 8 * DAY_MS);
    assert_eq!(states(&earnings(&server, "alice").await), [0, 3500, 0, 0]);
    let (status, body) = cash_out(&server, "alice", 999, "cash-0001").await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");
    assert_eq!(transfers(&server).await, before);

    // A payout, once per key.
    let (status, first) = cash_out(&server, "alice", 2_000, "cash-0001").await;
    assert_eq!(
        (status, &first["status"]),
        (201, &json!("pending")),
        "{first}"
    );
    let (_, again) = cash_out(&server, "alice", 2_000, "cash-0001").await;
    assert_eq!(again["payout_id"], first["payout_id"]);
    let (status, _) = cash_out(&server, "alice", 1_500, "cash-0001").await;
    assert_eq!(status, 409);
    let (status, _) = cash_out(&server, "alice", 2_000, "cash-0002").await;
    assert_eq!(status, 402);
    assert_eq!(
        states(&earnings(&server, "alice").await),
        [0, 1500, 2000, 0]
    );

    // The back office sees it pending; the payment system settles it.
    let pending = get_json(
        &server.url("/api/admin/payouts"),
        &server.token("ops", Role::Admin),
    )
    .await;
    assert_eq!(
        pending["payouts"][0]["payout_id"], first["payout_id"],
        "{pending}"
    );
    let unknown = json!("po_nothing");
    assert_eq!(
        settle(&server, "evt_1", "payout.paid", &unknown).await.0,
        422
    );
    let paid = settle(&server, "evt_2", "payout.paid", &first["payout_id"]).await;
    assert_eq!(paid, (200, json!({"status": "applied"})));
    let redelivered = settle(&server, "evt_3", "payout.paid", &first["payout_id"]).await;
    assert_eq!(redelivered, (200, json!({"status": "duplicate"})));
    let settled = transfers(&server).await;
    let contrary = settle(&server, "evt_4", "payout.failed", &first["payout_id"]).await;
    assert_eq!(contrary.0, 409, "{contrary:?}");
    assert_eq!(
        settle(&server, "evt_6", "payout.paid", &unknown).await.0,
        422
    );
    assert_eq!(transfers(&server).await, settled);
    assert_eq!(
        states(&earnings(&server, "alice").await),
        [0, 1500, 0, 2000]
    );

    // A failed payout gives its amount back.
    let (_, second) = cash_out(&server, "alice", 1_500, "cash-0003").await;
    let failed = settle(&server, "evt_5", "payout.failed", &second["payout_id"]).await;
    assert_eq!(failed.1, json!({"status": "applied"}));
    let paid_after_failed = settle(&server, "evt_7", "payout.paid", &second["payout_id"]).await;
    assert_eq!(paid_after_failed.0, 409, "{paid_after_failed:?}");
    assert_eq!(
        states(&earnings(&server, "alice").await),
        [0, 1500, 0, 2000]
    );
    let (_, listed) = send(
        &server,
        reqwest::Method::GET,
        "/api/me/payouts",
        "alice",
        None,
    )
    .await;
    let statuses: Vec<&Value> = (listed["payouts"].as_array().unwrap().iter())
        .map(|p| &p["status"])
        .collect();
    assert_eq!(statuses, [&json!("failed"), &json!("paid")], "{listed}");

    // The statement: every line, and totals that match the earnings.
    let path = "/api/me/statement?from=2026-12-01&to=2026-12-31";
    let (status, statement) = send(&server, reqwest::Method::GET, path, "alice", None).await;
    assert_eq!(status, 200, "{statement}");
    let kinds: Vec<&str> = (statement["lines"].as_array().unwrap().iter())
        .map(|line| line["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "question",
            "payout",
            "payout_paid",
            "payout",
            "payout_failed"
        ]
    );
    let line = &statement["lines"][0];
    assert_eq!(
        [
            &line["sender"],
            &line["coins"],
            &line["app_store"],
            &line["broadcaster"],
            &line["platform"]
        ],
        [
            &json!("bob"),
            &json!(100),
            &json!(3000),
            &json!(3500),
            &json!(3500)
        ]
    );
    assert_eq!(line["date"].as_str().unwrap(), "2026-12-02T10:00:00Z");
    let totals = &statement["totals"];
    assert_eq!(
        [&totals["net"], &totals["paid_out"], &totals["broadcaster"]],
        [&json!(1500), &json!(-2000), &json!(3500)]
    );
    let csv = server
        .http(reqwest::Method::GET, path, "alice", Role::Broadcaster)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "date,kind,reference,room,sender,coins,app_store,broadcaster,agency,platform,net"
    );
    assert!(
        rows[1].starts_with("2026-12-02T10:00:00Z,question,")
            && rows[1].ends_with(",bob,100,3000,3500,0,3500,3500"),
        "{csv}"
    );
    assert_eq!(rows.len(), 6);
    server.books_balance().await;
}

#[tokio::test]
async fn bad_payout_requests_are_refused_and_change_nothing() {
    let server = TestServer::with_config(|file| *file = config(0)).await;
    server.top_up("bob", 1_000).await;
    pay(&server, "bob", "alice", 100, "ask-00001").await;
    let before = transfers(&server).await;
    let post = reqwest::Method::POST;
    for body in [
        json!({"amount": 1000}),
        json!({"amount": -5, "key": "cash-0001"}),
        json!({"amount": 1000, "key": "short"}),
        json!({"amount": 1000, "key": "cash-0001", "extra": 1}),
        json!({"amount": 1000, "key": "cash-0001", "as": "agency"}),
        json!({"amount": u64::MAX, "key": "cash-0001"}),
    ] {
        let (status, answer) = send(
            &server,
            post.clone(),
            "/api/me/payouts",
            "alice",
            Some(body.clone()),
        )
        .await;
        assert!(
            [400, 402, 403].contains(&status),
            "{body} → {status} {answer}"
        );
    }
    let as_viewer = (server.http(post.clone(), "/api/me/payouts", "bob", Role::Viewer))
        .json(&json!({"amount": 1000, "key": "cash-0001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_viewer.status(), 403);
    for query in [
        "from=2026-12-01",
        "from=2026-12-01&to=2026-13-01",
        "from=2026-12-02&to=2026-12-01",
        "from=2025-01-01&to=2026-12-31",
    ] {
        let path = format!("/api/me/statement?{query}");
        let (status, _) = send(&server, reqwest::Method::GET, &path, "alice", None).await;
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = (server.http(
        reqwest::Method::GET,
        "/api/admin/payouts",
        "alice",
        Role::Broadcaster,
    ))
    .send()
    .await
    .map(|r| (r.status().as_u16(), ()))
    .unwrap();
    assert_eq!(status, 403);
    assert_eq!(transfers(&server).await, before);
}

#[tokio::test]
async fn a_refund_claws_back_held_earnings_and_the_platform_carries_what_was_available() {
    let clock = Clock::manual(START_MS);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::launch_with_clock(dir, true, config(7), None, clock.clone()).await;
    let bought = Notification::new("msg_1", purchase("order-1", "bob", "p100"));
    assert_eq!(bought.send(&server).await.0, 200);
    pay(&server, "bob", "alice", 60, "ask-00001").await;
    clock.set(START_MS + 8 * DAY_MS);
    pay(&server, "bob", "alice", 40, "ask-00002").await;
    // 60 coins' share (2100) is available, 40 coins' (1400) still held.
    assert_eq!(
        states(&earnings(&server, "alice").await),
        [1400, 2100, 0, 0]
    );

    let refund = json!({"type": "purchase.refunded", "data": {"purchase_id": "order-1"}});
    assert_eq!(
        Notification::new("msg_2", refund.clone())
            .send(&server)
            .await
            .0,
        200
    );
    // The held share came back; the available one stays with alice, and the platform
    // carries it. The buyer owes what they spent.
    assert_eq!(states(&earnings(&server, "alice").await), [0, 2100, 0, 0]);
    let admin = server.token("ops", Role::Admin);
    assert_eq!(
        get_json(&server.url("/api/admin/payouts"), &admin).await["losses"],
        2100
    );
    let wallet = get_json(
        &server.url("/api/me/wallet"),
        &server.token("bob", Role::Viewer),
    )
    .await;
    assert_eq!(
        (&wallet["coins"], &wallet["debt"]),
        (&json!(0), &json!(100))
    );
    // A redelivered refund claws nothing twice.
    assert_eq!(
        Notification::new("msg_2", refund).send(&server).await.1["status"],
        "duplicate"
    );
    assert_eq!(states(&earnings(&server, "alice").await), [0, 2100, 0, 0]);

    let path = "/api/me/statement?from=2026-12-01&to=2026-12-31";
    let (_, statement) = send(&server, reqwest::Method::GET, path, "alice", None).await;
    let last = statement["lines"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["kind"], &last["net"], &last["sender"]),
        (&json!("clawback"), &json!(-1400), &json!("bob"))
    );
    assert_eq!(statement["totals"]["net"], 2100);
    server.books_balance().await;
}

#[tokio::test]
async fn an_agency_cashes_out_its_cut_under_its_own_account() {
    let mut file = config(0);
    file.split.agencies.insert(
        "alice".into(),
        AgencyAssignment {
            agency: "stars".into(),
            agency_bps: Some(2_000),
        },
    );
    let server = TestServer::with_config(|f| *f = file).await;
    server.top_up("bob", 1_000).await;
    pay(&server, "bob", "alice", 200, "ask-00001").await;
    // Of alice's 7000, the agency takes 20 %.
    assert_eq!(states(&earnings(&server, "alice").await), [0, 5600, 0, 0]);
    let (status, stars) = as_agency(&server, "stars").await;
    assert_eq!(status, 200);
    assert_eq!(states(&stars), [0, 1400, 0, 0]);
    let body = json!({"amount": 1000, "key": "agency-cash-1", "as": "agency"});
    let (status, payout) = send(
        &server,
        reqwest::Method::POST,
        "/api/me/payouts",
        "stars",
        Some(body),
    )
    .await;
    assert_eq!(
        (status, &payout["payee"]),
        (201, &json!({"agency": "stars"})),
        "{payout}"
    );
    let (_, stars) = as_agency(&server, "stars").await;
    assert_eq!(states(&stars), [0, 400, 1000, 0]);
    // Alice is no agency.
    let (status, _) = as_agency(&server, "alice").await;
    assert_eq!(status, 403);
    server.books_balance().await;
}

/// Twenty payout requests at once through two nodes never pay out more than there is.
#[tokio::test]
async fn concurrent_payouts_through_two_nodes_never_pay_out_more_than_available() {
    let Some(schema) = PgSchema::create("payouts").await else {
        return;
    };
    let a = TestServer::node_with_config(&schema.url, config(0)).await;
    let b = TestServer::node_with_config(&schema.url, config(0)).await;
    a.top_up("bob", 1_000).await;
    pay(&a, "bob", "alice", 100, "ask-00001").await;
    assert_eq!(states(&earnings(&b, "alice").await), [0, 3500, 0, 0]);
    let requests = (0..20).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        async move {
            cash_out(node, "alice", 1_000, &format!("cash-{i:04}"))
                .await
                .0
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let paid = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(paid, 3, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [201, 402].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(states(&earnings(&a, "alice").await), [0, 500, 3000, 0]);
    a.books_balance().await;
    drop((a, b));
    schema.drop().await;
}
