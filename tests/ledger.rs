//! The gift engine and its ledgers without sockets: random sequences of top-ups,
//! gifts, questions and retries against a simple model keep every invariant. Every
//! test runs against the embedded SQLite ledger and, when `OVATION_TEST_PG` names a
//! PostgreSQL database, against the PostgreSQL ledger too (each in a fresh schema).

use std::collections::HashMap;
use std::sync::Arc;

use ovation::auth::{Role, User};
use ovation::clock::Clock;
use ovation::config::GiftSettings;
use ovation::gift::{GiftEngine, GiftOrder, QuestionOrder};
use ovation::ledger::facts::{Grab, Topup, TransferMeta};
use ovation::ledger::{
    Account, Committed, Ledger, LedgerError, PostgresLedger, SqliteLedger, StorageFault, Transfer,
    TransferRequest,
};
use ovation::money::{Catalog, Coins, Minor, SplitPolicy};
use ovation::protocol::UserRef;
use proptest::prelude::*;

mod common;
use common::node::PgSchema;

const USERS: [&str; 3] = ["amy", "ben", "cat"];
const ROOMS: [&str; 2] = ["star", "moon"];

#[derive(Debug, Clone)]
enum Op {
    TopUp {
        user: usize,
        coins: u64,
        key: u8,
    },
    Gift {
        user: usize,
        room: usize,
        sticker: usize,
        count: u32,
        key: u8,
    },
    Question {
        user: usize,
        room: usize,
        coins: u64,
        key: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..500u64, 0..6u8).prop_map(|(user, coins, key)| Op::TopUp {
            user,
            coins,
            key
        }),
        (0..3usize, 0..2usize, 0..8usize, 1..20u32, 0..6u8).prop_map(
            |(user, room, sticker, count, key)| Op::Gift {
                user,
                room,
                sticker,
                count,
                key
            }
        ),
        (0..3usize, 0..2usize, 1..300u64, 0..6u8).prop_map(|(user, room, coins, key)| {
            Op::Question {
                user,
                room,
                coins,
                key,
            }
        }),
    ]
}

fn user(index: usize) -> User {
    User {
        id: USERS[index].into(),
        name: USERS[index].to_uppercase(),
        role: Role::Viewer,
        minor: false,
    }
}

/// What the model expects one op to do: the coins it moves, keyed by (user, key).
#[derive(Default)]
struct Model {
    balances: HashMap<usize, u64>,
    /// (user, kind+key) → the request's content, to tell retries from conflicts.
    seen: HashMap<(usize, String), String>,
    /// Room → (paid gifts and questions, their coins): the broadcaster's statement.
    earned: HashMap<usize, (u64, u64)>,
}

/// A ledger under test and what keeps it alive: its SQLite directory, or its
/// PostgreSQL schema (dropped by `finish`).
struct Books {
    ledger: Arc<dyn Ledger>,
    _dir: Option<tempfile::TempDir>,
    schema: Option<PgSchema>,
}

impl Books {
    /// One fresh ledger of each kind this machine can test.
    async fn all() -> Vec<Books> {
        let dir = tempfile::tempdir().unwrap();
        let mut books = vec![Books {
            ledger: Arc::new(open_sqlite(dir.path())),
            _dir: Some(dir),
            schema: None,
        }];
        books.extend(Books::postgres().await);
        books
    }

    /// A fresh PostgreSQL ledger; `None` (saying so) when `OVATION_TEST_PG` is unset.
    async fn postgres() -> Option<Books> {
        let schema = PgSchema::create("test").await?;
        Some(Books {
            ledger: Arc::new(
                PostgresLedger::open(&schema.url, StorageFault::default(), Clock::system())
                    .await
                    .unwrap(),
            ),
            _dir: None,
            schema: Some(schema),
        })
    }

    /// The ledgers of every node sharing these books: a second writer process on
    /// PostgreSQL, only this one for the embedded SQLite file.
    async fn nodes(&self) -> Vec<Arc<dyn Ledger>> {
        let mut nodes = vec![self.ledger.clone()];
        if let Some(schema) = &self.schema {
            nodes.push(Arc::new(
                PostgresLedger::open(&schema.url, StorageFault::default(), Clock::system())
                    .await
                    .unwrap(),
            ));
        }
        nodes
    }

