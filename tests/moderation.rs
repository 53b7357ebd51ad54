//! Moderation end to end on one server: moderators, deletes, timeouts that end on the
//! server's clock, bans that hold across reconnects and restarts, slow mode, a room's
//! blocked terms, suspended gifting, the audit log, and every refusal.

mod common;

use common::{get_json, rand_key, Client, TestServer};
use ovation::auth::Role;
use ovation::clock::Clock;
use ovation::config::FileConfig;
use serde_json::{json, Value};

const T0: u64 = 1_800_000_000_000;

fn chat(room: &str, text: &str) -> Value {
    json!({"type": "chat", "room": room, "text": text})
}

fn moderate(room: &str, action: &str, fields: Value) -> Value {
    let mut message = json!({"type": "mod", "room": room, "action": action});
    for (key, value) in fields.as_object().unwrap() {
        message[key] = value.clone();
    }
    message
}

fn gift(room: &str) -> Value {
    json!({"type": "gift", "room": room, "sticker": "rose", "count": 1, "key": rand_key()})
}

/// A server on a manual clock, and the clock.
async fn server_at_t0() -> (TestServer, Clock) {
    let clock = Clock::manual(T0);
    let server = TestServer::launch_with_clock(
        tempfile::tempdir().unwrap(),
        true,
        FileConfig::default(),
        None,
        clock.clone(),
    )
    .await;
    (server, clock)
}

/// `id` joined to `room` after saying hello there (so the server knows them).
async fn member(server: &TestServer, id: &str, room: &str) -> Client {
    let mut client = server.viewer(id).await;
    client.join(room).await;
    client.ok(chat(room, &format!("hi, I am {id}"))).await;
    client
}

/// The broadcaster `alice` in her room, with `mo` appointed moderator.
async fn alice_and_mo(server: &TestServer) -> (Client, Client) {
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    let mo = member(server, "mo", "alice").await;
    alice
        .ok(moderate("alice", "mods_add", json!({"user": "mo"})))
        .await;
    (alice, mo)
}

