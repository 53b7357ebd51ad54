//! One viewer track's RTP numbering across a change of upstream. An edge's viewers
//! keep their sessions when the edge pulls again (from the same origin or from the
//! node a publisher came back on), but the new upstream numbers its packets afresh.
//! Forwarded as they are, the jump would look like a replay to the viewer's SRTP
//! (which drops packets far behind the highest seen) and like a stall to its jitter
//! buffer. So each upstream's sequence numbers and timestamps are shifted to carry
//! on from the last packet written. Sans-IO: numbers in, numbers out.

/// The timestamp gap left between the last packet of one upstream and the first of
/// the next: 20 ms at the track's clock rate.
const GAP_PER_SECOND: u32 = 50;

#[derive(Debug)]
pub struct Continuity {
    /// The upstream whose packets were seen last, and written last.
    seen: Option<u32>,
    written: Option<u32>,
    seq_offset: u16,
    timestamp_offset: u32,
    /// The last sequence number and timestamp written.
    last: Option<(u16, u32)>,
    gap: u32,
}

impl Continuity {
    pub fn new(clock_rate: u32) -> Continuity {
        Continuity {
            seen: None,
            written: None,
            seq_offset: 0,
            timestamp_offset: 0,
            last: None,
            gap: clock_rate / GAP_PER_SECOND,
        }
    }

    /// Whether a packet of `upstream` follows packets of another one (a video track
    /// then waits for a keyframe: the new upstream's deltas need its own pictures).
    pub fn switched(&mut self, upstream: u32) -> bool {
        let switched = self.seen.is_some_and(|seen| seen != upstream);
        self.seen = Some(upstream);
        switched
    }

    /// The sequence number and timestamp to write a packet of `upstream` with.
    pub fn rewrite(&mut self, upstream: u32, seq: u16, timestamp: u32) -> (u16, u32) {
        if self.written != Some(upstream) {
            if let Some((last_seq, last_timestamp)) = self.last {
                self.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
                self.timestamp_offset = last_timestamp
                    .wrapping_add(self.gap)
                    .wrapping_sub(timestamp);
            }
            self.written = Some(upstream);
        }
        let out = (
            seq.wrapping_add(self.seq_offset),
            timestamp.wrapping_add(self.timestamp_offset),
        );
        self.last = Some(out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upstream_passes_unchanged() {
        let mut track = Continuity::new(90_000);
        assert!(!track.switched(0));
        assert_eq!(track.rewrite(0, 100, 5_000), (100, 5_000));
        assert_eq!(track.rewrite(0, 99, 4_000), (99, 4_000), "reordered");
        assert_eq!(track.rewrite(0, 101, 8_000), (101, 8_000));
        assert!(!track.switched(0));
    }

    #[test]
    fn a_new_upstream_carries_on_from_the_last_packet_written() {
        let mut track = Continuity::new(90_000);
        track.switched(0);
        track.rewrite(0, 65_535, u32::MAX - 10);
        assert!(track.switched(1));
        // Packets seen but skipped (waiting for a keyframe) leave no gap.
        assert!(!track.switched(1));
        assert_eq!(track.rewrite(1, 7, 1_000), (0, 1_800 - 11));
        assert_eq!(track.rewrite(1, 8, 4_000), (1, 1_800 - 11 + 3_000));
        // And again, from the numbers written.
        assert!(track.switched(2));
        assert_eq!(track.rewrite(2, 40_000, 0), (2, 1_800 - 11 + 3_000 + 1_800));
    }
}
