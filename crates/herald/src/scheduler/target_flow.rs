//! The scheduler's view of one target: what waits in its lanes, what is in flight,
//! and the limits that decide how much more it may get right now.

use std::sync::Arc;

use herald_core::flow::circuit::Admission;
use herald_core::flow::{Circuit, CircuitState, ConcurrencyWindow, TokenBucket};
use herald_core::model::Target;
use herald_core::store::SharedLimits;
use herald_core::time::Timestamp;

/// Most deliveries claimed from one target in one pass.
const MAX_PER_PASS: u32 = 256;

/// How much a target may be sent now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// Deliveries it may be sent now.
    pub count: u32,
    /// Whether its first-attempt lane has work due now.
    pub first_due: bool,
    /// Whether its retry lane has work due now.
    pub retry_due: bool,
    /// When to look again if `count` is 0 and only time will change that (`None`:
    /// an attempt finishing or a hint will).
    pub wake_at: Option<Timestamp>,
    /// The limits the store enforces across every instance's claims.
    pub limits: SharedLimits,
}

impl Allowance {
    fn none(wake_at: Option<Timestamp>) -> Self {
        Self {
            count: 0,
            first_due: false,
            retry_due: false,
            wake_at,
            limits: SharedLimits::in_flight(0),
        }
    }
}

/// One target's flow-control state.
#[derive(Debug)]
pub struct TargetFlow {
    /// The target as last read.
    pub target: Arc<Target>,
    /// When its first-attempt lane is next due, if it has work.
    pub first_due: Option<Timestamp>,
    /// When its retry lane is next due, if it has work.
    pub retry_due: Option<Timestamp>,
    /// Requests under way.
    pub in_flight: u32,
    /// Requests under way that are retries.
    pub retries_in_flight: u32,
    /// Finished attempts whose outcome the store has not settled yet: the store still
    /// counts them in flight against the shared `maxInFlight`, so they hold their slot.
    pub unsettled: u32,
    /// Adaptive concurrency within `maxInFlight`.
    pub window: ConcurrencyWindow,
    /// The rate limit, if the target has one.
    pub bucket: Option<TokenBucket>,
    /// No traffic before this (the target sent `Retry-After`).
    pub paused_until: Option<Timestamp>,
    /// Not asked again before this: the store held it back under its shared limits
    /// (other instances' traffic counts there too).
    pub held_until: Option<Timestamp>,
    /// The circuit breaker.
    pub circuit: Circuit,
    /// When both lanes are due and only one request may go, whose turn it is.
    pub retry_turn: bool,
    /// The target answered `410 Gone`; this was its `updated_at` then. Nothing is
    /// sent until the store shows a newer version of it or the next rescan, which
    /// finds it disabled; if the disable failed or was not committed yet, the target
    /// is tried again and another 410 repeats the disable (a few extra requests rather
    /// than a target stopped with nothing in the store to say why).
    pub gone_since: Option<Timestamp>,
}

impl TargetFlow {
    /// A target first seen now, with its saved circuit (closed if none was saved).
    pub fn new(target: Arc<Target>, circuit: Option<Circuit>, now: Timestamp) -> Self {
        Self {
            window: ConcurrencyWindow::new(target.max_in_flight.get()),
            bucket: target
                .rate_limit
                .map(|rate| TokenBucket::new(rate.per_second(), now)),
            circuit: circuit.unwrap_or_else(|| Circuit::closed(now)),
            target,
            first_due: None,
            retry_due: None,
            in_flight: 0,
            retries_in_flight: 0,
            unsettled: 0,
            paused_until: None,
            held_until: None,
            retry_turn: false,
            gone_since: None,
        }
    }

    /// Takes a newer configuration of the target.
    pub fn reconfigure(&mut self, target: Arc<Target>, now: Timestamp) {
        // Every claim brings its target: the claims of one batch share one `Arc`, so
        // the usual case is a pointer comparison.
        if Arc::ptr_eq(&target, &self.target) || *target == *self.target {
            return;
        }
        if self
            .gone_since
            .is_some_and(|version| target.updated_at > version)
        {
            self.gone_since = None;
        }
        self.window.set_max(target.max_in_flight.get());
        self.bucket = match (target.rate_limit, self.bucket.take()) {
            (None, _) => None,
            (Some(rate), Some(mut bucket)) => {
                bucket.set_rate(rate.per_second(), now);
                Some(bucket)
            }
            (Some(rate), None) => Some(TokenBucket::new(rate.per_second(), now)),
        };
        self.target = target;
    }

    /// Takes the circuit as saved in the store if it changed state after the one known
    /// here: another instance sharing the store opened, probed or closed it.
    pub fn adopt_circuit(&mut self, saved: Option<Circuit>) {
        if let Some(saved) = saved
            && saved.since > self.circuit.since
        {
            self.circuit = saved;
        }
    }

    /// Whether the scheduler can forget this target: nothing in flight, nothing
    /// waiting, no pause. A circuit that is not closed is saved in the store and read
    /// back when the target has work again.
    pub fn is_idle(&self, now: Timestamp) -> bool {
        self.in_flight == 0
            && self.unsettled == 0
            && self.first_due.is_none()
            && self.retry_due.is_none()
            && self.gone_since.is_none()
            && self.paused_until.is_none_or(|until| until <= now)
    }

