//! The open-loop schedule and the key generator.
//!
//! In an open loop request `i` is due at `start + i / rate`, whatever
//! happened to earlier requests. Its latency is measured from that intended
//! start, not from when a worker got round to sending it, so a stall that
//! holds up later requests shows in their latency instead of silently
//! lowering the request rate (coordinated omission).

use std::time::Duration;

/// When each request of a fixed-rate run is due, relative to the start.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// `rate` requests per second in total; must be positive and finite
    /// (the argument parser guarantees it).
    pub fn new(rate: f64) -> Self {
        Self { rate }
    }

    /// Offset of request `i` from the start.
    pub fn offset(&self, i: u64) -> Duration {
        // Computed from `i` each time rather than accumulated, so rounding
        // does not drift over millions of requests.
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Requests due within `length`: the schedule of a run of that length.
    pub fn requests_within(&self, length: Duration) -> u64 {
        (length.as_secs_f64() * self.rate).ceil() as u64
    }
}

/// Latency of a request from its intended start to its completion, both as
/// offsets from the run's start. A request that was sent late is charged
/// for the wait.
pub fn latency(intended: Duration, completed: Duration) -> Duration {
    completed.saturating_sub(intended)
}

/// A small, fast, seeded generator (SplitMix64): key choice must not cost
/// more than the request, and runs should be repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible for key
    /// spaces far below 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The key with index `i`: fixed width so that a prefix with the last digit
/// dropped selects exactly ten neighbouring keys.
pub fn key(i: u64) -> String {
    format!("bench:{i:010}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_at_fixed_intervals() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(1000), Duration::from_secs(1));
        assert_eq!(s.offset(2500), Duration::from_millis(2500));
        let s = Schedule::new(3.0);
        assert_eq!(s.offset(3), Duration::from_secs(1));
        assert!(s.offset(1) > Duration::from_millis(333) && s.offset(1) < Duration::from_millis(334));
    }

    #[test]
    fn the_schedule_does_not_drift() {
        let s = Schedule::new(300_000.0);
        let n = 300_000u64 * 3600;
        let off = s.offset(n);
        assert!(off.abs_diff(Duration::from_secs(3600)) < Duration::from_micros(1), "{off:?}");
        for i in [0u64, 1, 17, 1_000_000] {
            assert!(s.offset(i + 1) > s.offset(i));
        }
    }

    #[test]
    fn schedule_length() {
        assert_eq!(Schedule::new(1000.0).requests_within(Duration::from_secs(2)), 2000);
        assert_eq!(Schedule::new(3.0).requests_within(Duration::from_millis(500)), 2);
    }

    #[test]
    fn latency_counts_from_the_intended_start() {
        // Due at 10 ms, sent late at 50 ms because of a stall, done at 51 ms:
        // the request took 41 ms from the caller's point of view.
        assert_eq!(latency(Duration::from_millis(10), Duration::from_millis(51)), Duration::from_millis(41));
        assert_eq!(latency(Duration::from_millis(10), Duration::from_millis(5)), Duration::ZERO);
    }

    #[test]
    fn keys_are_fixed_width_and_uniform() {
        assert_eq!(key(42), "bench:0000000042");
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(Rng::new(1).next_u64(), Rng::new(1).next_u64());
    }
}
