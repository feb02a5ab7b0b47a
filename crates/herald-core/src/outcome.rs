//! What an attempt's result means for its delivery: a pure function of the delivery's
//! progress, the result, the time and the retry policy, so every rule is tested
//! without I/O.

use std::time::Duration;

use crate::model::DeliveryStatus;
use crate::retry::RetryPolicy;
use crate::time::Timestamp;

/// What came of one HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The target answered 2xx.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// The target answered something else (3xx included: redirects are not followed).
    Rejected {
        /// The status code.
        status: u16,
        /// The delay the target asked for with `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// No answer: timeout, connection failure, or an address the SSRF guard refused.
    Failed {
        /// What happened, for the attempt log.
        error: String,
    },
}

impl AttemptResult {
    /// The status code, if the target answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } | Self::Rejected { status, .. } => Some(*status),
            Self::Failed { .. } => None,
        }
    }

    /// Why the attempt failed, or `None` if it succeeded.
    pub fn error(&self) -> Option<String> {
        match self {
            Self::Delivered { .. } => None,
            Self::Rejected { status, .. } if (300..400).contains(status) => {
                Some(format!("HTTP {status} (redirects are not followed)"))
            }
            Self::Rejected { status, .. } => Some(format!("HTTP {status}")),
            Self::Failed { error } => Some(error.clone()),
        }
    }
}

/// How far a delivery had got before this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the current retry window opened.
    pub window_start: Timestamp,
}

/// The delivery's state after the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `Succeeded`, `Pending` (a retry is scheduled) or `Dead`.
    pub status: DeliveryStatus,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the retry is due (`now` when none is scheduled).
    pub next_attempt_at: Timestamp,
    /// The status code of this attempt.
    pub last_status_code: Option<u16>,
    /// Why this attempt failed.
    pub last_error: Option<String>,
}

/// Judges an attempt. `unit` is a uniform random number in `[0, 1)` for the jitter.
///
/// A `Retry-After` on a 429 or 503 replaces the backoff (up to the longest delay). A
/// delivery dies when it has used its attempts, or when its next attempt would fall
/// after its retry window closes.
pub fn judge(
    progress: Progress,
    result: &AttemptResult,
    now: Timestamp,
    policy: &RetryPolicy,
    unit: f64,
) -> Verdict {
    let attempts = progress.attempts.saturating_add(1);
    let verdict = |status, next_attempt_at| Verdict {
        status,
        attempts,
        next_attempt_at,
        last_status_code: result.status_code(),
        last_error: result.error(),
    };
    if matches!(result, AttemptResult::Delivered { .. }) {
        return verdict(DeliveryStatus::Succeeded, now);
    }
    if policy.max_attempts.is_some_and(|max| attempts >= max) {
        return verdict(DeliveryStatus::Dead, now);
    }
    // A Retry-After of 0 (or a past date) would retry in a busy loop: never sooner than
    // the first retry delay.
    let floor = policy.initial.min(policy.max_delay);
    let delay = requested_delay(result).map_or_else(
        || policy.backoff(attempts, unit),
        |asked| asked.clamp(floor, policy.max_delay),
    );
    let next = now.plus(delay);
    let window_closes = progress.window_start.plus(policy.max_age);
    if next > window_closes {
        return verdict(DeliveryStatus::Dead, now);
    }
    verdict(DeliveryStatus::Pending, next)
}