    /// How many new deliveries may start in flight at intake now: only while nothing
    /// of its first attempts is queued (they go first), it is not paused, its circuit
    /// is closed and it has no rate limit (tokens are spent by claims), within its
    /// concurrency window.
    pub fn intake_room(&self, now: Timestamp) -> u32 {
        let paused = [self.paused_until, self.held_until]
            .into_iter()
            .flatten()
            .any(|until| until > now);
        if !self.target.active
            || self.gone_since.is_some()
            || self.first_due.is_some()
            || paused
            || self.circuit.state != CircuitState::Closed
            || self.bucket.is_some()
        {
            return 0;
        }
        self.window
            .current()
            .saturating_sub(self.in_flight + self.unsettled)
            .min(MAX_PER_PASS)
    }

    /// How much the target may be sent at `now`, under every limit at once: active,
    /// not paused, circuit, concurrency window, rate.
    pub fn allowance(&mut self, now: Timestamp) -> Allowance {
        if !self.target.active || self.gone_since.is_some() {
            return Allowance::none(None);
        }
        let first_due = self.first_due.is_some_and(|due| due <= now);
        let retry_due = self.retry_due.is_some_and(|due| due <= now);
        if !first_due && !retry_due {
            let next = [self.first_due, self.retry_due].into_iter().flatten().min();
            return Allowance::none(next);
        }
        if let Some(until) = [self.paused_until, self.held_until]
            .into_iter()
            .flatten()
            .filter(|until| *until > now)
            .max()
        {
            return Allowance::none(Some(until));
        }
        // A probe goes alone: across instances too.
        let circuit_cap = match self.circuit.admission(now, self.in_flight > 0) {
            Admission::Open => MAX_PER_PASS,
            Admission::Probe if self.in_flight == 0 => 1,
            Admission::Probe | Admission::AwaitProbe => return Allowance::none(None),
            Admission::WaitUntil(at) => return Allowance::none(Some(at)),
        };
        let room = self
            .window
            .current()
            .saturating_sub(self.in_flight + self.unsettled);
        if room == 0 {
            return Allowance::none(None);
        }
        let tokens = match &mut self.bucket {
            Some(bucket) => match bucket.available(now) {
                0 => return Allowance::none(Some(bucket.next_token_at(now))),
                tokens => tokens,
            },
            None => MAX_PER_PASS,
        };
        Allowance {
            count: circuit_cap.min(room).min(tokens).min(MAX_PER_PASS),
            first_due,
            retry_due,
            wake_at: None,
            limits: SharedLimits {
                max_in_flight: self.window.current().min(circuit_cap),
                rate: self.target.rate_limit,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_core::flow::CircuitPolicy;
    use herald_core::id::TenantId;
    use herald_core::model::{MaxInFlight, NewTarget, RateLimit, TargetUrl};

    use super::*;

    fn ms(millis: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + millis)
    }

    fn flow(max_in_flight: i64, rate: Option<f64>) -> TargetFlow {
        let target = NewTarget {
            url: TargetUrl::parse("https://example.com/", "url").unwrap(),
            description: None,
            secret: None,
            headers: herald_core::model::CustomHeaders::default(),
            rate_limit: rate.map(|r| RateLimit::parse(r, "rate").unwrap()),
            max_in_flight: Some(MaxInFlight::parse(max_in_flight, "max").unwrap()),
            timeout: None,
            active: None,
        }
        .into_target(TenantId::generate(), ms(0));
        let mut flow = TargetFlow::new(Arc::new(target), None, ms(0));
        flow.first_due = Some(ms(0));
        flow
    }

    #[test]
    fn in_flight_requests_use_up_the_window() {
        let mut flow = flow(4, None);
        assert_eq!(flow.allowance(ms(0)).count, 4);
        flow.in_flight = 3;
        assert_eq!(flow.allowance(ms(0)).count, 1);
        flow.in_flight = 4;
        assert_eq!(flow.allowance(ms(0)), Allowance::none(None));
    }

    #[test]
    fn the_rate_limit_says_when_the_next_token_comes() {
        let mut flow = flow(32, Some(20.0));
        assert_eq!(flow.allowance(ms(0)).count, 2);
        if let Some(bucket) = &mut flow.bucket {
            bucket.take(2, ms(0));
        }
        assert_eq!(flow.allowance(ms(0)), Allowance::none(Some(ms(50))));
    }

    #[test]
    fn nothing_before_due_or_while_paused_or_open() {
        let mut flow = flow(32, None);
        flow.first_due = Some(ms(100));
        assert_eq!(flow.allowance(ms(0)), Allowance::none(Some(ms(100))));
        flow.first_due = Some(ms(0));
        flow.paused_until = Some(ms(2_000));
        assert_eq!(flow.allowance(ms(0)), Allowance::none(Some(ms(2_000))));
        flow.paused_until = None;
        let policy = CircuitPolicy {
            failures: 1,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(1),
        };
        flow.circuit.record_failure(ms(0), &policy);
        assert_eq!(flow.allowance(ms(10)), Allowance::none(Some(ms(1_000))));
        assert_eq!(flow.allowance(ms(1_000)).count, 1, "one probe");
        flow.circuit.begin_probe(ms(1_000));
        flow.in_flight = 1;
        assert_eq!(flow.allowance(ms(1_001)).count, 0, "only the probe");
    }

    #[test]
    fn inactive_targets_get_nothing() {
        let mut flow = flow(32, None);
        let mut target = (*flow.target).clone();
        target.active = false;
        flow.reconfigure(Arc::new(target), ms(0));
        assert_eq!(flow.allowance(ms(0)).count, 0);
    }
}
