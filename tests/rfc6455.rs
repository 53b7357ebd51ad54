//! RFC 6455 compliance of the WebSocket edge, in the spirit of the Autobahn TestSuite:
//! raw frames over a plain TCP socket (tests/common/raw_ws.rs) against a real server.
//! Each test states what RFC 6455 or PROTOCOL.md requires, not what the code does.
//!
//! Close codes (RFC 6455 §7.4.1, PROTOCOL.md): 1002 a frame the RFC forbids, 1003
//! binary data, 1007 text that is not UTF-8, 1009 a message over 16 KiB.
//!
//! Nothing here sleeps: every wait is for an event (a frame, a reply, the end of the
//! connection), bounded by a timeout that is only reached when the test fails.

mod common;

use std::time::Duration;

use common::raw_ws::{accept_for, op, Frame, LengthForm, RawWs, Received, Upgrade};
use common::raw_ws::{RSV1, RSV2, RSV3};
use common::*;
use ovation::auth::Role;
use serde_json::json;

const PROTOCOL_ERROR: u16 = 1002;
const UNSUPPORTED_DATA: u16 = 1003;
const INVALID_DATA: u16 = 1007;
const MESSAGE_TOO_BIG: u16 = 1009;

/// The default largest message a client may send (PROTOCOL.md: 16 KiB).
const MAX_MESSAGE: usize = 16 * 1024;

/// How soon the server must end the TCP connection once the closing handshake is
/// done. Its close grace (5 s) is for a client that has not answered yet, so a
/// server that waits it out after the client's close fails.
const PROMPTLY: Duration = Duration::from_secs(1);

/// A signed-in viewer's raw connection to `/ws`.
async fn viewer(server: &TestServer, id: &str) -> RawWs {
    RawWs::connect(server.addr, Some(&server.token(id, Role::Viewer))).await
}

/// Asserts the server's next close frame carries `code`.
async fn assert_closed_with(ws: &mut RawWs, code: u16, what: &str) {
    let close = ws.close_frame().await;
    assert_eq!(
        close.close_code(),
        Some(code),
        "{what}: closed with reason {:?}",
        String::from_utf8_lossy(close.close_reason())
    );
}

