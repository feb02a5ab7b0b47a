//! `/v1/events`: event intake (JSON envelope, batch, raw) and reading an event back.
//!
//! The payload is never re-serialized: in envelope mode the exact bytes of the
//! `payload` member are stored (via `RawValue`), in raw mode the exact request body.
//! The answer is sent only after the event and its deliveries are committed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_core::filter::EventType;
use herald_core::id::EventId;
use herald_core::model::{ContentType, Event, IdempotencyKey, NewEvent};
use herald_core::service::{Published, ServiceError};
use herald_core::time::Timestamp;
use herald_core::validation::ValidationError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::AppState;
use super::auth::TenantAccess;
use super::deliveries::{DeliveryOut, delivery_out};
use super::error::{ApiError, Quota};
use super::extract::{ApiBytes, ApiPath};
use super::wire::{path_id, rfc3339};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// An event in the JSON envelope.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventIn<'a> {
    /// The event type: dot-separated segments of `[A-Za-z0-9_-]`, 1–255 characters.
    #[serde(rename = "type")]
    #[schema(example = "core.orders.created.v1")]
    event_type: String,
    /// Any JSON; delivered byte for byte as sent, with `Content-Type: application/json`.
    #[serde(borrow)]
    #[schema(value_type = Object)]
    payload: &'a RawValue,
    /// Deduplicates resubmissions per tenant.
    idempotency_key: Option<String>,
}

/// Up to 1,000 events.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn<'a> {
    /// The events; each is accepted or refused on its own.
    #[serde(borrow, deserialize_with = "at_most_a_batch")]
    #[schema(value_type = Vec<EventIn>, max_items = 1000)]
    events: Counted<'a>,
}

/// The first [`MAX_BATCH`] events of a batch, and how many it has in all: the rest are
/// only counted, so an oversized batch costs no memory per event before it is refused.
#[derive(Debug)]
struct Counted<'a> {
    kept: Vec<&'a RawValue>,
    total: usize,
}

fn at_most_a_batch<'de, D>(deserializer: D) -> Result<Counted<'de>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Events;

    impl<'de> serde::de::Visitor<'de> for Events {
        type Value = Counted<'de>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("an array of events")
        }

        fn visit_seq<A>(self, mut events: A) -> Result<Self::Value, A::Error>
        where
            A: serde::de::SeqAccess<'de>,
        {
            let mut kept = Vec::new();
            while kept.len() < MAX_BATCH {
                match events.next_element::<&'de RawValue>()? {
                    Some(event) => kept.push(event),
                    None => {
                        let total = kept.len();
                        return Ok(Counted { kept, total });
                    }
                }
            }
            let mut total = kept.len();
            while events.next_element::<serde::de::IgnoredAny>()?.is_some() {
                total += 1;
            }
            Ok(Counted { kept, total })
        }
    }

    deserializer.deserialize_seq(Events)
}

/// What publishing an event did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedOut {
    /// The event's id (the original's for a duplicate).
    #[schema(example = "evt_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    /// How many deliveries the event has.
    deliveries: u32,
    /// Whether the idempotency key had been used before (nothing new was stored).
    duplicate: bool,
}

/// One item of a batch answer: `status` 202 (accepted), 200 (duplicate) or 4xx with `error`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemOut {
    status: u16,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    published: Option<PublishedOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<super::error::Problem>,
}

/// The batch answer, one item per event in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOut {
    results: Vec<BatchItemOut>,
}

/// An event as stored, with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventOut {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    content_type: String,
    idempotency_key: Option<String>,
    /// The payload, when it is JSON.
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
    /// The payload bytes in base64, always.
    payload_base64: String,
    created_at: String,
    deliveries: Vec<DeliveryOut>,
}

fn published_out(published: Published) -> PublishedOut {
    PublishedOut {
        id: published.id.to_string(),
        deliveries: published.deliveries,
        duplicate: published.duplicate,
    }
}

fn status_of(published: &Published) -> StatusCode {
    if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            "send the body as JSON with `Content-Type: application/json`".into(),
        ))
    }
}

fn check_size(len: usize, state: &AppState) -> Result<(), ApiError> {
    if len > state.max_payload {
        return Err(ApiError::PayloadTooLarge(format!(
            "the payload is {len} bytes; the limit is {} bytes (--max-payload)",
            state.max_payload
        )));
    }
    Ok(())
}

