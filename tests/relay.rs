//! The WebRTC relay end to end: real webrtc-rs publishers and viewers over WHIP and
//! WHEP, media on 127.0.0.1 only.

mod common;
#[path = "common/rtc.rs"]
mod rtc;

use std::sync::atomic::Ordering;

use common::*;
use ovation::auth::Role;
use rtc::{Publisher, Viewer};
use serde_json::Value;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;

async fn relay_sessions(server: &TestServer) -> (u64, u64) {
    let token = server.token("ops", Role::Admin);
    let body = get_json(&server.url("/api/admin/rtc"), &token).await;
    (
        body["publishers"].as_u64().unwrap(),
        body["viewers"].as_u64().unwrap(),
    )
}

/// Waits until the relay holds exactly `want` sessions and has finished closing the
/// ones that ended (cleanup runs in the background).
async fn wait_for_sessions(server: &TestServer, want: (usize, usize)) {
    let mut census = server.server.relay().census();
    let settled = tokio::time::timeout(
        PATIENCE * 2,
        census.wait_for(|c| (c.publishers, c.viewers, c.closing) == (want.0, want.1, 0)),
    )
    .await
    .is_ok();
    let now = *census.borrow();
    assert!(settled, "relay sessions {now:?}, wanted {want:?}");
    assert_eq!(relay_sessions(server).await, (want.0 as u64, want.1 as u64));
}

#[tokio::test]
async fn a_published_stream_reaches_every_viewer_and_the_room_hears_it_is_live() {
    let server = TestServer::start().await;
    let mut room = server.viewer("watcher").await;
    room.join("alice").await;
    let token = server.token("alice", Role::Broadcaster);
    let publisher = Publisher::start(&server, "alice", &token).await;
    assert!(publisher.location.starts_with("/whip/alice/"));
    assert_eq!(room.next_of("stream").await["live"], true);

    let mut viewers = Vec::new();
    for n in 0..3 {
        let token = server.token(&format!("v{n}"), Role::Viewer);
        viewers.push(Viewer::start(&server, "alice", Some(&token), true).await);
    }
    viewers.push(Viewer::start(&server, "alice", None, true).await); // a guest
    for viewer in &mut viewers {
        // Each viewer starts on a keyframe; then every frame arrives once.
        let (frames, earliest) = viewer.frames(20).await;
        assert!(
            earliest.key,
            "a viewer must start on a keyframe: {frames:?}"
        );
        assert_eq!(consecutive(&frames), Ok(()), "{frames:?}");
        assert!(
            viewer.audio_packets.load(Ordering::SeqCst) > 0,
            "audio is relayed too"
        );
    }
    assert_eq!(relay_sessions(&server).await, (1, 4));
}

#[tokio::test]
async fn a_late_viewer_gets_a_keyframe_requested_from_the_publisher() {
    let server = TestServer::start().await;
    let token = server.token("alice", Role::Broadcaster);
    let publisher = Publisher::start(&server, "alice", &token).await;
    let mut early = Viewer::start(&server, "alice", None, true).await;
    early.next_frame().await;
    // The publisher sends keyframes only when asked; let it run on deltas for a while.
    let sent = publisher.frames_sent.load(Ordering::SeqCst);
    while publisher.frames_sent.load(Ordering::SeqCst) < sent + 30 {
        early.next_frame().await;
    }
    let plis = publisher.plis.load(Ordering::SeqCst);
    let mut late = Viewer::start(&server, "alice", None, true).await;
    let (frames, first) = late.frames(3).await;
    assert!(
        first.key,
        "the late viewer's first frame is a keyframe: {frames:?}"
    );
    assert!(
        first.number > sent,
        "and a fresh one (frame {} of {sent}+)",
        first.number
    );
    assert!(
        publisher.plis.load(Ordering::SeqCst) > plis,
        "the relay asked the publisher for it"
    );
}

