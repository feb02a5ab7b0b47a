//! The per-target circuit breaker.
//!
//! `closed` lets everything through and counts consecutive failures; at the
//! threshold the circuit opens. `open` lets nothing through until its cool-down ends;
//! then one probe may go, which moves it to `half_open`. The probe's success closes
//! the circuit; its failure opens it again for twice the previous cool-down (up to a
//! ceiling), so a target that stays down is probed ever more rarely. Deliveries that
//! wait for an open circuit are not attempted, so they spend no attempts.

use std::time::Duration;

use crate::time::Timestamp;

/// When circuits open and how long they stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failures that open a closed circuit.
    pub failures: u32,
    /// The first open period.
    pub cooldown: Duration,
    /// The longest open period, however often the probe fails.
    pub max_cooldown: Duration,
}

impl CircuitPolicy {
    /// The open period after `opens` openings in a row (the first is 1).
    pub fn cooldown_after(&self, opens: u32) -> Duration {
        let doublings = opens.saturating_sub(1).min(30);
        self.cooldown
            .saturating_mul(1_u32 << doublings)
            .min(self.max_cooldown.max(self.cooldown))
    }
}

/// The three states of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// No traffic until the next probe is due.
    Open,
    /// One probe is (or may be) under way; nothing else goes.
    HalfOpen,
}

