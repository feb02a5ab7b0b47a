//! `/v1/webhooks/filters`: named sets of event-type patterns.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::id::FilterId;
use herald_core::model::{Description, Filter, FilterPatch, FilterPatterns, NewFilter};
use herald_core::validation::ValidationError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::TenantAccess;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListOf, ListParams};
use super::wire::{not_null, patch_field, path_id, rfc3339};

/// A new filter.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterIn {
    /// 1–100 patterns: an event type, `prefix.*`, or `*`.
    #[schema(example = json!(["core.orders.*", "core.refunds.created.v1"]))]
    events: Vec<String>,
    /// Up to 1,024 characters.
    description: Option<String>,
}

/// A change to a filter; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilterPatchIn {
    /// Replaces the whole pattern list.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<Vec<String>>)]
    events: Option<Option<Vec<String>>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>, nullable)]
    description: Option<Option<String>>,
}

/// A filter.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterOut {
    #[schema(example = "flt_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    events: Vec<String>,
    description: Option<String>,
    created_at: String,
    updated_at: String,
}

fn filter_out(filter: Filter) -> FilterOut {
    FilterOut {
        id: filter.id.to_string(),
        events: filter
            .patterns
            .as_slice()
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        description: filter.description.map(|d| d.as_str().to_owned()),
        created_at: rfc3339(filter.created_at),
        updated_at: rfc3339(filter.updated_at),
    }
}

fn description(text: Option<String>) -> Result<Option<Description>, ValidationError> {
    text.map(|text| Description::parse(&text, "description"))
        .transpose()
}

fn filter_id(text: &str) -> Result<FilterId, ApiError> {
    path_id(text, FilterId::parse, "filter")
}

/// Create a filter.
#[utoipa::path(post, path = "/v1/webhooks/filters", tag = "filters", request_body = FilterIn,
    responses((status = 201, description = "Created", body = FilterOut)))]
pub async fn create_filter(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<FilterIn>,
) -> Result<(StatusCode, Json<FilterOut>), ApiError> {
    let new = NewFilter {
        patterns: FilterPatterns::parse(&input.events, "events")?,
        description: description(input.description)?,
    };
    let filter = state.management.create_filter(&tenant, new).await?;
    Ok((StatusCode::CREATED, Json(filter_out(filter))))
}

/// List the tenant's filters.
#[utoipa::path(get, path = "/v1/webhooks/filters", tag = "filters", params(ListParams),
    responses((status = 200, description = "A page of filters", body = ListOf<FilterOut>)))]
pub async fn list_filters(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListOf<FilterOut>>, ApiError> {
    let page = params.page(|id| FilterId::parse(id).is_some())?;
    let filters = state.management.filters(&tenant, &page).await?;
    Ok(Json(ListOf::from_page(filters, filter_out)))
}

/// Get a filter.
#[utoipa::path(get, path = "/v1/webhooks/filters/{id}", tag = "filters", params(("id" = String, Path)),
    responses((status = 200, description = "The filter", body = FilterOut)))]
pub async fn get_filter(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FilterOut>, ApiError> {
    let filter = state.management.filter(&tenant, &filter_id(&id)?).await?;
    Ok(Json(filter_out(filter)))
}

/// Change a filter.
#[utoipa::path(patch, path = "/v1/webhooks/filters/{id}", tag = "filters", params(("id" = String, Path)),
    request_body = FilterPatchIn,
    responses((status = 200, description = "The changed filter", body = FilterOut)))]
pub async fn update_filter(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<FilterPatchIn>,
) -> Result<Json<FilterOut>, ApiError> {
    let id = filter_id(&id)?;
    let patch = FilterPatch {
        patterns: not_null(input.events, "events")?
            .map(|events| FilterPatterns::parse(&events, "events"))
            .transpose()?,
        description: input.description.map(description).transpose()?,
    };
    let filter = state.management.update_filter(&tenant, &id, patch).await?;
    Ok(Json(filter_out(filter)))
}

/// Delete a filter and the subscriptions that use it.
#[utoipa::path(delete, path = "/v1/webhooks/filters/{id}", tag = "filters", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_filter(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_filter(&tenant, &filter_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
