//! The retry schedule: exponential backoff with full jitter, bounded by a longest
//! delay, a maximum age and optionally a number of attempts.

use std::time::Duration;

/// How failed deliveries are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The ceiling of the first retry's delay; each later ceiling doubles.
    pub initial: Duration,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// A delivery whose retry window is older than this is dead.
    pub max_age: Duration,
    /// A delivery with this many attempts is dead; `None` for no limit.
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// The longest delay after the `failures`-th consecutive failure:
    /// `min(max_delay, initial × 2^(failures − 1))`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial
            .checked_mul(1u32 << doublings.min(31))
            .map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }

    /// The delay after the `failures`-th failure, drawn with full jitter: `unit`
    /// (uniform in `[0, 1)`) scales the ceiling. Never zero, so a failing target is
    /// not retried in a busy loop.
    pub fn backoff(&self, failures: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(failures);
        ceiling
            .mul_f64(unit.clamp(0.0, 1.0))
            .max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max_delay: Duration::from_secs(2 * 3600),
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: None,
        }
    }

    #[test]
    fn ceilings_double_up_to_the_longest_delay() {
        let ceilings: Vec<u64> = (1..=13).map(|n| policy().ceiling(n).as_secs()).collect();
        assert_eq!(
            ceilings,
            [
                5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 7200, 7200
            ]
        );
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_secs(7200));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let policy = policy();
        assert_eq!(policy.backoff(3, 0.0), Duration::from_millis(1));
        assert_eq!(policy.backoff(3, 0.5), Duration::from_secs(10));
        assert_eq!(
            policy.backoff(3, 0.999_999),
            Duration::from_secs(20).mul_f64(0.999_999)
        );
        assert_eq!(
            policy.backoff(3, 7.0),
            Duration::from_secs(20),
            "out-of-range units are clamped"
        );
    }
}
