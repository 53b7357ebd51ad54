//! Red packets end to end: escrow on creation, one share per grabber, refunds on
//! expiry, recovery after a restart, and every refusal — on a real server and ledger.

mod common;

use std::collections::HashSet;

use common::*;
use futures_util::future::join_all;
use serde_json::{json, Value};

fn packet(room: &str, coins: u64, shares: u32, split: &str, key: &str) -> Value {
    json!({"type": "red_packet", "room": room, "coins": coins, "shares": shares, "split": split, "key": key})
}

fn grab(room: &str, packet: &str) -> Value {
    json!({"type": "grab", "room": room, "packet": packet})
}

/// A viewer with `coins` (if any) who has joined `room`.
async fn member(server: &TestServer, id: &str, coins: u64, room: &str) -> Client {
    if coins > 0 {
        server.top_up(id, coins).await;
    }
    let mut client = server.viewer(id).await;
    client.join(room).await;
    client
}

#[tokio::test]
async fn a_packet_is_escrowed_announced_and_grabbed_share_by_share() {
    let server = TestServer::start().await;
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    let mut bob = member(&server, "bob", 1000, "alice").await;

    let reply = bob
        .ok(packet("alice", 100, 5, "random", "packet-0001"))
        .await;
    assert_eq!(
        (reply["balance"].as_u64(), reply["duplicate"].as_bool()),
        (Some(900), Some(false))
    );
    let id = reply["packet_id"].as_str().unwrap().to_owned();
    let event = alice.next_of("red_packet").await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["from"], json!({"id": "bob", "name": "Bob"}));
    assert_eq!(
        (event["coins"].as_u64(), event["shares"].as_u64()),
        (Some(100), Some(5))
    );
    assert_eq!(event["split"], "random");
    assert_eq!(bob.next_of("balance").await["coins"], 900);

    let mut carol = member(&server, "carol", 0, "alice").await;
    let got = carol.ok(grab("alice", &id)).await;
    let share = got["coins"].as_u64().unwrap();
    assert!(
        (1..=96).contains(&share),
        "a share of 100 coins in 5 is 1 to 96, got {share}"
    );
    assert_eq!(got["balance"].as_u64(), Some(share));
    assert_eq!(
        carol.next_of("balance").await["coins"].as_u64(),
        Some(share)
    );
    let announced = alice.next_of("grab").await;
    assert_eq!(announced["packet"], id.as_str());
    assert_eq!(announced["by"], json!({"id": "carol", "name": "Carol"}));
    assert_eq!(
        (announced["coins"].as_u64(), announced["left"].as_u64()),
        (Some(share), Some(4))
    );
    assert_eq!(server.wallet("carol").await, share);

    // The creation is idempotent: a retry answers the first packet and charges nothing.
    let retry = bob
        .ok(packet("alice", 100, 5, "random", "packet-0001"))
        .await;
    assert_eq!(retry["packet_id"], id.as_str());
    assert_eq!(
        (retry["balance"].as_u64(), retry["duplicate"].as_bool()),
        (Some(900), Some(true))
    );
    bob.error(packet("alice", 100, 4, "random", "packet-0001"), "conflict")
        .await;
    assert_eq!(server.wallet("bob").await, 900);
    server.books_balance().await;
}

#[tokio::test]
async fn an_even_packet_hands_the_odd_coins_to_the_first_grabbers_then_runs_out() {
    let server = TestServer::start().await;
    let mut bob = member(&server, "bob", 10, "room").await;
    let id = bob.ok(packet("room", 10, 3, "even", "packet-even")).await["packet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut got = Vec::new();
    for grabber in ["carol", "dave", "erin"] {
        let mut client = member(&server, grabber, 0, "room").await;
        got.push(
            client.ok(grab("room", &id)).await["coins"]
                .as_u64()
                .unwrap(),
        );
        client.error(grab("room", &id), "conflict").await;
    }
    assert_eq!(got, [4, 3, 3]);
    let mut late = member(&server, "frank", 0, "room").await;
    late.error(grab("room", &id), "exhausted").await;
    // The sender may grab too, but there is nothing left.
    bob.error(grab("room", &id), "exhausted").await;
    assert_eq!(server.wallet("bob").await, 0);
    server.books_balance().await;
}

#[tokio::test]
async fn a_thousand_simultaneous_grabbers_get_exactly_the_hundred_shares() {
    rlimit::increase_nofile_limit(8192).unwrap();
    let server = TestServer::start().await;
    let mut bob = member(&server, "bob", 5000, "party").await;
    let id = bob
        .ok(packet("party", 5000, 100, "random", "packet-rush"))
        .await["packet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let grabbers = join_all((0..1000).map(|n| {
        let server = &server;
        async move {
            (
                format!("g{n}"),
                member(server, &format!("g{n}"), 0, "party").await,
            )
        }
    }))
    .await;
    // Everyone sends before anyone reads an answer.
    let answers = join_all(grabbers.into_iter().map(|(user, mut client)| {
        let id = id.clone();
        async move { (user, client.request(grab("party", &id)).await) }
    }))
    .await;

    let mut winners = HashSet::new();
    let (mut total, mut exhausted) = (0, 0);
    for (user, answer) in &answers {
        match (answer["type"].as_str(), answer["code"].as_str()) {
            (Some("ok"), _) => {
                assert!(winners.insert(user.clone()), "{user} won twice");
                total += answer["coins"].as_u64().unwrap();
            }
            (Some("error"), Some("exhausted")) => exhausted += 1,
            _ => panic!("{user} got {answer}"),
        }
    }
    assert_eq!((winners.len(), exhausted, total), (100, 900, 5000));
    let paid: u64 = join_all(winners.iter().map(|user| server.wallet(user)))
        .await
        .iter()
        .sum();
    assert_eq!(paid, 5000);
    server.books_balance().await;
}

