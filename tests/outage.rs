//! A node whose PostgreSQL ledger goes away: lost connections are opened again by
//! themselves, gifts in between answer `unavailable` with a retry hint (never hang,
//! never close the client's connection), and a retry with the same key books each
//! gift exactly once. Needs `OVATION_TEST_PG`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::node::{Node, PgSchema};
use common::*;
use serde_json::{json, Value};
use tokio_postgres::{Client as Database, NoTls};

const SENDERS: usize = 8;
const GIFTS_EACH: usize = 150;
const COINS_EACH: u64 = 10_000;

/// A name no other test's connections carry.
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::time::SystemTime::now());
    format!("{prefix}_{:012x}", n >> 16)
}

async fn database() -> Database {
    let url = std::env::var("OVATION_TEST_PG").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Ends every backend whose `column` is `value`; how many there were.
async fn terminate_backends(database: &Database, column: &str, value: &str) -> i64 {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {column} = $1"
    );
    database.query_one(&sql, &[&value]).await.unwrap().get(0)
}

/// A node on `ledger`, with a data directory of its own.
fn node(ledger: &str, data: &tempfile::TempDir) -> Node {
    Node::spawn(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--ledger",
        ledger,
    ])
}

/// How each gift of one sender was answered the first time.
#[derive(Default)]
struct Answers {
    /// key → gift id.
    confirmed: HashMap<String, String>,
    unavailable: Vec<String>,
}

fn gift(room: &str, key: &str) -> Value {
    json!({"type": "gift", "room": room, "sticker": "heart", "count": 1, "key": key})
}

/// Sends `GIFTS_EACH` gifts one after the other; every one is answered.
async fn storm(node: &Node, id: String) -> Answers {
    let mut client = node.viewer(&id).await;
    let room = format!("{id}-room");
    client.join(&room).await;
    let mut answers = Answers::default();
    for n in 0..GIFTS_EACH {
        let key = format!("{id}-{n:04}");
        let reply = client.request(gift(&room, &key)).await;
        if reply["type"] == "ok" {
            answers
                .confirmed
                .insert(key, reply["gift_id"].as_str().unwrap().into());
        } else {
            assert_eq!(reply["code"], "unavailable", "{reply}");
            assert!(reply["retry_after_ms"].as_u64().unwrap() > 0, "{reply}");
            answers.unavailable.push(key);
        }
    }
    answers
}

/// Sends the gift again, as a client following the retry hint would, until it is
/// booked; whether it was booked before.
async fn retry_until_booked(client: &mut Client, room: &str, key: &str) -> bool {
    loop {
        let reply = client.request(gift(room, key)).await;
        if reply["type"] == "ok" {
            return reply["duplicate"].as_bool().unwrap();
        }
        assert_eq!(reply["code"], "unavailable", "{reply}");
        let hint = reply["retry_after_ms"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(hint)).await;
    }
}

/// Gifts booked for `user`, by the database itself.
async fn booked_gifts(database: &Database, schema: &str, user: &str) -> i64 {
    let sql =
        format!("SELECT count(*) FROM {schema}.transfers WHERE idem_user = $1 AND kind = 'gift'");
    database.query_one(&sql, &[&user]).await.unwrap().get(0)
}

