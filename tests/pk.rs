//! Likes and PK battles against a real server: invites and answers between two live
//! broadcasters (real WebRTC publishers), scores counted from the ledger, the end of
//! a battle on a clock the test moves, and every refusal.

mod common;
#[path = "common/rtc.rs"]
mod rtc;

use common::{get_json, rand_key, Client, TestServer};
use ovation::auth::Role;
use ovation::clock::Clock;
use ovation::config::FileConfig;
use serde_json::{json, Value};

/// 2026-12-01T00:00:00Z.
const T0: u64 = 1_764_547_200_000;
/// How long after its end a battle is ended (`hub/pk.rs`, `SETTLE_MS`).
const SETTLE_MS: u64 = 1_000;

async fn server_at_t0(tweak: impl FnOnce(&mut FileConfig)) -> (TestServer, Clock) {
    let mut file = FileConfig::default();
    tweak(&mut file);
    let clock = Clock::manual(T0);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::launch_with_clock(dir, true, file, None, clock.clone()).await;
    (server, clock)
}

/// A broadcaster in their own room, streaming video; the publisher must live as long
/// as the test wants the room live.
async fn live_broadcaster(server: &TestServer, id: &str) -> (Client, rtc::Publisher) {
    let mut client = server.broadcaster(id).await;
    client.join(id).await;
    let token = server.token(id, Role::Broadcaster);
    let publisher = rtc::Publisher::start(server, id, &token).await;
    let stream = client.next_of("stream").await;
    assert_eq!(stream["live"], true);
    (client, publisher)
}

async fn member(server: &TestServer, id: &str, coins: u64, room: &str) -> Client {
    if coins > 0 {
        server.top_up(id, coins).await;
    }
    let mut client = server.viewer(id).await;
    client.join(room).await;
    client
}

fn gift(room: &str, sticker: &str, count: u32) -> Value {
    json!({"type": "gift", "room": room, "sticker": sticker, "count": count, "key": rand_key()})
}

fn invite(room: &str, opponent: &str, seconds: u64) -> Value {
    json!({"type": "pk_invite", "room": room, "opponent": opponent, "seconds": seconds})
}

fn answer(kind: &str, pk: &str) -> Value {
    json!({"type": kind, "pk": pk})
}

/// The next `pk` event of `state` (earlier ones, with other scores, are skipped).
async fn pk_event(client: &mut Client, state: &str) -> Value {
    loop {
        let event = client.next_of("pk").await;
        if event["state"] == state {
            return event;
        }
    }
}

/// The next running `pk` event whose scores are `scores` (the driver counts gifts a
/// moment after they are dated).
async fn pk_scores(client: &mut Client, scores: Value) -> Value {
    loop {
        let event = pk_event(client, "running").await;
        if event["scores"] == scores {
            return event;
        }
    }
}

