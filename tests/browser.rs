//! The pages in real headless Chromium with its fake camera, inside a network
//! namespace with only loopback, so no media leaves 127.0.0.1. Screenshots land in
//! `target/tmp/e2e-artifacts/`.
//!
//! One server (tests/browser/e2e.mjs): go live, watch, top up, gift, thank, cash out
//! and download a statement, then moderate (appoint a moderator, delete a viewer's
//! message, slow mode, a timeout and its lifting, the audit log), then the stream
//! overlay (its URL from the live page, a gift alert, test and replay alerts, a wrong
//! key's page left blank, a rotated key), then likes (floating hearts and the total on
//! another viewer's page) and a PK battle (invited and accepted on the live pages,
//! both videos side by side on a viewer's page, a gift's score, the winner, back to
//! one video).
//!
//! Two nodes of a cluster (tests/browser/edge.mjs): a broadcaster goes live on node
//! 1's page, a viewer plays the stream on node 2's page, and node 2 pulls the room
//! from node 1 (its relay report says so, and node 1's shows the one edge). The nodes
//! share PostgreSQL (`OVATION_TEST_PG`) and Redis (`OVATION_TEST_REDIS`); without
//! them that test says it is skipped. From inside the namespace the nodes reach them
//! through Unix sockets (files, so they cross network namespaces) that this test
//! relays to their TCP addresses on the host.
//!
//! Needs Debian's `chromium` (or `CHROMIUM=/path`), Node.js and `unshare`. Without
//! Chromium the tests say they are skipped, unless `OVATION_TEST_BROWSER` is set (as
//! `.ci/run` does), when a missing browser is a failure. The tests take turns (a file
//! lock), even when run in parallel: each drives a browser and servers.

mod common;

use std::fs::File;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::Cluster;

#[test]
fn broadcaster_and_viewer_pages_work_end_to_end_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = scripts();
    let _turn = one_browser_test_at_a_time();
    let status = in_loopback_namespace(&dir, "e2e.mjs", &chromium)
        .status()
        .expect("running unshare");
    let artifacts = artifacts();
    assert!(
        status.success(),
        "the browser test failed; screenshots in {}",
        artifacts.display()
    );
    for page in [
        "broadcaster.png",
        "viewer.png",
        "moderator.png",
        "overlay.png",
        "pk-viewer.png",
        "pk-broadcaster.png",
    ] {
        assert!(artifacts.join(page).exists(), "no screenshot {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_node_2_plays_a_stream_published_to_node_1_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let dir = scripts();
    let _turn = tokio::task::spawn_blocking(one_browser_test_at_a_time)
        .await
        .unwrap();
    let relays = tempfile::tempdir().unwrap();
    let ledger = ledger_inside(&cluster.ledger.url, relays.path());
    let bus = bus_inside(&cluster.bus, relays.path());
    let mut edge = in_loopback_namespace(&dir, "edge.mjs", &chromium);
    edge.env("LEDGER", ledger)
        .env("BUS", bus)
        .env("CLUSTER", &cluster.name);
    let status = tokio::process::Command::from(edge)
        .status()
        .await
        .expect("running unshare");
    cluster.finish().await;
    let artifacts = artifacts();
    assert!(
        status.success(),
        "the browser test failed; screenshots in {}",
        artifacts.display()
    );
    for page in ["edge-viewer.png", "edge-broadcaster.png"] {
        assert!(artifacts.join(page).exists(), "no screenshot {page}");
    }
}

/// The Chromium to drive; `None` (saying the test is skipped) when there is none and
/// `OVATION_TEST_BROWSER` is unset.
fn chromium() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        assert!(
            std::env::var_os("OVATION_TEST_BROWSER").is_none(),
            "OVATION_TEST_BROWSER is set but there is no Chromium at {chromium}"
        );
        eprintln!(
            "SKIPPED: no Chromium at {chromium} (apt-get install -y chromium, or set CHROMIUM)"
        );
        return None;
    }
    Some(chromium)
}

/// `tests/browser`, its node modules installed.
fn scripts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let _turn = one_browser_test_at_a_time(); // one `npm ci` at a time
        if !dir.join("node_modules/playwright-core").exists() {
            let installed = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("running npm");
            assert!(installed.success(), "npm ci in tests/browser failed");
        }
    }
    dir
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts")
}

