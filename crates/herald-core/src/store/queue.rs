//! The types of the delivery queue's half of the store contract: event intake,
//! claiming due deliveries under leases, and recording outcomes.
//!
//! **Lanes.** A pending delivery waits in one of two lanes of its target: first
//! attempts, or retries (a delivery attempted before). Claims name how many of each
//! they want from each target, so the scheduler can keep capacity for first attempts
//! and share it fairly; the store only executes the request.
//!
//! **Leases and fencing.** A claim moves a delivery to `delivering`, sets
//! `lease_expires_at` and increments the delivery's fencing token. The claimant must
//! record its outcome before the lease expires; a delivery whose lease has expired is
//! claimable again (its worker is presumed dead), with a new token. An outcome is
//! recorded only if the token still matches, so a worker whose lease was taken over
//! can never overwrite the new owner's result. An expired lease is recovered by
//! putting the delivery back in its lane, due at once. Leases are longer than the longest
//! target timeout (a configuration rule), so while workers are alive no delivery has
//! two requests in flight.
//!
//! **Started at intake.** A new delivery may also be stored already `delivering`,
//! leased to the instance that accepted its event (token [`INTAKE_LEASE_TOKEN`], until
//! [`EventRecord::leased_until`]): that instance starts its attempt as soon as the
//! event is committed, without a claim. Such a delivery is in flight like a claimed
//! one: its outcome is fenced by the token, its lease is renewed or expires, and it
//! counts against its target's in-flight limit.

use std::sync::Arc;

use crate::filter::EventType;
use crate::flow::Circuit;
use crate::id::{DeliveryId, EventId, TargetId};
use crate::model::{Attempt, Delivery, DeliveryStatus, Event, RateLimit, Target};
use crate::outcome::Verdict;
use crate::time::Timestamp;

/// The fencing token of a delivery stored in flight at intake (a claim of a pending
/// delivery increments the token from 0, so this is the token its first claim would
/// have had).
pub const INTAKE_LEASE_TOKEN: i64 = 1;

/// An event and the deliveries its fan-out produced, written together.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The event.
    pub event: Event,
    /// One delivery per target that receives it. Each is `pending`, or `delivering`
    /// when it starts in flight at intake.
    pub deliveries: Vec<Delivery>,
    /// When the lease of the deliveries stored `delivering` expires (their token is
    /// [`INTAKE_LEASE_TOKEN`]); `None` when every delivery is pending.
    pub leased_until: Option<Timestamp>,
}

impl EventRecord {
    /// The lease expiry to store with `delivery`: `None` unless it starts in flight.
    /// One in flight without a `leased_until` gets a lease that has already expired,
    /// so lease recovery makes it due instead of leaving it in flight forever.
    pub fn lease_of(&self, delivery: &Delivery) -> Option<Timestamp> {
        (delivery.status == DeliveryStatus::Delivering)
            .then(|| self.leased_until.unwrap_or(delivery.created_at))
    }
}

/// What inserting an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The event and its deliveries were stored.
    New,
    /// The tenant already has an event with this idempotency key; nothing was stored.
    Duplicate {
        /// The earlier event.
        original: EventId,
        /// How many deliveries the earlier event has.
        deliveries: u32,
    },
}

/// A selection of a tenant's deliveries; absent fields select all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Only deliveries in this status.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries to this target.
    pub target_id: Option<TargetId>,
    /// Only deliveries of this event type.
    pub event_type: Option<EventType>,
    /// Only deliveries created at or after this time.
    pub created_from: Option<Timestamp>,
    /// Only deliveries created before this time.
    pub created_until: Option<Timestamp>,
}

/// How many dead deliveries a redrive puts back per write: a large dead letter queue
/// is redriven in short writes, instead of one that holds the store's writes for as
/// long as it takes.
pub const REQUEUE_BATCH: u64 = 5_000;

/// Which deliveries to put back in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// One delivery, whatever its status, unless an attempt is under way.
    One(DeliveryId),
    /// Dead deliveries the query selects that died before `dead_before`, at most
    /// `at_most` of them.
    Dead {
        /// Which dead deliveries.
        query: DeliveryQuery,
        /// Only those dead (last updated) before this: a redrive done in several
        /// writes never takes again what it already put back and has since died.
        dead_before: Timestamp,
        /// Most to requeue in this write.
        at_most: u64,
    },
}

/// An active target with deliveries waiting, and when each lane's first is due.
#[derive(Debug, Clone)]
pub struct WaitingTarget {
    /// The target, as configured now.
    pub target: Target,
    /// When its earliest first attempt is due, if it has any waiting.
    pub first_due: Option<Timestamp>,
    /// When its earliest retry is due, if it has any waiting.
    pub retry_due: Option<Timestamp>,
    /// Its circuit as last saved (`None`: never saved, so closed).
    pub circuit: Option<Circuit>,
}

/// How many due deliveries to claim from one target, per lane.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequest {
    /// The target.
    pub target_id: TargetId,
    /// Most first attempts to claim.
    pub first_attempts: u32,
    /// Most retries to claim.
    pub retries: u32,
    /// The target's limits across every instance sharing the store.
    pub limits: SharedLimits,
}

