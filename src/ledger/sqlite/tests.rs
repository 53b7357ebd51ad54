use super::schema::{SCHEMA, SCHEMA_VERSION};
use super::wal::{catch_up, restart_wal};
use super::*;
use crate::ledger::{facts, Account, TransferKind};
use crate::money::Coins;
use crate::money::Minor;
use crate::protocol::{SplitKind, UserRef};
use rusqlite::params;

/// The schema as version 1 created it.
const SCHEMA_1: &str = "
    CREATE TABLE schema_version (version INTEGER NOT NULL);
    INSERT INTO schema_version (version) VALUES (1);
    CREATE TABLE transfers (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, room TEXT, created_ms INTEGER NOT NULL,
        idem_user TEXT, idem_key TEXT, fingerprint TEXT NOT NULL, meta TEXT NOT NULL,
        UNIQUE (idem_user, idem_key));
    CREATE TABLE legs (
        transfer_id INTEGER NOT NULL REFERENCES transfers(id), n INTEGER NOT NULL,
        account TEXT NOT NULL, amount INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, n)) WITHOUT ROWID;
    CREATE INDEX transfers_by_room ON transfers (room, kind);
    INSERT INTO transfers VALUES (1, 'topup', NULL, 0, 'bob', 't1', 'f', '{\"coins\":10}');
    INSERT INTO legs VALUES (1, 0, 'topup_source', -1000), (1, 1, 'wallet:bob', 1000);
    INSERT INTO transfers VALUES (2, 'gift', 'alice', 0, 'bob', 'g1', 'f',
        '{\"room\":\"alice\",\"sticker\":\"rose\",\"count\":1,\"coins\":5,\"id\":\"g-1\",\"from\":{\"id\":\"bob\",\"name\":\"Bob\"}}');
    INSERT INTO legs VALUES (2, 0, 'wallet:bob', -500), (2, 1, 'earnings:alice', 300),
        (2, 2, 'platform', 200);
    INSERT INTO transfers VALUES (3, 'red_packet', 'alice', 0, 'bob', 'r1', 'f',
        '{\"room\":\"alice\",\"coins\":1,\"shares\":1,\"split\":\"even\",\"id\":\"p1\",
          \"from\":{\"id\":\"bob\",\"name\":\"Bob\"},\"amounts\":[1],\"expires_ms\":99}');
    INSERT INTO legs VALUES (3, 0, 'wallet:bob', -100), (3, 1, 'escrow:p1', 100);
";

/// The indexes made on the money's tables.
fn indexes(connection: &Connection) -> Vec<String> {
    let mut statement = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
             AND tbl_name IN ('transfers', 'legs') ORDER BY name",
        )
        .unwrap();
    let names = statement.query_map([], |row| row.get(0)).unwrap();
    names.collect::<Result<_, _>>().unwrap()
}

