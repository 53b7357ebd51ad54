//! Coins bought with real money through signed Standard Webhooks notifications, sent as
//! a payment backend sends them to a real server: credited exactly once, and anything
//! unsigned, stale, malformed or unknown refused with the books unchanged. Runs on the
//! embedded ledger and, with `OVATION_TEST_PG`, on PostgreSQL.

mod common;

use common::node::PgSchema;
use common::webhooks::{now_s, purchase, Notification, WEBHOOK_SECRET};
use common::*;
use ovation::auth::Role;
use ovation::config::FileConfig;
use ovation::money::{CoinPack, Coins};
use ovation::payments::standard::Secret;
use serde_json::{json, Value};

/// A Stripe endpoint's signing secret.
const STRIPE_SECRET: &str = "whsec_stripe_endpoint_secret_for_tests";

fn config() -> FileConfig {
    let mut file = FileConfig::default();
    file.payments.standard_secret = Some(WEBHOOK_SECRET.into());
    file.payments.stripe_secret = Some(STRIPE_SECRET.into());
    file.payments.max_body_bytes = 32 * 1024;
    file.coin_packs = vec![
        CoinPack {
            id: "p100".into(),
            coins: Coins::new(100),
            amount: 99,
            currency: "USD".into(),
            app_store_product: None,
        },
        CoinPack {
            id: "p1200".into(),
            coins: Coins::new(1200),
            amount: 999,
            currency: "USD".into(),
            app_store_product: None,
        },
    ];
    file
}

/// The books as the admin sees them: balanced, with this many transfers.
async fn transfers(api: &Api) -> u64 {
    api.books_balance().await["transfers"].as_u64().unwrap()
}

async fn credits_once(api: &Api) {
    let mut viewer = api.viewer("buyer").await;
    let first = Notification::new("msg_1", purchase("order-1", "buyer", "p100"));
    assert_eq!(first.send(api).await, (200, json!({"status": "applied"})));
    // The buyer's open page hears of it at once.
    assert_eq!(viewer.next_of("balance").await["coins"], 100);
    assert_eq!(api.wallet("buyer").await, 100);

    // The payment system delivers it again (same id), or reports it in another event.
    assert_eq!(first.send(api).await, (200, json!({"status": "duplicate"})));
    let again = Notification::new("msg_2", purchase("order-1", "buyer", "p100"));
    assert_eq!(again.send(api).await, (200, json!({"status": "duplicate"})));
    // The same purchase id saying something else is refused.
    let other = Notification::new("msg_3", purchase("order-1", "buyer", "p1200"));
    let (status, body) = other.send(api).await;
    assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");

    let second = Notification::new("msg_4", purchase("order-2", "buyer", "p1200"));
    assert_eq!(second.send(api).await.0, 200);
    assert_eq!(api.wallet("buyer").await, 1300);
    assert_eq!(transfers(api).await, 2);
}

#[tokio::test]
async fn a_signed_purchase_is_credited_once_whatever_is_redelivered() {
    let server = TestServer::with_config(|file| *file = config()).await;
    credits_once(&server).await;
    // Packs on sale, as configured.
    let packs = get_json(&server.url("/api/coin-packs"), "").await;
    assert_eq!(
        packs["packs"][1],
        json!({"id": "p1200", "coins": 1200, "price": {"amount": 999, "currency": "USD"}})
    );
}

#[tokio::test]
async fn a_signed_purchase_is_credited_once_on_postgres() {
    let Some(schema) = PgSchema::create("payments").await else {
        return;
    };
    let server = TestServer::node_with_config(&schema.url, config()).await;
    credits_once(&server).await;
    server.server.shutdown();
    server.server.stopped().await.unwrap();
    schema.drop().await;
}

