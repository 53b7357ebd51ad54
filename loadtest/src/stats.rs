//! Shared counters and a lock-free latency histogram, read by the progress line and
//! the final report.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Log-linear buckets: 16 per power of two of microseconds, up to about 70 s.
const SUB_BUCKETS: u32 = 16;
const BUCKETS: usize = 27 * SUB_BUCKETS as usize;

pub struct Histogram {
    buckets: Vec<AtomicU64>,
    max: AtomicU64,
}

fn bucket_of(micros: u64) -> usize {
    if micros < u64::from(SUB_BUCKETS) {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros(); // >= 4
    let offset = (micros >> (octave - 4)) & u64::from(SUB_BUCKETS - 1);
    ((octave - 3) * SUB_BUCKETS + offset as u32).min(BUCKETS as u32 - 1) as usize
}

/// The smallest value of bucket `index` (its representative).
fn bucket_floor(index: usize) -> u64 {
    let index = index as u64;
    let sub = u64::from(SUB_BUCKETS);
    if index < sub {
        return index;
    }
    let octave = index / sub + 3;
    (1 << octave) + ((index % sub) << (octave - 4))
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        self.buckets[bucket_of(micros)].fetch_add(1, Relaxed);
        self.max.fetch_max(micros, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The value at quantile `q` (0..=1), in microseconds, to within one bucket (~6%).
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Relaxed);
            if seen >= rank {
                return bucket_floor(index);
            }
        }
        self.max.load(Relaxed)
    }

    pub fn summary(&self) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max.load(Relaxed)),
        }
    }
}

#[derive(Debug, Serialize, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything the clients count while the test runs.
#[derive(Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub gaps: AtomicU64,
    pub duplicates: AtomicU64,
    pub reorders: AtomicU64,
    pub errors: AtomicU64,
    pub disconnects: AtomicU64,
    pub latency: Histogram,
}

/// Tracks one client's view of one room's sequence.
pub struct SeqCheck {
    next: u64,
}

impl SeqCheck {
    /// Starts after the `seq` the join reply reported.
    pub fn after(seq: u64) -> SeqCheck {
        SeqCheck { next: seq + 1 }
    }

    pub fn observe(&mut self, seq: u64, stats: &Stats) {
        use std::cmp::Ordering::*;
        match seq.cmp(&self.next) {
            Equal => self.next += 1,
            Greater => {
                stats.gaps.fetch_add(seq - self.next, Relaxed);
                self.next = seq + 1;
            }
            Less if seq + 1 == self.next => {
                stats.duplicates.fetch_add(1, Relaxed);
            }
            Less => {
                stats.reorders.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_within_their_width() {
        for micros in [
            0, 1, 15, 16, 17, 100, 999, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let floor = bucket_floor(bucket_of(micros));
            assert!(
                floor <= micros && micros - floor <= micros / 16 + 1,
                "{micros} -> {floor}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let h = Histogram::default();
        for micros in 1..=1000 {
            h.record(micros);
        }
        let p50 = h.quantile(0.5);
        assert!((470..=500).contains(&p50), "{p50}");
        assert!(h.quantile(0.99) >= 930);
        assert_eq!(h.summary().max_ms, 1.0);
    }

    #[test]
    fn sequence_check_counts_gaps_duplicates_and_reorders() {
        let stats = Stats::default();
        let mut check = SeqCheck::after(10);
        for seq in [11, 12, 12, 15, 13, 16] {
            check.observe(seq, &stats);
        }
        assert_eq!(stats.gaps.load(Relaxed), 2);
        assert_eq!(stats.duplicates.load(Relaxed), 1);
        assert_eq!(stats.reorders.load(Relaxed), 1);
    }
}
