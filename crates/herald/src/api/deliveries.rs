//! `/v1/deliveries` and `/v1/dead-letters`: where every delivery stands, its attempts,
//! and putting deliveries back in the queue.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::filter::EventType;
use herald_core::id::{DeliveryId, TargetId, TenantId};
use herald_core::model::{Attempt, Delivery, DeliveryStatus};
use herald_core::store::DeliveryQuery;
use herald_core::time::Timestamp;
use herald_core::validation::{ValidationError, quoted};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::TenantAccess;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListOf, page_request};
use super::wire::{path_id, rfc3339};

/// Filters of the delivery and dead-letter lists.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivering`, `succeeded` or `dead` (ignored for dead letters).
    status: Option<String>,
    /// Only deliveries to this target.
    target_id: Option<String>,
    /// Only deliveries of this event type.
    event_type: Option<String>,
    /// Items per page, 1 to 250 (default 50).
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// A delivery: one event for one target.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryOut {
    #[schema(example = "dlv_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    event_id: String,
    target_id: String,
    subscription_id: String,
    event_type: String,
    /// `pending`, `delivering`, `succeeded` or `dead`.
    status: String,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

/// One HTTP request made for a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    id: String,
    number: u32,
    started_at: String,
    duration_ms: u32,
    status_code: Option<u16>,
    error: Option<String>,
    /// Response headers, in order, as `[name, value]` pairs.
    response_headers: Vec<(String, String)>,
    /// The start of the response body (at most 4 KiB).
    response_body: Option<String>,
}

/// Which dead letters to redrive; absent fields select all.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedriveIn {
    target_id: Option<String>,
    event_type: Option<String>,
    /// Deliveries created at or after this RFC 3339 time.
    from: Option<String>,
    /// Deliveries created before this RFC 3339 time.
    until: Option<String>,
}

/// How many deliveries went back in the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveOut {
    requeued: u64,
}

/// The wire form of a delivery.
pub fn delivery_out(delivery: Delivery) -> DeliveryOut {
    let waiting = matches!(delivery.status, DeliveryStatus::Pending);
    DeliveryOut {
        id: delivery.id.to_string(),
        event_id: delivery.event_id.to_string(),
        target_id: delivery.target_id.to_string(),
        subscription_id: delivery.subscription_id.to_string(),
        event_type: delivery.event_type.to_string(),
        status: delivery.status.as_str().to_owned(),
        attempts: delivery.attempts,
        next_attempt_at: waiting.then(|| rfc3339(delivery.next_attempt_at)),
        last_status_code: delivery.last_status_code,
        last_error: delivery.last_error,
        created_at: rfc3339(delivery.created_at),
        updated_at: rfc3339(delivery.updated_at),
    }
}

fn attempt_out(attempt: Attempt) -> AttemptOut {
    AttemptOut {
        id: attempt.id.to_string(),
        number: attempt.number,
        started_at: rfc3339(attempt.started_at),
        duration_ms: attempt.duration_ms,
        status_code: attempt.status_code,
        error: attempt.error,
        response_headers: attempt.response_headers,
        response_body: attempt.response_body,
    }
}

fn query(target: Option<&str>, event_type: Option<&str>) -> Result<DeliveryQuery, ValidationError> {
    Ok(DeliveryQuery {
        target_id: target
            .map(|t| {
                TargetId::parse(t).ok_or_else(|| {
                    ValidationError::new("targetId", format!("{} is not a target id", quoted(t)))
                })
            })
            .transpose()?,
        event_type: event_type
            .map(|t| EventType::parse(t, "eventType"))
            .transpose()?,
        ..DeliveryQuery::default()
    })
}

fn timestamp(text: Option<&str>, field: &str) -> Result<Option<Timestamp>, ValidationError> {
    text.map(|t| {
        humantime::parse_rfc3339_weak(t)
            .map(Timestamp::from_system_time)
            .map_err(|_| {
                ValidationError::new(field, format!("{} is not an RFC 3339 time", quoted(t)))
            })
    })
    .transpose()
}

fn delivery_id(text: &str) -> Result<DeliveryId, ApiError> {
    path_id(text, DeliveryId::parse, "delivery")
}