#[tokio::test]
async fn unsigned_stale_malformed_or_unknown_notifications_change_nothing() {
    let server = TestServer::with_config(|file| *file = config()).await;
    let api: &Api = &server;
    let good = Notification::new("msg_ok", purchase("order-9", "buyer", "p100"));
    let code = |(status, _): (u16, Value)| status;

    // Signatures: none, someone else's, an old one.
    assert_eq!(code(good.send_signed_as(api, None).await), 401);
    let forged = Secret::parse("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").unwrap();
    let forged = forged.sign(&good.id, good.timestamp, good.body.as_bytes());
    assert_eq!(code(good.send_signed_as(api, Some(&forged)).await), 401);
    let stale = Notification {
        timestamp: now_s() - 301,
        ..Notification::new("msg_old", purchase("order-9", "buyer", "p100"))
    };
    assert_eq!(code(stale.send(api).await), 401);
    // A signature over another body.
    let tampered = Notification {
        body: purchase("order-9", "buyer", "p1200").to_string(),
        ..Notification::new("msg_ok", purchase("order-9", "buyer", "p100"))
    };
    assert_eq!(
        code(tampered.send_signed_as(api, Some(&good.signature())).await),
        401
    );

    // Well signed, but not what this server takes.
    for body in [
        json!("not an object"),
        json!({"type": "purchase.completed", "data": {"purchase_id": "x"}}),
        json!({"type": "something.else", "data": {}}),
        json!({"type": "purchase.completed", "data": {
            "purchase_id": "o", "user": "buyer", "pack": "p100", "coins": 5,
            "amount": 1, "currency": "USD", "store": "web"}}),
        json!({"type": "purchase.completed", "data": {
            "purchase_id": "o", "user": "buyer", "pack": "p100",
            "amount": 1, "currency": "dollars", "store": "web"}}),
    ] {
        let (status, reply) = Notification::new("msg_bad", body.clone()).send(api).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("bad_request")),
            "{body}"
        );
    }
    let raw = Notification {
        body: "{not json".into(),
        ..Notification::new("msg_raw", json!(null))
    };
    assert_eq!(code(raw.send(api).await), 400);
    // Names it does not know.
    for body in [
        purchase("order-9", "buyer", "p999"),
        purchase("order-9", "Not A User!", "p100"),
    ] {
        assert_eq!(code(Notification::new("msg_x", body).send(api).await), 422);
    }
    // Too large.
    let mut huge = purchase("order-9", "buyer", "p100");
    huge["padding"] = json!("x".repeat(40 * 1024));
    assert_eq!(
        code(Notification::new("msg_big", huge).send(api).await),
        413
    );
    // Larger than the JSON routes take, within the payments limit: taken.
    let mut padded = purchase("order-10", "buyer", "p100");
    padded["padding"] = json!("x".repeat(20 * 1024));
    assert_eq!(
        code(Notification::new("msg_pad", padded).send(api).await),
        200
    );

    assert_eq!(api.wallet("buyer").await, 100);
    assert_eq!(transfers(api).await, 1);
    let token = api.token("buyer", Role::Viewer);
    assert_eq!(
        get_json(&api.url("/api/me/wallet"), &token).await["coins"],
        100
    );
}

#[tokio::test]
async fn without_a_secret_the_route_does_not_exist() {
    let server =
        TestServer::launch(tempfile::tempdir().unwrap(), false, FileConfig::default()).await;
    let notification = Notification::new("msg_1", purchase("order-1", "buyer", "p100"));
    assert_eq!(notification.send(&server).await.0, 404);
    // A dev server makes a secret up for its simulated store: nobody else can sign.
    let dev = TestServer::start().await;
    assert_eq!(notification.send(&dev).await.0, 401);
    assert_eq!(dev.wallet("buyer").await, 0);
}

