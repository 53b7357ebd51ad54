//! Outgoing webhooks end to end: endpoints registered over HTTP, events delivered
//! signed to a real receiver on loopback that verifies them independently, retries on
//! the server's clock, `410` disabling an endpoint, replays, refusals, and events
//! booked before a `kill -9` delivered after the restart.

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/rtc.rs"]
mod rtc;

use std::time::Duration;

use common::{rand_key, Api, TestServer};
use ovation::auth::Role;
use ovation::clock::Clock;
use ovation::config::FileConfig;
use receiver::{Mode, Receiver};
use serde_json::{json, Value};

const T0: u64 = 1_800_000_000_000;

fn loopback_allowed() -> FileConfig {
    let mut file = FileConfig::default();
    file.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    file.webhooks.poll_ms = 20;
    file
}

async fn server_at_t0(file: FileConfig) -> (TestServer, Clock) {
    let clock = Clock::manual(T0);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::launch_with_clock(dir, true, file, None, clock.clone()).await;
    (server, clock)
}

/// Registers `/hook/{name}` of the receiver for `events`, as `id` on `base`
/// (`/api/admin/webhooks` or `/api/me/webhooks`); the endpoint's id.
async fn register(
    api: &Api,
    receiver: &Receiver,
    at: std::net::SocketAddr,
    who: Who,
    name: &str,
    events: &[&str],
) -> String {
    let url = format!("http://{at}/hook/{name}");
    let body = json!({"url": url, "events": events});
    let (status, created) = call(api, who, reqwest::Method::POST, "", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.expect(name, secret);
    created["id"].as_str().unwrap().to_owned()
}

const ADMIN: Who = ("root", Role::Admin, "/api/admin/webhooks");
const ALICE: Who = ("alice", Role::Broadcaster, "/api/me/webhooks");

fn gift(room: &str, sticker: &str) -> Value {
    json!({"type": "gift", "room": room, "sticker": sticker, "count": 1, "key": rand_key()})
}

type Who = (&'static str, Role, &'static str);

/// `method` on `path` under the caller's base route, as the caller; status and body.
async fn call(
    api: &Api,
    who: Who,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (id, role, base) = who;
    let mut request = api.http(method, &format!("{base}{path}"), id, role);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn deliveries(api: &Api, who: Who, endpoint: &str) -> Vec<Value> {
    let path = format!("/{endpoint}/deliveries");
    let (_, log) = call(api, who, reqwest::Method::GET, &path, None).await;
    log["deliveries"].as_array().unwrap().clone()
}

/// Waits until the endpoint's log holds `count` attempts.
async fn attempts(api: &Api, who: Who, endpoint: &str, count: usize) -> Vec<Value> {
    for _ in 0..600 {
        let log = deliveries(api, who, endpoint).await;
        if log.len() >= count {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the log of {endpoint} never held {count} attempts");
}

#[tokio::test]
async fn events_reach_the_endpoints_that_asked_for_them_signed() {
    let (receiver, at) = Receiver::start(None).await;
    let server = TestServer::with_config(|file| *file = loopback_allowed()).await;
    register(
        &server,
        &receiver,
        at,
        ADMIN,
        "platform",
        &["gift.sent", "moderation.action", "ack.sent"],
    )
    .await;
    register(
        &server,
        &receiver,
        at,
        ALICE,
        "alice",
        &["gift.sent", "question.asked"],
    )
    .await;
    server.top_up("bob", 1000).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    bob.join("carol").await;
    let sent = bob.ok(gift("alice", "rose")).await;
    bob.ok(gift("carol", "star")).await;
    let question = json!({"type": "question", "room": "alice", "text": "hi?", "coins": 100, "key": rand_key()});
    bob.ok(question).await;
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    let thanks =
        json!({"type": "ack", "room": "alice", "ref": sent["gift_id"], "text": "thank you"});
    alice.ok(thanks).await;

    // Platform: both gifts and the ack; alice: her gift and question, not carol's gift.
    let arrived = receiver.wait_for(5).await;
    let of = |hook: &str| -> Vec<(String, Value)> {
        (arrived.iter())
            .filter(|d| d.hook == hook)
            .map(|d| {
                (
                    d.body["type"].as_str().unwrap().to_owned(),
                    d.body["data"].clone(),
                )
            })
            .collect()
    };
    let platform = of("platform");
    let kinds: Vec<&str> = platform.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "gift.sent").count(),
        2,
        "{platform:?}"
    );
    assert!(kinds.contains(&"ack.sent"), "{platform:?}");
    let mine = of("alice");
    let mine_kinds: Vec<&str> = mine.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(mine_kinds, ["gift.sent", "question.asked"], "{mine:?}");
    let (_, data) = &mine[0];
    assert_eq!(data["gift_id"], sent["gift_id"]);
    assert_eq!(data["room"], "alice");
    assert_eq!(data["from"]["id"], "bob");
    assert_eq!(
        (data["sticker"].as_str(), data["count"].as_u64()),
        (Some("rose"), Some(1))
    );
    assert_eq!(receiver.forged(), 0, "every delivery verified");
    assert!(arrived
        .iter()
        .all(|d| d.id.starts_with("msg_") && d.body["timestamp"].is_string()));
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_the_schedule_with_the_same_id() {
    let (receiver, at) = Receiver::start(None).await;
    let (server, clock) = server_at_t0(loopback_allowed()).await;
    let endpoint = register(&server, &receiver, at, ADMIN, "flaky", &["gift.sent"]).await;
    receiver.answer(Mode::Fail(500));
    server.top_up("bob", 100).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    bob.ok(gift("alice", "rose")).await;

    let first = attempts(&server, ADMIN, &endpoint, 1).await;
    assert_eq!(first[0]["status"], 500);
    assert_eq!(first[0]["state"], "retrying");
    let next = first[0]["next_at_ms"].as_u64().unwrap();
    assert!(
        (T0 + 5_000..=T0 + 5_500).contains(&next),
        "5 s with jitter: {}",
        next - T0
    );
    // Nothing more until the server's clock reaches the retry.
    receiver.answer(Mode::SlowDown(600));
    clock.set(next);
    let second = attempts(&server, ADMIN, &endpoint, 2).await;
    assert_eq!(second[0]["status"], 429);
    assert_eq!(
        second[0]["next_at_ms"],
        next + 600_000,
        "Retry-After is honoured"
    );
    receiver.answer(Mode::Accept);
    clock.set(next + 600_000);
    let third = attempts(&server, ADMIN, &endpoint, 3).await;
    assert_eq!(third[0]["state"], "delivered");
    assert_eq!(third[0]["attempt"], 3);
    let arrived = receiver.arrived();
    assert_eq!(arrived.len(), 3);
    assert!(
        arrived.iter().all(|d| d.id == arrived[0].id),
        "one webhook-id for every attempt"
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_gone_disables_until_a_replay() {
    let mut file = loopback_allowed();
    file.webhooks.timeout_ms = 300;
    let (receiver, at) = Receiver::start(None).await;
    let (server, clock) = server_at_t0(file).await;
    let endpoint = register(&server, &receiver, at, ALICE, "slow", &["gift.sent"]).await;
    receiver.answer(Mode::Sleep(Duration::from_secs(2)));
    server.top_up("bob", 1000).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    bob.ok(gift("alice", "rose")).await;
    let first = attempts(&server, ALICE, &endpoint, 1).await;
    assert_eq!(first[0]["status"], Value::Null);
    assert!(
        first[0]["error"].as_str().unwrap().contains("timed out"),
        "{first:?}"
    );

    receiver.answer(Mode::Fail(410));
    clock.set(first[0]["next_at_ms"].as_u64().unwrap());
    let second = attempts(&server, ALICE, &endpoint, 2).await;
    assert_eq!(
        (second[0]["status"].as_u64(), second[0]["state"].as_str()),
        (Some(410), Some("failed"))
    );
    let (_, listed) = call(&server, ALICE, reqwest::Method::GET, "", None).await;
    assert!(
        listed["endpoints"][0]["disabled"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{listed}"
    );
    // Disabled: a new gift is not sent.
    bob.ok(gift("alice", "star")).await;
    // A replay since the start enables it and sends both gifts again.
    receiver.answer(Mode::Accept);
    let path = format!("/{endpoint}/replay");
    let since = Some(json!({"since": T0}));
    let (_, replayed) = call(&server, ALICE, reqwest::Method::POST, &path, since).await;
    assert_eq!(replayed["queued"], 2, "{replayed}");
    let arrived = receiver.wait_for(4).await;
    let stickers: Vec<&str> = arrived[2..]
        .iter()
        .map(|d| d.body["data"]["sticker"].as_str().unwrap())
        .collect();
    assert_eq!(stickers, ["rose", "star"], "in event order");
}

#[tokio::test]
async fn registrations_are_checked_and_endpoints_belong_to_their_owner() {
    let mut file = FileConfig::default();
    file.webhooks.allow_hosts = vec!["127.0.0.1".into()];
    let server = TestServer::with_config(|f| *f = file).await;
    let post = reqwest::Method::POST;
    for (url, events) in [
        ("ftp://example.com/hook", json!(["gift.sent"])),
        ("http://10.0.0.1/hook", json!(["gift.sent"])),
        (
            "http://169.254.169.254/latest/meta-data",
            json!(["gift.sent"]),
        ),
        ("http://localhost:9/hook", json!(["gift.sent"])),
        ("not a url", json!(["gift.sent"])),
        ("https://hooks.example.com/x", json!(["gift.exploded"])),
        ("https://hooks.example.com/x", json!([])),
    ] {
        let body = Some(json!({"url": url, "events": events}));
        let (status, _) = call(&server, ADMIN, post.clone(), "", body).await;
        assert_eq!(status, 400, "{url} {events}");
    }
    let body = json!({"url": "https://hooks.example.com/x", "events": ["gift.sent"]});
    let viewer = ("bob", Role::Viewer, "/api/me/webhooks");
    assert_eq!(
        call(&server, viewer, post.clone(), "", Some(body.clone()))
            .await
            .0,
        403
    );
    let alice_as_admin = ("alice", Role::Broadcaster, "/api/admin/webhooks");
    assert_eq!(
        call(
            &server,
            alice_as_admin,
            post.clone(),
            "",
            Some(body.clone())
        )
        .await
        .0,
        403
    );
    let (_, created) = call(&server, ADMIN, post.clone(), "", Some(body.clone())).await;
    let platform_id = created["id"].as_str().unwrap();
    assert_eq!(call(&server, ALICE, post, "", Some(body)).await.0, 201);
    // Alice sees and removes only her own.
    let path = format!("/{platform_id}");
    assert_eq!(
        call(&server, ALICE, reqwest::Method::DELETE, &path, None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&server, ADMIN, reqwest::Method::DELETE, &path, None)
            .await
            .0,
        204
    );
    let (_, listed) = call(&server, ADMIN, reqwest::Method::GET, "", None).await;
    assert_eq!(listed["endpoints"].as_array().unwrap().len(), 0, "{listed}");
    let (_, mine) = call(&server, ALICE, reqwest::Method::GET, "", None).await;
    assert_eq!(mine["endpoints"].as_array().unwrap().len(), 1, "{mine}");
}

/// A server process on `data_dir` delivering to loopback, whose receivers have a
/// minute to answer.
fn spawn_node(data_dir: &std::path::Path) -> common::node::Node {
    let config = data_dir.join("ovation.toml");
    std::fs::write(
        &config,
        "[webhooks]\nallow_hosts = [\"127.0.0.1\"]\npoll_ms = 20\ntimeout_ms = 60000\n",
    )
    .unwrap();
    let (dir, config) = (data_dir.to_str().unwrap(), config.to_str().unwrap());
    common::node::Node::spawn(&["--data-dir", dir, "--config", config])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_booked_before_a_kill_are_delivered_after_the_restart() {
    let (receiver, at) = Receiver::start(None).await;
    // The receiver hangs: deliveries are in flight, none answered, when the process
    // dies (a failure would be retried on the schedule, minutes later).
    receiver.answer(Mode::Sleep(Duration::from_secs(120)));
    let data_dir = tempfile::tempdir().unwrap();
    let mut node = spawn_node(data_dir.path());
    register(&node, &receiver, at, ADMIN, "kept", &["gift.sent"]).await;
    node.top_up("bob", 1000).await;
    let mut bob = node.viewer("bob").await;
    bob.join("alice").await;
    let mut gift_ids = Vec::new();
    for _ in 0..20 {
        let sent = bob.ok(gift("alice", "rose")).await;
        gift_ids.push(sent["gift_id"].as_str().unwrap().to_owned());
    }
    // Some deliveries are in flight, others may not even have been queued yet: the
    // process dies with all of them outstanding.
    receiver.wait_for(1).await;
    node.kill();
    drop(bob);

    // From now on deliveries are accepted; only accepted ones count.
    receiver.answer(Mode::Accept);
    let node = spawn_node(data_dir.path());
    let delivered = loop {
        let arrived = receiver.arrived();
        let delivered: std::collections::BTreeSet<String> = (arrived.iter())
            .filter(|d| d.accepted && d.body["type"] == "gift.sent")
            .map(|d| d.body["data"]["gift_id"].as_str().unwrap().to_owned())
            .collect();
        if delivered.len() == gift_ids.len() {
            break delivered;
        }
        receiver.wait_for(arrived.len() + 1).await;
    };
    let mut sent = gift_ids.clone();
    sent.sort();
    assert_eq!(delivered.into_iter().collect::<Vec<_>>(), sent);
    assert_eq!(receiver.forged(), 0);
    drop(node);
}

#[tokio::test]
async fn a_red_packet_is_told_when_created_and_when_its_last_share_is_taken() {
    let (receiver, at) = Receiver::start(None).await;
    let server = TestServer::with_config(|file| *file = loopback_allowed()).await;
    let events = ["red_packet.created", "red_packet.finished"];
    register(&server, &receiver, at, ALICE, "packets", &events).await;
    server.top_up("bob", 100).await;
    let mut bob = server.viewer("bob").await;
    let mut eve = server.viewer("eve").await;
    bob.join("alice").await;
    eve.join("alice").await;
    let packet = json!({"type": "red_packet", "room": "alice", "coins": 10, "shares": 1, "split": "even", "key": rand_key()});
    let created = bob.ok(packet).await;
    let id = created["packet_id"].as_str().unwrap();
    assert_eq!(eve.grab("alice", id).await, Ok(10));
    let arrived = receiver.wait_for(2).await;
    let kinds: Vec<&str> = arrived
        .iter()
        .map(|d| d.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, events);
    let finished = &arrived[1].body["data"];
    assert_eq!(
        (finished["packet_id"].as_str(), finished["how"].as_str()),
        (Some(id), Some("grabbed"))
    );
    assert_eq!(finished["last"]["id"], "eve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_ended_by_a_shutdown_is_told_after_the_restart() {
    let (receiver, at) = Receiver::start(None).await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut node = spawn_node(data_dir.path());
    let events = ["stream.started", "stream.ended"];
    register(&node, &receiver, at, ALICE, "video", &events).await;
    let token = node.token("alice", Role::Broadcaster);
    let publisher = rtc::Publisher::start(&node, "alice", &token).await;
    assert_eq!(receiver.wait_for(1).await[0].body["type"], "stream.started");
    // SIGTERM ends the video; its event is queued before the process exits, and the
    // next start delivers it.
    assert!(node.terminate().success());
    let node = spawn_node(data_dir.path());
    let arrived = receiver.wait_for(2).await;
    assert_eq!(arrived[1].body["type"], "stream.ended");
    assert_eq!(arrived[1].body["data"]["room"], "alice");
    drop((publisher, node));
}

#[tokio::test]
async fn delivered_events_are_forgotten_after_thirty_days() {
    let (receiver, at) = Receiver::start(None).await;
    let (server, clock) = server_at_t0(loopback_allowed()).await;
    let endpoint = register(&server, &receiver, at, ADMIN, "kept", &["gift.sent"]).await;
    server.top_up("bob", 100).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    bob.ok(gift("alice", "rose")).await;
    assert_eq!(
        attempts(&server, ADMIN, &endpoint, 1).await[0]["state"],
        "delivered"
    );
    // A day on, the log still holds it; past thirty days the next hourly pass forgets it.
    clock.set(T0 + 24 * 3600 * 1000);
    let path = format!("/{endpoint}/replay");
    let since = Some(json!({"since": T0}));
    let (_, replayed) = call(&server, ADMIN, reqwest::Method::POST, &path, since.clone()).await;
    assert_eq!(replayed["queued"], 1);
    receiver.wait_for(2).await;
    clock.set(T0 + 31 * 24 * 3600 * 1000);
    for _ in 0..600 {
        if deliveries(&server, ADMIN, &endpoint).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(deliveries(&server, ADMIN, &endpoint).await.is_empty());
    let (_, replayed) = call(&server, ADMIN, reqwest::Method::POST, &path, since).await;
    assert_eq!(
        replayed["queued"], 0,
        "nothing older than thirty days is kept"
    );
}

/// The niceness of each of this process's threads called `name`.
fn niceness_of_threads(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        // Fields after the command's closing parenthesis; niceness is field 19.
        let stat = std::fs::read_to_string(path.join("stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        found.push(after.split(' ').nth(16).unwrap().parse().unwrap());
    }
    found
}

#[tokio::test]
async fn deliveries_run_on_a_thread_of_their_own_that_gives_way_to_the_money_path() {
    let mut file = loopback_allowed();
    file.webhooks.nice = 17;
    let server = TestServer::with_config(|f| *f = file).await;
    // Other tests' servers in this process run at the default, 10.
    assert!(
        niceness_of_threads("webhooks").contains(&17),
        "{:?}",
        niceness_of_threads("webhooks")
    );
    // And it delivers from there.
    let (receiver, at) = Receiver::start(None).await;
    register(&server, &receiver, at, ADMIN, "platform", &["gift.sent"]).await;
    server.top_up("bob", 100).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    bob.ok(gift("alice", "rose")).await;
    assert_eq!(receiver.wait_for(1).await[0].body["type"], "gift.sent");
}

#[tokio::test]
async fn a_battles_result_is_told_to_each_of_its_rooms() {
    let (receiver, at) = Receiver::start(None).await;
    let mut file = loopback_allowed();
    file.pk.require_live = false;
    let (server, clock) = server_at_t0(file).await;
    register(&server, &receiver, at, ALICE, "alice", &["pk.finished"]).await;
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    let mut bob = server.broadcaster("bob").await;
    bob.join("bob").await;
    let invite = json!({"type": "pk_invite", "room": "alice", "opponent": "bob", "seconds": 10});
    let pk = alice.ok(invite).await["pk"].as_str().unwrap().to_owned();
    bob.ok(json!({"type": "pk_accept", "pk": pk})).await;
    server.top_up("carol", 100).await;
    let mut carol = server.viewer("carol").await;
    carol.join("bob").await;
    carol.ok(gift("bob", "rose")).await;
    clock.set(T0 + 11_000);
    // Alice's endpoint hears of her room's battle, with its result.
    let arrived = receiver.wait_for(1).await;
    let data = &arrived[0].body["data"];
    assert_eq!(arrived[0].body["type"], "pk.finished");
    assert_eq!((&data["pk"], &data["winner"]), (&json!(pk), &json!("bob")));
    assert_eq!(data["scores"], json!({"alice": 0, "bob": 5}));
}