#[tokio::test]
async fn delete_ends_sessions_and_a_publisher_leaving_ends_its_viewers() {
    let server = TestServer::start().await;
    let mut room = server.viewer("watcher").await;
    room.join("alice").await;
    let token = server.token("alice", Role::Broadcaster);
    let mut publisher = Publisher::start(&server, "alice", &token).await;
    assert_eq!(room.next_of("stream").await["live"], true);
    let bob = server.token("bob", Role::Viewer);
    let mut signed_in = Viewer::start(&server, "alice", Some(&bob), true).await;
    let mut guest = Viewer::start(&server, "alice", None, true).await;
    assert_eq!(relay_sessions(&server).await, (1, 2));

    // A signed-in viewer's session is theirs; a guest's is ended by its URL.
    let carol = server.token("carol", Role::Viewer);
    assert_eq!(
        rtc::delete(&server, &signed_in.location, Some(&carol)).await,
        403
    );
    assert_eq!(
        rtc::delete(&server, &signed_in.location, Some(&bob)).await,
        200
    );
    assert_eq!(
        rtc::delete(&server, &signed_in.location, Some(&bob)).await,
        404
    );
    rtc::wait_for_state(&mut signed_in.states, RTCPeerConnectionState::Failed).await;
    assert_eq!(relay_sessions(&server).await, (1, 1));

    assert_eq!(
        rtc::delete(&server, &publisher.location, Some(&bob)).await,
        403
    );
    assert_eq!(rtc::delete(&server, &publisher.location, None).await, 401);
    assert_eq!(
        rtc::delete(&server, &publisher.location, Some(&token)).await,
        200
    );
    assert_eq!(room.next_of("stream").await["live"], false);
    rtc::wait_for_state(&mut guest.states, RTCPeerConnectionState::Failed).await;
    rtc::wait_for_state(&mut publisher.states, RTCPeerConnectionState::Failed).await;
    assert_eq!(relay_sessions(&server).await, (0, 0));
    let (status, _, _) = rtc::post_sdp(&server, "/whep/alice", None, sample_offer()).await;
    assert_eq!(status, 404, "nobody is live any more");
}

#[tokio::test]
async fn a_stalled_viewer_and_a_vanished_one_are_cleaned_up_while_others_keep_watching() {
    let server = TestServer::start().await;
    let token = server.token("alice", Role::Broadcaster);
    let _publisher = Publisher::start(&server, "alice", &token).await;
    let mut steady = Viewer::start(&server, "alice", None, true).await;
    let _stalled = Viewer::start(&server, "alice", None, false).await;
    let vanished = Viewer::start(&server, "alice", None, true).await;
    assert_eq!(relay_sessions(&server).await, (1, 3));

    // The vanished viewer goes without a DELETE: the relay notices by itself.
    vanished.pc.close().await.unwrap();
    drop(vanished);
    wait_for_sessions(&server, (1, 2)).await;
    // Meanwhile, and for 100 more frames, the steady viewer misses nothing.
    let (frames, _) = steady.frames(100).await;
    assert_eq!(consecutive(&frames), Ok(()));
}

/// Frames that arrived (in any order) are each there once, with none missing.
fn consecutive(frames: &[rtc::Frame]) -> Result<(), String> {
    let mut numbers: Vec<u64> = frames.iter().map(|f| f.number).collect();
    numbers.sort_unstable();
    match numbers.windows(2).find(|w| w[1] != w[0] + 1) {
        Some(w) => Err(format!("frame {} followed by {}", w[0], w[1])),
        None => Ok(()),
    }
}

#[tokio::test]
async fn a_publisher_that_vanishes_takes_its_viewers_with_it_and_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let token = server.token("alice", Role::Broadcaster);
    let publisher = Publisher::start(&server, "alice", &token).await;
    let mut viewer = Viewer::start(&server, "alice", None, true).await;
    viewer.next_frame().await;
    publisher.stop().await;
    rtc::wait_for_state(&mut viewer.states, RTCPeerConnectionState::Failed).await;
    wait_for_sessions(&server, (0, 0)).await;
    // The room can go live again.
    let again = Publisher::start(&server, "alice", &token).await;
    let mut viewer = Viewer::start(&server, "alice", None, true).await;
    assert!(viewer.next_frame().await.key);
    drop(again);
}

/// A syntactically fine offer from a real peer, for requests that must fail before
/// any media flows.
fn sample_offer() -> String {
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
     c=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=sendonly\r\na=mid:0\r\n"
        .into()
}

