//! One broadcast beyond one node: the publisher's node (the origin) relays the room
//! to every other node asked for it (an edge), once per edge, and edges serve their
//! own viewers. Three real nodes on loopback, sharing PostgreSQL
//! (`OVATION_TEST_PG`) and Redis (`OVATION_TEST_REDIS`); publishers and viewers are
//! webrtc-rs peers that decode the frames they receive.

mod common;
#[path = "common/rtc.rs"]
mod rtc;

use std::time::{Duration, Instant};

use common::node::{Cluster, Node};
use common::*;
use ovation::auth::Role;
use serde_json::Value;

/// Edges that let go of an idle pull quickly, so the tests see it happen.
const CONFIG: &str = "[rtc]\nedge_linger_ms = 300\n";

/// The node's relay report (`GET /api/admin/rtc`).
async fn report(node: &Node) -> Value {
    get_json(&node.url("/api/admin/rtc"), &node.token("ops", Role::Admin)).await
}

/// Reads `node`'s report until `done` holds of it (the report changes as sessions
/// start and end; each read is an HTTP request, so this waits on the node, not on a
/// clock).
async fn report_until(node: &Node, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let report = report(node).await;
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn three_nodes(cluster: &Cluster, config: &str) -> (Node, Node, Node) {
    (
        cluster.node_with_config(config),
        cluster.node_with_config(config),
        cluster.node_with_config(config),
    )
}

/// Starts `room`'s publisher on `origin` and returns once the room is live across
/// the cluster (its `stream` event seen on `elsewhere`): viewers start then.
async fn publish(origin: &Node, elsewhere: &Node, room: &str) -> rtc::Publisher {
    let mut fan = elsewhere.guest().await;
    fan.join(room).await;
    let token = origin.token(room, Role::Broadcaster);
    let publisher = rtc::Publisher::start(origin, room, &token).await;
    assert_eq!(fan.next_of("stream").await["live"], true);
    publisher
}

fn edges(report: &Value) -> usize {
    report["edges"].as_array().unwrap().len()
}

/// Frames that follow each other with no gap, starting at a keyframe.
fn watched(frames: &[rtc::Frame]) {
    let mut numbers: Vec<u64> = frames.iter().map(|f| f.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "gaps in {numbers:?}"
    );
    assert!(frames[0].key, "a viewer starts on a keyframe: {frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_on_every_node_watch_one_publisher_through_one_pull_per_edge() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b, c) = three_nodes(&cluster, CONFIG);
    let _publisher = publish(&a, &b, "cam").await;

    // Two viewers on each edge and one on the origin, all decoding.
    let mut viewers = Vec::new();
    for node in [&b, &b, &c, &c, &a] {
        viewers.push(rtc::Viewer::start(node, "cam", None, true).await);
    }
    for viewer in &mut viewers {
        let (frames, _) = viewer.frames(20).await;
        watched(&frames);
    }
    // The origin sends one copy to each edge, whatever their audiences.
    let origin = report(&a).await;
    assert_eq!(edges(&origin), 2, "{origin}");
    assert_eq!(
        (
            origin["viewers_local"].as_u64(),
            origin["viewers_pulled"].as_u64()
        ),
        (Some(1), Some(0))
    );
    for edge in [&b, &c] {
        let report = report(edge).await;
        assert_eq!(report["pulls"][0]["room"], "cam", "{report}");
        assert_eq!(report["pulls"][0]["origin"], a.url(""), "{report}");
        assert_eq!(report["viewers_pulled"], 2, "{report}");
        assert!(
            report["traffic"]["bytes_in"].as_u64().unwrap() > 0,
            "{report}"
        );
        assert!(
            report["traffic"]["bytes_out"].as_u64().unwrap() > 0,
            "{report}"
        );
    }
    let metrics = metrics(&b.url("")).await;
    assert!(
        metrics.contains("ovation_rtc_sessions{role=\"viewer_pulled\"} 2"),
        "{metrics}"
    );

    // When the last viewer on B leaves, B lets go of its pull after the linger...
    for viewer in viewers.drain(..2) {
        assert_eq!(rtc::delete(&b, &viewer.location, None).await, 200);
    }
    report_until(&a, "B's pull to end", |r| edges(r) == 1).await;
    report_until(&b, "B to pull nothing", |r| {
        r["pulls"].as_array().unwrap().is_empty()
    })
    .await;
    // ...while C's viewers watch on.
    for viewer in &mut viewers {
        viewer.frames(10).await;
    }
    // A viewer coming back to B starts a new pull.
    let mut again = rtc::Viewer::start(&b, "cam", None, true).await;
    watched(&again.frames(10).await.0);
    assert_eq!(edges(&report(&a).await), 2);
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_serves_a_publisher_without_audio_as_soon_as_its_video_arrives() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    // A viewer waiting for a track that never comes would wait a minute: longer
    // than the viewer below waits for its answer.
    let config = format!("{CONFIG}track_wait_ms = 60000\n");
    let (a, b) = (
        cluster.node_with_config(&config),
        cluster.node_with_config(&config),
    );
    let mut fan = b.guest().await;
    fan.join("cam").await;
    let token = a.token("cam", Role::Broadcaster);
    let video_only = rtc::Publishing {
        audio: false,
        ..Default::default()
    };
    let _publisher = rtc::Publisher::start_with(&a, "cam", &token, video_only).await;
    assert_eq!(fan.next_of("stream").await["live"], true);
    let viewer = tokio::time::timeout(PATIENCE, rtc::Viewer::start(&b, "cam", None, true));
    let mut viewer = viewer.await.expect("the edge answered once the video came");
    watched(&viewer.frames(10).await.0);
    assert_eq!(
        viewer
            .audio_packets
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    drop((a, b));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_from_viewers_on_every_edge_reach_the_publisher_coalesced() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let config = format!("{CONFIG}keyframe_interval_ms = 1000\n");
    let (a, b, c) = three_nodes(&cluster, &config);
    let publisher = publish(&a, &b, "cam").await;
    // The edges are pulling before the crowd arrives.
    let mut first = Vec::new();
    for node in [&b, &c] {
        first.push(rtc::Viewer::start(node, "cam", None, true).await);
    }
    for viewer in &mut first {
        viewer.frames(5).await;
    }

    // Sixteen viewers join the edges at once; each asks for a keyframe.
    let plis_before = publisher.plis.load(std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    let joins = (0..16).map(|i| {
        let node = if i % 2 == 0 { &b } else { &c };
        rtc::Viewer::start(node, "cam", None, true)
    });
    let mut crowd = futures_util::future::join_all(joins).await;
    for viewer in &mut crowd {
        let (frames, _) = viewer.frames(5).await;
        assert!(frames[0].key, "every viewer starts on a keyframe");
    }
    let elapsed = started.elapsed();
    let plis = publisher.plis.load(std::sync::atomic::Ordering::SeqCst) - plis_before;
    // At most one request per second reached the publisher (plus the one a window
    // may start with)...
    let allowed = elapsed.as_secs() + 2;
    assert!(
        plis <= allowed,
        "{plis} keyframe requests in {elapsed:?} reached the publisher"
    );
    // ...though every join asked for one at its edge.
    let mut asked = 0;
    for edge in [&b, &c] {
        let report = report(edge).await;
        asked += report["traffic"]["keyframes_asked"].as_u64().unwrap();
    }
    assert!(asked >= 16, "edges asked {asked} times");
    let origin = report(&a).await;
    let sent = origin["traffic"]["keyframes_sent"].as_u64().unwrap();
    assert!(
        origin["traffic"]["keyframes_asked"].as_u64().unwrap() > sent,
        "{origin}"
    );
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_pull_is_cut_pulls_again_and_its_viewers_watch_on() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b) = (
        cluster.node_with_config(CONFIG),
        cluster.node_with_config(CONFIG),
    );
    let publisher = publish(&a, &b, "cam").await;
    let mut viewer = rtc::Viewer::start(&b, "cam", None, true).await;
    viewer.frames(10).await;

    // The origin ends B's pull, as a network cut would.
    let origin = report(&a).await;
    let cut = origin["edges"][0]["session"].as_str().unwrap().to_owned();
    assert_eq!(
        rtc::delete(&a, &format!("/whep/cam/{cut}"), None).await,
        200
    );
    let sent_at_cut = publisher
        .frames_sent
        .load(std::sync::atomic::Ordering::SeqCst);

    // B pulls again on a new session, and its viewer's video goes on.
    let origin = report_until(&a, "B to pull again", |r| {
        edges(r) == 1 && r["edges"][0]["session"] != cut.as_str()
    })
    .await;
    assert_eq!(origin["viewers_local"], 0, "{origin}");
    let deadline = Instant::now() + PATIENCE;
    while viewer.next_frame().await.number <= sent_at_cut + 5 {
        assert!(Instant::now() < deadline, "the video did not come back");
    }
    // The viewer kept its session throughout.
    assert_eq!(report(&b).await["viewers_pulled"], 1);
    drop((a, b));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_follow_a_publisher_who_comes_back_on_another_node() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b, c) = three_nodes(&cluster, CONFIG);
    let token = a.token("cam", Role::Broadcaster);
    let first = publish(&a, &b, "cam").await;
    let mut viewer = rtc::Viewer::start(&b, "cam", None, true).await;
    viewer.frames(10).await;

    // The broadcaster's phone reconnects, this time to C.
    assert_eq!(rtc::delete(&a, &first.location, Some(&token)).await, 200);
    const SECOND: u64 = 1_000_000;
    let publishing = rtc::Publishing {
        first_frame: SECOND,
        ..Default::default()
    };
    let _second = rtc::Publisher::start_with(&c, "cam", &token, publishing).await;

    // B's viewer, on the same session, gets the new stream from a keyframe on.
    let deadline = Instant::now() + PATIENCE * 2;
    let mut frame = viewer.next_frame().await;
    while frame.number < SECOND {
        assert!(Instant::now() < deadline, "B never followed the publisher");
        frame = viewer.next_frame().await;
    }
    assert!(frame.key, "{frame:?}");
    let (frames, _) = viewer.frames(10).await;
    watched(&[&[frame], &frames[..]].concat());
    let edge = report(&b).await;
    assert_eq!(edge["pulls"][0]["origin"], c.url(""), "{edge}");
    assert_eq!(edge["viewers_pulled"], 1, "{edge}");
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_ends_its_viewers_when_the_room_does_not_come_back() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let config = format!("{CONFIG}origin_lost_ms = 1000\n");
    let (a, b) = (
        cluster.node_with_config(&config),
        cluster.node_with_config(&config),
    );
    let publisher = publish(&a, &b, "cam").await;
    let mut viewer = rtc::Viewer::start(&b, "cam", None, true).await;
    viewer.frames(5).await;
    let token = a.token("cam", Role::Broadcaster);
    assert_eq!(
        rtc::delete(&a, &publisher.location, Some(&token)).await,
        200
    );
    // B looks for the room for a second, then lets its viewer go and pulls nothing.
    report_until(&b, "B to end its viewer", |r| {
        r["viewers"] == 0 && r["pulls"].as_array().unwrap().is_empty()
    })
    .await;
    report_until(&a, "A to serve no edge", |r| edges(r) == 0).await;
    drop((a, b));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_redirects_new_viewers_to_a_node_with_room() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let capped = format!("{CONFIG}max_viewers_per_node = 1\n");
    let (a, b, c) = three_nodes(&cluster, &capped);
    let _publisher = publish(&a, &b, "cam").await;
    // B knows every node's load once each has reported.
    report_until(&b, "B to know the other nodes", |r| {
        r["nodes"].as_array().unwrap().len() == 3
    })
    .await;
    let _first = rtc::Viewer::start(&b, "cam", None, true).await;

    // B is full: the next viewer is sent to A, which has the room's video (C would
    // have to pull it).
    let response = rtc::whep_offer(&b, "cam", "", None).await;
    assert_eq!(response.status(), 307);
    assert_eq!(
        response.headers()["location"],
        a.url("/whep/cam?redirects=1").as_str()
    );
    // (B counted that viewer against A until A's next report.)
    let a_url = a.url("");
    report_until(&b, "A's next report", |r| {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["url"] == a_url.as_str() && n["viewers"] == 0)
    })
    .await;
    // Viewers following redirects land on nodes with room and play there: A, then
    // C (A is full).
    let mut redirected = rtc::Viewer::start(&b, "cam", None, true).await;
    watched(&redirected.frames(10).await.0);
    let mut third = rtc::Viewer::start(&b, "cam", None, true).await;
    third.frames(5).await;
    assert_eq!(report(&a).await["viewers_local"], 1);
    assert_eq!(report(&c).await["viewers_pulled"], 1);

    // A page of B may follow the redirect: B's pages may connect to the other
    // nodes, and they take requests from B's pages.
    let csp = reqwest::get(b.url("/watch.html")).await.unwrap().headers()
        ["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("connect-src 'self' ") && csp.contains(&a.url("")),
        "{csp}"
    );
    let preflight = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, a.url("/whep/cam"))
        .header("origin", b.url(""))
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        b.url("").as_str()
    );
    let stranger = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, a.url("/whep/cam"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Every node full: 503, on any node.
    report_until(&b, "B to learn that every node is full", |r| {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["viewers"] == 1)
    })
    .await;
    let response = rtc::whep_offer(&b, "cam", "", None).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unavailable", "{body}");
    // A viewer passed on twice is not passed on again.
    assert_eq!(
        rtc::whep_offer(&b, "cam", "?redirects=2", None)
            .await
            .status(),
        503
    );
    assert_eq!(
        rtc::whep_offer(&b, "cam", "?redirects=x", None)
            .await
            .status(),
        400
    );
    drop((a, b, c));
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_of_the_cluster_may_pull_and_only_a_room_published_there() {
    let Some(cluster) = Cluster::create().await else {
        return;
    };
    let (a, b) = (
        cluster.node_with_config(CONFIG),
        cluster.node_with_config(CONFIG),
    );
    let _publisher = publish(&a, &b, "cam").await;
    let token = a.token("cam", Role::Broadcaster);
    for forged in ["", "1.00", "99999999999.abcd", &token] {
        let response = rtc::whep_offer(&a, "cam", "", Some(forged)).await;
        assert_eq!(response.status(), 403, "{forged:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "forbidden");
    }
    // A credential minted with the cluster's secret is good on A, for this room.
    let key = ovation::auth::NodeKey::derive(common::SECRET.as_bytes());
    let credential = key.mint("cam", ovation::auth::unix_now_s() + 60);
    let response = rtc::whep_offer(&a, "cam", "", Some(&credential)).await;
    assert_eq!(response.status(), 201);
    // B only pulls the room itself: it never relays a room onward.
    let _viewer = rtc::Viewer::start(&b, "cam", None, true).await;
    let response = rtc::whep_offer(&b, "cam", "", Some(&key.mint("cam", u64::MAX))).await;
    assert_eq!(response.status(), 404);
    let response = rtc::whep_offer(&a, "other", "", Some(&credential)).await;
    assert_eq!(response.status(), 403);
    drop((a, b));
    cluster.finish().await;
}
