//! Several nodes on one PostgreSQL ledger (`OVATION_TEST_PG`) and, for the node
//! processes, one Redis bus (`OVATION_TEST_REDIS`): rooms, money, presence and
//! leaderboards behave as on one server, whichever node a client reaches, and a node
//! killed or drained costs its clients nothing but a reconnect. Each test uses a
//! fresh schema and cluster name.

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/rtc.rs"]
mod rtc;

use common::node::{Cluster, Node};
use common::*;
use ovation::auth::Role;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_is_charged_once_whichever_node_gets_it_or_its_retry() {
    let Some(schema) = node::PgSchema::create("cluster").await else {
        return;
    };
    let ledger = schema.url.clone();
    let (a, b) = (
        TestServer::node(&ledger).await,
        TestServer::node(&ledger).await,
    );
    // Coins bought through node A...
    assert_eq!(a.top_up("bob", 100).await, 100);
    // ...are spent through node B, which had never seen this wallet.
    let mut bob_on_b = b.viewer("bob").await;
    bob_on_b.join("alice").await;
    let gift = json!({"type": "gift", "room": "alice", "sticker": "rose", "count": 2, "key": "cross-node-1"});
    let first = bob_on_b.ok(gift.clone()).await;
    assert_eq!(
        (first["balance"].as_u64(), first["duplicate"].as_bool()),
        (Some(90), Some(false))
    );

    // The retry reaches node A: the same gift, charged once.
    let mut bob_on_a = a.viewer("bob").await;
    bob_on_a.join("alice").await;
    let retry = bob_on_a.ok(gift).await;
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["gift_id"], first["gift_id"]);

    // Node A learns that the wallet is lower than it thought, and refuses an overdraft.
    bob_on_a
        .error(json!({"type": "gift", "room": "alice", "sticker": "star", "count": 1, "key": "cross-node-2"}), "insufficient_funds")
        .await;
    let spend_rest = json!({"type": "gift", "room": "alice", "sticker": "applause", "count": 4, "key": "cross-node-3"});
    assert_eq!(bob_on_a.ok(spend_rest).await["balance"], 10);
    a.books_balance().await;
    b.books_balance().await;
    drop((a, b));
    schema.drop().await;
}

/// A guest watching `room` on `node`.
async fn watcher(node: &Node, room: &str) -> Client {
    let mut client = node.guest().await;
    client.join(room).await;
    client
}

/// The next `count` sequenced events a client receives, as (seq, id, type).
async fn sequenced(client: &mut Client, count: usize) -> Vec<(u64, String, String)> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = client.recv().await;
        if let Some(seq) = message["seq"].as_u64() {
            let id = message["id"].as_str().unwrap().to_owned();
            events.push((seq, id, message["type"].as_str().unwrap().to_owned()));
        }
    }
    events
}

