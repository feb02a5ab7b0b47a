//! `/v1/tenants`: tenant management and tenant API keys (admin token only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use herald_core::auth::ApiKey;
use herald_core::id::{ApiKeyId, TenantId};
use herald_core::model::{NewTenant, RateLimit, Tenant, TenantName, TenantPatch};
use herald_core::validation::ValidationError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::AdminAccess;
use super::error::{ApiError, Problem};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListOf, ListParams};
use super::wire::{not_null, patch_field, path_id, rfc3339};

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantIn {
    /// Display name, 1–200 characters.
    #[schema(example = "Acme Inc.")]
    name: String,
    /// Events per second the tenant may publish (> 0); absent: the server default
    /// (`--tenant-rate-limit`).
    #[serde(default)]
    ingest_rate_limit: Option<f64>,
}

/// A change to a tenant; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantPatchIn {
    /// New display name.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// `null` returns the tenant to the server default.
    #[serde(default, deserialize_with = "patch_field")]
    #[schema(value_type = Option<f64>, nullable)]
    ingest_rate_limit: Option<Option<f64>>,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantOut {
    #[schema(example = "ten_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    name: String,
    /// The tenant's own ingest limit (events/s); `null`: the server default applies.
    ingest_rate_limit: Option<f64>,
    created_at: String,
    updated_at: String,
}

/// A tenant just created, with its first API key (shown only here).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCreated {
    #[serde(flatten)]
    tenant: TenantOut,
    /// The tenant's first API key. Store it now: Herald keeps only its hash.
    #[schema(example = "hrk_3q2-7wEJ0t5JdJ0rZ8yC2aVQbXo2Wb8zQe6m1u4vN9s")]
    api_key: String,
}

/// One of a tenant's API keys (never the key itself).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyOut {
    #[schema(example = "key_0192f3a4b5c67d8e9fa0b1c2d3e4f5a6")]
    id: String,
    /// The first characters of the key, to recognise it.
    #[schema(example = "hrk_3q2-7wEJ")]
    prefix: String,
    created_at: String,
}

/// A new API key (shown only here).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    key: ApiKeyOut,
    /// The API key. Store it now: Herald keeps only its hash.
    api_key: String,
}

fn tenant_out(tenant: Tenant) -> TenantOut {
    TenantOut {
        id: tenant.id.to_string(),
        name: tenant.name.as_str().to_owned(),
        ingest_rate_limit: tenant.ingest_rate_limit.map(RateLimit::per_second),
        created_at: rfc3339(tenant.created_at),
        updated_at: rfc3339(tenant.updated_at),
    }
}

fn api_key_out(key: ApiKey) -> ApiKeyOut {
    ApiKeyOut {
        id: key.id.to_string(),
        prefix: key.visible_prefix,
        created_at: rfc3339(key.created_at),
    }
}

fn ingest_limit(value: Option<f64>) -> Result<Option<RateLimit>, ValidationError> {
    value
        .map(|rate| RateLimit::parse(rate, "ingestRateLimit"))
        .transpose()
}

fn tenant_id(text: &str) -> Result<TenantId, ApiError> {
    path_id(text, TenantId::parse, "tenant")
}

/// Create a tenant and its first API key.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = TenantIn,
    responses((status = 201, description = "Created; the API key is shown only now", body = TenantCreated),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiJson(input): ApiJson<TenantIn>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let name = TenantName::parse(&input.name, "name")?;
    let ingest_rate_limit = ingest_limit(input.ingest_rate_limit)?;
    let (tenant, api_key) = state
        .management
        .create_tenant(NewTenant {
            name,
            ingest_rate_limit,
        })
        .await?;
    let created = TenantCreated {
        tenant: tenant_out(tenant),
        api_key,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List tenants.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(ListParams),
    responses((status = 200, description = "A page of tenants", body = ListOf<TenantOut>)))]
pub async fn list_tenants(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListOf<TenantOut>>, ApiError> {
    let page = params.page(|id| TenantId::parse(id).is_some())?;
    let tenants = state.management.tenants(&page).await?;
    Ok(Json(ListOf::from_page(tenants, tenant_out)))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, description = "The tenant", body = TenantOut)))]
pub async fn get_tenant(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantOut>, ApiError> {
    let tenant = state.management.tenant(&tenant_id(&id)?).await?;
    Ok(Json(tenant_out(tenant)))
}

/// Change a tenant.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    request_body = TenantPatchIn,
    responses((status = 200, description = "The changed tenant", body = TenantOut)))]
pub async fn update_tenant(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<TenantPatchIn>,
) -> Result<Json<TenantOut>, ApiError> {
    let id = tenant_id(&id)?;
    let name = not_null(input.name, "name")?;
    let patch = TenantPatch {
        name: name
            .map(|name| TenantName::parse(&name, "name"))
            .transpose()?,
        ingest_rate_limit: input.ingest_rate_limit.map(ingest_limit).transpose()?,
    };
    let tenant = state.management.update_tenant(&id, patch).await?;
    state.ingest_limits.forget(&id);
    Ok(Json(tenant_out(tenant)))
}

/// Delete a tenant and everything it owns.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted")))]
pub async fn delete_tenant(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id(&id)?;
    state.management.delete_tenant(&id).await?;
    state.ingest_limits.forget(&id);
    Ok(StatusCode::NO_CONTENT)
}

/// Create another API key for a tenant (for rotation).
#[utoipa::path(post, path = "/v1/tenants/{id}/api-keys", tag = "tenants", params(("id" = String, Path)),
    responses((status = 201, description = "Created; the key is shown only now", body = ApiKeyCreated)))]
pub async fn create_api_key(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let (key, api_key) = state.management.create_api_key(&tenant_id(&id)?).await?;
    let created = ApiKeyCreated {
        key: api_key_out(key),
        api_key,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List a tenant's API keys (prefixes only).
#[utoipa::path(get, path = "/v1/tenants/{id}/api-keys", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, description = "The tenant's keys", body = Vec<ApiKeyOut>)))]
pub async fn list_api_keys(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<ApiKeyOut>>, ApiError> {
    let keys = state.management.api_keys(&tenant_id(&id)?).await?;
    Ok(Json(keys.into_iter().map(api_key_out).collect()))
}

/// Revoke one of a tenant's API keys.
#[utoipa::path(delete, path = "/v1/tenants/{id}/api-keys/{keyId}", tag = "tenants",
    params(("id" = String, Path), ("keyId" = String, Path)),
    responses((status = 204, description = "Revoked")))]
pub async fn delete_api_key(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let key_id = path_id(&key_id, ApiKeyId::parse, "API key")?;
    state
        .management
        .delete_api_key(&tenant_id(&id)?, &key_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
