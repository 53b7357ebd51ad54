//! Shared counters and a lock-free latency histogram, read by the progress line and
//! the final report.
//!
//! Both are sharded per thread: at millions of messages a second, one shared counter
//! bounced between the load tester's threads cost more CPU than reading the messages.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use serde::Serialize;

/// More shards than the load tester has threads, so each thread writes its own.
const SHARDS: usize = 8;

/// The shard the current thread writes.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// Keeps each shard on its own cache lines (128 bytes: adjacent-line prefetch pairs them).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// A counter that threads add to without contending.
#[derive(Default)]
pub struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.shards[shard()].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// Log-linear buckets: 16 per power of two of microseconds, up to about 70 s.
const SUB_BUCKETS: u32 = 16;
const BUCKETS: usize = 27 * SUB_BUCKETS as usize;

pub struct Histogram {
    shards: Vec<Padded<HistogramShard>>,
}

struct HistogramShard {
    buckets: Box<[AtomicU64]>,
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
        let shard = || {
            Padded(HistogramShard {
                buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
                max: AtomicU64::new(0),
            })
        };
        Histogram {
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        let shard = &self.shards[shard()].0;
        shard.buckets[bucket_of(micros)].fetch_add(1, Relaxed);
        if micros > shard.max.load(Relaxed) {
            shard.max.fetch_max(micros, Relaxed);
        }
    }

    fn bucket(&self, index: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.buckets[index].load(Relaxed))
            .sum()
    }

    fn max(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.max.load(Relaxed))
            .max()
            .unwrap_or(0)
    }

    pub fn count(&self) -> u64 {
        (0..BUCKETS).map(|index| self.bucket(index)).sum()
    }

    /// Forgets what was recorded (to start measuring after a warm-up); what other
    /// threads record meanwhile may land on either side.
    pub fn reset(&self) {
        for shard in &self.shards {
            shard.0.buckets.iter().for_each(|b| b.store(0, Relaxed));
            shard.0.max.store(0, Relaxed);
        }
    }

    /// The bucket counts now, to compare with later ones.
    pub fn counts(&self) -> Counts {
        Counts((0..BUCKETS).map(|index| self.bucket(index)).collect())
    }

    /// The value at quantile `q` (0..=1), in microseconds, to within one bucket (~6%).
    pub fn quantile(&self, q: f64) -> u64 {
        self.counts().quantile(q)
    }

    pub fn summary(&self) -> Latency {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Latency {
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max()),
        }
    }
}

/// A histogram's bucket counts at one moment.
#[derive(Clone)]
pub struct Counts(Vec<u64>);

impl Counts {
    pub fn empty() -> Counts {
        Counts(vec![0; BUCKETS])
    }

    /// What was recorded between `earlier` and these counts.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .zip(&earlier.0)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        )
    }

    /// The value at quantile `q` (0..=1), in microseconds, to within one bucket (~6%);
    /// 0 when nothing was recorded.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.0.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.0.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_floor(index);
            }
        }
        bucket_floor(BUCKETS - 1)
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
    pub connected: Counter,
    pub sent: Counter,
    pub delivered: Counter,
    pub gaps: Counter,
    pub duplicates: Counter,
    pub reorders: Counter,
    pub errors: Counter,
    pub disconnects: Counter,
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
                stats.gaps.add(seq - self.next);
                self.next = seq + 1;
            }
            Less if seq + 1 == self.next => {
                stats.duplicates.add(1);
            }
            Less => {
                stats.reorders.add(1);
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
        // An interval's quantiles see only what was recorded in it.
        let before = h.counts();
        for _ in 0..100 {
            h.record(50_000);
        }
        let interval = h.counts().since(&before);
        assert_eq!(interval.quantile(0.01), bucket_floor(bucket_of(50_000)));
        assert_eq!(Counts::empty().quantile(0.5), 0);
        h.reset();
        assert_eq!((h.count(), h.summary().max_ms), (0, 0.0));
    }

    #[test]
    fn sequence_check_counts_gaps_duplicates_and_reorders() {
        let stats = Stats::default();
        let mut check = SeqCheck::after(10);
        for seq in [11, 12, 12, 15, 13, 16] {
            check.observe(seq, &stats);
        }
        assert_eq!(stats.gaps.get(), 2);
        assert_eq!(stats.duplicates.get(), 1);
        assert_eq!(stats.reorders.get(), 1);
    }
}