/// Reads `kind` events until one's `field` is `value`: counts and balances settle
/// across nodes, and earlier values may still be on their way.
async fn reaches(client: &mut Client, kind: &str, field: &str, value: u64) {
    while client.next_of(kind).await[field] != value {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sent_on_three_nodes_reaches_every_viewer_in_one_seq_order() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let nodes = [cluster.node(), cluster.node(), cluster.node()];
    let mut watchers = Vec::new();
    for node in &nodes {
        watchers.push(watcher(node, "stage").await);
    }
    let mut talkers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut talker = node.viewer(&format!("talker{i}")).await;
        talker.join("stage").await;
        talkers.push(talker);
    }
    // Every talker sends its burst at the same time, each through its own node.
    let per_talker = 5;
    let sending = talkers.into_iter().enumerate().map(|(i, mut talker)| {
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..per_talker {
                let text = format!("talker{i} says {n}");
                let ok = talker
                    .ok(json!({"type": "chat", "room": "stage", "text": text}))
                    .await;
                sent.push(ok["id"].as_str().unwrap().to_owned());
            }
            sent
        })
    });
    let mut sent: Vec<String> = Vec::new();
    for task in sending.collect::<Vec<_>>() {
        sent.extend(task.await.unwrap());
    }
    let total = sent.len();
    let mut seen = Vec::new();
    for watcher in &mut watchers {
        seen.push(sequenced(watcher, total).await);
    }
    // One order for everyone, numbered without gaps, holding every message once.
    for other in &seen[1..] {
        assert_eq!(other, &seen[0]);
    }
    let first = seen[0][0].0;
    let seqs: Vec<u64> = seen[0].iter().map(|e| e.0).collect();
    assert_eq!(seqs, (first..first + total as u64).collect::<Vec<_>>());
    let mut ids: Vec<String> = seen[0].iter().map(|e| e.1.clone()).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);
    drop(nodes);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_on_one_node_is_charged_once_thanked_on_another_and_counted_everywhere() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b, c) = (cluster.node(), cluster.node(), cluster.node());
    let mut fan = watcher(&a, "alice").await;
    let mut alice = c.broadcaster("alice").await;
    alice.join("alice").await;
    assert_eq!(a.top_up("bob", 100).await, 100);

    let gift = json!({"type": "gift", "room": "alice", "sticker": "rose", "count": 2, "key": "scale-out-1"});
    let mut bob_on_a = a.viewer("bob").await;
    let mut bob_on_b = b.viewer("bob").await;
    bob_on_b.join("alice").await;
    let first = bob_on_b.ok(gift.clone()).await;
    assert_eq!(first["duplicate"], false);
    let gift_id = first["gift_id"].as_str().unwrap().to_owned();
    // The retry reaches node C: the same gift, charged once.
    let mut bob_on_c = c.viewer("bob").await;
    bob_on_c.join("alice").await;
    let retry = bob_on_c.ok(gift).await;
    assert_eq!(
        (&retry["duplicate"], &retry["gift_id"]),
        (&json!(true), &json!(gift_id))
    );
    assert_eq!(retry["balance"], first["balance"]);
    // Bob's other connection, on A, hears the new balance too (after the top-up's,
    // which the bus may deliver after this connection opened).
    reaches(
        &mut bob_on_a,
        "balance",
        "coins",
        first["balance"].as_u64().unwrap(),
    )
    .await;

    // The broadcaster, on C, thanks a gift paid on B.
    let text = "thank you bob";
    alice
        .ok(json!({"type": "ack", "room": "alice", "ref": gift_id, "text": text}))
        .await;
    // The fan on A saw the gift once, then the thanks.
    let events = sequenced(&mut fan, 2).await;
    assert_eq!(events[0].1, gift_id);
    assert_eq!(
        (events[0].2.as_str(), events[1].2.as_str()),
        ("gift", "ack")
    );

    // Presence counts the four members on three nodes; the leaderboard, the gift.
    let (mut counted, mut board) = (false, None);
    while !counted || board.is_none() {
        let message = fan.recv().await;
        match message["type"].as_str() {
            Some("presence") => counted = message["viewers"] == 4,
            Some("leaderboard") => board = Some(message),
            _ => {}
        }
    }
    let board = board.unwrap();
    assert_eq!(board["top"][0]["id"], "bob");
    let coins = board["top"][0]["coins"].clone();
    assert!(coins.as_u64().unwrap() > 0);
    let served = get_json(&b.url("/api/rooms/alice/leaderboard"), "").await;
    assert_eq!(served["top"][0]["coins"], coins);
    // Every node sees the books balance, and bob's wallet as the ledger has it.
    for node in [&a, &b, &c] {
        node.books_balance().await;
    }
    assert_eq!(json!(a.wallet("bob").await), first["balance"]);
    drop((a, b, c));
    cluster.finish().await;
}

/// Sends a chat and returns its `ok`.
async fn say(client: &mut Client, room: &str, text: &str) -> Value {
    client
        .ok(json!({"type": "chat", "room": room, "text": text}))
        .await
}