#[tokio::test]
async fn bad_whip_and_whep_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let alice = server.token("alice", Role::Broadcaster);
    let bob = server.token("bob", Role::Viewer);
    let post = |path: &str, token: Option<&str>, content_type: &str, body: String| {
        let mut request = reqwest::Client::new()
            .post(server.url(path))
            .header("content-type", content_type.to_owned())
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or_default();
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let sdp = "application/sdp";
    let cases = [
        (
            post("/whip/alice", None, sdp, sample_offer()).await,
            (401, "unauthorized"),
        ),
        (
            post(
                "/whip/alice",
                Some("forged.token.here"),
                sdp,
                sample_offer(),
            )
            .await,
            (401, "unauthorized"),
        ),
        (
            post("/whip/alice", Some(&bob), sdp, sample_offer()).await,
            (403, "forbidden"),
        ),
        (
            post("/whip/bob", Some(&alice), sdp, sample_offer()).await,
            (403, "forbidden"),
        ),
        (
            post(
                "/whip/alice",
                Some(&alice),
                "application/json",
                sample_offer(),
            )
            .await,
            (415, "bad_request"),
        ),
        (
            post("/whip/alice", Some(&alice), sdp, "hello".into()).await,
            (400, "bad_request"),
        ),
        (
            post(
                "/whip/alice",
                Some(&alice),
                sdp,
                "v=0\r\nm=video 9 RTP/AVP 96\r\nnonsense\r\n".into(),
            )
            .await,
            (400, "bad_request"),
        ),
        (
            post(
                "/whip/alice",
                Some(&alice),
                sdp,
                format!("v=0\r\n{}", "a=x\r\n".repeat(8000)),
            )
            .await,
            (413, "too_large"),
        ),
        (
            post("/whip/Not%20A%20Room", Some(&alice), sdp, sample_offer()).await,
            (400, "bad_request"),
        ),
        (
            post("/whep/alice", None, sdp, sample_offer()).await,
            (404, "not_found"),
        ),
        (
            post(
                "/whep/alice",
                Some("forged.token.here"),
                sdp,
                sample_offer(),
            )
            .await,
            (401, "unauthorized"),
        ),
    ];
    for (n, (got, (status, code))) in cases.into_iter().enumerate() {
        assert_eq!((got.0, got.1.as_str()), (status, code), "case {n}");
    }
    assert_eq!(rtc::delete(&server, "/whep/alice/s0", None).await, 404);
    assert_eq!(relay_sessions(&server).await, (0, 0));

    // One publisher per room.
    let _publisher = Publisher::start(&server, "alice", &alice).await;
    assert_eq!(
        post("/whip/alice", Some(&alice), sdp, sample_offer()).await,
        (409, "conflict".into())
    );
}

/// One publisher with three viewers, ended by DELETEs or by the peers just closing.
async fn session_round(server: &TestServer, by_delete: bool) {
    let token = server.token("alice", Role::Broadcaster);
    let publisher = Publisher::start(server, "alice", &token).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(Viewer::start(server, "alice", None, true).await);
    }
    for viewer in &mut viewers {
        viewer.next_frame().await;
    }
    if by_delete {
        for viewer in &viewers {
            assert_eq!(rtc::delete(server, &viewer.location, None).await, 200);
        }
        assert_eq!(
            rtc::delete(server, &publisher.location, Some(&token)).await,
            200
        );
    }
    for viewer in viewers {
        viewer.pc.close().await.unwrap();
    }
    publisher.stop().await;
    wait_for_sessions(server, (0, 0)).await;
}

/// How many tasks the runtime runs once every task that can finish now has: the
/// peer connections are closed, so what remains of them only needs its turn.
async fn settled_tasks() -> usize {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let mut last = usize::MAX;
    // Stop when a full round of yields changes nothing.
    while tasks() != last {
        last = tasks();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }
    last
}

#[tokio::test]
async fn closed_sessions_leave_no_task_behind() {
    let server = TestServer::start().await;
    // The first round warms up what lives as long as the process (client pools...).
    session_round(&server, true).await;
    let baseline = settled_tasks().await;
    for round in 0..4 {
        session_round(&server, round % 2 == 0).await;
    }
    // Both sides' peer connections are closed: every task they ran has ended.
    assert!(settled_tasks().await <= baseline);
}