/// Asserts the connection still serves messages: a join gets its `ok`.
async fn assert_alive(ws: &mut RawWs, rid: &str) {
    let reply = ws
        .request(json!({"type": "join", "room": "r1", "rid": rid}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    assert_eq!(reply["room"], "r1", "{reply}");
}

/// For checks that loop over cases, each on a fresh connection: runs them all and
/// then fails with every case that went wrong, not just the first.
fn assert_all(failures: Vec<String>) {
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The close code a fresh connection gets for `frame`, or what happened instead.
async fn close_code_for(
    server: &TestServer,
    id: &str,
    frame: &Frame,
) -> Result<Option<u16>, String> {
    let mut ws = viewer(server, id).await;
    // The server may close before it reads everything; that is its right.
    let _ = ws.try_send(frame).await;
    loop {
        match ws.next_within(PATIENCE).await {
            Received::Frame(frame) if frame.is_close() => return Ok(frame.close_code()),
            // A reply means the frame was taken as a valid message.
            Received::Frame(frame) => match frame.json() {
                Some(reply) if !reply["rid"].is_null() => {
                    return Err(format!("accepted as a valid message, answered {reply}"))
                }
                _ => continue,
            },
            Received::Closed => return Err("TCP closed without a close frame".into()),
            Received::TimedOut => return Err(format!("no close frame within {PATIENCE:?}")),
        }
    }
}

/// Expects `code` for each frame, each on its own connection.
async fn assert_each_closed_with(server: &TestServer, code: u16, cases: Vec<(String, Frame)>) {
    let mut failures = Vec::new();
    for (n, (case, frame)) in cases.into_iter().enumerate() {
        match close_code_for(server, &format!("case{n}"), &frame).await {
            Ok(Some(got)) if got == code => {}
            Ok(got) => failures.push(format!("{case}: closed with {got:?}, expected {code}")),
            Err(what) => failures.push(format!("{case}: {what}")),
        }
    }
    assert_all(failures);
}

/// A JSON `join` of exactly `len` bytes (padded with an unknown field, which the
/// server ignores).
fn join_of_len(rid: &str, len: usize) -> Vec<u8> {
    let bare = json!({"type": "join", "room": "r1", "rid": rid, "pad": ""}).to_string();
    assert!(len >= bare.len());
    let padded =
        json!({"type": "join", "room": "r1", "rid": rid, "pad": "x".repeat(len - bare.len())})
            .to_string();
    assert_eq!(padded.len(), len);
    padded.into_bytes()
}

fn ping_message(rid: &str) -> Vec<u8> {
    json!({"type": "ping", "rid": rid}).to_string().into_bytes()
}

/// Waits for the reply to `rid`, checking it is an `ok`.
async fn assert_ok_reply(ws: &mut RawWs, rid: &str) {
    let reply = ws.reply_to(&json!(rid)).await;
    assert_eq!(reply["type"], "ok", "{reply}");
}

// ---------------------------------------------------------------- framing (§5.1-5.3)

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    // §5.1: "The server MUST close the connection upon receiving a frame that is not
    // masked"; §5.3: the client MUST mask every frame.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "bare").await;
    ws.send(&Frame::text(ping_message("1")).unmasked()).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "an unmasked frame").await;
}

#[tokio::test]
async fn rsv_bits_without_a_negotiated_extension_are_closed_with_1002() {
    // §5.2: RSV1-3 MUST be 0 unless an extension defines them; no extension is
    // negotiated, so the receiver MUST fail the connection.
    let server = TestServer::start().await;
    let cases = [
        ("RSV1", RSV1),
        ("RSV2", RSV2),
        ("RSV3", RSV3),
        ("RSV1|2|3", 0b111),
    ]
    .map(|(name, bits)| (name.to_owned(), Frame::text(ping_message("1")).rsv(bits)))
    .to_vec();
    assert_each_closed_with(&server, PROTOCOL_ERROR, cases).await;
}

#[tokio::test]
async fn reserved_data_opcodes_are_closed_with_1002() {
    // §5.2: 0x3-0x7 are reserved; an unknown opcode MUST fail the connection.
    let server = TestServer::start().await;
    let cases = (0x3..=0x7)
        .map(|opcode| {
            (
                format!("opcode {opcode:#x}"),
                Frame::new(opcode, ping_message("1")),
            )
        })
        .collect();
    assert_each_closed_with(&server, PROTOCOL_ERROR, cases).await;
}

#[tokio::test]
async fn reserved_control_opcodes_are_closed_with_1002() {
    // §5.2: 0xB-0xF are reserved control opcodes.
    let server = TestServer::start().await;
    let cases = (0xB..=0xF)
        .map(|opcode| {
            (
                format!("opcode {opcode:#x}"),
                Frame::new(opcode, b"x".to_vec()),
            )
        })
        .collect();
    assert_each_closed_with(&server, PROTOCOL_ERROR, cases).await;
}

#[tokio::test]
async fn the_16_bit_length_form_is_accepted() {
    // §5.2: payloads of 126..=65535 bytes use 126 and a 16-bit length.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "medium").await;
    let message = join_of_len("sixteen", 300);
    let frame = Frame::text(message);
    assert_eq!(frame.encode()[1] & 0x7F, 126, "the 16-bit form");
    ws.send(&frame).await;
    assert_ok_reply(&mut ws, "sixteen").await;
}

#[tokio::test]
async fn the_64_bit_length_form_is_accepted() {
    // §5.2: payloads over 65535 bytes use 127 and a 64-bit length. The minimal form
    // for such a payload is over the default 16 KiB limit, so this server allows more.
    let server = TestServer::with_limits(|l| l.max_frame_bytes = 128 * 1024).await;
    let mut ws = viewer(&server, "large").await;
    let frame = Frame::text(join_of_len("sixty-four", 70_000));
    assert_eq!(frame.encode()[1] & 0x7F, 127, "the 64-bit form");
    ws.send(&frame).await;
    assert_ok_reply(&mut ws, "sixty-four").await;
}

#[tokio::test]
async fn a_message_of_exactly_16_kib_is_accepted() {
    // PROTOCOL.md: only a text frame *over* 16 KiB is refused.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "limit").await;
    ws.send(&Frame::text(join_of_len("limit", MAX_MESSAGE)))
        .await;
    assert_ok_reply(&mut ws, "limit").await;
}

#[tokio::test]
async fn a_64_bit_length_with_the_most_significant_bit_set_is_closed_with_1002() {
    // §5.2: "the most significant bit MUST be 0". Only the header is sent: the
    // length alone breaks the rule.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "msb").await;
    let header = Frame::text(Vec::new())
        .form(LengthForm::Bits64)
        .declare_len((1 << 63) | 5);
    ws.send(&header).await;
    assert_closed_with(
        &mut ws,
        PROTOCOL_ERROR,
        "a 64-bit length with its top bit set",
    )
    .await;
}

#[tokio::test]
async fn non_minimal_length_encodings_are_closed_with_1002() {
    // §5.2: "in all cases, the minimal number of bytes MUST be used to encode the
    // length"; a frame that breaks a MUST is invalid and the connection is failed.
    let server = TestServer::start().await;
    let short = ping_message("1");
    assert!(short.len() < 126);
    let medium = join_of_len("m", 200);
    let cases = vec![
        (
            format!("{} bytes in the 16-bit form", short.len()),
            Frame::text(short.clone()).form(LengthForm::Bits16),
        ),
        (
            format!("{} bytes in the 64-bit form", short.len()),
            Frame::text(short).form(LengthForm::Bits64),
        ),
        (
            format!("{} bytes in the 64-bit form", medium.len()),
            Frame::text(medium).form(LengthForm::Bits64),
        ),
    ];
    assert_each_closed_with(&server, PROTOCOL_ERROR, cases).await;
}

#[tokio::test]
async fn a_message_over_16_kib_is_refused_with_1009_from_its_header() {
    // PROTOCOL.md: over 16 KiB closes with 1009; docs/protocol.md: refused from the
    // frame header, before the payload is read. Only the header is sent, so the
    // close can only come from the header.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "huge").await;
    let header = Frame::text(Vec::new()).declare_len(MAX_MESSAGE as u64 + 1);
    assert_eq!(header.encode().len(), 2 + 2 + 4, "header and mask only");
    ws.send(&header).await;
    assert_closed_with(&mut ws, MESSAGE_TOO_BIG, "a 16 KiB + 1 header").await;
}

// ---------------------------------------------------------------- control frames (§5.5)

#[tokio::test]
async fn a_ping_is_answered_with_a_pong_carrying_the_same_payload() {
    // §5.5.2-3: a Pong in response to a Ping MUST carry the Ping's application data.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "pinger").await;
    let payload: Vec<u8> = (0..125u8).collect(); // the largest a control frame may carry
    ws.send(&Frame::ping(payload.clone())).await;
    loop {
        let frame = ws.next_frame().await;
        assert!(!frame.is_close(), "closed instead of a pong: {frame:?}");
        if frame.opcode == op::PONG {
            assert_eq!(frame.payload, payload);
            assert!(frame.fin && !frame.masked && frame.rsv == 0, "{frame:?}");
            break;
        }
    }
    assert_alive(&mut ws, "after-ping").await;
}

#[tokio::test]
async fn a_ping_with_more_than_125_bytes_is_closed_with_1002() {
    // §5.5: "All control frames MUST have a payload length of 125 bytes or less".
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "long-ping").await;
    ws.send(&Frame::ping(vec![b'p'; 126])).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "a 126-byte ping").await;
}

