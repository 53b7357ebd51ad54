//! Identifiers and timestamps that go on the wire.

use std::time::{SystemTime, UNIX_EPOCH};

/// A unique event id. Random rather than counted, so ids from several nodes or
/// several runs never collide.
pub fn event_id() -> String {
    format!("e{:016x}", rand::random::<u64>())
}

/// Milliseconds since the Unix epoch, the protocol's `ts`.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// A WHIP/WHEP session id. It is part of the session's URL, which is all a guest
/// viewer needs to end it, so it is unguessable: 128 random bits.
pub fn session_id() -> String {
    format!("s{:032x}", rand::random::<u128>())
}
