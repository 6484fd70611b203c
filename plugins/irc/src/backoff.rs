//! Reconnect delays: exponential from 1 s to 60 s with jitter, so that a
//! server that is down is not hammered (upstream reconnected at once after
//! a lost connection) and many bots do not come back in lockstep.

use std::time::Duration;

/// The first delay.
pub const FIRST: Duration = Duration::from_secs(1);
/// The longest delay.
pub const MAX: Duration = Duration::from_secs(60);

/// The delay sequence of one connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// Starts at [`FIRST`].
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The next delay: a random point in the upper half of the current
    /// step ("equal jitter": never less than half the step, so the
    /// backoff still backs off), then the step doubles up to [`MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(MAX);
        let half = step / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to [`FIRST`] (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_a_minute() {
        let mut b = Backoff::new();
        let steps: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        let bounds = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60];
        for (delay, step) in steps.iter().zip(bounds) {
            let step = Duration::from_secs(step);
            assert!(
                *delay >= step / 2 && *delay <= step,
                "{delay:?} vs {step:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= FIRST);
    }
}