    /// Drops a PostgreSQL schema once its test passed.
    async fn finish(self) {
        if let Some(schema) = self.schema {
            schema.drop().await;
        }
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    for books in Books::all().await {
        run_on(books.ledger.clone(), ops.clone()).await?;
        books.finish().await;
    }
    Ok(())
}

async fn run_on(ledger: Arc<dyn Ledger>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let catalog = Catalog::default();
    let engine = GiftEngine::open(
        ledger.clone(),
        catalog.clone(),
        SplitPolicy::default(),
        GiftSettings::default(),
        ovation::clock::Clock::system(),
    )
    .await
    .unwrap();
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::TopUp {
                user: u,
                coins,
                key,
            } => {
                let key = format!("topup-key-{key}");
                let content = format!("topup {coins}");
                let first = model
                    .seen
                    .entry((u, key.clone()))
                    .or_insert(content.clone())
                    .clone();
                let result = engine.top_up(&user(u), coins, &key).await;
                if first == content {
                    let balance = result.unwrap();
                    if !model.seen.contains_key(&(u, format!("done:{key}"))) {
                        *model.balances.entry(u).or_default() += coins;
                        model.seen.insert((u, format!("done:{key}")), String::new());
                    }
                    prop_assert_eq!(balance, model.balances[&u]);
                } else {
                    prop_assert_eq!(result.unwrap_err().code.as_str(), "conflict");
                }
            }
            Op::Gift {
                user: u,
                room,
                sticker,
                count,
                key,
            } => {
                let sticker = &catalog.stickers[sticker];
                let value = sticker.coins * u64::from(count);
                let order = GiftOrder {
                    room: ROOMS[room],
                    sticker: &sticker.id,
                    count,
                    key: &format!("gift-key-{key}"),
                };
                let content = format!("gift {} {} {}", ROOMS[room], sticker.id, count);
                charge(
                    &mut model,
                    u,
                    room,
                    format!("gift-key-{key}"),
                    content,
                    value,
                    engine.gift(&user(u), order).await,
                )?;
            }
            Op::Question {
                user: u,
                room,
                coins,
                key,
            } => {
                let order = QuestionOrder {
                    room: ROOMS[room],
                    text: "why?",
                    coins,
                    key: &format!("ask-key-{key}"),
                };
                let content = format!("question {} {}", ROOMS[room], coins);
                let result = engine.question(&user(u), order).await;
                if coins < catalog.question_min_coins {
                    prop_assert_eq!(result.err().unwrap().code.as_str(), "bad_request");
                    continue;
                }
                charge(
                    &mut model,
                    u,
                    room,
                    format!("ask-key-{key}"),
                    content,
                    coins,
                    result,
                )?;
            }
        }
        for (u, _) in USERS.iter().enumerate() {
            prop_assert_eq!(
                engine.balance(USERS[u]),
                model.balances.get(&u).copied().unwrap_or(0)
            );
        }
    }
    let report = ledger.check().await.unwrap();
    prop_assert!(report.ok, "{:?}", report);
    for (r, room) in ROOMS.iter().enumerate() {
        let statement = ledger.earnings(room).await.unwrap();
        let earned = model.earned.get(&r).copied().unwrap_or_default();
        prop_assert_eq!((statement.gifts, statement.coins.get()), earned);
    }
    // The books rebuilt from disk agree with the model.
    drop(engine);
    let reopened = GiftEngine::open(
        ledger,
        catalog,
        SplitPolicy::default(),
        GiftSettings::default(),
        ovation::clock::Clock::system(),
    )
    .await
    .unwrap();
    for (u, id) in USERS.iter().enumerate() {
        prop_assert_eq!(
            reopened.balance(id),
            model.balances.get(&u).copied().unwrap_or(0)
        );
    }
    Ok(())
}

