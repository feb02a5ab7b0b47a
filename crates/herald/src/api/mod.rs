//! The HTTP API: one module per resource, each with its wire types and handlers.
//!
//! Handlers are thin: parse the wire type into validated core types, call
//! [`herald_core::service`], convert the result back. Errors become problem documents
//! in [`error`] and nowhere else. The router and the OpenAPI document are built from
//! the same route list, so the document cannot miss a route.

mod auth;
mod deliveries;
mod docs;
mod error;
mod events;
mod extract;
mod filters;
mod health;
mod ingest_limit;
mod instances;
mod kafka;
mod pagination;
mod subscriptions;
mod targets;
mod tenants;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::{Method, Uri};
use herald_core::auth::KeyHash;
use herald_core::service::{Admission, Management};

use crate::metrics::Metrics;
use crate::scheduler::Hints;
pub use ingest_limit::IngestLimits;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, PROBLEM_JSON, Problem};

/// Largest request body of a management call.
pub const MAX_MANAGEMENT_BODY: usize = 1 << 20;
/// Largest batch request body (unless one payload may be larger).
pub const MAX_BATCH_BODY: usize = 32 << 20;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The management operations.
    pub management: Management,
    /// SHA-256 of the admin token.
    pub admin_token: KeyHash,
    /// Wakes the scheduler when new deliveries are committed.
    pub hints: Arc<Hints>,
    /// Lets new deliveries start in flight at intake when workers are free.
    pub admission: Arc<dyn Admission>,
    /// Largest accepted event payload, in bytes.
    pub max_payload: usize,
    /// Per-tenant ingest limits.
    pub ingest_limits: Arc<IngestLimits>,
    /// The metrics `/metrics` exports.
    pub metrics: Arc<Metrics>,
}

/// Event intake, with its own body limit: the largest payload plus room for the
/// envelope, or a batch.
fn intake_routes(max_payload: usize) -> OpenApiRouter<AppState> {
    let envelope_limit = max_payload.saturating_add(64 << 10);
    let batch_limit = envelope_limit.max(MAX_BATCH_BODY);
    let single = OpenApiRouter::new()
        .routes(routes!(events::publish_event))
        .routes(routes!(events::publish_raw))
        .layer(DefaultBodyLimit::max(envelope_limit));
    let batch = OpenApiRouter::new()
        .routes(routes!(events::publish_batch))
        .layer(DefaultBodyLimit::max(batch_limit));
    single.merge(batch)
}

/// Every route, documented.
fn routes(max_payload: usize) -> OpenApiRouter<AppState> {
    management_routes()
        .layer(DefaultBodyLimit::max(MAX_MANAGEMENT_BODY))
        .merge(intake_routes(max_payload))
}

/// Everything but event intake.
fn management_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(
            tenants::get_tenant,
            tenants::update_tenant,
            tenants::delete_tenant
        ))
        .routes(routes!(tenants::create_api_key, tenants::list_api_keys))
        .routes(routes!(tenants::delete_api_key))
        .routes(routes!(targets::create_target, targets::list_targets))
        .routes(routes!(targets::rotate_secret))
        .routes(routes!(events::get_event))
        .routes(routes!(deliveries::list_deliveries))
        .routes(routes!(deliveries::get_delivery))
        .routes(routes!(deliveries::list_attempts))
        .routes(routes!(deliveries::retry_delivery))
        .routes(routes!(deliveries::list_dead_letters))
        .routes(routes!(deliveries::redrive))
        .routes(routes!(kafka::list_parked))
        .routes(routes!(instances::list_instances))
        .routes(routes!(
            targets::get_target,
            targets::update_target,
            targets::delete_target
        ))
        .routes(routes!(filters::create_filter, filters::list_filters))
        .routes(routes!(
            filters::get_filter,
            filters::update_filter,
            filters::delete_filter
        ))
        .routes(routes!(
            subscriptions::create_subscription,
            subscriptions::list_subscriptions
        ))
        .routes(routes!(
            subscriptions::get_subscription,
            subscriptions::update_subscription,
            subscriptions::delete_subscription
        ))
}

/// The HTTP application.
pub fn router(state: AppState) -> Router {
    let (router, mut document) = routes(state.max_payload).split_for_parts();
    docs::CommonResponses.modify(&mut document);
    let served = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(docs::ServedDocument(served)))
        .with_state(state)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("there is no route {}", uri.path()))
}

async fn wrong_method(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}