/// The schema named in a test URL (`options=-csearch_path%3D<schema>`).
fn schema_of(url: &str) -> &str {
    url.rsplit("search_path%3D").next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_storm_through_lost_database_connections_books_every_gift_once() {
    let Some(schema) = PgSchema::create("outage").await else {
        return;
    };
    let name = unique("ovation_outage");
    let ledger = format!("{}&application_name={name}", schema.url);
    let data = tempfile::tempdir().unwrap();
    let node = node(&ledger, &data);
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("storm-{i}")).collect();
    for id in &senders {
        node.top_up(id, COINS_EACH).await;
    }
    let database = database().await;
    let storms: Vec<_> = senders.iter().map(|id| storm(&node, id.clone())).collect();
    let cut = async {
        // Twice during the storm, every connection of the node is cut.
        let mut cuts = 0;
        while cuts < 2 {
            let metrics = common::metrics(&node.url("")).await;
            let gifts = metric(&metrics, "ovation_messages_in_total{type=\"gift\"}").unwrap_or(0.0);
            if gifts >= (SENDERS * GIFTS_EACH * (cuts + 1) / 3) as f64 {
                // The writer's connection at least (the reader's, if it was opened again).
                assert!(terminate_backends(&database, "application_name", &name).await >= 1);
                cuts += 1;
            }
            tokio::task::yield_now().await;
        }
    };
    let (answers, ()) = tokio::join!(futures_util::future::join_all(storms), cut);

    let unavailable: usize = answers.iter().map(|a| a.unavailable.len()).sum();
    eprintln!(
        "{unavailable} of {} gifts answered unavailable",
        SENDERS * GIFTS_EACH
    );
    for (id, answers) in senders.iter().zip(&answers) {
        let mut client = node.viewer(id).await;
        let room = format!("{id}-room");
        client.join(&room).await;
        for (key, gift_id) in &answers.confirmed {
            let reply = client.ok(gift(&room, key)).await;
            assert_eq!(
                (&reply["duplicate"], &reply["gift_id"]),
                (&json!(true), &json!(gift_id))
            );
        }
        for key in &answers.unavailable {
            retry_until_booked(&mut client, &room, key).await;
        }
        let booked = booked_gifts(&database, schema_of(&schema.url), id).await;
        assert_eq!(
            booked, GIFTS_EACH as i64,
            "{id}: every gift booked exactly once"
        );
        // A retry answers the balance the books hold (asked before anything else
        // reads the wallet again): had a gift answered `unavailable` committed after
        // all, the node must not still count its coins as spendable.
        let left = COINS_EACH - GIFTS_EACH as u64;
        for key in answers
            .unavailable
            .iter()
            .chain(answers.confirmed.keys().take(1))
        {
            let reply = client.ok(gift(&room, key)).await;
            assert_eq!(reply["balance"], left, "{reply}");
        }
        assert_eq!(node.wallet(id).await, left);
    }
    node.books_balance().await;
    drop(node);
    schema.drop().await;
}

/// The database refuses the node for a while (its role may not log in, and its
/// connections are cut): every gift answers `unavailable` at once with a retry hint,
/// thirty of them do not get the client disconnected as if it were hostile, and once
/// the database takes the node back, service resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_database_outage_gifts_answer_unavailable_and_service_resumes_by_itself() {
    let Some(schema) = PgSchema::create("refused").await else {
        return;
    };
    let database = database().await;
    let role = unique("ovation_role");
    database
        .batch_execute(&format!("CREATE ROLE {role} LOGIN SUPERUSER"))
        .await
        .unwrap();
    let config: tokio_postgres::Config = schema.url.parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else {
        panic!("OVATION_TEST_PG must name a TCP host");
    };
    let ledger = format!(
        "host={host} port={} dbname={} user={role} options=-csearch_path={}",
        config.get_ports()[0],
        config.get_dbname().unwrap(),
        schema_of(&schema.url)
    );
    let data = tempfile::tempdir().unwrap();
    let node = node(&ledger, &data);
    node.top_up("fan", 1_000).await;
    let mut client = node.viewer("fan").await;
    client.join("star").await;
    client.ok(gift("star", "before-outage")).await;

    database
        .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
        .await
        .unwrap();
    assert!(terminate_backends(&database, "usename", &role).await >= 2);
    let keys: Vec<String> = (0..30).map(|n| format!("during-outage-{n:02}")).collect();
    for key in &keys {
        let reply = client.error(gift("star", key), "unavailable").await;
        assert!(reply["retry_after_ms"].as_u64().unwrap() > 0, "{reply}");
    }
    // Still connected: server faults are not the client's errors.
    client.ok(json!({"type": "ping"})).await;

    database
        .batch_execute(&format!("ALTER ROLE {role} LOGIN"))
        .await
        .unwrap();
    for key in &keys {
        assert!(
            !retry_until_booked(&mut client, "star", key).await,
            "{key} was booked while refused"
        );
    }
    assert_eq!(node.wallet("fan").await, 1_000 - 31);
    node.books_balance().await;
    drop(node);
    schema.drop().await;
    terminate_backends(&database, "usename", &role).await;
    database
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}
