//! `/v1/webhooks/subscriptions`: which filter's events go to which target.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::id::{FilterId, SubscriptionId, TargetId};
use herald_core::model::{NewSubscription, Subscription, SubscriptionPatch};
use herald_core::validation::{ValidationError, quoted};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::TenantAccess;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListOf, ListParams};
use super::wire::{not_null, patch_field, path_id, rfc3339};

/// A new subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionIn {
    /// One of the tenant's targets.
    #[schema(example = "tgt_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    target_id: String,
    /// One of the tenant's filters.
    #[schema(example = "flt_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    filter_id: String,
    /// Inactive subscriptions deliver nothing (default true).
    active: Option<bool>,
}

/// A change to a subscription; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubscriptionPatchIn {
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    target_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    filter_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<bool>)]
    active: Option<Option<bool>>,
}

/// A subscription.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionOut {
    #[schema(example = "sub_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    target_id: String,
    filter_id: String,
    active: bool,
    created_at: String,
    updated_at: String,
}

fn subscription_out(subscription: Subscription) -> SubscriptionOut {
    SubscriptionOut {
        id: subscription.id.to_string(),
        target_id: subscription.target_id.to_string(),
        filter_id: subscription.filter_id.to_string(),
        active: subscription.active,
        created_at: rfc3339(subscription.created_at),
        updated_at: rfc3339(subscription.updated_at),
    }
}

/// A referenced id that is not even shaped like one cannot exist.
fn reference<T>(
    text: &str,
    parse: fn(&str) -> Option<T>,
    field: &str,
    kind: &str,
) -> Result<T, ValidationError> {
    parse(text).ok_or_else(|| {
        ValidationError::new(
            field,
            format!(
                "{} is not a {kind} id, so no such {kind} exists",
                quoted(text)
            ),
        )
    })
}

fn subscription_id(text: &str) -> Result<SubscriptionId, ApiError> {
    path_id(text, SubscriptionId::parse, "subscription")
}

/// Subscribe a target to a filter's events.
#[utoipa::path(post, path = "/v1/webhooks/subscriptions", tag = "subscriptions", request_body = SubscriptionIn,
    responses((status = 201, description = "Created", body = SubscriptionOut)))]
pub async fn create_subscription(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<SubscriptionIn>,
) -> Result<(StatusCode, Json<SubscriptionOut>), ApiError> {
    let new = NewSubscription {
        target_id: reference(&input.target_id, TargetId::parse, "targetId", "target")?,
        filter_id: reference(&input.filter_id, FilterId::parse, "filterId", "filter")?,
        active: input.active,
    };
    let subscription = state.management.create_subscription(&tenant, new).await?;
    Ok((StatusCode::CREATED, Json(subscription_out(subscription))))
}

/// List the tenant's subscriptions.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions", tag = "subscriptions", params(ListParams),
    responses((status = 200, description = "A page of subscriptions", body = ListOf<SubscriptionOut>)))]
pub async fn list_subscriptions(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListOf<SubscriptionOut>>, ApiError> {
    let page = params.page(|id| SubscriptionId::parse(id).is_some())?;
    let subscriptions = state.management.subscriptions(&tenant, &page).await?;
    Ok(Json(ListOf::from_page(subscriptions, subscription_out)))
}

/// Get a subscription.
#[utoipa::path(get, path = "/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 200, description = "The subscription", body = SubscriptionOut)))]
pub async fn get_subscription(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let subscription = state
        .management
        .subscription(&tenant, &subscription_id(&id)?)
        .await?;
    Ok(Json(subscription_out(subscription)))
}

/// Change a subscription.
#[utoipa::path(patch, path = "/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)), request_body = SubscriptionPatchIn,
    responses((status = 200, description = "The changed subscription", body = SubscriptionOut)))]
pub async fn update_subscription(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<SubscriptionPatchIn>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let id = subscription_id(&id)?;
    let target_id = not_null(input.target_id, "targetId")?;
    let filter_id = not_null(input.filter_id, "filterId")?;
    let patch = SubscriptionPatch {
        target_id: target_id
            .map(|t| reference(&t, TargetId::parse, "targetId", "target"))
            .transpose()?,
        filter_id: filter_id
            .map(|f| reference(&f, FilterId::parse, "filterId", "filter"))
            .transpose()?,
        active: not_null(input.active, "active")?,
    };
    let subscription = state
        .management
        .update_subscription(&tenant, &id, patch)
        .await?;
    Ok(Json(subscription_out(subscription)))
}

/// Delete a subscription.
#[utoipa::path(delete, path = "/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_subscription(
    TenantAccess(tenant): TenantAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state
        .management
        .delete_subscription(&tenant, &subscription_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