#[tokio::test]
async fn sessions_use_the_configured_udp_ports_and_ice_servers_reach_clients() {
    let ports = 47100..=47199;
    let stun = "stun:stun.example.net:3478";
    let server = TestServer::with_config(|file| {
        file.rtc.udp_port_min = *ports.start();
        file.rtc.udp_port_max = *ports.end();
        file.rtc.ice_servers = vec![ovation::config::IceServer {
            urls: vec![stun.into()],
            username: None,
            credential: None,
        }];
    })
    .await;
    let token = server.token("alice", Role::Broadcaster);
    let _publisher = Publisher::start(&server, "alice", &token).await;
    for _ in 0..2 {
        let mut viewer = Viewer::start(&server, "alice", None, true).await;
        assert!(viewer.frames(3).await.1.key);
        let candidates: Vec<&str> = viewer
            .answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:") && l.contains(" udp "))
            .collect();
        assert!(!candidates.is_empty(), "{}", viewer.answer);
        for candidate in candidates {
            // foundation component transport priority address port ...
            let fields: Vec<&str> = candidate.split(' ').collect();
            assert!(["127.0.0.1", "::1"].contains(&fields[4]), "{candidate}");
            assert!(
                ports.contains(&fields[5].parse::<u16>().unwrap()),
                "{candidate}"
            );
        }
    }

    // Clients learn the STUN/TURN servers from the API and from the answer's Link.
    let config: Value = reqwest::get(server.url("/api/rtc"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["ice_servers"][0]["urls"][0], stun);
    let pc = rtc::video_peer(RTCRtpTransceiverDirection::Recvonly).await;
    let response = reqwest::Client::new()
        .post(server.url("/whep/alice"))
        .header("content-type", "application/sdp")
        .body(rtc::full_offer(&pc).await)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(link, format!("<{stun}>; rel=\"ice-server\""));
    pc.close().await.unwrap();
}

#[tokio::test]
async fn room_node_and_publisher_limits_answer_503_and_a_public_ip_is_announced() {
    let server = TestServer::with_config(|file| {
        file.rtc.max_viewers_per_room = 1;
        file.rtc.max_publishing_rooms = 1;
    })
    .await;
    let alice = server.token("alice", Role::Broadcaster);
    let _publisher = Publisher::start(&server, "alice", &alice).await;
    let _viewer = Viewer::start(&server, "alice", None, true).await;
    let (status, _, body) = rtc::post_sdp(&server, "/whep/alice", None, sample_offer()).await;
    assert_eq!(status, 503, "{body}");
    let bob = server.token("bob", Role::Broadcaster);
    let (status, _, body) = rtc::post_sdp(&server, "/whip/bob", Some(&bob), sample_offer()).await;
    assert_eq!(status, 503, "{body}");

    // A node alone at its viewer cap has nowhere to send a viewer of any room.
    let capped = TestServer::with_config(|file| file.rtc.max_viewers_per_node = Some(1)).await;
    let alice = capped.token("alice", Role::Broadcaster);
    let _publisher = Publisher::start(&capped, "alice", &alice).await;
    let _viewer = Viewer::start(&capped, "alice", None, true).await;
    let (status, _, body) = rtc::post_sdp(&capped, "/whep/alice", None, sample_offer()).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("every node has as many viewers"), "{body}");

    // Behind 1:1 NAT, candidates carry the public address.
    let natted = TestServer::with_config(|file| {
        file.rtc.public_ip = Some("203.0.113.7".parse().unwrap());
    })
    .await;
    let pc = rtc::video_peer(RTCRtpTransceiverDirection::Sendonly).await;
    let alice = natted.token("alice", Role::Broadcaster);
    let (status, _, answer) = rtc::post_sdp(
        &natted,
        "/whip/alice",
        Some(&alice),
        rtc::full_offer(&pc).await,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    // IPv4 candidates carry the public address (the mapping is per address family).
    let addresses: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|address| address.contains('.'))
        .collect();
    assert!(!addresses.is_empty(), "{answer}");
    assert!(
        addresses.iter().all(|a| *a == "203.0.113.7"),
        "{addresses:?}"
    );
    pc.close().await.unwrap();
}