fn key(text: Option<&str>, field: &str) -> Result<Option<IdempotencyKey>, ValidationError> {
    text.map(|k| IdempotencyKey::parse(k, field)).transpose()
}

/// Validates one envelope into a new event.
fn envelope(input: &EventIn<'_>, state: &AppState) -> Result<NewEvent, ApiError> {
    let payload = input.payload.get();
    check_size(payload.len(), state)?;
    Ok(NewEvent {
        event_type: EventType::parse(&input.event_type, "type")?,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        content_type: ContentType::json(),
        idempotency_key: key(input.idempotency_key.as_deref(), "idempotencyKey")?,
    })
}

/// The `RateLimit-*` headers of an admitted publish (none when the tenant is unlimited).
fn quota_headers(quota: Option<Quota>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(quota) = quota {
        quota.write_headers(&mut headers);
    }
    headers
}

/// Publishes on a task of its own, so that a client going away mid-publish cannot cut
/// short what follows the commit: the hand-over of the deliveries it started in flight
/// (they would sit leased, unattempted, until their lease ran out), the hint that wakes
/// the scheduler for those it queued, and the ingest count.
async fn publish_detached(
    state: &AppState,
    tenant: &herald_core::id::TenantId,
    events: Vec<NewEvent>,
) -> Result<Vec<Published>, ApiError> {
    let management = state.management.clone();
    let admission = Arc::clone(&state.admission);
    let hints = Arc::clone(&state.hints);
    let metrics = Arc::clone(&state.metrics);
    let tenant = tenant.clone();
    let publish = tokio::spawn(async move {
        let published = management
            .publish_admitted(&tenant, events, &*admission)
            .await?;
        let new = published.iter().filter(|p| !p.duplicate).count();
        metrics.events_ingested("http", u64::try_from(new).unwrap_or(u64::MAX));
        hints.first_attempts(
            published.iter().flat_map(|p| p.targets.iter().cloned()),
            Timestamp::now(),
        );
        Ok::<_, ServiceError>(published)
    });
    Ok(publish
        .await
        .map_err(|error| ApiError::Internal(Box::new(error)))??)
}

/// Publishes one event under the tenant's ingest limit.
async fn publish_one(
    state: &AppState,
    tenant: &herald_core::id::TenantId,
    event: NewEvent,
) -> Result<(StatusCode, HeaderMap, Json<PublishedOut>), ApiError> {
    let quota = state
        .ingest_limits
        .admit(&state.management, tenant, 1)
        .await?;
    let published = publish_detached(state, tenant, vec![event])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("publish returned nothing".into()))?;
    Ok((
        status_of(&published),
        quota_headers(quota),
        Json(published_out(published)),
    ))
}

/// Publish an event (JSON envelope).
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventIn,
    responses((status = 202, description = "Accepted and durable", body = PublishedOut),
        (status = 200, description = "A duplicate idempotency key: the original event", body = PublishedOut),
        (status = 429, description = "Over the tenant's ingest limit; see `Retry-After`", body = super::error::Problem, content_type = "application/problem+json")))]
pub async fn publish_event(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, HeaderMap, Json<PublishedOut>), ApiError> {
    require_json(&headers)?;
    let input: EventIn<'_> = serde_json::from_slice(&body)?;
    publish_one(&state, &tenant, envelope(&input, &state)?).await
}

/// Publish a raw event: the body is the payload, delivered with the request's Content-Type.
#[utoipa::path(post, path = "/v1/events/{event}", tag = "events",
    params(("event" = String, Path, description = "The event type of the raw event, e.g. `files.uploaded`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Deduplicates resubmissions per tenant")),
    request_body(content = Vec<u8>, content_type = "*/*", description = "Any bytes"),
    responses((status = 202, description = "Accepted and durable", body = PublishedOut),
        (status = 200, description = "A duplicate idempotency key: the original event", body = PublishedOut),
        (status = 429, description = "Over the tenant's ingest limit; see `Retry-After`", body = super::error::Problem, content_type = "application/problem+json")))]
