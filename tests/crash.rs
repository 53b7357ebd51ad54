//! `kill -9` in the middle of a gift storm, or between a red packet's creation and its
//! grabs, loses nothing that was confirmed and changes no amount. The servers restart
//! their ledger's WAL every MiB of frames, so the storm goes through several restarts.
//! A disk that fills up in the middle of a storm stops the server, which confirmed
//! nothing that is not on disk. Purchase notifications cut off by `kill -9` credit
//! each purchase once when the payment system sends them again.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use ovation::auth::{Role, Tokens, User};
use serde_json::{json, Value};

const SENDERS: usize = 20;
const COINS_EACH: u64 = 100_000;

fn spawn_server(data_dir: &Path) -> (Child, SocketAddr) {
    spawn_server_with(data_dir, "[ledger]\nwal_limit_mib = 1", None)
}

/// A server configured by `toml`; with `file_size_limit`, no file it writes may grow
/// past that many bytes (`RLIMIT_FSIZE`): a disk that is full.
fn spawn_server_with(
    data_dir: &Path,
    toml: &str,
    file_size_limit: Option<u64>,
) -> (Child, SocketAddr) {
    let config = data_dir.join("ovation.toml");
    std::fs::write(&config, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ovation"));
    if let Some(limit) = file_size_limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // A write past the limit then fails with EFBIG instead of killing the
                // process with SIGXFSZ.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                rlimit::setrlimit(rlimit::Resource::FSIZE, limit, limit)
            });
        }
    }
    let mut child = command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dev",
            "--token-secret",
            SECRET,
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = first.rsplit("http://").next().unwrap().parse().unwrap();
    (child, addr)
}