/// `node script` in `dir`, in a new network namespace with only loopback up.
fn in_loopback_namespace(dir: &Path, script: &str, chromium: &str) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--map-root-user", "--net", "sh", "-c"])
        .arg(format!("ip link set lo up && exec node {script}"))
        .current_dir(dir)
        .env("OVATION_BIN", env!("CARGO_BIN_EXE_ovation"))
        .env("CHROMIUM", chromium)
        .env("ARTIFACTS", artifacts())
        .env(
            "RUST_LOG",
            "warn,webrtc=error,webrtc_ice=error,webrtc_mdns=error",
        );
    command
}

/// Waits for the other browser tests (threads of this process or other processes)
/// to finish: two browsers and their servers at once would starve each other on a
/// small machine. The turn lasts as long as the returned file is open.
fn one_browser_test_at_a_time() -> File {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-tests.lock");
    let file = File::create(&path).unwrap();
    // SAFETY: flock on a descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "locking {}", path.display());
    file
}

/// The ledger URL `url` for a node inside the namespace: a server on TCP is reached
/// through `relays/.s.PGSQL.{port}`, relayed to it (a Unix socket's directory is
/// reachable as it is).
fn ledger_inside(url: &str, relays: &Path) -> String {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = url.parse().expect("OVATION_TEST_PG");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(Host::Tcp(host)) => relay(
            relays.join(format!(".s.PGSQL.{port}")),
            (host.clone(), port),
        ),
        Some(Host::Unix(_)) => return url.to_owned(),
        None => panic!("OVATION_TEST_PG names no host"),
    }
    let mut conninfo = vec![
        ("host", relays.to_str().unwrap().to_owned()),
        ("port", port.to_string()),
    ];
    let password = config.get_password().map(|p| String::from_utf8_lossy(p));
    for (key, value) in [
        ("user", config.get_user().map(str::to_owned)),
        ("password", password.map(|p| p.into_owned())),
        ("dbname", config.get_dbname().map(str::to_owned)),
        ("options", config.get_options().map(str::to_owned)),
    ] {
        if let Some(value) = value {
            conninfo.push((key, value));
        }
    }
    conninfo
        .iter()
        .map(|(key, value)| {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{key}='{quoted}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bus URL `url` for a node inside the namespace: a Redis on TCP is reached
/// through `relays/redis.sock`, relayed to it.
fn bus_inside(url: &str, relays: &Path) -> String {
    let client = redis::Client::open(url).expect("OVATION_TEST_REDIS");
    let info = client.get_connection_info();
    let socket = relays.join("redis.sock");
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => relay(socket.clone(), (host.clone(), *port)),
        redis::ConnectionAddr::Unix(_) => return url.to_owned(),
        other => panic!("the browser test cannot relay the bus at {other:?}"),
    }
    let settings = info.redis_settings();
    let mut inside = url::Url::parse("redis+unix:///").unwrap();
    inside.set_path(socket.to_str().unwrap());
    {
        let mut query = inside.query_pairs_mut();
        query.append_pair("db", &settings.db().to_string());
        if let Some(user) = settings.username() {
            query.append_pair("user", user);
        }
        if let Some(password) = settings.password() {
            query.append_pair("pass", password);
        }
    }
    inside.to_string()
}

/// Accepts connections on the Unix socket `socket` and relays each to `target` on the
/// host's network, for as long as the process runs.
fn relay(socket: PathBuf, target: (String, u16)) {
    let listener = UnixListener::bind(&socket)
        .unwrap_or_else(|e| panic!("listening on {}: {e}", socket.display()));
    std::thread::spawn(move || {
        for inside in listener.incoming().map_while(Result::ok) {
            match TcpStream::connect((target.0.as_str(), target.1)) {
                Ok(outside) => splice(inside, outside),
                // Dropping `inside` tells the node.
                Err(e) => eprintln!("relay to {}:{}: {e}", target.0, target.1),
            }
        }
    });
}

/// Copies bytes both ways between `inside` and `outside` until each side ends.
fn splice(inside: UnixStream, outside: TcpStream) {
    let (mut from_inside, mut to_outside) =
        (inside.try_clone().unwrap(), outside.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = io::copy(&mut from_inside, &mut to_outside);
        let _ = to_outside.shutdown(Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut from_outside, mut to_inside) = (outside, inside);
        let _ = io::copy(&mut from_outside, &mut to_inside);
        let _ = to_inside.shutdown(Shutdown::Write);
    });
}