pub async fn publish_raw(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(event_type): ApiPath<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, HeaderMap, Json<PublishedOut>), ApiError> {
    check_size(body.len(), &state)?;
    let header_text = |name: &str| -> Result<Option<&str>, ValidationError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ValidationError::new(name, "must be printable ASCII"))
            })
            .transpose()
    };
    let content_type = header_text("content-type")?.unwrap_or("application/octet-stream");
    let event = NewEvent {
        event_type: EventType::parse(&event_type, "type")?,
        payload: body,
        content_type: ContentType::parse(content_type, "Content-Type")?,
        idempotency_key: key(header_text("idempotency-key")?, "Idempotency-Key")?,
    };
    publish_one(&state, &tenant, event).await
}

/// Publish up to 1,000 events; each is accepted or refused on its own.
#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body = BatchIn,
    responses((status = 200, description = "One result per event, in order", body = BatchOut),
        (status = 429, description = "The valid events are over the tenant's ingest limit; none was accepted", body = super::error::Problem, content_type = "application/problem+json")))]
pub async fn publish_batch(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<(HeaderMap, Json<BatchOut>), ApiError> {
    require_json(&headers).map_err(|_| {
        // `/v1/events/batch` is also where a raw event of type `batch` would go.
        ApiError::UnsupportedMediaType(
            "a batch is sent as JSON with `Content-Type: application/json`; to publish one \
             event of type `batch`, use POST /v1/events with a JSON envelope"
                .into(),
        )
    })?;
    let batch: BatchIn<'_> = serde_json::from_slice(&body)?;
    if batch.events.total > MAX_BATCH {
        return Err(ApiError::PayloadTooLarge(format!(
            "the batch has {} events; at most {MAX_BATCH} are accepted at once",
            batch.events.total
        )));
    }
    let parsed: Vec<Result<NewEvent, ApiError>> = batch
        .events
        .kept
        .iter()
        .map(|raw| {
            serde_json::from_str::<EventIn<'_>>(raw.get())
                .map_err(ApiError::from)
                .and_then(|e| envelope(&e, &state))
        })
        .collect();
    let valid: Vec<NewEvent> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let count = u32::try_from(valid.len()).unwrap_or(u32::MAX);
    let quota = if count > 0 {
        state
            .ingest_limits
            .admit(&state.management, &tenant, count)
            .await?
    } else {
        None
    };
    let mut published = publish_detached(&state, &tenant, valid).await?.into_iter();
    let results = parsed
        .into_iter()
        .map(|item| match item {
            Ok(_) => match published.next() {
                Some(p) => BatchItemOut {
                    status: status_of(&p).as_u16(),
                    published: Some(published_out(p)),
                    error: None,
                },
                None => failed_item(ApiError::Internal(
                    "publish returned too few results".into(),
                )),
            },
            Err(error) => failed_item(error),
        })
        .collect();
    Ok((quota_headers(quota), Json(BatchOut { results })))
}

fn failed_item(error: ApiError) -> BatchItemOut {
    let problem = error.to_problem();
    BatchItemOut {
        status: problem.status,
        published: None,
        error: Some(problem),
    }
}

/// Get an event, its payload and its deliveries.
#[utoipa::path(get, path = "/v1/events/{event}", tag = "events",
    params(("event" = String, Path, description = "The event id (`evt_...`)")),
    responses((status = 200, description = "The event", body = EventOut)))]
pub async fn get_event(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EventOut>, ApiError> {
    let id = path_id(&id, EventId::parse, "event")?;
    let (event, deliveries) = state.management.event(&tenant, &id).await?;
    Ok(Json(event_out(
        event,
        deliveries.into_iter().map(delivery_out).collect(),
    )))
}

fn event_out(event: Event, deliveries: Vec<DeliveryOut>) -> EventOut {
    let is_json = event
        .content_type
        .as_str()
        .split(';')
        .next()
        .is_some_and(|t| t.trim().ends_with("json"));
    let payload = is_json
        .then(|| {
            std::str::from_utf8(&event.payload)
                .ok()
                .and_then(|text| RawValue::from_string(text.to_owned()).ok())
        })
        .flatten();
    EventOut {
        id: event.id.to_string(),
        event_type: event.event_type.to_string(),
        content_type: event.content_type.as_str().to_owned(),
        idempotency_key: event.idempotency_key.map(|k| k.as_str().to_owned()),
        payload,
        payload_base64: STANDARD.encode(&event.payload),
        created_at: rfc3339(event.created_at),
        deliveries,
    }
}