#[tokio::test]
async fn a_fragmented_control_frame_is_closed_with_1002() {
    // §5.5: "All control frames ... MUST NOT be fragmented".
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "frag-ping").await;
    ws.send(&Frame::ping(b"half".to_vec()).fin(false)).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "a ping without FIN").await;
}

#[tokio::test]
async fn an_unsolicited_pong_is_ignored() {
    // §5.5.3: "A Pong frame MAY be sent unsolicited ... A response to an unsolicited
    // Pong frame is not expected."
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "ponger").await;
    ws.send(&Frame::pong(b"unsolicited".to_vec())).await;
    assert_alive(&mut ws, "after-pong").await;
}

// ---------------------------------------------------------------- fragmentation (§5.4)

#[tokio::test]
async fn a_text_message_in_three_fragments_is_one_message() {
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "thirds").await;
    let message = json!({"type": "join", "room": "r1", "rid": "thirds"}).to_string();
    let bytes = message.as_bytes();
    let (a, rest) = bytes.split_at(7);
    let (b, c) = rest.split_at(12);
    ws.send(&Frame::text(a.to_vec()).fin(false)).await;
    ws.send(&Frame::continuation(b.to_vec()).fin(false)).await;
    ws.send(&Frame::continuation(c.to_vec())).await;
    let reply = ws.reply_to(&json!("thirds")).await;
    assert_eq!(
        (reply["type"].as_str(), reply["room"].as_str()),
        (Some("ok"), Some("r1"))
    );
}

