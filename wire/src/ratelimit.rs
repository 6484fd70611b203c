//! Rate limiting for log lines on paths a remote peer can trigger.
//!
//! A flood of malformed or forged messages must not turn into a flood of
//! log lines (that would be a cheap way to fill an operator's disk), yet the
//! operator must still learn that it is happening and how much was hidden.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Lets one event through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct LogLimiter {
    interval_ms: u64,
    /// Milliseconds since `epoch()` of the last event let through, plus one
    /// (0 means "never").
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl LogLimiter {
    /// A limiter that lets one event through per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogLimiter {
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(n)` when the caller should log now, `n` being how many
    /// events were held back since the last logged one; `None` otherwise.
    pub fn check(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_passes_then_counts_suppressed() {
        let limiter = LogLimiter::new(Duration::from_millis(50));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(limiter.check(), Some(2));
    }
}
