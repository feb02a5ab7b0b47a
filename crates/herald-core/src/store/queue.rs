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

use std::sync::Arc;

use crate::filter::EventType;
use crate::flow::Circuit;
use crate::id::{DeliveryId, EventId, TargetId};
use crate::model::{Attempt, Delivery, DeliveryStatus, Event, Target};
use crate::outcome::Verdict;
use crate::time::Timestamp;

/// An event and the deliveries its fan-out produced, written together.
#[derive(Debug, Clone)]
pub struct EventRecord {
    /// The event.
    pub event: Event,
    /// One delivery per target that receives it.
    pub deliveries: Vec<Delivery>,
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

/// Which deliveries to put back in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// One delivery, whatever its status, unless an attempt is under way.
    One(DeliveryId),
    /// Every dead delivery the query selects.
    Dead(DeliveryQuery),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The target.
    pub target_id: TargetId,
    /// Most first attempts to claim.
    pub first_attempts: u32,
    /// Most retries to claim.
    pub retries: u32,
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