/// A target's limits that must hold across every Herald instance sharing the store,
/// not once per instance. Each instance's scheduler keeps them for its own requests;
/// the store enforces them over all instances when claiming, under a per-target lock,
/// so the instance count never multiplies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedLimits {
    /// Most deliveries of the target in flight at once, counting every instance's
    /// (the claimant's concurrency window: `maxInFlight`, less while congested, 1 for
    /// a circuit's probe).
    pub max_in_flight: u32,
    /// The target's rate limit, shared by all instances, if it has one.
    pub rate: Option<RateLimit>,
}

impl SharedLimits {
    /// No limit beyond `max_in_flight` deliveries at once.
    pub fn in_flight(max_in_flight: u32) -> Self {
        Self {
            max_in_flight,
            rate: None,
        }
    }
}

impl ClaimRequest {
    /// How many first attempts and retries may be claimed while `in_flight`
    /// deliveries of the target are under way (by any instance) and, for a
    /// rate-limited target, `tokens` whole tokens are left in its shared bucket. When
    /// less than asked is allowed, the lanes keep their proportions (retries rounded
    /// up, so a lone retry is not starved).
    pub fn granted(&self, in_flight: u64, tokens: Option<u32>) -> (u32, u32) {
        let room = u64::from(self.limits.max_in_flight).saturating_sub(in_flight);
        let mut allowed = u32::try_from(room).unwrap_or(u32::MAX);
        if let Some(tokens) = tokens {
            allowed = allowed.min(tokens);
        }
        let asked = self.first_attempts.saturating_add(self.retries);
        if allowed >= asked {
            return (self.first_attempts, self.retries);
        }
        let retries = (u64::from(allowed) * u64::from(self.retries)).div_ceil(u64::from(asked));
        let retries = u32::try_from(retries).unwrap_or(u32::MAX).min(self.retries);
        (self.first_attempts.min(allowed - retries), retries)
    }
}

/// How much work waits, for metrics and autoscaling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Pending deliveries of active targets due now.
    pub due: u64,
    /// Pending deliveries of active targets due later.
    pub waiting: u64,
    /// Targets whose circuit is open or half-open.
    pub open_circuits: u64,
}

/// A claimed delivery with everything needed to attempt it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The delivery, as it was when claimed.
    pub delivery: Delivery,
    /// The fencing token of this claim; the outcome must carry it.
    pub lease_token: i64,
    /// The event (shared by the claims of one batch that deliver it).
    pub event: Arc<Event>,
    /// The target, as configured when claimed.
    pub target: Arc<Target>,
}

/// What a claim took, and which targets its shared limits held back.
#[derive(Debug, Clone, Default)]
pub struct Claimed {
    /// The deliveries claimed.
    pub claims: Vec<Claim>,
    /// Targets that got less than asked because of their [`SharedLimits`] (or because
    /// another instance was claiming from them at that moment): their lanes may still
    /// have work due, so they should be asked again, not presumed empty.
    pub held_back: Vec<HeldBack>,
}

/// A target a claim's shared limits held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    /// The target.
    pub target_id: TargetId,
    /// When its rate allows the next delivery, if the rate is what held it back
    /// (`None`: its in-flight limit or another claimant did; that changes when some
    /// attempt finishes, perhaps on another instance).
    pub until: Option<Timestamp>,
}

/// An attempt's outcome, to be recorded if the lease is still held.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its target (so the recorder can tell the scheduler when a retry is due).
    pub target_id: TargetId,
    /// The fencing token of the claim that made the attempt.
    pub lease_token: i64,
    /// The attempt, for the log.
    pub attempt: Attempt,
    /// The delivery's new state.
    pub verdict: Verdict,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(first_attempts: u32, retries: u32, max_in_flight: u32) -> ClaimRequest {
        ClaimRequest {
            target_id: TargetId::generate(),
            first_attempts,
            retries,
            limits: SharedLimits::in_flight(max_in_flight),
        }
    }

    #[test]
    fn a_request_within_the_limits_is_granted_whole() {
        assert_eq!(request(3, 2, 10).granted(5, None), (3, 2));
        assert_eq!(request(3, 2, 10).granted(0, Some(5)), (3, 2));
    }

    #[test]
    fn other_instances_in_flight_and_tokens_shrink_the_grant() {
        assert_eq!(request(4, 0, 10).granted(8, None), (2, 0));
        assert_eq!(request(4, 0, 10).granted(12, None), (0, 0));
        assert_eq!(request(4, 0, 10).granted(0, Some(1)), (1, 0));
        assert_eq!(request(4, 0, 10).granted(0, Some(0)), (0, 0));
    }

    #[test]
    fn a_shrunk_grant_keeps_the_lanes_proportions_and_a_lone_retry() {
        assert_eq!(request(6, 2, 4).granted(0, None), (3, 1));
        assert_eq!(request(9, 1, 2).granted(0, None), (1, 1));
        assert_eq!(request(0, 5, 2).granted(0, None), (0, 2));
    }
}