async fn buy(api: &Api, user: &str, pack: &str) -> (u16, Value) {
    let response = api
        .http(reqwest::Method::POST, "/api/dev/store", user, Role::Viewer)
        .json(&json!({"pack": pack}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Dev mode's simulated store pays through the real notification route, signature
/// included: the buyer's open page hears of the coins at once.
#[tokio::test]
async fn the_dev_stores_purchases_go_through_the_signed_route() {
    let server = TestServer::start().await;
    let packs = get_json(&server.url("/api/coin-packs"), "").await;
    assert_eq!(packs["checkout"], json!({"simulated": true}));
    assert_eq!(packs["packs"][0]["id"], "p100");
    let mut viewer = server.viewer("buyer").await;
    let (status, bought) = buy(&server, "buyer", "p500").await;
    assert_eq!((status, &bought["coins"]), (200, &json!(500)), "{bought}");
    assert_eq!(viewer.next_of("balance").await["coins"], 500);
    assert_eq!(buy(&server, "buyer", "p999").await.0, 404);
    assert_eq!(server.wallet("buyer").await, 500);
    // Outside dev mode there is no store, and the page is sent to the checkout.
    let mut file = config();
    file.payments.checkout_url = Some("https://pay.example.com/buy?user={user}&pack={pack}".into());
    let live = TestServer::launch(tempfile::tempdir().unwrap(), false, file).await;
    assert_eq!(buy(&live, "buyer", "p100").await.0, 404);
    let packs = get_json(&live.url("/api/coin-packs"), "").await;
    assert_eq!(
        packs["checkout"]["url"],
        "https://pay.example.com/buy?user={user}&pack={pack}"
    );
}

/// A Stripe event sent as Stripe sends it: signed over the exact bytes.
async fn stripe(api: &Api, body: &Value, signature: Option<String>) -> (u16, Value) {
    let body = body.to_string();
    let signature = signature.unwrap_or_else(|| {
        ovation::payments::stripe::sign(STRIPE_SECRET, now_s(), body.as_bytes())
    });
    let response = reqwest::Client::new()
        .post(api.url("/api/payments/stripe"))
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A Checkout Session of `pack`, paid through `intent`.
fn checkout(event: &str, intent: &str, pack: &str, status: &str) -> Value {
    json!({"id": event, "type": "checkout.session.completed", "data": {"object": {
        "id": format!("cs_{intent}"), "payment_intent": intent, "payment_status": status,
        "amount_total": 999, "currency": "usd", "metadata": {"user": "buyer", "pack": pack},
    }}})
}

#[tokio::test]
async fn a_paid_stripe_checkout_is_credited_once_and_other_events_change_nothing() {
    let server = TestServer::with_config(|file| *file = config()).await;
    let api: &Api = &server;
    let paid = checkout("evt_1", "cs_1", "p1200", "paid");
    assert_eq!(
        stripe(api, &paid, None).await,
        (200, json!({"status": "applied"}))
    );
    assert_eq!(
        stripe(api, &paid, None).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(api.wallet("buyer").await, 1200);

    // Events the endpoint receives but this server does not act on.
    let unpaid = checkout("evt_2", "cs_2", "p100", "unpaid");
    assert_eq!(
        stripe(api, &unpaid, None).await,
        (200, json!({"status": "ignored"}))
    );
    let other = json!({"id": "evt_3", "type": "customer.created", "data": {"object": {}}});
    assert_eq!(
        stripe(api, &other, None).await,
        (200, json!({"status": "ignored"}))
    );

    // Refused: a signature by another secret, an old one, a malformed or unknown body.
    let forged = ovation::payments::stripe::sign("whsec_not_ours", now_s(), b"{}");
    let fresh = checkout("evt_4", "cs_4", "p100", "paid");
    assert_eq!(stripe(api, &fresh, Some(forged)).await.0, 401);
    let old =
        ovation::payments::stripe::sign(STRIPE_SECRET, now_s() - 301, fresh.to_string().as_bytes());
    assert_eq!(stripe(api, &fresh, Some(old)).await.0, 401);
    let malformed = json!({"id": "evt_5", "type": "checkout.session.completed", "data": {"object": {"id": "cs_5"}}});
    assert_eq!(stripe(api, &malformed, None).await.0, 400);
    assert_eq!(stripe(api, &json!([1, 2]), None).await.0, 400);
    let unknown_pack = checkout("evt_6", "cs_6", "p999", "paid");
    assert_eq!(stripe(api, &unknown_pack, None).await.0, 422);

    assert_eq!(api.wallet("buyer").await, 1200);
    assert_eq!(transfers(api).await, 1);
}

fn refund(kind: &str, purchase_id: &str, coins: Option<u64>) -> Value {
    let mut data = json!({"purchase_id": purchase_id});
    if let Some(coins) = coins {
        data["coins"] = json!(coins);
    }
    json!({"type": kind, "data": data})
}

/// The wallet's coins and debt.
async fn standing(api: &Api, user: &str) -> Value {
    let wallet = get_json(&api.url("/api/me/wallet"), &api.token(user, Role::Viewer)).await;
    json!({"coins": wallet["coins"], "debt": wallet["debt"]})
}

/// Coins refunded after they were spent: what the wallet holds is taken back, the
/// rest is owed; paid actions answer `in_debt` until a purchase repays it, and the
/// debt survives a restart.
#[tokio::test]
async fn a_refund_of_spent_coins_leaves_a_debt_that_the_next_purchase_repays() {
    let server = TestServer::with_config(|file| *file = config()).await;
    let bought = Notification::new("msg_1", purchase("order-1", "buyer", "p100"));
    assert_eq!(bought.send(&server).await.0, 200);
    let mut viewer = server.viewer("buyer").await;
    viewer.join("star").await;
    let spend = json!({"type": "gift", "room": "star", "sticker": "heart", "count": 70, "key": "spend-0001"});
    viewer.ok(spend.clone()).await;

    let refunded = Notification::new("msg_2", refund("purchase.refunded", "order-1", None));
    assert_eq!(
        refunded.send(&server).await,
        (200, json!({"status": "applied"}))
    );
    // The page hears of it (after the gift's own balance event).
    let balance = loop {
        let balance = viewer.next_of("balance").await;
        if balance["coins"] == 0 {
            break balance;
        }
    };
    assert_eq!(balance["debt"], 70);
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 0, "debt": 70})
    );
    // Redelivered, or charged back as well: nothing is left to take back.
    assert_eq!(
        refunded.send(&server).await.1,
        json!({"status": "duplicate"})
    );
    let chargeback = Notification::new("msg_3", refund("purchase.charged_back", "order-1", None));
    assert_eq!(
        chargeback.send(&server).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(standing(&server, "buyer").await["debt"], 70);

    // In debt: paid actions are refused, a retry of an earlier one still answers it.
    let gift = json!({"type": "gift", "room": "star", "sticker": "heart", "count": 1, "key": "spend-0002"});
    viewer.error(gift.clone(), "in_debt").await;
    let question =
        json!({"type": "question", "room": "star", "text": "hi?", "coins": 10, "key": "ask-00001"});
    viewer.error(question, "in_debt").await;
    assert_eq!(viewer.ok(spend).await["duplicate"], true);
    let debts = server
        .http(
            reqwest::Method::GET,
            "/api/admin/debts",
            "auditor",
            Role::Admin,
        )
        .send()
        .await
        .unwrap();
    let debts: Value = debts.json().await.unwrap();
    assert_eq!(debts, json!({"debts": [{"user": "buyer", "coins": 70}]}));

    // The debt is in the books: a restart rebuilds it.
    drop(viewer);
    let server = server.restart().await;
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 0, "debt": 70})
    );
    let mut viewer = server.viewer("buyer").await;
    viewer.join("star").await;
    viewer.error(gift.clone(), "in_debt").await;

    // The next purchase repays the debt first.
    let again = Notification::new("msg_4", purchase("order-2", "buyer", "p100"));
    assert_eq!(again.send(&server).await.0, 200);
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 30, "debt": 0})
    );
    viewer.ok(gift).await;

    // A partial refund of coins still held takes only those.
    let big = Notification::new("msg_5", purchase("order-3", "buyer", "p1200"));
    assert_eq!(big.send(&server).await.0, 200);
    let partial = Notification::new("msg_6", refund("purchase.refunded", "order-3", Some(200)));
    assert_eq!(partial.send(&server).await.0, 200);
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 1029, "debt": 0})
    );

    // Refunds that cannot be: an unknown purchase, more than it credited, nothing.
    let unknown = Notification::new("msg_7", refund("purchase.refunded", "order-9", None));
    assert_eq!(unknown.send(&server).await.0, 422);
    let too_much = Notification::new("msg_8", refund("purchase.refunded", "order-2", Some(101)));
    assert_eq!(too_much.send(&server).await.0, 400);
    let nothing = Notification::new("msg_9", refund("purchase.charged_back", "order-2", Some(0)));
    assert_eq!(nothing.send(&server).await.0, 400);
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 1029, "debt": 0})
    );
    // 3 purchases, 2 refunds, 2 gifts.
    assert_eq!(transfers(&server).await, 7);
}