fn list_query(params: &DeliveryParams) -> Result<DeliveryQuery, ApiError> {
    let mut selection = query(params.target_id.as_deref(), params.event_type.as_deref())
        .map_err(|e| ApiError::InvalidQuery(e.to_string()))?;
    selection.status = params
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                ApiError::InvalidQuery(format!(
                    "status {} is not one of pending, delivering, succeeded, dead",
                    quoted(s)
                ))
            })
        })
        .transpose()?;
    Ok(selection)
}

/// List the tenant's deliveries.
#[utoipa::path(get, path = "/v1/deliveries", tag = "deliveries", params(DeliveryParams),
    responses((status = 200, description = "A page of deliveries", body = ListOf<DeliveryOut>)))]
pub async fn list_deliveries(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<ListOf<DeliveryOut>>, ApiError> {
    list_page(&state, &tenant, &params, None).await
}

/// List the tenant's dead letters (deliveries whose retries ran out).
#[utoipa::path(get, path = "/v1/dead-letters", tag = "deliveries", params(DeliveryParams),
    responses((status = 200, description = "A page of dead deliveries", body = ListOf<DeliveryOut>)))]
pub async fn list_dead_letters(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<ListOf<DeliveryOut>>, ApiError> {
    list_page(&state, &tenant, &params, Some(DeliveryStatus::Dead)).await
}

/// One page of the deliveries `params` select; `status`, when given, overrides theirs.
async fn list_page(
    state: &AppState,
    tenant: &TenantId,
    params: &DeliveryParams,
    status: Option<DeliveryStatus>,
) -> Result<Json<ListOf<DeliveryOut>>, ApiError> {
    let page = page_request(params.limit, params.cursor.as_deref(), |id| {
        DeliveryId::parse(id).is_some()
    })?;
    let mut selection = list_query(params)?;
    if status.is_some() {
        selection.status = status;
    }
    let deliveries = state
        .management
        .deliveries(tenant, &selection, &page)
        .await?;
    Ok(Json(ListOf::from_page(deliveries, delivery_out)))
}

/// Get a delivery.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, description = "The delivery", body = DeliveryOut)))]
pub async fn get_delivery(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeliveryOut>, ApiError> {
    let delivery = state
        .management
        .delivery(&tenant, &delivery_id(&id)?)
        .await?;
    Ok(Json(delivery_out(delivery)))
}

/// List a delivery's attempts, oldest first.
#[utoipa::path(get, path = "/v1/deliveries/{id}/attempts", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 200, description = "The attempts", body = ListOf<AttemptOut>)))]
pub async fn list_attempts(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ListOf<AttemptOut>>, ApiError> {
    let attempts = state
        .management
        .attempts(&tenant, &delivery_id(&id)?)
        .await?;
    Ok(Json(ListOf {
        data: attempts.into_iter().map(attempt_out).collect(),
        next_cursor: None,
    }))
}

/// Requeue a delivery now (a dead one too), with a fresh retry window.
#[utoipa::path(post, path = "/v1/deliveries/{id}/retry", tag = "deliveries", params(("id" = String, Path)),
    responses((status = 202, description = "Requeued", body = DeliveryOut),
        (status = 409, description = "An attempt is under way, or the delivery's target was deleted", body = super::error::Problem, content_type = "application/problem+json")))]
pub async fn retry_delivery(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<DeliveryOut>), ApiError> {
    let delivery = state
        .management
        .retry_delivery(&tenant, &delivery_id(&id)?)
        .await?;
    state.hints.rescan();
    Ok((StatusCode::ACCEPTED, Json(delivery_out(delivery))))
}

/// Requeue the dead letters selected by target, event type and creation time.
#[utoipa::path(post, path = "/v1/dead-letters/redrive", tag = "deliveries", request_body = RedriveIn,
    responses((status = 200, description = "How many were requeued", body = RedriveOut)))]
pub async fn redrive(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<RedriveIn>,
) -> Result<Json<RedriveOut>, ApiError> {
    let mut selection = query(input.target_id.as_deref(), input.event_type.as_deref())?;
    selection.created_from = timestamp(input.from.as_deref(), "from")?;
    selection.created_until = timestamp(input.until.as_deref(), "until")?;
    let requeued = state.management.redrive(&tenant, selection).await?;
    if requeued > 0 {
        state.hints.rescan();
    }
    Ok(Json(RedriveOut { requeued }))
}
