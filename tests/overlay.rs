//! The stream overlay's key and alerts on a real server: a broadcaster's overlay key
//! is made on first request and stays the same (across a restart too), rotating it
//! makes the old one refused, only broadcasters have one, the page's check accepts
//! only the room's current key, and test and replay alerts reach a guest joined to
//! the room. On PostgreSQL (`OVATION_TEST_PG`), a key made on one node holds on
//! another.

mod common;

use common::node::PgSchema;
use common::*;
use ovation::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

async fn call(api: &Api, method: Method, path: &str, user: &str, role: Role) -> (u16, Value) {
    let response = api.http(method, path, user, role).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /api/me/overlay` as broadcaster `room`: `{"room","key","url"}`.
async fn overlay(api: &Api, room: &str) -> Value {
    let (status, body) = call(api, Method::GET, "/api/me/overlay", room, Role::Broadcaster).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn rotate(api: &Api, room: &str) -> Value {
    let path = "/api/me/overlay/rotate";
    let (status, body) = call(api, Method::POST, path, room, Role::Broadcaster).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET /api/overlay/{room}?{query}` without a token: the status and body.
async fn check(api: &Api, room: &str, query: &str) -> (u16, Value) {
    let url = api.url(&format!("/api/overlay/{room}?{query}"));
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn key(body: &Value) -> String {
    body["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_key_is_made_once_and_stays_the_same() {
    let server = TestServer::start().await;
    let first = overlay(&server, "alice").await;
    let key = key(&first);
    assert_eq!(key.len(), 32, "{first}");
    assert!(key.bytes().all(|c| c.is_ascii_hexdigit()), "{first}");
    assert_eq!(first["room"], "alice");
    assert_eq!(
        first["url"],
        format!("/overlay.html?room=alice&key={key}"),
        "{first}"
    );
    assert_eq!(overlay(&server, "alice").await, first);
    // Each broadcaster has their own.
    assert_ne!(self::key(&overlay(&server, "carol").await), key);
    // Kept beside the books: the same after a restart.
    let server = server.restart().await;
    assert_eq!(overlay(&server, "alice").await, first);
    assert_eq!(check(&server, "alice", &format!("key={key}")).await.0, 200);
}

#[tokio::test]
async fn rotating_the_key_refuses_the_old_one() {
    let server = TestServer::start().await;
    let old = key(&overlay(&server, "alice").await);
    let rotated = rotate(&server, "alice").await;
    let new = key(&rotated);
    assert_ne!(new, old);
    assert_eq!(
        rotated["url"],
        format!("/overlay.html?room=alice&key={new}")
    );
    assert_eq!(key(&overlay(&server, "alice").await), new);
    let (status, body) = check(&server, "alice", &format!("key={old}")).await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );
    assert_eq!(check(&server, "alice", &format!("key={new}")).await.0, 200);
    // Rotating before any key was asked for makes one.
    let made = key(&rotate(&server, "dave").await);
    assert_eq!(key(&overlay(&server, "dave").await), made);
}

#[tokio::test]
async fn only_broadcasters_have_an_overlay() {
    let server = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/api/me/overlay"),
        (Method::POST, "/api/me/overlay/rotate"),
        (Method::POST, "/api/me/overlay/test"),
        (Method::POST, "/api/me/overlay/replay"),
    ] {
        let (status, body) = call(&server, method.clone(), path, "bob", Role::Viewer).await;
        assert_eq!(
            (status, &body["code"]),
            (403, &json!("forbidden")),
            "{path}: {body}"
        );
        let response = reqwest::Client::new()
            .request(method, server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} without a token");
    }
    // A viewer's refused request made no key: their "room" still has none.
    let (status, _) = check(&server, "bob", "key=00000000000000000000000000000000").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_check_accepts_only_the_rooms_current_key() {
    let server = TestServer::start().await;
    let alice = key(&overlay(&server, "alice").await);
    let carol = key(&overlay(&server, "carol").await);
    let (status, body) = check(&server, "alice", &format!("key={alice}")).await;
    assert_eq!((status, body), (200, json!({"room": "alice"})));
    let wrong = "0123456789abcdef0123456789abcdef".to_owned();
    for (room, query) in [
        ("alice", String::new()),
        ("alice", "key=".into()),
        ("alice", format!("key={wrong}")),
        ("alice", format!("key={}", alice.to_uppercase())),
        ("alice", format!("key={}", &alice[..31])),
        ("alice", format!("key={alice}0")),
        ("alice", format!("key={}", "a".repeat(1000))),
        ("alice", format!("key={carol}")),
        ("carol", format!("key={alice}")),
        ("nobody", format!("key={alice}")),
        ("Alice", format!("key={alice}")),
    ] {
        let (status, body) = check(&server, room, &query).await;
        assert_eq!(status, 403, "{room}?{query}: {body}");
        assert_eq!(body["code"], "forbidden", "{room}?{query}: {body}");
    }
}

#[tokio::test]
async fn test_and_replay_alerts_reach_the_rooms_guests() {
    let server = TestServer::start().await;
    // Nobody in the room yet: accepted, nothing to tell.
    let test = "/api/me/overlay/test";
    assert_eq!(
        call(&server, Method::POST, test, "alice", Role::Broadcaster)
            .await
            .0,
        204
    );
    let mut overlay_page = server.guest().await;
    overlay_page.join("alice").await;
    let mut elsewhere = server.guest().await;
    elsewhere.join("carol").await;
    let (status, body) = call(&server, Method::POST, test, "alice", Role::Broadcaster).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        overlay_page.next_of("overlay_test").await,
        json!({"type": "overlay_test", "room": "alice"})
    );
    let replay = "/api/me/overlay/replay";
    assert_eq!(
        call(&server, Method::POST, replay, "alice", Role::Broadcaster)
            .await
            .0,
        204
    );
    assert_eq!(
        overlay_page.next_of("overlay_replay").await,
        json!({"type": "overlay_replay", "room": "alice"})
    );
    // Another room's guest heard none of it: the first test it gets is its own room's.
    call(&server, Method::POST, test, "carol", Role::Broadcaster).await;
    let next = elsewhere.next_of("overlay_test").await;
    assert_eq!(next["room"], "carol", "{next}");
}

#[tokio::test]
async fn a_key_made_on_one_node_holds_on_another() {
    let Some(schema) = PgSchema::create("overlay").await else {
        return;
    };
    let a = TestServer::node(&schema.url).await;
    let b = TestServer::node(&schema.url).await;
    let made = key(&overlay(&a, "alice").await);
    assert_eq!(key(&overlay(&b, "alice").await), made);
    assert_eq!(check(&b, "alice", &format!("key={made}")).await.0, 200);
    let rotated = key(&rotate(&b, "alice").await);
    assert_ne!(rotated, made);
    assert_eq!(check(&a, "alice", &format!("key={made}")).await.0, 403);
    assert_eq!(check(&a, "alice", &format!("key={rotated}")).await.0, 200);
    drop((a, b));
    schema.drop().await;
}