/// Two nodes on one PostgreSQL ledger: a purchase notified to one is spendable on the
/// other at once, and a refund notified to the other puts the wallet in debt on both.
#[tokio::test]
async fn purchases_and_refunds_hold_across_the_nodes_of_a_cluster() {
    let Some(schema) = PgSchema::create("payments_nodes").await else {
        return;
    };
    let a = TestServer::node_with_config(&schema.url, config()).await;
    let b = TestServer::node_with_config(&schema.url, config()).await;
    let bought = Notification::new("msg_1", purchase("order-1", "buyer", "p100"));
    assert_eq!(bought.send(&a).await.0, 200);

    let mut on_b = b.viewer("buyer").await;
    on_b.join("star").await;
    let spend = json!({"type": "gift", "room": "star", "sticker": "heart", "count": 60, "key": "spend-0001"});
    assert_eq!(on_b.ok(spend).await["balance"], 40);

    let refunded = Notification::new("msg_2", refund("purchase.refunded", "order-1", None));
    assert_eq!(refunded.send(&b).await.0, 200);
    assert_eq!(refunded.send(&a).await.1, json!({"status": "duplicate"}));
    for node in [&a, &b] {
        assert_eq!(
            standing(node, "buyer").await,
            json!({"coins": 0, "debt": 60})
        );
    }
    let mut on_a = a.viewer("buyer").await;
    on_a.join("star").await;
    let gift = json!({"type": "gift", "room": "star", "sticker": "heart", "count": 1, "key": "spend-0002"});
    on_a.error(gift.clone(), "in_debt").await;

    let again = Notification::new("msg_3", purchase("order-2", "buyer", "p100"));
    assert_eq!(again.send(&a).await.0, 200);
    for node in [&a, &b] {
        assert_eq!(
            standing(node, "buyer").await,
            json!({"coins": 40, "debt": 0})
        );
    }
    assert_eq!(on_b.ok(gift).await["balance"], 39);
    a.books_balance().await;
    drop((on_a, on_b));
    for node in [a, b] {
        node.server.shutdown();
        node.server.stopped().await.unwrap();
    }
    schema.drop().await;
}