/// Rejoins `room` from the position of the last event seen.
fn join_since(room: &str, joined: &Value, last_seq: u64) -> Value {
    json!({"type": "join", "room": room, "since": {"epoch": joined["epoch"], "seq": last_seq}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_leaves_the_others_serving_and_its_viewers_recover_elsewhere() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b, mut c) = (cluster.node(), cluster.node(), cluster.node());
    let mut talker = a.viewer("talker").await;
    talker.join("news").await;
    let mut reader = c.guest().await;
    let joined = reader.join("news").await;
    let seen = say(&mut talker, "news", "before").await;
    assert_eq!(reader.next_of("chat").await["seq"], seen["seq"]);
    reaches(&mut talker, "presence", "viewers", 2).await;

    c.kill();
    // A goes on: chat and gifts work, and C's viewer drops out of the count.
    let missed = [
        say(&mut talker, "news", "while you were away").await,
        say(&mut talker, "news", "still here").await,
    ];
    assert_eq!(a.top_up("bob", 10).await, 10);
    let mut bob = b.viewer("bob").await;
    bob.join("news").await;
    bob.ok(
        json!({"type": "gift", "room": "news", "sticker": "rose", "count": 1, "key": "after-kill"}),
    )
    .await;
    reaches(&mut talker, "presence", "viewers", 2).await; // talker and bob; C's reader has expired

    // The reader reconnects to B and recovers exactly what it missed.
    let mut reader = b.guest().await;
    let rejoined = reader
        .ok(join_since("news", &joined, seen["seq"].as_u64().unwrap()))
        .await;
    assert_eq!(rejoined["recovered"], true, "{rejoined}");
    let events = rejoined["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{rejoined}");
    assert_eq!(events[0]["id"], missed[0]["id"]);
    assert_eq!(events[1]["id"], missed[1]["id"]);
    assert_eq!(events[2]["type"], "gift");
    a.books_balance().await;
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_closes_its_clients_so_they_recover_on_another() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, mut b) = (cluster.node(), cluster.node());
    let mut reader = b.guest().await;
    let joined = reader.join("drain").await;
    let mut talker = a.viewer("talker").await;
    talker.join("drain").await;
    let seen = say(&mut talker, "drain", "one").await;
    assert_eq!(reader.next_of("chat").await["id"], seen["id"]);

    let exit = b.terminate();
    assert_eq!(reader.closed().await, 1001);
    assert!(exit.success(), "{exit:?}");
    let missed = say(&mut talker, "drain", "two").await;
    let mut reader = a.guest().await;
    let rejoined = reader
        .ok(join_since("drain", &joined, seen["seq"].as_u64().unwrap()))
        .await;
    assert_eq!(rejoined["recovered"], true);
    assert_eq!(rejoined["events"][0]["id"], missed["id"]);
    drop((a, b));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_whose_node_died_is_announced_ended_on_the_other_nodes() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    // Video claims expire as presence does: after 3 ticks of a dead node.
    let config = "[limits]\npresence_interval_ms = 100\n";
    let (mut a, b, c) = (
        cluster.node_with_config(config),
        cluster.node_with_config(config),
        cluster.node_with_config(config),
    );
    let mut fans = [watcher(&b, "cam").await, watcher(&c, "cam").await];
    let token = a.token("cam", Role::Broadcaster);
    let _publisher = rtc::Publisher::start(&a, "cam", &token).await;
    for fan in &mut fans {
        assert_eq!(fan.next_of("stream").await["live"], true);
    }

    a.kill();
    // B and C notice that nobody claims the video any more; one of them ends it.
    for fan in &mut fans {
        assert_eq!(fan.next_of("stream").await["live"], false);
    }
    let mut talker = c.viewer("talker").await;
    talker.join("cam").await;
    let barrier = say(&mut talker, "cam", "after the end").await;
    let [fan, _] = &mut fans;
    assert_eq!(fan.next_of("chat").await["id"], barrier["id"]);
    let rejoined = fan.join("cam").await;
    let streams: Vec<&Value> = rejoined["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["type"] == "stream")
        .collect();
    assert_eq!(streams.len(), 2, "{rejoined}");
    // WHEP on B has nowhere to send a viewer now.
    assert_eq!(rtc::whep_offer(&b, "cam", "", None).await.status(), 404);
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_the_bus_reconnects_and_its_viewers_miss_nothing() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b) = (cluster.node(), cluster.node());
    let mut reader = watcher(&b, "blip").await;
    let mut talker = a.viewer("talker").await;
    talker.join("blip").await;
    let before = say(&mut talker, "blip", "before").await;
    assert_eq!(reader.next_of("chat").await["id"], before["id"]);

    cluster.cut_bus(&b).await;
    // Sent while B resubscribes: what its subscription missed, it takes from the
    // history, so its viewer sees every event once, in order, on the same connection.
    let mut sent = Vec::new();
    for n in 0..4 {
        sent.push(say(&mut talker, "blip", &format!("during {n}")).await["id"].clone());
    }
    let events = sequenced(&mut reader, sent.len()).await;
    let ids: Vec<Value> = events.iter().map(|e| json!(e.1)).collect();
    assert_eq!(ids, sent);
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    let first = before["seq"].as_u64().unwrap() + 1;
    assert_eq!(seqs, (first..first + 4).collect::<Vec<_>>());
    drop((a, b));
    cluster.finish().await;
}