#[tokio::test]
async fn what_is_left_at_expiry_goes_back_to_the_sender() {
    let server = TestServer::with_config(|file| {
        file.gifts.red_packet_ttl_ms = 300;
        file.limits.presence_interval_ms = 50;
    })
    .await;
    let mut bob = member(&server, "bob", 100, "room").await;
    let id = bob
        .ok(packet("room", 60, 3, "even", "packet-expiring"))
        .await["packet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(bob.next_of("balance").await["coins"], 40);
    let mut carol = member(&server, "carol", 0, "room").await;
    assert_eq!(carol.ok(grab("room", &id)).await["coins"], 20);

    // The refund is announced to the sender as a new balance: 40 kept + 40 unclaimed.
    assert_eq!(bob.next_of("balance").await["coins"], 80);
    assert_eq!(server.wallet("bob").await, 80);
    let mut dave = member(&server, "dave", 0, "room").await;
    dave.error(grab("room", &id), "not_found").await;
    server.books_balance().await;
    // Nothing is refunded twice, not even after a restart.
    let server = server.restart().await;
    assert_eq!(server.wallet("bob").await, 80);
    assert_eq!(server.wallet("carol").await, 20);
    server.books_balance().await;
}

#[tokio::test]
async fn after_a_restart_grabs_continue_with_the_stored_shares() {
    let server = TestServer::start().await;
    let mut bob = member(&server, "bob", 1000, "room").await;
    let id = bob
        .ok(packet("room", 1000, 4, "random", "packet-restart"))
        .await["packet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut carol = member(&server, "carol", 0, "room").await;
    let first = carol.ok(grab("room", &id)).await["coins"].as_u64().unwrap();
    drop((bob, carol));

    let server = server.restart().await;
    let mut carol = member(&server, "carol", 0, "room").await;
    carol.error(grab("room", &id), "conflict").await;
    let mut total = first;
    for grabber in ["dave", "erin", "frank"] {
        let mut client = member(&server, grabber, 0, "room").await;
        let reply = client.ok(grab("room", &id)).await;
        assert_eq!(reply["balance"], reply["coins"]);
        total += reply["coins"].as_u64().unwrap();
    }
    // Had the shares been decided again, they would not add up to the packet.
    assert_eq!(total, 1000);
    member(&server, "gina", 0, "room")
        .await
        .error(grab("room", &id), "exhausted")
        .await;
    server.books_balance().await;
}

#[tokio::test]
async fn every_bad_red_packet_or_grab_is_refused_and_moves_nothing() {
    let server = TestServer::start().await;
    let mut bob = member(&server, "bob", 100, "room").await;
    let id = bob.ok(packet("room", 10, 2, "random", "packet-good")).await["packet_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = [
        (packet("room", 10, 0, "even", "packet-bad1"), "bad_request"),
        (
            packet("room", 5000, 1001, "even", "packet-bad2"),
            "bad_request",
        ),
        (packet("room", 3, 4, "random", "packet-bad3"), "bad_request"),
        (packet("room", 0, 1, "even", "packet-bad4"), "bad_request"),
        (packet("room", 10, 2, "lucky", "packet-bad5"), "bad_request"),
        (packet("room", 10, 2, "even", "short"), "bad_request"),
        (
            packet("room", u64::MAX, 2, "even", "packet-bad6"),
            "too_large",
        ),
        (
            packet("room", 91, 2, "even", "packet-bad7"),
            "insufficient_funds",
        ),
        (
            packet("elsewhere", 10, 2, "even", "packet-bad8"),
            "not_joined",
        ),
        (
            json!({"type": "red_packet", "room": "room", "coins": -5, "shares": 1, "split": "even", "key": "packet-bad9"}),
            "bad_request",
        ),
        (
            json!({"type": "red_packet", "room": "room", "coins": 2.5, "shares": 1, "split": "even", "key": "packet-bad10"}),
            "bad_request",
        ),
        (
            json!({"type": "red_packet", "room": "room", "coins": "10", "shares": 1, "split": "even", "key": "packet-bad11"}),
            "bad_request",
        ),
        (grab("room", "no-such-packet"), "not_found"),
        (grab("elsewhere", &id), "not_joined"),
        (json!({"type": "grab", "room": "room"}), "bad_request"),
    ];
    for (message, code) in refused {
        bob.error(message, code).await;
    }
    // A packet is grabbed only in its own room.
    let mut carol = member(&server, "carol", 0, "other").await;
    carol.error(grab("other", &id), "not_found").await;
    let mut guest = server.guest().await;
    guest.join("room").await;
    guest
        .error(
            packet("room", 10, 2, "even", "packet-guest"),
            "unauthorized",
        )
        .await;
    guest.error(grab("room", &id), "unauthorized").await;

    assert_eq!(server.wallet("bob").await, 90);
    assert_eq!(server.wallet("carol").await, 0);
    server.books_balance().await;
}
