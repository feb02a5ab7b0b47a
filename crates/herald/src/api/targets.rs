//! `/v1/webhooks/targets`: the endpoints a tenant delivers to.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::flow::Circuit;
use herald_core::id::{TargetId, TenantId};
use herald_core::model::{
    CustomHeaders, Description, MaxInFlight, NewTarget, RateLimit, Target, TargetPatch, TargetUrl,
    Timeout,
};
use herald_core::secret::TargetSecret;
use herald_core::validation::ValidationError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::TenantAccess;
use super::error::ApiError;
use super::extract::{ApiBytes, ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListOf, ListParams};
use super::wire::{not_null, patch_field, path_id, rfc3339};

/// A new target.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetIn {
    /// Where deliveries are POSTed: an absolute http or https URL.
    #[schema(example = "https://hooks.example.com/herald")]
    url: String,
    /// Up to 1,024 characters.
    description: Option<String>,
    /// `whsec_` + base64 of 24–64 bytes; generated when absent.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: Option<String>,
    /// Extra headers sent with every delivery (not Herald's own).
    #[schema(example = json!({"X-Team": "billing"}))]
    headers: Option<BTreeMap<String, String>>,
    /// Deliveries per second (> 0); unlimited when absent.
    rate_limit_per_second: Option<f64>,
    /// Requests in flight at once, 1–10,000 (default 32).
    max_in_flight: Option<i64>,
    /// Request timeout in milliseconds, 1–60,000 (default 10,000).
    timeout_ms: Option<i64>,
    /// Inactive targets receive nothing (default true).
    active: Option<bool>,
}

/// A change to a target; absent fields are kept, `null` clears the optional ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetPatchIn {
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    url: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>, nullable)]
    description: Option<Option<String>>,
    /// Replaces all custom headers.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    headers: Option<Option<BTreeMap<String, String>>>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<f64>, nullable)]
    rate_limit_per_second: Option<Option<f64>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<i64>)]
    max_in_flight: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<i64>)]
    timeout_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<bool>)]
    active: Option<Option<bool>>,
}

/// A target. Its secret is shown only when created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetOut {
    #[schema(example = "tgt_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    url: String,
    description: Option<String>,
    headers: BTreeMap<String, String>,
    rate_limit_per_second: Option<f64>,
    max_in_flight: u32,
    timeout_ms: u64,
    active: bool,
    /// Why Herald switched the target off (it answered 410 Gone); cleared when
    /// `active` is set by hand.
    disabled_reason: Option<String>,
    /// The circuit breaker (shown when one target is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit: Option<CircuitOut>,
    created_at: String,
    updated_at: String,
}

/// A target's circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitOut {
    /// `closed` (traffic flows), `open` (none until the next probe) or `half_open`
    /// (one probe under way).
    #[schema(example = "closed")]
    state: &'static str,
    /// When it entered this state.
    since: String,
    /// Failures in a row since the last success.
    consecutive_failures: u32,
    /// When an open circuit lets its probe through.
    next_probe_at: Option<String>,
}

fn circuit_out(circuit: Circuit) -> CircuitOut {
    CircuitOut {
        state: circuit.state.as_str(),
        since: rfc3339(circuit.since),
        consecutive_failures: circuit.consecutive_failures,
        next_probe_at: circuit.next_probe_at.map(rfc3339),
    }
}

/// A target with its circuit.
async fn with_circuit(
    state: &AppState,
    tenant: &TenantId,
    target: Target,
) -> Result<TargetOut, ApiError> {
    let circuit = state.management.target_circuit(tenant, &target).await?;
    let mut out = target_out(target);
    out.circuit = Some(circuit_out(circuit));
    Ok(out)
}

/// A target just created, with its signing secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCreated {
    #[serde(flatten)]
    target: TargetOut,
    /// The signing secret (`whsec_...`); verify deliveries with it.
    secret: String,
}

fn target_out(target: Target) -> TargetOut {
    TargetOut {
        id: target.id.to_string(),
        url: target.url.as_str().to_owned(),
        description: target.description.map(|d| d.as_str().to_owned()),
        headers: target.headers.as_map().clone(),
        rate_limit_per_second: target.rate_limit.map(RateLimit::per_second),
        max_in_flight: target.max_in_flight.get(),
        timeout_ms: target.timeout.as_millis(),
        active: target.active,
        disabled_reason: target.disabled_reason,
        circuit: None,
        created_at: rfc3339(target.created_at),
        updated_at: rfc3339(target.updated_at),
    }
}

fn description(text: Option<String>) -> Result<Option<Description>, ValidationError> {
    text.map(|text| Description::parse(&text, "description"))
        .transpose()
}

fn headers(map: Option<BTreeMap<String, String>>) -> Result<CustomHeaders, ValidationError> {
    map.map_or_else(
        || Ok(CustomHeaders::default()),
        |map| CustomHeaders::parse(map, "headers"),
    )
}

fn rate_limit(value: Option<f64>) -> Result<Option<RateLimit>, ValidationError> {
    value
        .map(|rate| RateLimit::parse(rate, "rateLimitPerSecond"))
        .transpose()
}

