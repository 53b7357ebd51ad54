//! Apple App Store Server Notifications V2 end to end: a test chain (root,
//! intermediate, leaf) whose root the server is configured with, notifications signed
//! by it, and by chains it does not trust.

mod common;

use common::apple::{self, TestApple};
use common::*;
use ovation::auth::Role;
use ovation::config::FileConfig;
use ovation::money::{CoinPack, Coins};
use serde_json::{json, Value};

/// A server trusting `store`'s root, selling pack `p100` in the app.
async fn server(store: &TestApple, sandbox: bool) -> (TestServer, tempfile::TempDir) {
    let certificates = tempfile::tempdir().unwrap();
    let root = certificates.path().join("apple-root.pem");
    std::fs::write(&root, store.root_pem()).unwrap();
    let server = TestServer::with_config(|file: &mut FileConfig| {
        file.payments.apple_root = Some(root);
        file.payments.apple_bundle_id = Some(apple::BUNDLE_ID.into());
        file.payments.apple_sandbox = sandbox;
        file.payments.max_body_bytes = 32 * 1024;
        file.coin_packs = vec![CoinPack {
            id: "p100".into(),
            coins: Coins::new(100),
            amount: 99,
            currency: "USD".into(),
            app_store_product: Some("com.example.coins100".into()),
        }];
    })
    .await;
    (server, certificates)
}

async fn notify(api: &Api, body: impl Into<String>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(api.url("/api/payments/apple"))
        .header("content-type", "application/json")
        .body(body.into())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The app account token the app hands StoreKit for `user`.
async fn account_token(api: &Api, user: &str) -> String {
    let url = api.url("/api/me/app-account-token");
    let body = get_json(&url, &api.token(user, Role::Viewer)).await;
    body["app_account_token"].as_str().unwrap().to_owned()
}

async fn transfers(api: &Api) -> Value {
    api.books_balance().await["transfers"].clone()
}

#[tokio::test]
async fn an_app_store_purchase_is_credited_once_and_its_refund_takes_the_coins_back() {
    let store = TestApple::new();
    let (server, _certificates) = server(&store, true).await;
    let token = account_token(&server, "amy").await;
    assert_eq!(
        account_token(&server, "amy").await,
        token,
        "one token per user"
    );
    let mut page = server.viewer("amy").await;

    let bought = apple::transaction("2000000001", "com.example.coins100", &token);
    let notification = store.notification("ONE_TIME_CHARGE", bought.clone());
    assert_eq!(
        notify(&server, notification.clone()).await,
        (200, json!({"status": "applied"}))
    );
    assert_eq!(page.next_of("balance").await["coins"], 100);
    // Apple retries the same notification, or sends another about the same purchase.
    assert_eq!(
        notify(&server, notification).await,
        (200, json!({"status": "duplicate"}))
    );
    let again = store.notification("ONE_TIME_CHARGE", bought.clone());
    assert_eq!(
        notify(&server, again).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(server.wallet("amy").await, 100);

    // Amy spends 30; Apple refunds the purchase: 70 taken back, 30 owed.
    page.join("star").await;
    let ask =
        json!({"type": "question", "room": "star", "text": "hi?", "coins": 30, "key": "ask-00001"});
    page.ok(ask).await;
    let refund = store.notification("REFUND", bought);
    assert_eq!(
        notify(&server, refund.clone()).await,
        (200, json!({"status": "applied"}))
    );
    assert_eq!(
        notify(&server, refund).await,
        (200, json!({"status": "duplicate"}))
    );
    let wallet = get_json(
        &server.url("/api/me/wallet"),
        &server.token("amy", Role::Viewer),
    )
    .await;
    assert_eq!((&wallet["coins"], &wallet["debt"]), (&json!(0), &json!(30)));
    // Other notification types are acknowledged and change nothing.
    let test = store.notification(
        "TEST",
        apple::transaction("x", "com.example.coins100", &token),
    );
    assert_eq!(
        notify(&server, test).await,
        (200, json!({"status": "ignored"}))
    );
    assert_eq!(transfers(&server).await, 3);
}

#[tokio::test]
async fn untrusted_malformed_unknown_or_oversized_notifications_change_nothing() {
    let store = TestApple::new();
    let (server, _certificates) = server(&store, true).await;
    let token = account_token(&server, "amy").await;
    let good = apple::transaction("2000000002", "com.example.coins100", &token);

    // Signed by a chain up to another root: 401.
    let stranger = TestApple::new();
    let forged = stranger.notification("ONE_TIME_CHARGE", good.clone());
    assert_eq!(notify(&server, forged).await.0, 401);
    // A JWS whose payload was changed after signing: 401.
    let notification = store.notification("ONE_TIME_CHARGE", good.clone());
    let signed: Value = serde_json::from_str(&notification).unwrap();
    let parts: Vec<&str> = signed["signedPayload"]
        .as_str()
        .unwrap()
        .split('.')
        .collect();
    let other_payload = store.notification(
        "ONE_TIME_CHARGE",
        apple::transaction("9", "com.example.coins100", &token),
    );
    let other: Value = serde_json::from_str(&other_payload).unwrap();
    let other_parts: Vec<&str> = other["signedPayload"]
        .as_str()
        .unwrap()
        .split('.')
        .collect();
    let spliced = format!("{}.{}.{}", parts[0], other_parts[1], parts[2]);
    assert_eq!(notify(&server, apple::body(&spliced)).await.0, 401);
    // Not Apple's shape: 400.
    for body in ["", "{}", "[1]", r#"{"signedPayload": 5}"#] {
        assert_eq!(notify(&server, body).await.0, 400, "{body:?}");
    }
    // Well signed, but for nobody this server knows, or a product it does not sell.
    let stranger_token = apple::random_uuid();
    let nobody = store.notification(
        "ONE_TIME_CHARGE",
        apple::transaction("3", "com.example.coins100", &stranger_token),
    );
    assert_eq!(notify(&server, nobody).await.0, 422);
    let unknown_pack = store.notification(
        "ONE_TIME_CHARGE",
        apple::transaction("4", "com.example.coins999", &token),
    );
    assert_eq!(notify(&server, unknown_pack).await.0, 422);
    // A refund of a purchase never credited.
    let refund = store.notification(
        "REFUND",
        apple::transaction("5", "com.example.coins100", &token),
    );
    assert_eq!(notify(&server, refund).await.0, 422);
    // Larger than the configured limit: 413.
    let huge = format!(r#"{{"signedPayload": "{}"}}"#, "a".repeat(40 * 1024));
    assert_eq!(notify(&server, huge).await.0, 413);

    assert_eq!(transfers(&server).await, 0);
    assert_eq!(server.wallet("amy").await, 0);
}

#[tokio::test]
async fn sandbox_purchases_are_credited_only_where_configured_and_the_route_needs_a_root() {
    let store = TestApple::new();
    let (server, _certificates) = server(&store, false).await;
    let token = account_token(&server, "amy").await;
    let sandbox = store.notification(
        "ONE_TIME_CHARGE",
        apple::transaction("6", "com.example.coins100", &token),
    );
    assert_eq!(
        notify(&server, sandbox).await,
        (200, json!({"status": "ignored"}))
    );
    assert_eq!(server.wallet("amy").await, 0);

    let unconfigured = TestServer::start().await;
    let body = store.notification(
        "ONE_TIME_CHARGE",
        apple::transaction("7", "com.example.coins100", &token),
    );
    assert_eq!(notify(&unconfigured, body).await.0, 404);
}
