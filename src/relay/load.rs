//! This node's load for placement: viewers, the process's CPU share of the machine,
//! and media egress per second, sampled between two reports.

use std::time::{Duration, Instant};

use super::traffic::TrafficTotals;

/// The process's CPU time so far (user and system), from `getrusage`.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The weight of the newest sample in the CPU average (an exponential moving
/// average over about three samples).
const CPU_SMOOTHING: f64 = 1.0 / 3.0;

/// Rates between one sample and the next (CPU averaged over a few).
pub struct LoadMeter {
    cores: f64,
    at: Instant,
    cpu: Duration,
    bytes_out: u64,
    /// The last rates measured: CPU percent of the machine, egress bytes per second.
    pub cpu_percent: f64,
    pub egress_bytes_per_s: u64,
}

impl LoadMeter {
    pub fn new(traffic: TrafficTotals) -> LoadMeter {
        LoadMeter {
            cores: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            at: Instant::now(),
            cpu: cpu_time(),
            bytes_out: traffic.bytes_out,
            cpu_percent: 0.0,
            egress_bytes_per_s: 0,
        }
    }

    /// Measures the rates since the last sample.
    pub fn sample(&mut self, traffic: TrafficTotals) {
        self.record(Instant::now(), cpu_time(), traffic);
    }

    /// The rates from the readings at `now`: the process's CPU time so far and the
    /// traffic counters.
    fn record(&mut self, now: Instant, cpu: Duration, traffic: TrafficTotals) {
        let elapsed = now.duration_since(self.at).as_secs_f64();
        if elapsed > 0.0 {
            let busy = cpu.saturating_sub(self.cpu).as_secs_f64();
            let sampled = (100.0 * busy / elapsed / self.cores).min(100.0);
            // Averaged over the last few samples: setting up a burst of viewers
            // (DTLS handshakes) spikes one second's CPU without making the node full.
            self.cpu_percent += CPU_SMOOTHING * (sampled - self.cpu_percent);
            let sent = traffic.bytes_out.saturating_sub(self.bytes_out);
            self.egress_bytes_per_s = (sent as f64 / elapsed) as u64;
        }
        (self.at, self.cpu, self.bytes_out) = (now, cpu, traffic.bytes_out);
    }
}

/// Every node reports its load this often...
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// ...and a report not renewed within this long is dropped (the node is gone).
pub const REPORT_TTL_MS: u64 = 3_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_share_of_the_machine_averaged_over_a_few_samples() {
        let start = Instant::now();
        let mut meter = LoadMeter {
            cores: 2.0,
            at: start,
            cpu: Duration::ZERO,
            bytes_out: 0,
            cpu_percent: 0.0,
            egress_bytes_per_s: 0,
        };
        let traffic = |bytes_out| TrafficTotals {
            bytes_out,
            ..Default::default()
        };
        // One busy core of two for a second: half the machine, a third of it counted.
        meter.record(
            start + Duration::from_secs(1),
            Duration::from_secs(1),
            traffic(1000),
        );
        assert!((meter.cpu_percent - 50.0 / 3.0).abs() < 1e-9);
        assert_eq!(meter.egress_bytes_per_s, 1000);
        // Busy on: the average closes in on 50 %.
        for second in 2..=12 {
            let at = start + Duration::from_secs(second);
            meter.record(at, Duration::from_secs(second), traffic(1000 * second));
        }
        assert!(
            (49.0..50.0).contains(&meter.cpu_percent),
            "{}",
            meter.cpu_percent
        );
        // One idle second does not empty it.
        meter.record(
            start + Duration::from_secs(13),
            Duration::from_secs(12),
            traffic(12_000),
        );
        assert!(meter.cpu_percent > 30.0, "{}", meter.cpu_percent);
        assert_eq!(meter.egress_bytes_per_s, 0);
    }
}