async fn audit_log(server: &TestServer, id: &str, role: Role) -> reqwest::Response {
    server
        .http(
            reqwest::Method::GET,
            "/api/rooms/alice/moderation",
            id,
            role,
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_moderator_deletes_a_message_and_it_leaves_the_room_and_its_history() {
    let (server, _clock) = server_at_t0().await;
    let (_alice, mut mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    let said = bob.ok(chat("alice", "something rude")).await;
    let id = said["id"].as_str().unwrap().to_owned();
    let mut watcher = server.viewer("watcher").await;
    let joined = watcher.join("alice").await;
    assert!(joined["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == id));

    let record = mo.ok(moderate("alice", "delete", json!({"id": id}))).await;
    assert_eq!(record["action"], "delete");
    assert_eq!(record["event"], id);
    assert_eq!(record["by"]["id"], "mo");
    let deleted = watcher.next_of("deleted").await;
    assert_eq!(deleted["id"], id);
    let announced = watcher.next_of("moderation").await;
    assert_eq!(announced["action"], "delete");

    // Neither a fresh join nor a recovery returns it.
    let mut late = server.viewer("late").await;
    let fresh = late.join("alice").await;
    let events = fresh["events"].as_array().unwrap();
    // Only the `deleted` event still names it.
    let naming: Vec<&Value> = events.iter().filter(|e| e["id"] == id).collect();
    assert_eq!(naming.len(), 1, "{fresh}");
    assert_eq!(naming[0]["type"], "deleted");
    let since = json!({"epoch": joined["epoch"], "seq": 0});
    let mut back = server.viewer("back").await;
    let recovered = back
        .ok(json!({"type": "join", "room": "alice", "since": since}))
        .await;
    assert_eq!(recovered["recovered"], true);
    let chats: Vec<&Value> = (recovered["events"].as_array().unwrap().iter())
        .filter(|e| e["type"] == "chat")
        .collect();
    assert!(chats.iter().all(|e| e["id"] != id), "{recovered}");
    assert!(!chats.is_empty());

    // Deleting it again, or a gift, or nothing: not found.
    mo.error(moderate("alice", "delete", json!({"id": id})), "not_found")
        .await;
    mo.error(
        moderate("alice", "delete", json!({"id": "e0"})),
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_timeout_refuses_chat_and_every_payment_until_the_clock_passes_it() {
    let (server, clock) = server_at_t0().await;
    let (_alice, mut mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    server.top_up("bob", 1000).await;
    let record = mo
        .ok(moderate(
            "alice",
            "timeout",
            json!({"user": "bob", "seconds": 600, "reason": "spam"}),
        ))
        .await;
    assert_eq!(record["until_ms"], T0 + 600_000);
    assert_eq!(record["user"]["id"], "bob");
    assert_eq!(record["reason"], "spam");

    let refused = bob.error(chat("alice", "let me in"), "banned").await;
    assert_eq!(refused["retry_after_ms"], 600_000, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("600"),
        "{refused}"
    );
    bob.error(gift("alice"), "banned").await;
    let question =
        json!({"type": "question", "room": "alice", "text": "?", "coins": 100, "key": rand_key()});
    bob.error(question, "banned").await;
    let packet = json!({"type": "red_packet", "room": "alice", "coins": 10, "shares": 2, "split": "even", "key": rand_key()});
    bob.error(packet, "banned").await;
    assert_eq!(server.wallet("bob").await, 1000, "nothing was charged");
    // They can still watch, and elsewhere they are free.
    let mut elsewhere = server.viewer("bob").await;
    elsewhere.join("carol").await;
    elsewhere.ok(chat("carol", "hello carol")).await;

    clock.set(T0 + 599_000);
    let refused = bob.error(chat("alice", "now?"), "banned").await;
    assert_eq!(refused["retry_after_ms"], 1000);
    clock.set(T0 + 600_000);
    bob.ok(chat("alice", "I am back")).await;
    bob.ok(gift("alice")).await;
}

#[tokio::test]
async fn a_ban_holds_across_new_connections_and_a_restart_until_unbanned() {
    let server = TestServer::start().await;
    let (mut alice, _mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    alice
        .ok(moderate(
            "alice",
            "ban",
            json!({"user": "bob", "reason": "abuse"}),
        ))
        .await;
    let refused = bob.error(chat("alice", "hey"), "banned").await;
    assert!(refused.get("retry_after_ms").is_none(), "{refused}");
    drop(bob);
    let mut again = server.viewer("bob").await;
    again.join("alice").await;
    again.error(chat("alice", "new connection"), "banned").await;

    let server = server.restart().await;
    let mut after = server.viewer("bob").await;
    after.join("alice").await;
    after.error(chat("alice", "after restart"), "banned").await;
    let log: Value = audit_log(&server, "alice", Role::Broadcaster)
        .await
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = (log["log"].as_array().unwrap().iter())
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["ban", "mods_add"], "newest first: {log}");
    assert_eq!(log["rules"]["moderators"], json!(["mo"]));
    assert_eq!(
        log["rules"]["restricted"],
        json!([{"user": "bob", "until_ms": null}])
    );

    // The moderator (appointed before the restart) lifts it.
    let mut mo = server.viewer("mo").await;
    mo.join("alice").await;
    let lifted = mo
        .ok(moderate("alice", "unban", json!({"user": "bob"})))
        .await;
    assert_eq!(lifted["rev"], 3);
    after.ok(chat("alice", "thanks")).await;
    mo.error(
        moderate("alice", "unban", json!({"user": "bob"})),
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn slow_mode_spaces_members_messages_but_spares_moderators() {
    let (server, clock) = server_at_t0().await;
    let (mut alice, mut mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    alice
        .ok(moderate("alice", "slow", json!({"seconds": 30})))
        .await;
    let announced = bob.next_of("moderation").await;
    assert_eq!(
        (announced["action"].as_str(), announced["seconds"].as_u64()),
        (Some("slow"), Some(30))
    );
    let mut newcomer = server.viewer("newcomer").await;
    let joined = newcomer.join("alice").await;
    assert_eq!(
        joined["moderation"],
        json!({"slow": 30, "moderator": false})
    );
    let joined = mo.join("alice").await;
    assert_eq!(joined["moderation"]["moderator"], true);

    clock.set(T0 + 1_000);
    bob.ok(chat("alice", "one")).await;
    clock.set(T0 + 11_000);
    let refused = bob.error(chat("alice", "two"), "rate_limited").await;
    assert_eq!(refused["retry_after_ms"], 20_000);
    for text in ["mod one", "mod two"] {
        mo.ok(chat("alice", text)).await;
        alice.ok(chat("alice", text)).await;
    }
    clock.set(T0 + 31_000);
    bob.ok(chat("alice", "two, later")).await;
    alice
        .ok(moderate("alice", "slow", json!({"seconds": 0})))
        .await;
    bob.ok(chat("alice", "three, at once")).await;
}

#[tokio::test]
async fn a_rooms_blocked_terms_are_matched_whatever_the_width_and_kept_from_the_room() {
    let server = TestServer::start().await;
    let (mut alice, _mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    let added = alice
        .ok(moderate("alice", "terms_add", json!({"term": "Scam"})))
        .await;
    assert_eq!(added["term"], "Scam");
    // The room is told a term was added, not which.
    let announced = bob.next_of("moderation").await;
    assert_eq!(announced["action"], "terms_add");
    assert!(announced.get("term").is_none(), "{announced}");
    bob.error(chat("alice", "a ＳＣＡＭ link"), "forbidden")
        .await;
    bob.ok(chat("alice", "a fine link")).await;
    // Elsewhere it is not blocked.
    bob.join("carol").await;
    bob.ok(chat("carol", "scam talk is fine here")).await;
    let log: Value = audit_log(&server, "alice", Role::Broadcaster)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["rules"]["terms"], json!(["Scam"]));
    assert_eq!(log["log"][0]["term"], "Scam");
    alice
        .ok(moderate("alice", "terms_remove", json!({"term": "Scam"})))
        .await;
    bob.ok(chat("alice", "a scam link")).await;
}

#[tokio::test]
async fn an_admin_suspends_a_broadcasters_gifting_and_gifts_answer_forbidden() {
    let server = TestServer::start().await;
    let mut bob = member(&server, "bob", "alice").await;
    server.top_up("bob", 1000).await;
    let suspend = |id: &str, role: Role, action: &str| {
        server
            .http(
                reqwest::Method::POST,
                "/api/rooms/alice/moderation",
                id,
                role,
            )
            .json(&json!({"action": action, "reason": "muted by the regulator"}))
            .send()
    };
    let refused = suspend("alice", Role::Broadcaster, "suspend_gifts")
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let suspended = suspend("root", Role::Admin, "suspend_gifts").await.unwrap();
    assert_eq!(suspended.status(), 201);
    let record: Value = suspended.json().await.unwrap();
    assert_eq!(record["action"], "suspend_gifts");
    assert_eq!(bob.next_of("moderation").await["action"], "suspend_gifts");

    let refused = bob.error(gift("alice"), "forbidden").await;
    assert!(
        refused["message"].as_str().unwrap().contains("suspended"),
        "{refused}"
    );
    let question =
        json!({"type": "question", "room": "alice", "text": "?", "coins": 100, "key": rand_key()});
    bob.error(question, "forbidden").await;
    bob.ok(chat("alice", "chat goes on")).await;
    assert_eq!(server.wallet("bob").await, 1000);

    let resumed = suspend("root", Role::Admin, "resume_gifts").await.unwrap();
    assert_eq!(resumed.status(), 201);
    bob.ok(gift("alice")).await;
}

#[tokio::test]
async fn moderation_refuses_what_is_not_allowed_or_not_there() {
    let server = TestServer::start().await;
    let (mut alice, mut mo) = alice_and_mo(&server).await;
    let mut bob = member(&server, "bob", "alice").await;
    let mut root = Client::connect(server.addr, Some(&server.token("root", Role::Admin))).await;
    root.join("alice").await;
    root.ok(chat("alice", "admin here")).await;
    let ban = |user: &str| moderate("alice", "ban", json!({"user": user}));

    // Members cannot moderate; moderators cannot appoint, ban the broadcaster, an
    // admin or another moderator.
    bob.error(ban("mo"), "forbidden").await;
    bob.error(
        moderate("alice", "slow", json!({"seconds": 3})),
        "forbidden",
    )
    .await;
    mo.error(
        moderate("alice", "mods_add", json!({"user": "bob"})),
        "forbidden",
    )
    .await;
    mo.error(ban("alice"), "forbidden").await;
    mo.error(ban("root"), "forbidden").await;
    let _max = member(&server, "max", "alice").await;
    alice
        .ok(moderate("alice", "mods_add", json!({"user": "max"})))
        .await;
    mo.error(ban("max"), "forbidden").await;
    alice.error(ban("root"), "forbidden").await;
    mo.error(moderate("alice", "suspend_gifts", json!({})), "forbidden")
        .await;
    // Unknown users and events.
    mo.error(ban("nobody-ever"), "not_found").await;
    alice
        .error(
            moderate("alice", "mods_remove", json!({"user": "bob"})),
            "not_found",
        )
        .await;
    mo.error(
        moderate("alice", "terms_remove", json!({"term": "x"})),
        "not_found",
    )
    .await;
    // Out of range, or missing what the action needs.
    for (action, fields) in [
        ("timeout", json!({"user": "bob", "seconds": 0})),
        ("timeout", json!({"user": "bob", "seconds": 1_209_601})),
        ("timeout", json!({"user": "bob"})),
        ("slow", json!({"seconds": 2})),
        ("slow", json!({"seconds": 121})),
        ("delete", json!({})),
        ("ban", json!({"user": "Not An Id"})),
        ("terms_add", json!({"term": " "})),
        ("shout", json!({})),
    ] {
        mo.error(moderate("alice", action, fields), "bad_request")
            .await;
    }
    mo.error(ban("mo"), "bad_request").await;
    let long_reason = json!({"user": "bob", "reason": "x".repeat(501)});
    mo.error(moderate("alice", "ban", long_reason), "too_large")
        .await;
    // A moderator of alice's room is nobody in carol's.
    mo.join("carol").await;
    mo.error(
        moderate("carol", "ban", json!({"user": "bob"})),
        "forbidden",
    )
    .await;
    // The longest timeout is taken; the audit log is for the room's staff only.
    mo.ok(moderate(
        "alice",
        "timeout",
        json!({"user": "bob", "seconds": 1_209_600}),
    ))
    .await;
    assert_eq!(audit_log(&server, "bob", Role::Viewer).await.status(), 403);
    assert_eq!(audit_log(&server, "mo", Role::Viewer).await.status(), 200);
    assert_eq!(audit_log(&server, "root", Role::Admin).await.status(), 200);
    let page = get_json(
        &server.url("/api/rooms/alice/moderation?limit=1"),
        &server.token("alice", Role::Broadcaster),
    )
    .await;
    assert_eq!(page["log"].as_array().unwrap().len(), 1);
    assert_eq!(page["log"][0]["action"], "timeout");
    let next = get_json(
        &server.url(&format!(
            "/api/rooms/alice/moderation?limit=1&before={}",
            page["log"][0]["rev"]
        )),
        &server.token("alice", Role::Broadcaster),
    )
    .await;
    assert_eq!(next["log"][0]["action"], "mods_add");
}