#[tokio::test]
async fn a_battle_counts_each_sides_gifts_while_it_runs_and_names_the_winner() {
    let (server, clock) = server_at_t0(|_| {}).await;
    let (mut alice, _alice_video) = live_broadcaster(&server, "alice").await;
    let (mut bob, _bob_video) = live_broadcaster(&server, "bob").await;
    let mut carol = member(&server, "carol", 1000, "alice").await;
    let mut dave = member(&server, "dave", 1000, "bob").await;
    let mut erin = member(&server, "erin", 1000, "alice").await;

    let invited = alice.ok(invite("alice", "bob", 60)).await;
    let pk = invited["pk"].as_str().unwrap().to_owned();
    assert_eq!(invited["expires_at"], T0 + 30_000);
    let told = bob.next_of("pk_invite").await;
    assert_eq!(
        (&told["pk"], &told["from"], &told["seconds"]),
        (&json!(pk), &json!("alice"), &json!(60))
    );
    // Gifts before the battle starts are not the battle's.
    carol.ok(gift("alice", "star", 1)).await;

    clock.set(T0 + 1_000);
    let accepted = bob.ok(answer("pk_accept", &pk)).await;
    let ends_at = T0 + 1_000 + 60_000;
    assert_eq!(accepted["ends_at"], ends_at);
    let started = pk_event(&mut carol, "running").await;
    assert_eq!(started["rooms"], json!(["alice", "bob"]));
    assert_eq!(started["scores"], json!({"alice": 0, "bob": 0}));
    assert_eq!(started["ends_at"], ends_at);
    // A viewer who joins now finds the battle in the join reply.
    let late = server.viewer("frank").await.join("bob").await;
    assert_eq!(late["pk"]["pk"], json!(pk));

    // Both sides give; the scores reach both rooms.
    carol.ok(gift("alice", "star", 2)).await; // 200
    erin.ok(gift("alice", "rose", 3)).await; // 15
    dave.ok(gift("bob", "star", 1)).await; // 100
    clock.set(T0 + 5_000);
    let scores = json!({"alice": 215, "bob": 100});
    let running = pk_scores(&mut dave, scores.clone()).await;
    assert_eq!(running["room"], "bob");
    assert_eq!(
        running["top"]["alice"],
        json!([{"id": "carol", "name": "Carol", "coins": 200}, {"id": "erin", "name": "Erin", "coins": 15}])
    );
    pk_scores(&mut alice, scores).await;

    // After the end, gifts no longer count; the battle ends once they have settled.
    clock.set(ends_at + 10);
    dave.ok(gift("bob", "star", 5)).await;
    clock.set(ends_at + SETTLE_MS);
    let finished = pk_event(&mut carol, "finished").await;
    assert_eq!(finished["scores"], json!({"alice": 215, "bob": 100}));
    assert_eq!(finished["winner"], "alice");
    let finished_there = pk_event(&mut dave, "finished").await;
    assert_eq!(finished_there["winner"], "alice");

    let token = server.token("anyone", Role::Viewer);
    let state = get_json(&server.url(&format!("/api/pk/{pk}")), &token).await;
    assert_eq!(state["state"], "finished");
    assert_eq!(state["scores"], finished["scores"]);
    assert_eq!(state["top"], finished["top"]);
    // The rooms are free again: a join no longer carries the battle.
    let after = server.viewer("gina").await.join("alice").await;
    assert!(after.get("pk").is_none(), "{after}");
}