/// Stripe takes money back: a refund of part of a charge takes back that share of its
/// coins (rounded up); a dispute takes back all of them, into debt if spent.
#[tokio::test]
async fn a_stripe_refund_takes_back_its_share_and_a_dispute_all_of_it() {
    let server = TestServer::with_config(|file| *file = config()).await;
    let api: &Api = &server;
    for (event, intent) in [("evt_1", "pi_1"), ("evt_2", "pi_2")] {
        let paid = checkout(event, intent, "p1200", "paid");
        assert_eq!(stripe(api, &paid, None).await.0, 200);
    }
    assert_eq!(api.wallet("buyer").await, 2400);
    // A third of the first charge's money (333 of 999 cents): 400 of its 1200 coins.
    let refunded = json!({"id": "evt_3", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "payment_intent": "pi_1", "amount": 999, "amount_refunded": 333,
    }}});
    assert_eq!(
        stripe(api, &refunded, None).await,
        (200, json!({"status": "applied"}))
    );
    assert_eq!(
        stripe(api, &refunded, None).await.1,
        json!({"status": "duplicate"})
    );
    assert_eq!(
        standing(api, "buyer").await,
        json!({"coins": 2000, "debt": 0})
    );

    let mut viewer = api.viewer("buyer").await;
    viewer.join("star").await;
    let spend = json!({"type": "gift", "room": "star", "sticker": "crown", "count": 3, "key": "spend-0001"});
    viewer.ok(spend).await;
    // 500 coins left; the dispute of the second charge takes back its 1200.
    let disputed = json!({"id": "evt_4", "type": "charge.dispute.created", "data": {"object": {
        "id": "dp_1", "payment_intent": "pi_2", "amount": 999,
    }}});
    assert_eq!(stripe(api, &disputed, None).await.0, 200);
    assert_eq!(
        standing(api, "buyer").await,
        json!({"coins": 0, "debt": 700})
    );
    let unknown = json!({"id": "evt_5", "type": "charge.dispute.created", "data": {"object": {
        "id": "dp_2", "payment_intent": "pi_9", "amount": 999,
    }}});
    assert_eq!(stripe(api, &unknown, None).await.0, 422);

    // A second partial refund of the first charge: Stripe reports the running total
    // (666 of 999 cents), so 400 coins more, owed.
    let again = json!({"id": "evt_6", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "payment_intent": "pi_1", "amount": 999, "amount_refunded": 666,
    }}});
    assert_eq!(
        stripe(api, &again, None).await,
        (200, json!({"status": "applied"}))
    );
    assert_eq!(
        standing(api, "buyer").await,
        json!({"coins": 0, "debt": 1100})
    );
    // Another event restating a total already taken back changes nothing.
    let restated = json!({"id": "evt_7", "type": "charge.refunded", "data": {"object": {
        "id": "ch_1", "payment_intent": "pi_1", "amount": 999, "amount_refunded": 666,
    }}});
    assert_eq!(
        stripe(api, &restated, None).await,
        (200, json!({"status": "duplicate"}))
    );
    assert_eq!(standing(api, "buyer").await["debt"], 1100);
    api.books_balance().await;
}

