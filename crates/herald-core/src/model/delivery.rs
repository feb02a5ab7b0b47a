//! Deliveries (one event for one target) and their attempts.

use std::fmt;

use crate::filter::EventType;
use crate::id::{AttemptId, DeliveryId, EventId, SubscriptionId, TargetId, TenantId};
use crate::time::Timestamp;

/// Where a delivery is in its life.
///
/// `pending` (waiting for its next attempt) → `delivering` (claimed by a worker under a
/// lease) → `succeeded`, back to `pending` with a later `next_attempt_at` (a retry), or
/// `dead` (retries exhausted; kept for inspection and redrive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Claimed by a worker, an attempt under way.
    Delivering,
    /// A target answered 2xx.
    Succeeded,
    /// Retries exhausted.
    Dead,
}

impl DeliveryStatus {
    /// Every status, for parsing and documentation.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Delivering, Self::Succeeded, Self::Dead];

    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivering => "delivering",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
        }
    }

    /// Reads a status name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery's id.
    pub id: DeliveryId,
    /// The tenant owning the event and the target.
    pub tenant_id: TenantId,
    /// The event delivered.
    pub event_id: EventId,
    /// Where it goes.
    pub target_id: TargetId,
    /// The subscription that selected it.
    pub subscription_id: SubscriptionId,
    /// The event's type (copied so deliveries can be listed by it).
    pub event_type: EventType,
    /// Where it is in its life.
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it is next due (meaningful while pending).
    pub next_attempt_at: Timestamp,
    /// The retry window opened at this time: the delivery dies once the window is
    /// older than the maximum age. A manual retry or redrive opens a new window.
    pub window_start: Timestamp,
    /// Status code of the last attempt, if the target answered.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// When the delivery was created (with its event).
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Delivery {
    /// A new pending delivery of `event_id`, due at `now`.
    pub fn new(
        tenant_id: TenantId,
        event_id: EventId,
        event_type: EventType,
        route: (TargetId, SubscriptionId),
        now: Timestamp,
    ) -> Self {
        Self {
            id: DeliveryId::generate(),
            tenant_id,
            event_id,
            target_id: route.0,
            subscription_id: route.1,
            event_type,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            window_start: now,
            last_status_code: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// One HTTP request made for a delivery, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt's id.
    pub id: AttemptId,
    /// The delivery it was made for.
    pub delivery_id: DeliveryId,
    /// The tenant owning the delivery.
    pub tenant_id: TenantId,
    /// 1 for the first attempt.
    pub number: u32,
    /// When the request started.
    pub started_at: Timestamp,
    /// How long it took, in milliseconds.
    pub duration_ms: u32,
    /// The status code, if the target answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did (timeout, connection refused, 500 ...).
    pub error: Option<String>,
    /// The response headers, in order.
    pub response_headers: Vec<(String, String)>,
    /// The start of the response body (truncated), as text.
    pub response_body: Option<String>,
}
