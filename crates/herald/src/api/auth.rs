//! Who is calling: the admin (tenant management) or a tenant (everything else).
//!
//! Both present `Authorization: Bearer <credential>`. The admin token and API keys
//! are compared by their SHA-256, never in plaintext. Each handler states which caller
//! it accepts by taking [`AdminAccess`] or [`TenantAccess`] as an argument, so a route
//! cannot forget to authenticate.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use herald_core::auth::KeyHash;
use herald_core::id::TenantId;

use super::AppState;
use super::error::ApiError;

/// Proof that the caller presented the admin token.
pub struct AdminAccess;

/// The tenant whose API key the caller presented; every call it makes is scoped to it.
pub struct TenantAccess(pub TenantId);

impl FromRequestParts<AppState> for AdminAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = bearer(parts)?;
        if KeyHash::of(credential) == state.admin_token {
            return Ok(Self);
        }
        if state.management.authenticate(credential).await?.is_some() {
            return Err(ApiError::Forbidden(
                "this route needs the admin token; a tenant API key cannot manage tenants",
            ));
        }
        Err(ApiError::Unauthorized(
            "the bearer token is not a valid admin token or API key",
        ))
    }
}

impl FromRequestParts<AppState> for TenantAccess {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = bearer(parts)?;
        if let Some(tenant) = state.management.authenticate(credential).await? {
            return Ok(Self(tenant));
        }
        if KeyHash::of(credential) == state.admin_token {
            return Err(ApiError::Forbidden(
                "the admin token manages tenants only; call this route with the tenant's API key",
            ));
        }
        Err(ApiError::Unauthorized(
            "the bearer token is not a valid API key",
        ))
    }
}

/// The credential of an `Authorization: Bearer` header.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "send the API key as `Authorization: Bearer <key>`",
        ))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text"))?;
    let (scheme, credential) = value.split_once(' ').ok_or(ApiError::Unauthorized(
        "the Authorization header must be `Bearer <key>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <key>`",
        ));
    }
    Ok(credential.trim())
}