/// Kills the server and runs `ovation ledger check` on its data directory.
fn stop_and_check_offline(mut child: Child, data_dir: &Path) {
    child.kill().unwrap();
    child.wait().unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .args(["ledger", "check", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

fn token(id: &str) -> String {
    let user = User {
        id: id.into(),
        name: display_name(id),
        role: Role::Viewer,
        minor: false,
    };
    Tokens::new(SECRET.as_bytes(), 0).mint(&user, 3600)
}

async fn top_up(addr: SocketAddr, id: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/me/topup"))
        .bearer_auth(token(id))
        .json(&json!({"coins": COINS_EACH, "key": format!("crash-topup-{id}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends gifts with keys `{id}-0`, `{id}-1`, … until the connection dies; returns the
/// confirmed (key, gift_id) pairs and how many were sent in all.
async fn storm(addr: SocketAddr, id: String) -> (Vec<(String, String)>, usize) {
    let storm = storm_through_faults(addr, id).await;
    assert_eq!(
        storm.unavailable, 0,
        "only a storage fault makes a gift unavailable"
    );
    (storm.confirmed, storm.sent)
}

/// What one sender's storm saw.
struct Storm {
    confirmed: Vec<(String, String)>,
    /// Gifts answered `unavailable` (with a retry hint).
    unavailable: usize,
    sent: usize,
}

/// As `storm`, but stops at the first gift answered `unavailable` (as a client that
/// backs off would).
async fn storm_through_faults(addr: SocketAddr, id: String) -> Storm {
    let mut client = Client::connect(addr, Some(&token(&id))).await;
    client.join("crash-room").await;
    let mut confirmed = Vec::new();
    let (mut sent, mut unavailable) = (0, 0);
    let result = |confirmed, unavailable, sent| Storm {
        confirmed,
        unavailable,
        sent,
    };
    loop {
        let key = format!("{id}-{sent:06}");
        let message = json!({"type": "gift", "room": "crash-room", "sticker": "heart", "count": 1, "key": key, "rid": sent});
        sent += 1;
        if futures_util::SinkExt::send(
            &mut client.ws,
            tokio_tungstenite::tungstenite::Message::text(message.to_string()),
        )
        .await
        .is_err()
        {
            return result(confirmed, unavailable, sent);
        }
        // Read until this gift's reply, or until the server dies.
        loop {
            match futures_util::StreamExt::next(&mut client.ws).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    let reply: Value = serde_json::from_str(&text).unwrap();
                    if reply["rid"] != json!(sent - 1) {
                        continue;
                    }
                    if reply["type"] == "ok" {
                        let gift_id = reply["gift_id"].as_str().unwrap().to_owned();
                        confirmed.push((key.clone(), gift_id));
                    } else {
                        assert_eq!(reply["code"], "unavailable", "{reply}");
                        assert!(reply["retry_after_ms"].as_u64().unwrap() > 0, "{reply}");
                        unavailable += 1;
                        return result(confirmed, unavailable, sent);
                    }
                    break;
                }
                Some(Ok(_)) => {}
                _ => return result(confirmed, unavailable, sent),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_storm_loses_no_confirmed_gift_and_the_books_balance() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(data.path());
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("crash-sender-{i}")).collect();
    for id in &senders {
        top_up(addr, id).await;
    }
    let storms: Vec<_> = senders
        .iter()
        .map(|id| tokio::spawn(storm(addr, id.clone())))
        .collect();

    // Let the storm run until a good number of gifts are confirmed and the WAL has
    // been started again twice, then kill -9.
    let heart = 1; // the default catalog's cheapest sticker
    loop {
        let metrics = common::metrics(&format!("http://{addr}")).await;
        let gifts_out =
            common::metric(&metrics, "ovation_messages_in_total{type=\"gift\"}").unwrap_or(0.0);
        let restarts = common::metric(&metrics, "ovation_ledger_wal_restarts_total").unwrap_or(0.0);
        if gifts_out > 500.0 && restarts >= 2.0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut results = Vec::new();
    for storm in storms {
        results.push(storm.await.unwrap());
    }
    let confirmed_total: usize = results.iter().map(|(c, _)| c.len()).sum();
    assert!(confirmed_total > 0);

    // Restart on the same data directory.
    let (child, addr) = spawn_server(data.path());
    for (id, (confirmed, sent)) in senders.iter().zip(&results) {
        let mut client = Client::connect(addr, Some(&token(id))).await;
        client.join("crash-room").await;
        // Every confirmed gift is in the ledger: its retry is a duplicate with the same id.
        for (key, gift_id) in confirmed {
            let reply = client
                .ok(json!({"type": "gift", "room": "crash-room", "sticker": "heart", "count": 1, "key": key}))
                .await;
            assert_eq!(reply["duplicate"], true, "confirmed gift {key} was lost");
            assert_eq!(reply["gift_id"], gift_id.as_str());
        }
        // The wallet paid for the confirmed gifts, and at most for the unconfirmed ones in flight.
        let spent = COINS_EACH - wallet(addr, id).await;
        let confirmed_spend = heart * confirmed.len() as u64;
        assert!(
            spent >= confirmed_spend && spent <= heart * *sent as u64,
            "{id} spent {spent}"
        );
    }

    let auditor = User {
        id: "auditor".into(),
        name: "Auditor".into(),
        role: Role::Admin,
        minor: false,
    };
    let admin_token = Tokens::new(SECRET.as_bytes(), 0).mint(&auditor, 3600);
    let report = get_json(
        &format!("http://{addr}/api/admin/ledger/check"),
        &admin_token,
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    // The offline checker agrees.
    stop_and_check_offline(child, data.path());
}

async fn wallet(addr: SocketAddr, id: &str) -> u64 {
    get_json(&format!("http://{addr}/api/me/wallet"), &token(id)).await["coins"]
        .as_u64()
        .unwrap()
}

/// One grab by `id`: `Some(coins)` for a share, `None` for a refusal with `code`.
async fn grab(addr: SocketAddr, id: &str, packet: &str) -> Result<u64, String> {
    let mut client = Client::connect(addr, Some(&token(id))).await;
    client.join("packet-room").await;
    client.grab("packet-room", packet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_a_packets_creation_and_its_grabs_changes_no_amount() {
    const COINS: u64 = 1000;
    const SHARES: u64 = 50;
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(data.path());
    top_up(addr, "packet-sender").await;
    let mut sender = Client::connect(addr, Some(&token("packet-sender"))).await;
    sender.join("packet-room").await;
    let created = sender
        .ok(json!({"type": "red_packet", "room": "packet-room", "coins": COINS, "shares": SHARES, "split": "random", "key": "packet-crash"}))
        .await;
    let packet = created["packet_id"].as_str().unwrap().to_owned();

    // Ten confirmed grabs, then ten in flight when the server is killed.
    let mut confirmed = Vec::new();
    for n in 0..10 {
        let id = format!("early-{n}");
        confirmed.push((id.clone(), grab(addr, &id, &packet).await.unwrap()));
    }
    let in_flight: Vec<_> = (0..10)
        .map(|n| {
            let packet = packet.clone();
            tokio::spawn(async move {
                let id = format!("racing-{n}");
                let mut client = Client::connect(addr, Some(&token(&id))).await;
                client.join("packet-room").await;
                client
                    .send(json!({"type": "grab", "room": "packet-room", "packet": packet}))
                    .await;
            })
        })
        .collect();
    for task in in_flight {
        task.await.unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (child, addr) = spawn_server(data.path());
    // Confirmed shares are kept and cannot be taken twice.
    for (id, coins) in &confirmed {
        assert_eq!(wallet(addr, id).await, *coins, "{id}'s share changed");
        assert_eq!(grab(addr, id, &packet).await, Err("conflict".into()));
    }
    // Everyone else grabs until the packet is empty: the stored shares add up exactly.
    let mut total: u64 = confirmed.iter().map(|(_, coins)| coins).sum();
    let mut winners = confirmed.len() as u64;
    let others = (0..10)
        .map(|n| format!("racing-{n}"))
        .chain((0..60).map(|n| format!("late-{n}")));
    for id in others {
        let before = wallet(addr, &id).await;
        match grab(addr, &id, &packet).await {
            Ok(coins) => {
                assert_eq!(before, 0, "{id} got a second share");
                total += coins;
                winners += 1;
            }
            // A racing grab that committed before the kill: its share is already paid.
            Err(code) if code == "conflict" && before > 0 => {
                total += before;
                winners += 1;
            }
            Err(code) => assert_eq!(code, "exhausted", "{id}"),
        }
    }
    assert_eq!((winners, total), (SHARES, COINS));
    assert_eq!(wallet(addr, "packet-sender").await, COINS_EACH - COINS);
    stop_and_check_offline(child, data.path());
}

/// Bytes any one file of the server may hold in the storage-fault test: the ledger's
/// WAL fills it within a few thousand gifts.
const FULL_DISK_BYTES: u64 = 2 << 20;

/// A disk that fills up mid storm: the commit that cannot be written is not retried;
/// every gift from then on answers `unavailable`, `/healthz` says why, and the process
/// exits non-zero. A restart serves exactly the gifts that were confirmed: each
/// confirmed gift's retry is a duplicate, every other gift's retry is a first charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_which_confirmed_nothing_that_is_not_on_disk() {
    let data = tempfile::tempdir().unwrap();
    let drain = "[ledger]\nfault_drain_ms = 2000";
    let (mut child, addr) = spawn_server_with(data.path(), drain, Some(FULL_DISK_BYTES));
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("full-sender-{i}")).collect();
    for id in &senders {
        top_up(addr, id).await;
    }
    let storms: Vec<_> = senders
        .iter()
        .map(|id| {
            let id = id.clone();
            tokio::spawn(async move { (id.clone(), storm_through_faults(addr, id).await) })
        })
        .collect();
    // A sender's gift answered `unavailable`: the server is draining.
    let (first, _, others) = futures_util::future::select_all(storms).await;
    let first = first.unwrap();
    assert!(first.1.unavailable > 0, "the storm ended without a fault");
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let reason = health.text().await.unwrap();
    assert!(reason.starts_with("ledger storage fault:"), "{reason}");

    let exited = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let status = tokio::time::timeout(PATIENCE, exited)
        .await
        .expect("the server stops by itself after a storage fault")
        .unwrap();
    assert_eq!(status.code(), Some(1), "the process exits non-zero");
    let mut results = std::collections::HashMap::from([first]);
    for storm in others {
        let (id, storm) = storm.await.unwrap();
        results.insert(id, storm);
    }

    // Restarted without the limit, on the same data directory.
    let (child, addr) = spawn_server_with(data.path(), "", None);
    for (
        id,
        Storm {
            confirmed, sent, ..
        },
    ) in &results
    {
        let mut client = Client::connect(addr, Some(&token(id))).await;
        client.join("crash-room").await;
        let paid = COINS_EACH - wallet(addr, id).await;
        let confirmed_keys: std::collections::HashMap<_, _> = confirmed.iter().cloned().collect();
        for n in 0..*sent {
            let key = format!("{id}-{n:06}");
            let reply = client
                .ok(json!({"type": "gift", "room": "crash-room", "sticker": "heart", "count": 1, "key": key}))
                .await;
            match confirmed_keys.get(&key) {
                Some(gift_id) => {
                    assert_eq!(reply["duplicate"], true, "confirmed gift {key} was lost");
                    assert_eq!(reply["gift_id"], gift_id.as_str());
                }
                None => assert_eq!(
                    reply["duplicate"], false,
                    "unconfirmed gift {key} of {sent} was booked"
                ),
            }
        }
        assert_eq!(
            paid,
            confirmed.len() as u64,
            "{id} paid for exactly its confirmed gifts"
        );
    }
    stop_and_check_offline(child, data.path());
}

const PAYMENTS: &str = "[payments]
standard_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"
[[coin_packs]]
id = \"p100\"
coins = 100
amount = 99
currency = \"USD\"
";

/// Sends one signed `purchase.completed` of pack p100; the answer's status (`applied`
/// or `duplicate`), or `None` if the server died first.
async fn notify_purchase(addr: SocketAddr, user: &str, purchase_id: &str) -> Option<String> {
    let secret =
        ovation::payments::standard::Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
    let body = json!({"type": "purchase.completed", "data": {
        "purchase_id": purchase_id, "user": user, "pack": "p100",
        "amount": 99, "currency": "USD", "store": "web",
    }})
    .to_string();
    let id = format!("msg_{purchase_id}");
    let now = (ovation::ids::unix_ms() / 1000) as i64;
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/payments/standard"))
        .header("webhook-id", &id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign(&id, now, body.as_bytes()))
        .body(body)
        .send()
        .await
        .ok()?;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.ok()?;
    Some(answer["status"].as_str().unwrap().to_owned())
}

/// The payment system notifies purchases while the server is killed; it sends every
/// notification again after the restart, as payment systems retry: each purchase is
/// credited exactly once, whether or not its first notification was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_purchase_notifications_credits_each_purchase_once() {
    const BUYERS: usize = 10;
    const EACH: usize = 30;
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server_with(data.path(), PAYMENTS, None);
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|b| {
            let applied = applied.clone();
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0..EACH {
                    match notify_purchase(addr, &format!("buyer-{b}"), &format!("o{b}-{n}")).await {
                        Some(status) => {
                            assert_eq!(status, "applied");
                            applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            answered.push(n);
                        }
                        None => break,
                    }
                }
                answered
            })
        })
        .collect();
    while applied.load(std::sync::atomic::Ordering::Relaxed) < BUYERS * EACH / 3 {
        tokio::task::yield_now().await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut answered = Vec::new();
    for buyer in buyers {
        answered.push(buyer.await.unwrap());
    }

    let (child, addr) = spawn_server_with(data.path(), PAYMENTS, None);
    let total: usize = answered.iter().map(Vec::len).sum();
    assert!(
        total < BUYERS * EACH,
        "the kill came after every notification"
    );
    for (b, answered) in answered.iter().enumerate() {
        let buyer = format!("buyer-{b}");
        for n in 0..EACH {
            let status = notify_purchase(addr, &buyer, &format!("o{b}-{n}")).await;
            // Answered before the kill: in the books. Not answered: in them or not.
            if answered.contains(&n) {
                assert_eq!(status.as_deref(), Some("duplicate"), "o{b}-{n}");
            } else {
                assert!(status.is_some());
            }
        }
        assert_eq!(wallet(addr, &buyer).await, 100 * EACH as u64);
    }
    stop_and_check_offline(child, data.path());
}