fn charge(
    model: &mut Model,
    u: usize,
    room: usize,
    key: String,
    content: String,
    value: u64,
    result: Result<ovation::gift::Charge, ovation::protocol::Rejection>,
) -> Result<(), TestCaseError> {
    let done = (u, format!("done:{key}"));
    match model.seen.get(&(u, key.clone())) {
        Some(first) if *first != content => {
            prop_assert_eq!(result.err().map(|r| r.code.as_str()), Some("conflict"));
        }
        Some(_) if model.seen.contains_key(&done) => {
            let charge = result.unwrap();
            prop_assert!(charge.duplicate && charge.event.is_none());
        }
        _ => {
            let balance = model.balances.entry(u).or_default();
            if *balance >= value {
                let charge = result.unwrap();
                prop_assert!(!charge.duplicate && charge.event.is_some());
                *balance -= value;
                let earned = model.earned.entry(room).or_default();
                *earned = (earned.0 + 1, earned.1 + value);
                model.seen.insert((u, key), content);
                model.seen.insert(done, String::new());
            } else {
                prop_assert_eq!(
                    result.err().map(|r| r.code.as_str()),
                    Some("insufficient_funds")
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_money_operations_keep_every_invariant(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Runtime::new().unwrap().block_on(run(ops))?;
    }
}

fn m(minor: i64) -> Minor {
    Minor::new(minor)
}

/// Facts for transfers the tests make by hand.
fn topup_meta() -> TransferMeta {
    TransferMeta::Topup(Topup {
        coins: Coins::new(1),
    })
}

fn transfer(legs: Vec<(Account, i64)>) -> TransferRequest {
    let legs = legs.into_iter().map(|(a, amount)| (a, m(amount))).collect();
    TransferRequest::new(legs, topup_meta())
}

#[tokio::test]
async fn the_ledger_itself_refuses_unbalanced_and_overdrawing_transfers() {
    for books in Books::all().await {
        refuses_unbalanced_and_overdrawing(&*books.ledger).await;
        books.finish().await;
    }
}

async fn refuses_unbalanced_and_overdrawing(ledger: &dyn Ledger) {
    let unbalanced = transfer(vec![
        (Account::Wallet("a".into()), -5),
        (Account::Platform, 4),
    ]);
    assert!(matches!(
        ledger.commit(unbalanced).await,
        Err(LedgerError::Unbalanced)
    ));
    let overdraw = transfer(vec![
        (Account::Wallet("a".into()), -5),
        (Account::Platform, 5),
    ]);
    assert!(matches!(
        ledger.commit(overdraw).await,
        Err(LedgerError::InsufficientFunds)
    ));
    let overflow = transfer(vec![
        (Account::Platform, i64::MAX),
        (Account::AppStore, i64::MAX),
        (Account::TopupSource, 2),
    ]);
    assert!(matches!(
        ledger.commit(overflow).await,
        Err(LedgerError::Unbalanced)
    ));
    let report = ledger.check().await.unwrap();
    assert!(report.ok && report.transfers == 0, "{report:?}");
}

/// A key used before decides, whatever the books say now, on every backend: the same
/// request is a retry even when it could no longer be booked, a different one a
/// conflict even when it could.
#[tokio::test]
async fn a_used_key_decides_before_the_books_on_every_ledger() {
    for books in Books::all().await {
        let ledger = &books.ledger;
        let pay = |legs: Vec<(Account, i64)>, fingerprint: &str| {
            transfer(legs).idempotent("amy", "key-1", fingerprint.into())
        };
        let fund = transfer(vec![
            (Account::TopupSource, -5),
            (Account::Wallet("amy".into()), 5),
        ]);
        ledger.commit(fund).await.unwrap();
        let spend = vec![(Account::Wallet("amy".into()), -5), (Account::Platform, 5)];
        let first = ledger.commit(pay(spend.clone(), "f")).await.unwrap();
        // The wallet is empty now; the same request is still its first result.
        let again = ledger.commit(pay(spend, "f")).await.unwrap();
        assert_eq!(
            (again.transfer_id, again.duplicate),
            (first.transfer_id, true)
        );
        // An unbalanced retry of that key: the key decides, as a retry.
        let unbalanced = vec![(Account::Wallet("amy".into()), -5), (Account::Platform, 4)];
        let retried = ledger.commit(pay(unbalanced.clone(), "f")).await.unwrap();
        assert!(retried.duplicate);
        // Different content under the key: a conflict, whatever else is wrong with it.
        let conflict = ledger.commit(pay(unbalanced, "g")).await;
        assert!(
            matches!(conflict, Err(LedgerError::Conflict)),
            "{conflict:?}"
        );
        let report = ledger.check().await.unwrap();
        assert_eq!((report.ok, report.transfers), (true, 2), "{report:?}");
        books.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_grouped_and_all_land() {
    for books in Books::all().await {
        concurrent_commits_all_land(books.ledger.clone()).await;
        books.finish().await;
    }
}

async fn concurrent_commits_all_land(ledger: Arc<dyn Ledger>) {
    let tasks: Vec<_> = (0..400)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let legs = vec![
                    (Account::TopupSource, -100),
                    (Account::Wallet(format!("u{}", i % 7)), 100),
                ];
                let request = transfer(legs).idempotent("u", &format!("k{i}"), "same".into());
                ledger.commit(request).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert!(!task.await.unwrap().duplicate);
    }
    let report = ledger.check().await.unwrap();
    assert_eq!((report.ok, report.transfers, report.sum), (true, 400, 0));
    let total: Minor = ledger
        .balances()
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| *b)
        .sum();
    assert_eq!(total, m(40_000));
}

/// Two nodes' ledgers on one PostgreSQL database: the database keeps them honest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_never_overspend_and_share_idempotency() {
    let Some(books) = Books::postgres().await else {
        return;
    };
    let nodes = books.nodes().await;
    let top_up = transfer(vec![
        (Account::TopupSource, -1000),
        (Account::Wallet("amy".into()), 1000),
    ])
    .idempotent("amy", "top-up-1", "top-up".into());
    assert!(!nodes[0].commit(top_up.clone()).await.unwrap().duplicate);
    // The retry reaches the other node: the same transfer, nothing credited twice.
    assert!(nodes[1].commit(top_up).await.unwrap().duplicate);

    let charges: Vec<_> = (0..20)
        .map(|i| {
            let node = nodes[i % 2].clone();
            tokio::spawn(async move {
                let legs = vec![
                    (Account::Wallet("amy".into()), -100),
                    (Account::Platform, 100),
                ];
                let request =
                    transfer(legs).idempotent("amy", &format!("gift-{i}"), format!("gift-{i}"));
                node.commit(request).await
            })
        })
        .collect();
    let (mut paid, mut refused) = (0, 0);
    for charge in charges {
        match charge.await.unwrap() {
            Ok(_) => paid += 1,
            Err(LedgerError::InsufficientFunds) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((paid, refused), (10, 10));
    let report = nodes[1].check().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        nodes[0].balances().await.unwrap(),
        vec![("amy".to_owned(), Minor::ZERO)]
    );
    books.finish().await;
}

/// Draws on one pot from every node at once: each sees the balance the one before
/// left, so the pot is shared out exactly and never overdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_draws_on_one_account_share_it_out_exactly() {
    for books in Books::all().await {
        let nodes = books.nodes().await;
        let pot = Account::Escrow("pot".into());
        let fund = transfer(vec![(Account::TopupSource, -1000), (pot.clone(), 1000)]);
        nodes[0].commit(fund).await.unwrap();
        let draws: Vec<_> = (0..20)
            .map(|i| {
                let (node, pot) = (nodes[i % nodes.len()].clone(), pot.clone());
                let taker = Account::Wallet(format!("taker{i}"));
                // Each draw takes up to 3 coins; its facts record what the pot held.
                let request = TransferRequest::drawing(pot.clone(), move |held| {
                    if held == Minor::ZERO {
                        return Err("the pot is empty".into());
                    }
                    let take = held.min(m(300));
                    let by = UserRef {
                        id: format!("taker{i}"),
                        name: "Taker".into(),
                    };
                    Ok(Transfer {
                        legs: vec![(pot.clone(), -take), (taker.clone(), take)],
                        meta: TransferMeta::Grab(Grab {
                            packet: "pot".into(),
                            room: "star".into(),
                            index: 0,
                            coins: held.whole_coins(),
                            left: 0,
                            by,
                        }),
                    })
                })
                .idempotent(&format!("taker{i}"), "draw", "draw".into());
                tokio::spawn(async move { node.commit(request).await })
            })
            .collect();
        let mut seen = Vec::new();
        for draw in draws {
            match draw.await.unwrap() {
                Ok(Committed {
                    meta: TransferMeta::Grab(grab),
                    ..
                }) => seen.push(grab.coins.get()),
                Ok(other) => panic!("{other:?}"),
                Err(LedgerError::Declined(reason)) => assert_eq!(reason, "the pot is empty"),
                Err(other) => panic!("{other}"),
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, [1, 4, 7, 10]);
        let report = nodes[0].check().await.unwrap();
        assert!(report.ok, "{report:?}");
        books.finish().await;
    }
}

/// A data directory written by the release before schema 3 (`tests/fixtures/ledger-v2`,
/// made by `make-ledger-v2.py`) opens, migrates and checks clean, with every balance,
/// statement and open red packet as that release reported them; its gifts' retries are
/// still recognised as the same requests.
#[tokio::test]
async fn a_ledger_written_by_the_previous_release_opens_and_checks_clean() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v2");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture.join("ledger.sqlite3"),
        dir.path().join("ledger.sqlite3"),
    )
    .unwrap();
    let ledger: Arc<dyn Ledger> = Arc::new(open_sqlite(dir.path()));

    let report = ledger.check().await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.transfers, expected["ledger_check"]["transfers"]);
    assert_eq!(report.accounts, expected["ledger_check"]["accounts"]);
    let engine = GiftEngine::open(
        ledger.clone(),
        Catalog::default(),
        SplitPolicy::default(),
        GiftSettings::default(),
        ovation::clock::Clock::system(),
    )
    .await
    .unwrap();
    for (user, wallet) in expected["wallets"].as_object().unwrap() {
        assert_eq!(engine.balance(user), wallet["coins"], "{user}'s wallet");
    }
    for (room, statement) in expected["earnings"].as_object().unwrap() {
        let earnings = serde_json::to_value(ledger.earnings(room).await.unwrap()).unwrap();
        assert_eq!(&earnings, statement, "{room}'s statement");
    }
    let open = ledger.open_red_packets().await.unwrap();
    let packet = &expected["open_red_packet"];
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, packet["packet_id"].as_str().unwrap());
    assert_eq!(open[0].room, packet["room"].as_str().unwrap());
    let taken = open[0].shares - packet["shares_left"].as_u64().unwrap() as u32;
    let left: u64 = open[0].amounts[taken as usize..]
        .iter()
        .map(|c| c.get())
        .sum();
    assert_eq!(left, packet["escrow_coins"].as_u64().unwrap());

    for gift in expected["gifts"].as_array().unwrap() {
        let sender = User {
            id: gift["user"].as_str().unwrap().into(),
            name: "Anyone".into(),
            role: Role::Viewer,
            minor: false,
        };
        let order = GiftOrder {
            room: gift["room"].as_str().unwrap(),
            sticker: gift["sticker"].as_str().unwrap(),
            count: gift["count"].as_u64().unwrap() as u32,
            key: gift["key"].as_str().unwrap(),
        };
        let retry = engine.gift(&sender, order).await.unwrap();
        assert!(retry.duplicate, "{gift}");
        assert_eq!(retry.id, gift["gift_id"].as_str().unwrap());
    }
    assert!(ledger.check().await.unwrap().ok);
}

/// The embedded ledger in `dir`, with the default settings.
fn open_sqlite(dir: &std::path::Path) -> SqliteLedger {
    SqliteLedger::open(
        dir,
        &Default::default(),
        StorageFault::default(),
        Clock::system(),
    )
    .unwrap()
}
