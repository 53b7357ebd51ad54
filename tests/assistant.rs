//! Bots and the room's assistant end to end: a bot token chats (marked `bot`) under its
//! own limit and never pays; the assistant answers `/help`, `/balance` privately and
//! `/top` to the room, thanks each gift once in the broadcaster's name when asked to,
//! and reminds the asker of a question left unanswered past the answer window.

mod common;

use common::{rand_key, Client, TestServer};
use ovation::auth::Role;
use ovation::clock::Clock;
use ovation::config::FileConfig;
use serde_json::{json, Value};

const T0: u64 = 1_800_000_000_000;

fn chat(room: &str, text: &str) -> Value {
    json!({"type": "chat", "room": room, "text": text})
}

fn gift_with(room: &str, key: &str) -> Value {
    json!({"type": "gift", "room": room, "sticker": "rose", "count": 2, "key": key})
}

#[tokio::test]
async fn a_bot_chats_marked_as_a_bot_under_its_own_limit_and_never_pays() {
    let server = TestServer::with_config(|file| {
        file.limits.bot_chat_burst = 8;
        file.limits.chat_burst = 2;
    })
    .await;
    let mut bot = Client::connect(server.addr, Some(&server.token("helper-bot", Role::Bot))).await;
    let mut reader = server.viewer("reader").await;
    bot.join("alice").await;
    reader.join("alice").await;
    bot.ok(chat("alice", "beep")).await;
    let said = reader.next_of("chat").await;
    assert_eq!(
        (said["text"].as_str(), said["bot"].as_bool()),
        (Some("beep"), Some(true))
    );
    // A person's chat carries no `bot`.
    reader.ok(chat("alice", "hi bot")).await;
    let heard = loop {
        let seen = bot.next_of("chat").await;
        if seen["from"]["id"] == "reader" {
            break seen;
        }
    };
    assert!(heard.get("bot").is_none(), "{heard}");
    // The bot's own limit: 8 in the window, where a person has 2.
    for n in 1..8 {
        bot.ok(chat("alice", &format!("beep {n}"))).await;
    }
    let refused = bot
        .error(chat("alice", "one too many"), "rate_limited")
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains('8'),
        "{refused}"
    );
    let key = rand_key();
    bot.error(gift_with("alice", &key), "forbidden").await;
    let packet = json!({"type": "red_packet", "room": "alice", "coins": 10, "shares": 2, "split": "even", "key": rand_key()});
    bot.error(packet, "forbidden").await;
}

#[tokio::test]
async fn the_assistant_answers_commands_privately_or_to_the_room() {
    let server = TestServer::start().await;
    server.top_up("bob", 500).await;
    let mut bob = server.viewer("bob").await;
    let mut eve = server.viewer("eve").await;
    bob.join("alice").await;
    eve.join("alice").await;
    bob.ok(gift_with("alice", &rand_key())).await;

    let reply = bob.ok(chat("alice", "/help")).await;
    assert_eq!(reply["command"], "help");
    let help = bob.next_of("notice").await;
    assert_eq!(help["room"], "alice");
    assert!(
        help["text"].as_str().unwrap().contains("/balance"),
        "{help}"
    );
    bob.ok(chat("alice", "/BALANCE")).await;
    let balance = bob.next_of("notice").await;
    assert_eq!(balance["text"], "You have 490 coins.");

    // Once the room's leaderboard counts the gift, /top answers the room from it.
    while eve.next_of("leaderboard").await["top"][0]["id"] != "bob" {}
    bob.ok(chat("alice", "/top")).await;
    let top = eve.next_of("chat").await;
    assert_eq!(
        (top["from"]["id"].as_str(), top["bot"].as_bool()),
        (Some("assistant"), Some(true))
    );
    assert_eq!(top["text"], "Top senders: 1. Bob (10 coins)");
    // Commands are not chat: eve saw none of them, and the first chat she sees is bob's.
    bob.ok(chat("alice", "a real message")).await;
    loop {
        let seen = eve.next_of("chat").await;
        if seen["from"]["id"] == "bob" {
            assert_eq!(seen["text"], "a real message");
            break;
        }
        assert_eq!(seen["from"]["id"], "assistant", "{seen}");
    }
}

#[tokio::test]
async fn thanks_are_said_once_per_gift_in_the_broadcasters_name_when_turned_on() {
    let server = TestServer::start().await;
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    alice.ok(chat("alice", "welcome")).await;
    assert_eq!(alice.next_of("chat").await["text"], "welcome");
    server.top_up("bob", 500).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    // Off by default: a gift, then a chat; the chat is the next chat anyone sees.
    bob.ok(gift_with("alice", &rand_key())).await;
    bob.ok(chat("alice", "marker")).await;
    assert_eq!(alice.next_of("chat").await["text"], "marker");

    let on = json!({"type": "mod", "room": "alice", "action": "assistant", "thanks": true, "template": "Thanks {name} for {count}x {sticker} <3"});
    let record = alice.ok(on).await;
    assert_eq!(record["assistant"]["thanks"], true);
    let mut mo = server.viewer("mo").await;
    mo.join("alice").await;
    let by_viewer = json!({"type": "mod", "room": "alice", "action": "assistant", "thanks": false});
    mo.error(by_viewer, "forbidden").await;
    let bad = json!({"type": "mod", "room": "alice", "action": "assistant", "answer_window_s": 5});
    alice.error(bad, "bad_request").await;

    let key = rand_key();
    bob.ok(gift_with("alice", &key)).await;
    let thanked = alice.next_of("chat").await;
    assert_eq!(thanked["text"], "Thanks Bob for 2x Rose <3");
    assert_eq!(
        (thanked["from"]["id"].as_str(), thanked["bot"].as_bool()),
        (Some("alice"), Some(true))
    );
    assert_eq!(thanked["from"]["name"], "Alice");
    // A retry of the same gift is not thanked again.
    assert_eq!(bob.ok(gift_with("alice", &key)).await["duplicate"], true);
    bob.ok(chat("alice", "after the retry")).await;
    assert_eq!(alice.next_of("chat").await["text"], "after the retry");
}

#[tokio::test]
async fn an_unanswered_question_past_the_window_is_reminded_to_its_asker() {
    let clock = Clock::manual(T0);
    let dir = tempfile::tempdir().unwrap();
    let mut file = FileConfig::default();
    file.limits.presence_interval_ms = 100;
    let server = TestServer::launch_with_clock(dir, true, file, None, clock.clone()).await;
    let mut alice = server.broadcaster("alice").await;
    alice.join("alice").await;
    let window =
        json!({"type": "mod", "room": "alice", "action": "assistant", "answer_window_s": 60});
    alice.ok(window).await;
    server.top_up("bob", 1000).await;
    let mut bob = server.viewer("bob").await;
    bob.join("alice").await;
    let ask = |text: &str| json!({"type": "question", "room": "alice", "text": text, "coins": 100, "key": rand_key()});
    let answered = bob.ok(ask("answered soon?")).await;
    bob.ok(ask("left waiting?")).await;
    let ack =
        json!({"type": "ack", "room": "alice", "ref": answered["question_id"], "text": "yes"});
    alice.ok(ack).await;
    clock.set(T0 + 61_000);
    let reminder = bob.next_of("notice").await;
    let text = reminder["text"].as_str().unwrap();
    assert!(
        text.contains("left waiting?") && text.contains("still in the queue"),
        "{text}"
    );
}