/// A purchase refunded in parts, one notification each: never beyond its coins.
#[tokio::test]
async fn a_purchase_is_refunded_in_parts_never_beyond_its_coins() {
    let server = TestServer::with_config(|file| *file = config()).await;
    let bought = Notification::new("msg_1", purchase("order-1", "buyer", "p100"));
    assert_eq!(bought.send(&server).await.0, 200);
    let part = |id: &str, coins: u64| {
        Notification::new(id, refund("purchase.refunded", "order-1", Some(coins)))
    };
    assert_eq!(
        part("msg_2", 30).send(&server).await.1,
        json!({"status": "applied"})
    );
    assert_eq!(
        part("msg_2", 30).send(&server).await.1,
        json!({"status": "duplicate"})
    );
    // 70 are left: 80 more is refused, and books nothing.
    let (status, body) = part("msg_3", 80).send(&server).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("bad_request")),
        "{body}"
    );
    assert_eq!(server.wallet("buyer").await, 70);
    assert_eq!(
        part("msg_4", 70).send(&server).await.1,
        json!({"status": "applied"})
    );
    let all = Notification::new("msg_5", refund("purchase.charged_back", "order-1", None));
    assert_eq!(all.send(&server).await.1, json!({"status": "duplicate"}));
    assert_eq!(
        standing(&server, "buyer").await,
        json!({"coins": 0, "debt": 0})
    );
    // 1 purchase, 2 refunds.
    assert_eq!(transfers(&server).await, 3);
}

/// Spending protection: a charge over the per-charge cap answers `limit_reached`, a
/// minor may watch and chat but every paid action answers `forbidden`; neither books
/// anything.
#[tokio::test]
async fn caps_and_minors_stop_paid_actions_and_book_nothing() {
    let server = TestServer::with_config(|file| {
        *file = config();
        file.limits.max_coins_per_charge = Some(500);
    })
    .await;
    let bought = Notification::new("msg_1", purchase("order-1", "buyer", "p1200"));
    assert_eq!(bought.send(&server).await.0, 200);
    let mut viewer = server.viewer("buyer").await;
    viewer.join("star").await;
    let gift = |count: u32, key: &str| json!({"type": "gift", "room": "star", "sticker": "crown", "count": count, "key": key});
    viewer.ok(gift(1, "within-cap")).await;
    let over = viewer.error(gift(2, "over-the-cap"), "limit_reached").await;
    assert!(over["message"].as_str().unwrap().contains("500"), "{over}");
    let packet = json!({"type": "red_packet", "room": "star", "coins": 501, "shares": 5, "split": "even", "key": "packet-over"});
    viewer.error(packet, "limit_reached").await;
    assert_eq!(server.wallet("buyer").await, 700);

    let minor = ovation::auth::User {
        id: "kid".into(),
        name: "Kid".into(),
        role: Role::Viewer,
        minor: true,
    };
    let mut kid = Client::connect(server.addr, Some(&server.token_of(minor))).await;
    kid.join("star").await;
    kid.ok(json!({"type": "chat", "room": "star", "text": "hello!"}))
        .await;
    kid.error(gift(1, "kid-gift-1"), "forbidden").await;
    let question =
        json!({"type": "question", "room": "star", "text": "hi?", "coins": 10, "key": "kid-ask-1"});
    kid.error(question, "forbidden").await;
    // 1 purchase, 1 gift.
    assert_eq!(transfers(&server).await, 2);
}
