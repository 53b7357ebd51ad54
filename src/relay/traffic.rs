//! The relay's traffic counters: media in and out, keyframe requests asked for and
//! sent. Kept as atomics (the node's load report reads rates from them) and mirrored
//! into the Prometheus metrics in the same call.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    keyframes_asked: AtomicU64,
    keyframes_sent: AtomicU64,
}

/// The counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrafficTotals {
    /// RTP payload bytes received from publishers and origins.
    pub bytes_in: u64,
    /// RTP payload bytes sent to viewers and edges.
    pub bytes_out: u64,
    /// Keyframe requests from viewers, edges and lost packets.
    pub keyframes_asked: u64,
    /// Picture loss indications sent upstream (at most one per interval each).
    pub keyframes_sent: u64,
}

impl Traffic {
    pub fn received(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Relaxed);
        crate::metrics::rtc_received(bytes);
    }

    pub fn forwarded(&self, packets: u64, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Relaxed);
        crate::metrics::rtc_forwarded(packets, bytes);
    }

    pub fn keyframe_asked(&self) {
        self.keyframes_asked.fetch_add(1, Relaxed);
        crate::metrics::rtc_keyframe_asked();
    }

    pub fn keyframe_sent(&self) {
        self.keyframes_sent.fetch_add(1, Relaxed);
        crate::metrics::rtc_keyframe_requested();
    }

    pub fn totals(&self) -> TrafficTotals {
        TrafficTotals {
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            keyframes_asked: self.keyframes_asked.load(Relaxed),
            keyframes_sent: self.keyframes_sent.load(Relaxed),
        }
    }
}