#[tokio::test]
async fn a_ping_between_fragments_is_answered_and_the_message_still_arrives() {
    // §5.4: "An endpoint MUST be capable of handling control frames in the middle of
    // a fragmented message"; §5.5.2: a Pong "as soon as is practical". So the pong
    // comes while the message is still open: the rest is sent only once it arrived.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "interleaved").await;
    let message = json!({"type": "ping", "rid": "interleaved"}).to_string();
    let (head, tail) = message.as_bytes().split_at(9);
    ws.send(&Frame::text(head.to_vec()).fin(false)).await;
    ws.send(&Frame::ping(b"mid".to_vec())).await;
    loop {
        let frame = ws.next_frame().await;
        assert!(!frame.is_close(), "closed instead of a pong: {frame:?}");
        if frame.opcode == op::PONG {
            assert_eq!(frame.payload, b"mid");
            break;
        }
    }
    ws.send(&Frame::continuation(tail.to_vec())).await;
    assert_ok_reply(&mut ws, "interleaved").await;
}

#[tokio::test]
async fn a_continuation_without_a_start_is_closed_with_1002() {
    // §5.4: a fragmented message starts with a non-continuation opcode.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "orphan").await;
    ws.send(&Frame::continuation(ping_message("1"))).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "a lone continuation").await;
}

#[tokio::test]
async fn a_new_text_frame_inside_a_fragmented_message_is_closed_with_1002() {
    // §5.4: fragments of one message MUST NOT be interleaved with another message.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "interrupted").await;
    ws.send(&Frame::text(b"{\"type\":".to_vec()).fin(false))
        .await;
    ws.send(&Frame::text(ping_message("1"))).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "a text frame mid-message").await;
}

// ---------------------------------------------------------------- UTF-8 (§5.6, §8.1)

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    // §8.1: text that is not valid UTF-8 MUST fail the connection; §7.4.1: 1007.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "bad-utf8").await;
    ws.send(&Frame::text(
        b"{\"type\":\"ping\",\"rid\":\"\xc3\x28\"}".to_vec(),
    ))
    .await;
    assert_closed_with(&mut ws, INVALID_DATA, "invalid UTF-8").await;
}

#[tokio::test]
async fn invalid_utf8_in_the_first_fragment_is_closed_with_1007_before_the_message_ends() {
    // Autobahn 6.x "fail fast": 0xFF can never be part of UTF-8, so the first
    // fragment already makes the message invalid. Nothing more is sent: a server
    // that waits for the final fragment never closes (until its idle timeout).
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "fail-fast").await;
    ws.send(&Frame::text(b"{\"type\":\"ping\",\"rid\":\"\xff".to_vec()).fin(false))
        .await;
    assert_closed_with(&mut ws, INVALID_DATA, "invalid UTF-8 in an open message").await;
}

#[tokio::test]
async fn a_code_point_split_across_fragments_is_valid() {
    // §5.6: only the whole message must be valid UTF-8; a fragment may end inside a
    // character. 😀 is F0 9F 98 80: split over three fragments.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "split").await;
    let message = json!({"type": "ping", "rid": "😀"}).to_string();
    let bytes = message.as_bytes();
    let at = message.find('😀').unwrap();
    ws.send(&Frame::text(bytes[..at + 2].to_vec()).fin(false))
        .await;
    ws.send(&Frame::continuation(bytes[at + 2..at + 3].to_vec()).fin(false))
        .await;
    ws.send(&Frame::continuation(bytes[at + 3..].to_vec()))
        .await;
    assert_ok_reply(&mut ws, "😀").await;
}

// ---------------------------------------------------------------- binary

#[tokio::test]
async fn a_binary_frame_is_closed_with_1003() {
    // PROTOCOL.md: "Binary frames: close 1003" (§7.4.1: data it cannot accept).
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "binary").await;
    ws.send(&Frame::binary(vec![1, 2, 3])).await;
    assert_closed_with(&mut ws, UNSUPPORTED_DATA, "a binary frame").await;
}

