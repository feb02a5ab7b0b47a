//! What an attempt's result says about its target, as opposed to its delivery (which
//! [`crate::outcome::judge`] decides).

use std::time::Duration;

use crate::outcome::AttemptResult;

/// How a result counts for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The target works: the circuit closes, the failure count resets.
    Healthy,
    /// The target failed: counts towards opening the circuit.
    Unhealthy,
    /// Says nothing about health (a 429 asks for less traffic, a 410 disables).
    Neutral,
}

/// The target-level meaning of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feedback {
    /// How it counts for the circuit breaker.
    pub health: Health,
    /// The target is overloaded (429, 502, 504): shrink its concurrency.
    pub congested: bool,
    /// The target asked, with `Retry-After` on a 429 or 503, to be left alone this long.
    pub pause: Option<Duration>,
    /// The target answered `410 Gone`: it no longer wants deliveries.
    pub gone: bool,
}

/// Classifies a result.
pub fn feedback(result: &AttemptResult) -> Feedback {
    let plain = |health| Feedback {
        health,
        congested: false,
        pause: None,
        gone: false,
    };
    match result {
        AttemptResult::Delivered { .. } => plain(Health::Healthy),
        AttemptResult::Failed { .. } => plain(Health::Unhealthy),
        AttemptResult::Rejected { status: 410, .. } => Feedback {
            gone: true,
            ..plain(Health::Neutral)
        },
        AttemptResult::Rejected {
            status: 429,
            retry_after,
        } => Feedback {
            congested: true,
            pause: *retry_after,
            ..plain(Health::Neutral)
        },
        AttemptResult::Rejected {
            status: 503,
            retry_after,
        } => Feedback {
            pause: *retry_after,
            ..plain(Health::Unhealthy)
        },
        AttemptResult::Rejected {
            status: 502 | 504, ..
        } => Feedback {
            congested: true,
            ..plain(Health::Unhealthy)
        },
        AttemptResult::Rejected { .. } => plain(Health::Unhealthy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, retry_after: Option<u64>) -> AttemptResult {
        AttemptResult::Rejected {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn success_is_healthy_and_failures_are_not() {
        assert_eq!(
            feedback(&AttemptResult::Delivered { status: 204 }).health,
            Health::Healthy
        );
        assert_eq!(feedback(&rejected(500, None)).health, Health::Unhealthy);
        assert_eq!(feedback(&rejected(404, None)).health, Health::Unhealthy);
        let timeout = AttemptResult::Failed {
            error: "timed out".into(),
        };
        assert_eq!(feedback(&timeout).health, Health::Unhealthy);
    }

    #[test]
    fn overload_answers_slow_the_target_down() {
        let too_many = feedback(&rejected(429, Some(2)));
        assert_eq!(too_many.health, Health::Neutral);
        assert!(too_many.congested);
        assert_eq!(too_many.pause, Some(Duration::from_secs(2)));
        assert!(feedback(&rejected(502, None)).congested);
        assert!(feedback(&rejected(504, None)).congested);
        assert!(!feedback(&rejected(500, None)).congested);
        assert_eq!(
            feedback(&rejected(503, Some(7))).pause,
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn gone_disables_without_counting_as_a_failure() {
        let gone = feedback(&rejected(410, None));
        assert!(gone.gone);
        assert_eq!(gone.health, Health::Neutral);
    }
}
