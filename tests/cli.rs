//! The `ovation` binary as an operator runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Client, TestServer, PATIENCE};
use serde_json::{json, Value};

fn ovation() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ovation"));
    command
        .env_remove("OVATION_TOKEN_SECRET")
        .env_remove("OVATION_LISTEN")
        .env_remove("OVATION_DEV");
    command
}

/// Starts the binary on an ephemeral port with `args`; returns it, the URL it
/// printed, and its data directory.
fn start(args: &[&str]) -> (std::process::Child, String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut child = ovation()
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "printed {first}");
    (child, url, data)
}

fn sigterm(child: &std::process::Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// A supervisor may signal as soon as the URL is printed: by then SIGTERM must already
/// stop the server gracefully (exit 0), not kill it. Before the handlers were
/// installed ahead of the announcement, about half of such exits were by the signal.
#[test]
fn sigterm_right_after_the_url_is_printed_stops_gracefully() {
    for _ in 0..5 {
        let (mut child, _url, _data) = start(&[]);
        sigterm(&child);
        let status = child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

#[test]
fn dev_mode_refuses_a_non_loopback_listen_address() {
    let data = tempfile::tempdir().unwrap();
    let output = ovation()
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "stderr: {stderr}");

    let output = ovation()
        .args([
            "serve",
            "--dev",
            "--token-secret",
            "0123456789abcdef-secret",
            "--listen",
            "0.0.0.0:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "explicit --dev is loopback-only too"
    );
}

#[test]
fn help_explains_each_flag_and_its_environment_variable() {
    let output = ovation().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--token-secret",
        "--dev",
        "--config",
        "--workers",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    for var in [
        "OVATION_LISTEN",
        "OVATION_DATA_DIR",
        "OVATION_TOKEN_SECRET",
        "OVATION_DEV",
        "OVATION_WORKERS",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
}

#[test]
fn a_bad_config_file_is_refused_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("ovation.toml");
    std::fs::write(&config, "[limits]\nqueue_len = 0\n").unwrap();
    let output = ovation()
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("queue_len") && stderr.contains("ovation.toml"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_zero() {
    let (mut child, url, _data) = start(&[]);
    let addr = url.trim_start_matches("http://").parse().unwrap();

    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/api/dev/token"))
        .json(&serde_json::json!({"user": "ops"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut client = Client::connect(addr, token["token"].as_str()).await;
    client.join("r").await;

    sigterm(&child);
    assert_eq!(client.closed().await, 1001);
    drop(client);
    let status = tokio::time::timeout(PATIENCE, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("server did not exit")
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn the_worker_count_is_set_by_a_flag_and_shown_in_metrics() {
    let (mut child, url, _data) = start(&["--workers", "3"]);
    let metrics = common::metrics(&url).await;
    child.kill().unwrap();
    child.wait().unwrap();
    for gauge in [
        "ovation_runtime_workers 3",
        "ovation_runtime_writer_threads 3",
    ] {
        assert!(
            metrics.lines().any(|line| line == gauge),
            "{gauge}: {metrics}"
        );
    }

    let refused = ovation().args(["--workers", "0"]).output().unwrap();
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("--workers"), "{error}");
}

/// Runs `ovation ledger check --ledger url`; returns its exit code and its report.
async fn check_postgres_ledger(url: &str) -> (Option<i32>, Value) {
    let mut command = ovation();
    command.args(["ledger", "check", "--ledger", url]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        panic!("no report ({error}): stdout {stdout}, stderr {stderr}")
    });
    (output.status.code(), report)
}

/// `ovation ledger check --ledger URL` checks a cluster's PostgreSQL ledger: the books
/// a node kept pass (exit 0); books broken behind its back fail (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_check_reads_the_postgres_ledger_and_exits_1_when_the_books_are_broken() {
    let Some(schema) = common::node::PgSchema::create("cli").await else {
        return;
    };
    let node = TestServer::node(&schema.url).await;
    assert_eq!(node.top_up("bob", 100).await, 100);
    assert_eq!(node.top_up("carol", 5).await, 5);
    let mut bob = node.viewer("bob").await;
    bob.join("alice").await;
    let gift = json!({"type": "gift", "room": "alice", "sticker": "rose", "count": 2, "key": "cli-check-1"});
    assert_eq!(bob.ok(gift).await["balance"], 90);
    let transfers_made = 3;
    drop(bob);
    node.server.shutdown();
    node.server.stopped().await.unwrap();

    let (code, report) = check_postgres_ledger(&schema.url).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["sum"], 0, "{report}");
    assert!(
        report["transfers"].as_u64().unwrap() >= transfers_made,
        "{report}"
    );

    // The URL's search_path points this connection at the test's schema.
    let (client, connection) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let changed = client
        .execute("UPDATE legs SET amount = amount + 1 WHERE n = 0", &[])
        .await
        .unwrap();
    assert!(changed >= transfers_made, "changed {changed} legs");
    drop(client);

    let (code, report) = check_postgres_ledger(&schema.url).await;
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        !report["problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    schema.drop().await;
}

/// A ledger that cannot be opened is an error naming the flag, never the URL (which
/// may hold a password), and no report.
#[test]
fn ledger_check_says_when_the_postgres_ledger_cannot_be_opened() {
    let output = ovation()
        .args([
            "ledger",
            "check",
            "--ledger",
            "postgres://ops:hunter2@127.0.0.1:1/ovation?connect_timeout=5",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--ledger"), "stderr: {stderr}");
    assert!(!stderr.contains("hunter2"), "stderr: {stderr}");
}