impl CircuitState {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The state named `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "closed" => Some(Self::Closed),
            "open" => Some(Self::Open),
            "half_open" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// What a circuit lets through right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Any number of requests (other limits permitting).
    Open,
    /// Exactly one request: the probe.
    Probe,
    /// Nothing until this time.
    WaitUntil(Timestamp),
    /// Nothing until the probe under way answers.
    AwaitProbe,
}

/// A target's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Circuit {
    /// The state.
    pub state: CircuitState,
    /// When it entered the state.
    pub since: Timestamp,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// When an open circuit lets its probe through.
    pub next_probe_at: Option<Timestamp>,
    /// Openings in a row without a success in between; sets the cool-down.
    pub opens: u32,
}

impl Circuit {
    /// A closed circuit with no failures.
    pub fn closed(since: Timestamp) -> Self {
        Self {
            state: CircuitState::Closed,
            since,
            consecutive_failures: 0,
            next_probe_at: None,
            opens: 0,
        }
    }

    /// What the circuit lets through at `now`; `probe_in_flight` says whether a request
    /// sent while half-open is still under way.
    pub fn admission(&self, now: Timestamp, probe_in_flight: bool) -> Admission {
        match self.state {
            CircuitState::Closed => Admission::Open,
            CircuitState::Open => match self.next_probe_at {
                Some(at) if at > now => Admission::WaitUntil(at),
                _ => Admission::Probe,
            },
            CircuitState::HalfOpen if probe_in_flight => Admission::AwaitProbe,
            CircuitState::HalfOpen => Admission::Probe,
        }
    }

    /// Records that the probe was sent at `now`.
    pub fn begin_probe(&mut self, now: Timestamp) {
        if self.state == CircuitState::Open {
            self.state = CircuitState::HalfOpen;
            self.since = now;
            self.next_probe_at = None;
        }
    }

    /// Records the success of a request sent at `sent_at`: the circuit closes. A
    /// success of a request sent before the circuit opened says nothing about the
    /// target now, so an open circuit ignores it (and keeps its cool-down).
    pub fn record_success(&mut self, sent_at: Timestamp, now: Timestamp) {
        if self.state == CircuitState::Open && sent_at < self.since {
            return;
        }
        if self.state != CircuitState::Closed {
            self.state = CircuitState::Closed;
            self.since = now;
        }
        self.consecutive_failures = 0;
        self.next_probe_at = None;
        self.opens = 0;
    }

    /// Records a failure: a closed circuit opens at the threshold, a half-open one
    /// opens again with a longer cool-down. A failure reported while open (a request
    /// sent before it opened) only counts.
    pub fn record_failure(&mut self, now: Timestamp, policy: &CircuitPolicy) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let opens = match self.state {
            CircuitState::Closed if self.consecutive_failures >= policy.failures.max(1) => 1,
            CircuitState::HalfOpen => self.opens.saturating_add(1),
            _ => return,
        };
        self.state = CircuitState::Open;
        self.since = now;
        self.opens = opens;
        self.next_probe_at = Some(now.plus(policy.cooldown_after(opens)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CircuitPolicy = CircuitPolicy {
        failures: 3,
        cooldown: Duration::from_secs(30),
        max_cooldown: Duration::from_secs(100),
    };

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + seconds * 1000)
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let mut circuit = Circuit::closed(at(0));
        circuit.record_failure(at(1), &POLICY);
        circuit.record_failure(at(2), &POLICY);
        assert_eq!(circuit.state, CircuitState::Closed);
        assert_eq!(circuit.admission(at(2), false), Admission::Open);
        circuit.record_failure(at(3), &POLICY);
        assert_eq!(circuit.state, CircuitState::Open);
        assert_eq!(circuit.since, at(3));
        assert_eq!(circuit.next_probe_at, Some(at(33)));
        assert_eq!(
            circuit.admission(at(10), false),
            Admission::WaitUntil(at(33))
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut circuit = Circuit::closed(at(0));
        circuit.record_failure(at(1), &POLICY);
        circuit.record_failure(at(2), &POLICY);
        circuit.record_success(at(3), at(3));
        circuit.record_failure(at(4), &POLICY);
        assert_eq!(circuit.state, CircuitState::Closed);
        assert_eq!(circuit.consecutive_failures, 1);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_and_its_success_closes() {
        let mut circuit = Circuit::closed(at(0));
        for s in 1..=3 {
            circuit.record_failure(at(s), &POLICY);
        }
        assert_eq!(circuit.admission(at(33), false), Admission::Probe);
        circuit.begin_probe(at(33));
        assert_eq!(circuit.state, CircuitState::HalfOpen);
        assert_eq!(circuit.admission(at(34), true), Admission::AwaitProbe);
        circuit.record_success(at(34), at(34));
        assert_eq!(circuit.state, CircuitState::Closed);
        assert_eq!(circuit.consecutive_failures, 0);
        assert_eq!(circuit.admission(at(34), false), Admission::Open);
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_ceiling() {
        let mut circuit = Circuit::closed(at(0));
        for s in 1..=3 {
            circuit.record_failure(at(s), &POLICY);
        }
        circuit.begin_probe(at(33));
        circuit.record_failure(at(34), &POLICY);
        assert_eq!(circuit.state, CircuitState::Open);
        assert_eq!(circuit.next_probe_at, Some(at(94)));
        circuit.begin_probe(at(94));
        circuit.record_failure(at(95), &POLICY);
        assert_eq!(circuit.next_probe_at, Some(at(195)), "capped at 100 s");
    }

    #[test]
    fn a_late_success_does_not_skip_the_cooldown() {
        let mut circuit = Circuit::closed(at(0));
        for s in 1..=3 {
            circuit.record_failure(at(s), &POLICY);
        }
        // Sent at 2 s, before the circuit opened at 3 s.
        circuit.record_success(at(2), at(4));
        assert_eq!(circuit.state, CircuitState::Open);
        assert_eq!(circuit.next_probe_at, Some(at(33)));
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cooldown() {
        let mut circuit = Circuit::closed(at(0));
        for s in 1..=3 {
            circuit.record_failure(at(s), &POLICY);
        }
        circuit.record_failure(at(5), &POLICY);
        assert_eq!(circuit.next_probe_at, Some(at(33)));
        assert_eq!(circuit.consecutive_failures, 4);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            assert_eq!(CircuitState::parse(state.as_str()), Some(state));
        }
        assert_eq!(CircuitState::parse("ajar"), None);
    }
}
