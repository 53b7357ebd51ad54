//! The pages in real headless Chromium with its fake camera (see tests/browser/e2e.mjs):
//! go live, watch, top up, gift, thank, cash out and download a statement, then moderate
//! (appoint a moderator, delete a viewer's message, slow mode, a timeout and its lifting,
//! the audit log), then the stream overlay (its URL from the live page, a gift alert,
//! test and replay alerts, a wrong key's page left blank, a rotated key), then likes
//! (floating hearts and the total on another viewer's page) and a PK battle (invited
//! and accepted on the live pages, both videos side by side on a viewer's page, a
//! gift's score, the winner, back to one video) — inside a
//! network namespace with only loopback, so no media leaves 127.0.0.1. Screenshots
//! land in `target/tmp/e2e-artifacts/`.
//!
//! Needs Debian's `chromium` (or `CHROMIUM=/path`), Node.js and `unshare`. Without
//! Chromium the test says it is skipped, unless `OVATION_TEST_BROWSER` is set (as
//! `.ci/run` does), when a missing browser is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn broadcaster_and_viewer_pages_work_end_to_end_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        assert!(
            std::env::var_os("OVATION_TEST_BROWSER").is_none(),
            "OVATION_TEST_BROWSER is set but there is no Chromium at {chromium}"
        );
        eprintln!(
            "SKIPPED: no Chromium at {chromium} (apt-get install -y chromium, or set CHROMIUM)"
        );
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("running npm");
        assert!(installed.success(), "npm ci in tests/browser failed");
    }
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts");
    let status = Command::new("unshare")
        .args([
            "--map-root-user",
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec node e2e.mjs",
        ])
        .current_dir(&dir)
        .env("OVATION_BIN", env!("CARGO_BIN_EXE_ovation"))
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", &artifacts)
        .env(
            "RUST_LOG",
            "warn,webrtc=error,webrtc_ice=error,webrtc_mdns=error",
        )
        .status()
        .expect("running unshare");
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