#[tokio::test]
async fn a_version_1_ledger_opens_with_its_statements_and_red_packets() {
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join(FILE_NAME))
        .unwrap()
        .execute_batch(SCHEMA_1)
        .unwrap();

    let ledger = SqliteLedger::open(
        dir.path(),
        &LedgerSettings::default(),
        StorageFault::default(),
        crate::clock::Clock::system(),
    )
    .unwrap();

    let earnings = ledger.earnings("alice").await.unwrap();
    let expected = Earnings {
        gifts: 1,
        coins: Coins::new(5),
        broadcaster: Minor::new(300),
        platform: Minor::new(200),
        ..Earnings::default()
    };
    assert_eq!(earnings, expected);
    let packet = ledger.red_packet("alice", "p1").await.unwrap();
    let bob = UserRef {
        id: "bob".into(),
        name: "Bob".into(),
    };
    let expected = facts::RedPacket {
        id: "p1".into(),
        room: "alice".into(),
        from: bob,
        coins: Coins::new(1),
        shares: 1,
        split: SplitKind::Even,
        amounts: vec![Coins::new(1)],
        expires_ms: 99,
    };
    assert_eq!(packet, Some(expected));
    assert!(ledger.check().await.unwrap().ok);
    let connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(indexes(&connection), ["red_packets_by_room"]);
    let version: i64 = connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_wal_past_its_limit_is_caught_up_then_restarted_from_its_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let mut writer = Connection::open(&path).unwrap();
    configure(&writer).unwrap();
    migrate(&mut writer).unwrap();
    writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    let checkpointer = Connection::open(&path).unwrap();
    configure(&checkpointer).unwrap();
    let database = std::fs::File::open(&path).unwrap();
    let commit = |n: i64| {
        writer
            .execute(
                "INSERT INTO transfers (kind, created_ms, fingerprint, meta)
                 VALUES ('topup', ?1, 'f', '{}')",
                [n],
            )
            .unwrap();
    };
    // Each commit appends at least one frame.
    for n in 0..100 {
        commit(n);
    }
    let frames_in_wal = || -> i64 {
        checkpointer
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .unwrap()
    };
    // Under load, the writer has always appended frames that the last checkpoint
    // did not copy, so it never starts the WAL again by itself. A reader that
    // holds on to the WAL across the next commit puts the test in that state.
    let reader = Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM transfers;")
        .unwrap();

    assert!(!catch_up(&checkpointer, &database, 1_000_000).unwrap());
    assert!(catch_up(&checkpointer, &database, 100).unwrap());
    commit(100);
    assert!(
        !restart_wal(&writer).unwrap(),
        "the reader is still on the WAL"
    );
    reader.execute_batch("COMMIT").unwrap();
    assert!(restart_wal(&writer).unwrap());
    commit(101);

    // One commit's frames, not the hundred before them.
    let frames = frames_in_wal();
    assert!((1..10).contains(&frames), "{frames} frames in the WAL");
    let transfers: i64 = writer
        .query_row("SELECT count(*) FROM transfers", [], |row| row.get(0))
        .unwrap();
    assert_eq!(transfers, 102);
}

#[test]
fn red_packets_are_found_by_the_partial_index() {
    let connection = Connection::open_in_memory().unwrap();
    connection.execute_batch(SCHEMA).unwrap();
    // The index and the query spell the kind out; it must be the stored one.
    assert_eq!(TransferKind::RedPacket.as_str(), "red_packet");
    let plan: String = connection
        .query_row(
            &format!("EXPLAIN QUERY PLAN {}", reads::RED_PACKET_BY_ID),
            params!["alice", "p1"],
            |row| row.get(3),
        )
        .unwrap();
    assert!(plan.contains("red_packets_by_room"), "{plan}");
}

/// While the writer cannot write (another connection holds the write lock), requests
/// queue up to `QUEUE_CAPACITY`; the next one is answered `unavailable` at once instead
/// of queueing without bound, and is never booked.
#[tokio::test]
async fn a_full_queue_answers_unavailable_at_once_and_books_nothing() {
    use futures_util::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(
        dir.path(),
        &LedgerSettings::default(),
        StorageFault::default(),
        crate::clock::Clock::system(),
    )
    .unwrap();
    let blocker = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let top_up = |n: usize| {
        let legs = vec![
            (Account::TopupSource, -Minor::new(100)),
            (Account::Wallet(format!("u{n}")), Minor::new(100)),
        ];
        let meta = facts::TransferMeta::Topup(facts::Topup {
            coins: Coins::new(1),
        });
        TransferRequest::new(legs, meta).idempotent("u", &format!("k{n}"), "f".into())
    };
    // The writer takes at most one batch before it waits for the lock; the rest waits
    // in the queue.
    let mut waiting = Vec::new();
    let refused = loop {
        let mut commit = ledger.commit(top_up(waiting.len())).boxed();
        match (&mut commit).now_or_never() {
            None => waiting.push(commit),
            Some(answer) => break answer,
        }
        assert!(
            waiting.len() <= QUEUE_CAPACITY + 4096 + 1,
            "the queue never filled"
        );
    };
    let queued = waiting.len();
    assert!(
        matches!(&refused, Err(LedgerError::Unavailable(_))),
        "{refused:?}"
    );
    blocker.execute_batch("COMMIT").unwrap();
    // Everything queued is booked once the lock is free; the refused one never is.
    for answer in futures_util::future::join_all(waiting).await {
        assert!(!answer.unwrap().duplicate);
    }
    let report = ledger.check().await.unwrap();
    assert_eq!(
        (report.ok, report.transfers as usize),
        (true, queued),
        "{report:?}"
    );
    assert!(ledger
        .find("u", &format!("k{queued}"))
        .await
        .unwrap()
        .is_none());
}