// ---------------------------------------------------------------- closing (§5.5.1, §7)

#[tokio::test]
async fn a_client_close_is_answered_and_the_server_ends_tcp_promptly() {
    // §5.5.1: an endpoint that receives a Close MUST send a Close in response;
    // §7.1.1: "the server SHOULD close the underlying TCP connection first" once
    // both Close frames are exchanged. Its 5 s close grace is not for this case.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "leaver").await;
    assert_alive(&mut ws, "before-close").await;
    ws.send(&Frame::close(1000, b"bye")).await;
    assert_eq!(ws.close_frame().await.close_code(), Some(1000));
    assert!(
        ws.tcp_closed_within(PROMPTLY).await,
        "the server kept TCP open for over {PROMPTLY:?} after the closing handshake"
    );
}

/// The server echoes the client's code, as §5.5.1 says an endpoint typically does.
#[tokio::test]
async fn a_client_close_code_is_echoed() {
    let server = TestServer::start().await;
    let mut failures = Vec::new();
    for sent in [1001u16, 1000, 3000, 4000] {
        let mut ws = viewer(&server, &format!("closer-{sent}")).await;
        ws.send(&Frame::close(sent, b"")).await;
        match ws.close_frame().await.close_code() {
            Some(got) if got == sent => {}
            other => failures.push(format!("close {sent}: answered with {other:?}")),
        }
    }
    assert_all(failures);
}

#[tokio::test]
async fn a_close_with_an_invalid_status_code_is_answered_with_1002() {
    // §7.4.1-2: codes below 1000, 1004-1006, 1015 (reserved; 1005/1006/1015 MUST NOT
    // be sent in a Close frame) and 1016-2999 unassigned are invalid; Autobahn 7.9
    // expects the connection failed with 1002.
    let server = TestServer::start().await;
    let cases = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999]
        .map(|code| (format!("close code {code}"), Frame::close(code, b"")))
        .to_vec();
    assert_each_closed_with(&server, PROTOCOL_ERROR, cases).await;
}

#[tokio::test]
async fn a_close_with_a_one_byte_payload_is_answered_with_1002() {
    // §5.5.1: a close body, if any, MUST start with a two-byte status code.
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "one-byte").await;
    ws.send(&Frame::close_raw(vec![0x03])).await;
    assert_closed_with(&mut ws, PROTOCOL_ERROR, "a one-byte close").await;
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_is_answered_with_1007() {
    // §5.5.1: the reason is UTF-8; §8.1: invalid UTF-8 fails the connection (1007).
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "bad-reason").await;
    ws.send(&Frame::close(1000, b"bye \xff\xfe")).await;
    assert_closed_with(&mut ws, INVALID_DATA, "a close reason that is not UTF-8").await;
}

#[tokio::test]
async fn an_empty_close_is_answered_with_a_close_and_tcp_ends() {
    // §5.5.1: a Close may have no body; it is still answered with a Close (with no
    // status, or 1000), and the server then ends the TCP connection (§7.1.1).
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "empty-close").await;
    ws.send(&Frame::close_raw(Vec::new())).await;
    let close = ws.close_frame().await;
    assert!(
        matches!(close.close_code(), None | Some(1000)),
        "answered with {:?}",
        close.close_code()
    );
    assert!(
        ws.tcp_closed_within(PROMPTLY).await,
        "the server kept TCP open for over {PROMPTLY:?} after the closing handshake"
    );
}

// ---------------------------------------------------------------- handshake (§4.2)

fn token(server: &TestServer) -> String {
    server.token("hand", Role::Viewer)
}

#[tokio::test]
async fn an_upgrade_without_host_is_refused_with_400() {
    // §4.2.1: the request MUST have a Host header; otherwise the server MUST stop
    // the handshake with an HTTP error, e.g. 400 Bad Request.
    let server = TestServer::start().await;
    let (response, _) = Upgrade::ws(server.addr, Some(&token(&server)))
        .without_host()
        .send(server.addr)
        .await;
    assert_eq!(response.status, 400, "{}", response.head);
    assert!(
        response.header("sec-websocket-accept").is_none(),
        "{}",
        response.head
    );
}