/// `id` joins `room` on `node` and grabs `packet`: `Ok(coins)` or `Err(code)`.
async fn grab_on(node: &Node, id: &str, room: &str, packet: &str) -> Result<u64, String> {
    let mut client = node.viewer(id).await;
    client.join(room).await;
    client.grab(room, packet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_packet_is_grabbed_through_every_node_and_no_share_is_handed_out_twice() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let nodes = [cluster.node(), cluster.node(), cluster.node()];
    let mut fan = watcher(&nodes[2], "party").await;
    assert_eq!(nodes[0].top_up("bob", 100).await, 100);
    let mut bob = nodes[0].viewer("bob").await;
    bob.join("party").await;
    let made = bob
        .ok(json!({"type": "red_packet", "room": "party", "coins": 100, "shares": 10, "split": "random", "key": "cluster-packet"}))
        .await;
    let packet = made["packet_id"].as_str().unwrap().to_owned();

    // Thirty grabbers at once, ten through each node.
    let grabs = (0..30).map(|n| {
        let (node, packet) = (&nodes[n % 3], packet.clone());
        async move {
            (
                n,
                grab_on(node, &format!("grabber-{n}"), "party", &packet).await,
            )
        }
    });
    let outcomes = futures_util::future::join_all(grabs).await;
    let won: Vec<(usize, u64)> = outcomes
        .iter()
        .filter_map(|(n, outcome)| outcome.as_ref().ok().map(|coins| (*n, *coins)))
        .collect();
    assert_eq!(won.len(), 10, "{outcomes:?}");
    assert_eq!(won.iter().map(|(_, coins)| coins).sum::<u64>(), 100);
    for (_, outcome) in &outcomes {
        if let Err(code) = outcome {
            assert_eq!(code, "exhausted");
        }
    }
    // A winner trying again through another node is refused; wallets hold the shares.
    let (winner, coins) = won[0];
    let elsewhere = &nodes[(winner + 1) % 3];
    let id = format!("grabber-{winner}");
    assert_eq!(
        grab_on(elsewhere, &id, "party", &packet).await,
        Err("conflict".into())
    );
    assert_eq!(elsewhere.wallet(&id).await, coins);

    // The fan on the third node saw each grab once, counting the shares down exactly.
    let mut left: Vec<u64> = Vec::new();
    while left.len() < 10 {
        left.push(fan.next_of("grab").await["left"].as_u64().unwrap());
    }
    left.sort_unstable();
    assert_eq!(left, (0..10).collect::<Vec<u64>>());
    for node in &nodes {
        node.books_balance().await;
    }
    drop(nodes);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_packet_whose_node_died_is_refunded_by_another() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let config = "[gifts]\nred_packet_ttl_ms = 3000\nred_packet_sweep_ms = 200\n\
                  [limits]\npresence_interval_ms = 100\n";
    let (mut a, b) = (
        cluster.node_with_config(config),
        cluster.node_with_config(config),
    );
    assert_eq!(a.top_up("bob", 100).await, 100);
    let mut bob_on_b = b.viewer("bob").await;
    let mut bob_on_a = a.viewer("bob").await;
    bob_on_a.join("party").await;
    let made = bob_on_a
        .ok(json!({"type": "red_packet", "room": "party", "coins": 60, "shares": 3, "split": "even", "key": "orphan-packet"}))
        .await;
    let packet = made["packet_id"].as_str().unwrap().to_owned();
    assert_eq!(grab_on(&a, "carol", "party", &packet).await, Ok(20));
    // Bob's connection on B hears the packet's charge (after the top-up's balance).
    reaches(&mut bob_on_b, "balance", "coins", 40).await;

    // The node that made the packet dies before its TTL; B finds the packet in the
    // ledger and refunds the 40 unclaimed coins.
    a.kill();
    assert_eq!(bob_on_b.next_of("balance").await["coins"], 80);
    assert_eq!(b.wallet("bob").await, 80);
    assert_eq!(b.wallet("carol").await, 20);
    b.books_balance().await;
    drop((a, b));
    cluster.finish().await;
}

fn moderate(room: &str, action: &str, fields: Value) -> Value {
    let mut message = json!({"type": "mod", "room": room, "action": action});
    for (key, value) in fields.as_object().unwrap() {
        message[key] = value.clone();
    }
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_one_node_holds_on_another_and_after_every_node_restarts() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (mut a, b) = (cluster.node(), cluster.node());
    let mut alice = a.broadcaster("alice").await;
    alice.join("alice").await;
    let mut bob_on_b = b.viewer("bob").await;
    bob_on_b.join("alice").await;
    say(&mut bob_on_b, "alice", "hello from b").await;

    let ban = moderate("alice", "ban", json!({"user": "bob", "reason": "spam"}));
    assert_eq!(alice.ok(ban).await["rev"], 1);
    // Bob's open connection on B hears the ban, and from then on it holds there.
    let heard = bob_on_b.next_of("moderation").await;
    assert_eq!(
        (heard["action"].as_str(), heard["user"]["id"].as_str()),
        (Some("ban"), Some("bob"))
    );
    bob_on_b
        .error(
            json!({"type": "chat", "room": "alice", "text": "hi"}),
            "banned",
        )
        .await;
    // So it does for a new connection to B.
    let mut again = b.viewer("bob").await;
    again.join("alice").await;
    again
        .error(
            json!({"type": "chat", "room": "alice", "text": "again"}),
            "banned",
        )
        .await;

    // Every node goes; a new one knows the ban from the shared store.
    drop((bob_on_b, again, alice, b));
    a.kill();
    let c = cluster.node();
    let mut bob_on_c = c.viewer("bob").await;
    bob_on_c.join("alice").await;
    bob_on_c
        .error(
            json!({"type": "chat", "room": "alice", "text": "c?"}),
            "banned",
        )
        .await;
    let mut alice = c.broadcaster("alice").await;
    alice.join("alice").await;
    alice
        .ok(moderate("alice", "unban", json!({"user": "bob"})))
        .await;
    say(&mut bob_on_c, "alice", "free again").await;
    drop(c);
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_deleted_on_one_node_leaves_every_nodes_history() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b) = (cluster.node(), cluster.node());
    let mut bob_on_a = a.viewer("bob").await;
    bob_on_a.join("alice").await;
    let rude = say(&mut bob_on_a, "alice", "something rude").await;
    let id = rude["id"].as_str().unwrap().to_owned();
    say(&mut bob_on_a, "alice", "something fine").await;
    let mut watching_a = watcher(&a, "alice").await;

    let mut alice_on_b = b.broadcaster("alice").await;
    alice_on_b.join("alice").await;
    alice_on_b
        .ok(moderate("alice", "delete", json!({"id": id})))
        .await;
    assert_eq!(watching_a.next_of("deleted").await["id"], id);

    // Neither node's history, nor that of a node that joins later, holds it.
    let c = cluster.node();
    for node in [&a, &b, &c] {
        let mut late = node.guest().await;
        let joined = late.join("alice").await;
        let chats: Vec<&str> = (joined["events"].as_array().unwrap().iter())
            .filter(|e| e["type"] == "chat")
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        assert_eq!(chats, ["something fine"], "{joined}");
    }
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_delivered_once_whichever_node_booked_it() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (receiver, at) = receiver::Receiver::start(None).await;
    let toml = "[webhooks]\nallow_hosts = [\"127.0.0.1\"]\npoll_ms = 20\n";
    let (a, b) = (
        cluster.node_with_config(toml),
        cluster.node_with_config(toml),
    );
    let url = format!("http://{at}/hook/shared");
    let created: Value = a
        .http(
            reqwest::Method::POST,
            "/api/admin/webhooks",
            "root",
            Role::Admin,
        )
        .json(&json!({"url": url, "events": ["gift.sent", "moderation.action"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    receiver.expect("shared", created["secret"].as_str().unwrap());
    a.top_up("bob", 10_000).await;
    let mut sent = Vec::new();
    for node in [&a, &b] {
        let mut bob = node.viewer("bob").await;
        bob.join("alice").await;
        for _ in 0..15 {
            let key = rand_key();
            let gift =
                json!({"type": "gift", "room": "alice", "sticker": "rose", "count": 1, "key": key});
            sent.push(bob.ok(gift).await["gift_id"].as_str().unwrap().to_owned());
        }
    }
    let mut alice = b.broadcaster("alice").await;
    alice.join("alice").await;
    alice
        .ok(moderate("alice", "slow", json!({"seconds": 3})))
        .await;

    let arrived = receiver.wait_for(sent.len() + 1).await;
    let mut gifts: Vec<String> = (arrived.iter())
        .filter(|d| d.body["type"] == "gift.sent")
        .map(|d| d.body["data"]["gift_id"].as_str().unwrap().to_owned())
        .collect();
    gifts.sort();
    sent.sort();
    assert_eq!(gifts, sent, "every gift once");
    let ids: std::collections::BTreeSet<&str> = arrived.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), arrived.len(), "no webhook-id twice");
    assert!(arrived
        .iter()
        .any(|d| d.body["type"] == "moderation.action"));
    drop((a, b, alice));
    cluster.finish().await;
}

/// Sends each (sticker, count, coins each) as a gift to `room`; the coins confirmed.
async fn confirmed(client: &mut Client, room: &str, stickers: &[(&str, u32, u64)]) -> u64 {
    let mut total = 0;
    for (sticker, count, coins) in stickers {
        let gift = json!({"type": "gift", "room": room, "sticker": sticker, "count": count, "key": rand_key()});
        client.ok(gift).await;
        total += coins * u64::from(*count);
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battle_across_two_nodes_ends_with_the_ledgers_sums_though_a_node_dies_mid_battle() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let config = "[pk]\nmin_seconds = 1\n";
    let (mut a, b, c) = (
        cluster.node_with_config(config),
        cluster.node_with_config(config),
        cluster.node_with_config(config),
    );
    // Alice streams to A, Bob to B: each room's video lives on its own node.
    let mut alice = a.broadcaster("alice").await;
    alice.join("alice").await;
    let mut bob = b.broadcaster("bob").await;
    bob.join("bob").await;
    let _alice_video =
        rtc::Publisher::start(&a, "alice", &a.token("alice", Role::Broadcaster)).await;
    let _bob_video = rtc::Publisher::start(&b, "bob", &b.token("bob", Role::Broadcaster)).await;
    while alice.next_of("stream").await["live"] != true {}
    while bob.next_of("stream").await["live"] != true {}
    let mut watcher = c.guest().await;
    watcher.join("alice").await;
    a.top_up("carol", 10_000).await;
    b.top_up("dave", 10_000).await;
    let mut carol = a.viewer("carol").await;
    carol.join("alice").await;
    let mut dave = b.viewer("dave").await;
    dave.join("bob").await;

    // Invited on A (Bob's video is on B), accepted on B.
    let invited = alice
        .ok(json!({"type": "pk_invite", "room": "alice", "opponent": "bob", "seconds": 6}))
        .await;
    let pk = invited["pk"].as_str().unwrap().to_owned();
    assert_eq!(bob.next_of("pk_invite").await["pk"], json!(pk));
    bob.ok(json!({"type": "pk_accept", "pk": pk})).await;
    while watcher.next_of("pk").await["state"] != "running" {}

    let mut for_alice = confirmed(&mut carol, "alice", &[("star", 2, 100), ("rose", 1, 5)]).await;
    let mut for_bob = confirmed(&mut dave, "bob", &[("star", 1, 100)]).await;
    // A dies with its connections (it may have been driving the battle); gifts go on
    // through B and C, and B or C drives the battle to its end.
    a.kill();
    let mut carol = b.viewer("carol").await;
    carol.join("alice").await;
    for_alice += confirmed(&mut carol, "alice", &[("rose", 3, 5)]).await;
    let mut erin = c.viewer("erin").await;
    c.top_up("erin", 1_000).await;
    erin.join("bob").await;
    for_bob += confirmed(&mut erin, "bob", &[("star", 2, 100)]).await;

    let finished = loop {
        let event = watcher.next_of("pk").await;
        if event["state"] == "finished" {
            break event;
        }
    };
    assert_eq!(
        finished["scores"],
        json!({"alice": for_alice, "bob": for_bob})
    );
    assert_eq!(finished["winner"], "bob");
    let token = b.token("anyone", Role::Viewer);
    let state = get_json(&b.url(&format!("/api/pk/{pk}")), &token).await;
    assert_eq!(state["scores"], finished["scores"]);
    drop((b, c));
    cluster.finish().await;
}