/// The delay a 429 or 503 asked for.
fn requested_delay(result: &AttemptResult) -> Option<Duration> {
    match result {
        AttemptResult::Rejected {
            status: 429 | 503,
            retry_after,
        } => *retry_after,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn policy(max_attempts: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(5),
            max_delay: Duration::from_secs(3600),
            max_age: Duration::from_secs(86_400),
            max_attempts,
        }
    }

    fn fresh(attempts: u32) -> Progress {
        Progress {
            attempts,
            window_start: Timestamp::from_millis(NOW),
        }
    }

    fn rejected(status: u16, retry_after: Option<u64>) -> AttemptResult {
        AttemptResult::Rejected {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn success_ends_the_delivery() {
        let verdict = judge(
            fresh(2),
            &AttemptResult::Delivered { status: 204 },
            Timestamp::from_millis(NOW),
            &policy(None),
            0.5,
        );
        assert_eq!(verdict.status, DeliveryStatus::Succeeded);
        assert_eq!(verdict.attempts, 3);
        assert_eq!(verdict.last_status_code, Some(204));
        assert_eq!(verdict.last_error, None);
    }

    #[test]
    fn failures_schedule_a_jittered_retry_within_the_ceiling() {
        let now = Timestamp::from_millis(NOW);
        for (attempts_before, unit, expected_delay_ms) in [
            (0, 0.5, 2_500),
            (1, 0.5, 5_000),
            (2, 1.0, 20_000),
            (3, 0.25, 10_000),
        ] {
            let verdict = judge(
                fresh(attempts_before),
                &rejected(500, None),
                now,
                &policy(None),
                unit,
            );
            assert_eq!(verdict.status, DeliveryStatus::Pending);
            assert_eq!(
                verdict.next_attempt_at.as_millis() - NOW,
                expected_delay_ms,
                "after attempt {}",
                attempts_before + 1
            );
            assert_eq!(verdict.last_error.as_deref(), Some("HTTP 500"));
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only() {
        let now = Timestamp::from_millis(NOW);
        let on_429 = judge(fresh(0), &rejected(429, Some(120)), now, &policy(None), 0.5);
        assert_eq!(on_429.next_attempt_at.as_millis() - NOW, 120_000);
        let on_503 = judge(fresh(0), &rejected(503, Some(7)), now, &policy(None), 0.5);
        assert_eq!(on_503.next_attempt_at.as_millis() - NOW, 7_000);
        let on_500 = judge(fresh(0), &rejected(500, Some(120)), now, &policy(None), 0.5);
        assert_eq!(
            on_500.next_attempt_at.as_millis() - NOW,
            2_500,
            "ignored on a 500"
        );
        let immediately = judge(fresh(0), &rejected(429, Some(0)), now, &policy(None), 0.5);
        assert_eq!(
            immediately.next_attempt_at.as_millis() - NOW,
            5_000,
            "Retry-After: 0 waits the first retry delay"
        );
        let too_long = judge(
            fresh(0),
            &rejected(429, Some(86_000)),
            now,
            &policy(None),
            0.5,
        );
        assert_eq!(
            too_long.next_attempt_at.as_millis() - NOW,
            3_600_000,
            "capped at the longest delay"
        );
    }

    #[test]
    fn redirects_are_failures() {
        let verdict = judge(
            fresh(0),
            &rejected(302, None),
            Timestamp::from_millis(NOW),
            &policy(None),
            0.5,
        );
        assert_eq!(verdict.status, DeliveryStatus::Pending);
        assert!(
            verdict
                .last_error
                .is_some_and(|e| e.contains("redirects are not followed"))
        );
    }

    #[test]
    fn the_attempt_limit_kills() {
        let verdict = judge(
            fresh(2),
            &rejected(500, None),
            Timestamp::from_millis(NOW),
            &policy(Some(3)),
            0.5,
        );
        assert_eq!(verdict.status, DeliveryStatus::Dead);
        assert_eq!(verdict.attempts, 3);
        let verdict = judge(
            fresh(1),
            &rejected(500, None),
            Timestamp::from_millis(NOW),
            &policy(Some(3)),
            0.5,
        );
        assert_eq!(verdict.status, DeliveryStatus::Pending);
    }

    #[test]
    fn the_maximum_age_kills_when_the_next_attempt_would_be_too_late() {
        let window_start = Timestamp::from_millis(NOW);
        let progress = Progress {
            attempts: 5,
            window_start,
        };
        let almost_a_day = Timestamp::from_millis(NOW + 86_400_000 - 1_000);
        let failed = AttemptResult::Failed {
            error: "connection refused".into(),
        };
        let verdict = judge(progress, &failed, almost_a_day, &policy(None), 0.5);
        assert_eq!(verdict.status, DeliveryStatus::Dead);
        assert_eq!(verdict.last_error.as_deref(), Some("connection refused"));
        let early = judge(
            progress,
            &failed,
            Timestamp::from_millis(NOW + 1_000),
            &policy(None),
            0.5,
        );
        assert_eq!(early.status, DeliveryStatus::Pending);
    }
}
