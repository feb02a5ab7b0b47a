//! Events: what producers submit, stored once however many targets receive them.

use bytes::Bytes;

use crate::filter::EventType;
use crate::id::{EventId, TenantId};
use crate::time::Timestamp;
use crate::validation::ValidationError;

/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Longest content type, in bytes.
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// A producer's key that makes a resubmission of the same event a no-op: 1–255
/// printable ASCII characters, unique per tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key sent in `field`.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(ValidationError::new(field, "must be printable ASCII"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The media type a payload is delivered with, e.g. `application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType(String);

impl ContentType {
    /// The content type of envelope-mode events.
    pub fn json() -> Self {
        Self("application/json".to_owned())
    }

    /// Validates a content type sent in `field` (a header value, so printable ASCII).
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        let text = text.trim();
        if text.is_empty() || text.len() > MAX_CONTENT_TYPE_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {MAX_CONTENT_TYPE_LEN} characters"),
            ));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
            || !text.contains('/')
        {
            return Err(ValidationError::new(
                field,
                format!(
                    "{} is not a media type like application/json",
                    crate::validation::quoted(text)
                ),
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The content type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's id, sent to targets as `webhook-id`.
    pub id: EventId,
    /// The tenant that published it.
    pub tenant_id: TenantId,
    /// What happened, e.g. `core.orders.created.v1`.
    pub event_type: EventType,
    /// The body delivered to targets, byte for byte as received.
    pub payload: Bytes,
    /// The Content-Type the payload is delivered with.
    pub content_type: ContentType,
    /// The producer's deduplication key, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// When Herald accepted it.
    pub created_at: Timestamp,
}

/// What a producer submits.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// The body to deliver.
    pub payload: Bytes,
    /// Its media type.
    pub content_type: ContentType,
    /// Optional deduplication key.
    pub idempotency_key: Option<IdempotencyKey>,
}