#[tokio::test]
async fn an_upgrade_without_sec_websocket_key_is_refused_with_400() {
    // §4.2.1 item 5.
    let server = TestServer::start().await;
    let (response, _) = Upgrade::ws(server.addr, Some(&token(&server)))
        .key(None)
        .send(server.addr)
        .await;
    assert_eq!(response.status, 400, "{}", response.head);
}

#[tokio::test]
async fn an_upgrade_with_an_invalid_sec_websocket_key_is_refused_with_400() {
    // §4.2.1 item 5: the key base64-decodes to 16 bytes.
    let server = TestServer::start().await;
    let mut failures = Vec::new();
    for key in [
        "c2hvcnQ=",                 // 5 bytes
        "AAECAwQFBgcICQoLDA0ODxA=", // 17 bytes
        "not base64 at all!!!!!!!", // not base64
        "",                         // empty
    ] {
        let (response, _) = Upgrade::ws(server.addr, Some(&token(&server)))
            .key(Some(key))
            .send(server.addr)
            .await;
        if response.status != 400 {
            failures.push(format!(
                "key {key:?}: {}",
                response.head.lines().next().unwrap_or_default()
            ));
        }
    }
    assert_all(failures);
}

#[tokio::test]
async fn an_unsupported_version_is_refused_naming_version_13() {
    // §4.2.2: "If this version does not match a version understood by the server,
    // the server MUST abort the WebSocket handshake ... and instead send an
    // appropriate HTTP error code (such as 426 Upgrade Required) and a
    // |Sec-WebSocket-Version| header field indicating the version(s) the server is
    // capable of understanding." 426 is the RFC's example; 400 is also accepted.
    let server = TestServer::start().await;
    for version in ["8", "12", "14"] {
        let (response, _) = Upgrade::ws(server.addr, Some(&token(&server)))
            .version(Some(version))
            .send(server.addr)
            .await;
        assert!(
            matches!(response.status, 426 | 400),
            "version {version}: {}",
            response.head
        );
        assert!(
            response.has_token("sec-websocket-version", "13"),
            "version {version}: {}",
            response.head
        );
    }
}

#[tokio::test]
async fn the_accept_header_is_derived_from_the_key() {
    // §4.2.2: 101, `Upgrade: websocket`, `Connection: Upgrade`, and
    // Sec-WebSocket-Accept = base64(SHA-1(key + the GUID)).
    let server = TestServer::start().await;
    for _ in 0..3 {
        let upgrade = Upgrade::ws(server.addr, Some(&token(&server)));
        let (response, mut ws) = upgrade.send(server.addr).await;
        assert_eq!(response.status, 101, "{}", response.head);
        assert!(
            response.has_token("upgrade", "websocket"),
            "{}",
            response.head
        );
        assert!(
            response.has_token("connection", "upgrade"),
            "{}",
            response.head
        );
        let expected = accept_for(upgrade.key.as_deref().unwrap());
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(expected.as_str())
        );
        assert_alive(&mut ws, "accepted").await;
    }
}

// ---------------------------------------------------------------- masking (§5.3)

#[tokio::test]
async fn every_frame_may_use_its_own_mask() {
    // §5.3: the client picks a fresh masking key for each frame; the server unmasks
    // each with its own key (a zero key included).
    let server = TestServer::start().await;
    let mut ws = viewer(&server, "masks").await;
    let mut masks = vec![[0, 0, 0, 0], [0xFF; 4], [1, 2, 3, 4]];
    masks.extend((0..5).map(|_| rand::random::<[u8; 4]>()));
    for (n, mask) in masks.iter().enumerate() {
        let rid = format!("mask-{n}");
        ws.send(&Frame::text(ping_message(&rid)).mask(*mask)).await;
        assert_ok_reply(&mut ws, &rid).await;
    }
    // And the fragments of one message, each with another key.
    let message = ping_message("mask-frag");
    let (head, tail) = message.split_at(10);
    ws.send(&Frame::text(head.to_vec()).fin(false).mask([9, 8, 7, 6]))
        .await;
    ws.send(&Frame::continuation(tail.to_vec()).mask([0x5A, 0xA5, 0x3C, 0xC3]))
        .await;
    assert_ok_reply(&mut ws, "mask-frag").await;
}