#[tokio::test]
async fn equal_scores_draw_and_a_battle_survives_a_restart() {
    let (server, clock) = server_at_t0(|_| {}).await;
    let (mut alice, alice_video) = live_broadcaster(&server, "alice").await;
    let (mut bob, bob_video) = live_broadcaster(&server, "bob").await;
    let pk = alice.ok(invite("alice", "bob", 30)).await["pk"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.ok(answer("pk_accept", &pk)).await;
    let mut carol = member(&server, "carol", 1000, "alice").await;
    let mut dave = member(&server, "dave", 1000, "bob").await;
    carol.ok(gift("alice", "rose", 4)).await;
    dave.ok(gift("bob", "rose", 4)).await;
    drop((alice, bob, carol, dave));
    alice_video.stop().await;
    bob_video.stop().await;

    // The process stops mid-battle; its successor counts the same gifts again.
    let server = server.restart_with_clock(clock.clone()).await;
    let mut watcher = member(&server, "erin", 0, "alice").await;
    clock.set(T0 + 30_000 + SETTLE_MS);
    let finished = pk_event(&mut watcher, "finished").await;
    assert_eq!(finished["scores"], json!({"alice": 20, "bob": 20}));
    assert_eq!(finished["winner"], Value::Null);
}

#[tokio::test]
async fn invites_are_declined_expire_and_are_refused_when_they_break_a_rule() {
    let (server, clock) = server_at_t0(|file| {
        file.pk.max_per_window = 1;
    })
    .await;
    let (mut alice, _alice_video) = live_broadcaster(&server, "alice").await;
    let (mut bob, _bob_video) = live_broadcaster(&server, "bob").await;
    let (mut carol, _carol_video) = live_broadcaster(&server, "carol").await;
    let mut offline = server.broadcaster("olga").await;
    offline.join("olga").await;

    alice
        .error(invite("alice", "alice", 60), "bad_request")
        .await;
    alice.error(invite("alice", "bob", 9), "bad_request").await;
    alice
        .error(invite("alice", "bob", 3601), "bad_request")
        .await;
    alice.error(invite("bob", "carol", 60), "forbidden").await;
    alice.error(invite("alice", "olga", 60), "not_found").await;
    let mut viewer = member(&server, "vic", 0, "alice").await;
    viewer.error(invite("vic", "bob", 60), "forbidden").await;

    // Declined: the inviter hears it; answering again is a conflict.
    let first = alice.ok(invite("alice", "bob", 60)).await["pk"]
        .as_str()
        .unwrap()
        .to_owned();
    carol.error(invite("carol", "bob", 60), "conflict").await;
    alice.error(invite("alice", "carol", 60), "conflict").await;
    viewer.error(answer("pk_accept", &first), "forbidden").await;
    alice.error(answer("pk_accept", &first), "forbidden").await;
    bob.error(answer("pk_accept", "pk_nothing"), "not_found")
        .await;
    bob.ok(answer("pk_decline", &first)).await;
    assert_eq!(pk_event(&mut alice, "declined").await["pk"], json!(first));
    bob.error(answer("pk_accept", &first), "conflict").await;

    // Unanswered for 30 s: expired, and the rooms are free again.
    let second = carol.ok(invite("carol", "bob", 60)).await["pk"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.set(T0 + 30_000);
    assert_eq!(pk_event(&mut carol, "expired").await["pk"], json!(second));
    bob.error(answer("pk_accept", &second), "conflict").await;

    // One battle per window (configured here): after a battle, alice waits.
    let third = alice.ok(invite("alice", "bob", 10)).await["pk"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.ok(answer("pk_accept", &third)).await;
    clock.set(T0 + 30_000 + 10_000 + SETTLE_MS);
    pk_event(&mut alice, "finished").await;
    let refused = alice
        .error(invite("alice", "carol", 60), "rate_limited")
        .await;
    let wait = refused["retry_after_ms"].as_u64().unwrap();
    assert_eq!(wait, 7_200_000 - 10_000 - SETTLE_MS);
}

#[tokio::test]
async fn likes_reach_the_room_counted_once_a_second_and_every_bad_like_is_refused() {
    let (server, _clock) = server_at_t0(|file| {
        file.limits.like_burst = 5;
        file.limits.like_window_ms = 60_000;
    })
    .await;
    let mut carol = member(&server, "carol", 0, "alice").await;
    let mut dave = member(&server, "dave", 0, "alice").await;
    for _ in 0..3 {
        carol
            .ok(json!({"type": "like", "room": "alice", "count": 5}))
            .await;
    }
    // Without a `rid` a like is not answered, and counts all the same.
    dave.send(json!({"type": "like", "room": "alice", "count": 1}))
        .await;
    // However the taps fall into seconds, the room hears all 16, in few events.
    let mut events = Vec::new();
    loop {
        let likes = carol.next_of("likes").await;
        events.push((likes["recent"].as_u64().unwrap(), std::time::Instant::now()));
        if likes["total"] == 16 {
            break;
        }
    }
    assert_eq!(events.iter().map(|(recent, _)| recent).sum::<u64>(), 16);
    for pair in events.windows(2) {
        assert!(pair[1].1 - pair[0].1 >= std::time::Duration::from_millis(900));
    }

    // Limits: taps per message, the room joined, signed in, the user's rate.
    for count in [0, 16] {
        let bad = json!({"type": "like", "room": "alice", "count": count});
        carol.error(bad, "bad_request").await;
    }
    carol
        .error(
            json!({"type": "like", "room": "bob", "count": 1}),
            "not_joined",
        )
        .await;
    let mut guest = Client::connect(server.addr, None).await;
    guest.join("alice").await;
    guest
        .error(
            json!({"type": "like", "room": "alice", "count": 1}),
            "unauthorized",
        )
        .await;
    for _ in 0..2 {
        carol
            .ok(json!({"type": "like", "room": "alice", "count": 1}))
            .await;
    }
    let limited = carol
        .error(
            json!({"type": "like", "room": "alice", "count": 1}),
            "rate_limited",
        )
        .await;
    assert!(limited["retry_after_ms"].as_u64().unwrap() > 0);

    // A banned viewer may watch but not like.
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    alice
        .ok(json!({"type": "mod", "room": "alice", "action": "ban", "user": "dave"}))
        .await;
    dave.error(
        json!({"type": "like", "room": "alice", "count": 1}),
        "banned",
    )
    .await;
}
