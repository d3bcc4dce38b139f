//! `ringmq.disk.write.mbps`: a token bucket on appended bytes, so a run on a fast disk can
//! emulate a slower disk class (the seeds' high I/O class caps at 150 MB/s). Each shard
//! has its own bucket with an equal share of the rate (no state shared across threads).
//! An append that overdraws the bucket waits for the deficit; later appends wait behind
//! it, so the long-run rate is the cap and the burst is a tenth of a second.

use std::cell::RefCell;
use std::time::{Duration, Instant};

pub struct WriteThrottle {
    /// Bytes per second for this shard; 0 disables the throttle.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl WriteThrottle {
    pub fn new(bytes_per_second: f64) -> Self {
        WriteThrottle {
            rate: bytes_per_second,
            burst: bytes_per_second / 10.0,
            tokens: bytes_per_second / 10.0,
            last: Instant::now(),
        }
    }

    /// Takes `bytes` from the bucket at `now`; returns how long the caller must wait.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

thread_local! {
    static THROTTLE: RefCell<Option<WriteThrottle>> = const { RefCell::new(None) };
}

/// Sets this shard thread's share of the cap (called once when the shard starts).
pub fn install(total_mbps: u64, shards: usize) {
    if total_mbps > 0 {
        let rate = total_mbps as f64 * 1e6 / shards.max(1) as f64;
        THROTTLE.with(|t| *t.borrow_mut() = Some(WriteThrottle::new(rate)));
    }
}

/// Waits until `bytes` more may be written on this shard.
pub async fn acquire(bytes: u64) {
    let wait = THROTTLE.with(|t| {
        t.borrow_mut()
            .as_mut()
            .map_or(Duration::ZERO, |t| t.take(bytes, Instant::now()))
    });
    if !wait.is_zero() {
        compio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_is_the_cap() {
        let start = Instant::now();
        let mut t = WriteThrottle::new(100e6);
        // 1 GB in 1 MB appends, each made when the previous wait ended.
        let mut now = start;
        for _ in 0..1000 {
            now += t.take(1_000_000, now);
        }
        let secs = now.duration_since(start).as_secs_f64();
        // The first 0.1 s of burst is free: 1 GB at 100 MB/s takes 9.9 s.
        assert!((9.8..10.0).contains(&secs), "{secs}");
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut t = WriteThrottle::new(100e6);
        assert_eq!(t.take(10_000_000, start), Duration::ZERO);
        let later = start + Duration::from_secs(60);
        assert_eq!(t.take(10_000_000, later), Duration::ZERO);
        assert!(t.take(10_000_000, later) >= Duration::from_millis(99));
    }

    #[test]
    fn zero_rate_never_waits() {
        let mut t = WriteThrottle::new(0.0);
        assert_eq!(t.take(u64::MAX, Instant::now()), Duration::ZERO);
    }
}
