//! Several nodes on one PostgreSQL ledger (`OVATION_TEST_PG`): money behaves as on one
//! server, whichever node a request reaches. Each test uses a fresh schema.

mod common;

use common::*;
use serde_json::json;

/// The test database scoped to a fresh schema, and the schema; `None` (and a note)
/// when unset.
async fn fresh_ledger_url() -> Option<(String, String)> {
    let Ok(url) = std::env::var("OVATION_TEST_PG") else {
        eprintln!("SKIPPED: set OVATION_TEST_PG=postgres://... to run the cluster tests");
        return None;
    };
    let schema = format!("ovation_cluster_{:016x}", rand_u64());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    Some((
        format!("{url}{separator}options=-csearch_path%3D{schema}"),
        schema,
    ))
}

async fn drop_schema(schema: &str) {
    let url = std::env::var("OVATION_TEST_PG").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_is_charged_once_whichever_node_gets_it_or_its_retry() {
    let Some((ledger, schema)) = fresh_ledger_url().await else {
        return;
    };
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
    drop_schema(&schema).await;
}