impl TargetIn {
    fn into_new_target(self) -> Result<NewTarget, ValidationError> {
        Ok(NewTarget {
            url: TargetUrl::parse(&self.url, "url")?,
            description: description(self.description)?,
            secret: self
                .secret
                .map(|s| TargetSecret::parse(&s, "secret"))
                .transpose()?,
            headers: headers(self.headers)?,
            rate_limit: rate_limit(self.rate_limit_per_second)?,
            max_in_flight: self
                .max_in_flight
                .map(|n| MaxInFlight::parse(n, "maxInFlight"))
                .transpose()?,
            timeout: self
                .timeout_ms
                .map(|ms| Timeout::parse_millis(ms, "timeoutMs"))
                .transpose()?,
            active: self.active,
        })
    }
}

impl TargetPatchIn {
    fn into_patch(self) -> Result<TargetPatch, ValidationError> {
        Ok(TargetPatch {
            url: not_null(self.url, "url")?
                .map(|url| TargetUrl::parse(&url, "url"))
                .transpose()?,
            description: self.description.map(description).transpose()?,
            headers: not_null(self.headers, "headers")?
                .map(|map| headers(Some(map)))
                .transpose()?,
            rate_limit: self.rate_limit_per_second.map(rate_limit).transpose()?,
            max_in_flight: not_null(self.max_in_flight, "maxInFlight")?
                .map(|n| MaxInFlight::parse(n, "maxInFlight"))
                .transpose()?,
            timeout: not_null(self.timeout_ms, "timeoutMs")?
                .map(|ms| Timeout::parse_millis(ms, "timeoutMs"))
                .transpose()?,
            active: not_null(self.active, "active")?,
        })
    }
}

fn target_id(text: &str) -> Result<TargetId, ApiError> {
    path_id(text, TargetId::parse, "target")
}

/// Create a target; its secret is generated unless given.
#[utoipa::path(post, path = "/v1/webhooks/targets", tag = "targets", request_body = TargetIn,
    responses((status = 201, description = "Created; the secret is included", body = TargetCreated)))]
pub async fn create_target(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<TargetIn>,
) -> Result<(StatusCode, Json<TargetCreated>), ApiError> {
    let target = state
        .management
        .create_target(&tenant, input.into_new_target()?)
        .await?;
    let secret = target.secret.expose().to_owned();
    let created = TargetCreated {
        target: target_out(target),
        secret,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List the tenant's targets.
#[utoipa::path(get, path = "/v1/webhooks/targets", tag = "targets", params(ListParams),
    responses((status = 200, description = "A page of targets", body = ListOf<TargetOut>)))]
pub async fn list_targets(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListOf<TargetOut>>, ApiError> {
    let page = params.page(|id| TargetId::parse(id).is_some())?;
    let targets = state.management.targets(&tenant, &page).await?;
    Ok(Json(ListOf::from_page(targets, target_out)))
}

/// Get a target.
#[utoipa::path(get, path = "/v1/webhooks/targets/{id}", tag = "targets", params(("id" = String, Path)),
    responses((status = 200, description = "The target", body = TargetOut)))]
pub async fn get_target(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TargetOut>, ApiError> {
    let target = state.management.target(&tenant, &target_id(&id)?).await?;
    Ok(Json(with_circuit(&state, &tenant, target).await?))
}

/// Change a target.
#[utoipa::path(patch, path = "/v1/webhooks/targets/{id}", tag = "targets", params(("id" = String, Path)),
    request_body = TargetPatchIn,
    responses((status = 200, description = "The changed target", body = TargetOut)))]
pub async fn update_target(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<TargetPatchIn>,
) -> Result<Json<TargetOut>, ApiError> {
    let id = target_id(&id)?;
    let target = state
        .management
        .update_target(&tenant, &id, input.into_patch()?)
        .await?;
    // A target switched back on (or with new limits) should get its waiting work now.
    state.hints.rescan();
    Ok(Json(with_circuit(&state, &tenant, target).await?))
}

/// Delete a target and the subscriptions that use it. Its deliveries still waiting or
/// in flight, and its dead ones, are deleted with it; its succeeded ones stay listed,
/// as history, until retention removes their events.
#[utoipa::path(delete, path = "/v1/webhooks/targets/{id}", tag = "targets", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_target(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_target(&tenant, &target_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Optional input of a secret rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// The new secret; generated when absent.
    secret: Option<String>,
}

/// The new secret, and until when the old one keeps signing beside it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedOut {
    secret: String,
    previous_secret_expires_at: Option<String>,
}

/// Rotate a target's secret; the old one keeps signing for 24 hours (two signatures).
#[utoipa::path(post, path = "/v1/webhooks/targets/{id}/rotate-secret", tag = "targets",
    params(("id" = String, Path)), request_body(content = Option<RotateIn>, description = "Optional; empty body generates a secret"),
    responses((status = 200, description = "Rotated", body = RotatedOut)))]
pub async fn rotate_secret(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<RotatedOut>, ApiError> {
    let id = target_id(&id)?;
    let input: RotateIn = if body.iter().all(u8::is_ascii_whitespace) {
        RotateIn::default()
    } else {
        serde_json::from_slice(&body)?
    };
    let secret = input
        .secret
        .map(|s| TargetSecret::parse(&s, "secret"))
        .transpose()?;
    let target = state.management.rotate_secret(&tenant, &id, secret).await?;
    Ok(Json(RotatedOut {
        secret: target.secret.expose().to_owned(),
        previous_secret_expires_at: target.previous_secret.map(|p| rfc3339(p.expires_at)),
    }))
}