#[test]
fn a_statement_reads_its_lines_by_account_and_the_unwritten_tail_by_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let mut connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    super::schema::migrate(&mut connection).unwrap();
    let names = [
        "earnings:a",
        "paid:earnings:a",
        "held:earnings:a:*",
        "payout:earnings:a:*",
    ];
    let period = [0i64, 1];
    let params: Vec<&dyn rusqlite::ToSql> = (names.iter().map(|n| n as &dyn rusqlite::ToSql))
        .chain(period.iter().map(|p| p as &dyn rusqlite::ToSql))
        .collect();
    let plan: Vec<String> = connection
        .prepare(&format!("EXPLAIN QUERY PLAN {}", super::lines::STATEMENT))
        .unwrap()
        .query_map(params.as_slice(), |row| row.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|s| s.starts_with("SEARCH creator_lines")),
        "{plan:?}"
    );
    assert!(
        plan.iter()
            .any(|s| s.contains("SEARCH legs USING PRIMARY KEY (transfer_id>?)")),
        "{plan:?}"
    );
    let scans = plan.iter().filter(|s| s.starts_with("SCAN"));
    let allowed = [
        "SCAN listed VIRTUAL TABLE INDEX 1:",
        "SCAN creator_lines_upto",
    ];
    assert!(scans.eq(allowed.iter()), "{plan:?}");
}

/// Lines a stop left unwritten are rebuilt from the legs when the ledger opens again,
/// and a statement finds them before and after.
#[tokio::test]
async fn statement_lines_left_unwritten_are_rebuilt_at_open() {
    use crate::ledger::{CreatorBooks, Payee};
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let settings = LedgerSettings::default();
        let clock = crate::clock::Clock::system();
        SqliteLedger::open(dir.path(), &settings, StorageFault::default(), clock).unwrap()
    };
    let alice = Payee::Broadcaster("alice".into());
    let earn = |n: usize| {
        let legs = vec![
            (Account::TopupSource, -Minor::new(100)),
            (alice.available(), Minor::new(100)),
        ];
        let meta = facts::TransferMeta::Topup(facts::Topup {
            coins: Coins::new(1),
        });
        TransferRequest::new(legs, meta).idempotent("u", &format!("k{n}"), "f".into())
    };
    let ledger = open();
    for n in 0..3 {
        ledger.commit(earn(n)).await.unwrap();
    }
    let lines = |ledger: SqliteLedger, payee: Payee| async move {
        ledger
            .statement(&payee, 0, u64::MAX / 2)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(lines(ledger, alice.clone()).await, 3);
    let written = |c: &Connection| -> (String, i64) {
        let listed = c.query_row("SELECT transfers FROM creator_lines", [], |r| r.get(0));
        let upto = c.query_row("SELECT upto FROM creator_lines_upto", [], |r| r.get(0));
        (listed.unwrap(), upto.unwrap())
    };
    let ledger = open();
    let connection = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(written(&connection), ("[1,2,3]".to_owned(), 3));
    assert_eq!(lines(ledger, alice).await, 3);
}
