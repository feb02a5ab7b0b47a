//! The OpenAPI document, generated from the handlers' annotations.
//!
//! Handlers declare their success responses and the errors particular to them; the
//! [`CommonResponses`] pass adds the errors every route of a kind can answer (auth
//! failures on `/v1`, 404 where a path names a resource, body errors where a body is
//! read), so no route documents less than it can return.

use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as OpenApiDocument, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::{PROBLEM_JSON, Problem};

/// The root of the document: metadata and shared schemas. [`CommonResponses`] runs on
/// the finished document, once every route's path is in it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Webhook delivery that never loses an event. Tenant routes take a tenant API key, \
                       `/v1/tenants` takes the admin token, both as `Authorization: Bearer <credential>`. \
                       Errors are `application/problem+json` (RFC 9457).",
        license(name = "Apache-2.0")
    ),
    components(schemas(Problem)),
    tags(
        (name = "tenants", description = "Tenants and their API keys (admin token)"),
        (name = "targets", description = "Endpoints that receive webhooks"),
        (name = "filters", description = "Sets of event-type patterns"),
        (name = "subscriptions", description = "Bindings of a target to a filter"),
        (name = "events", description = "Publishing events and reading them back"),
        (name = "deliveries", description = "Deliveries, their attempts, retries and dead letters"),
        (name = "operations", description = "Health, readiness and this document")
    )
)]
pub struct ApiDoc;

/// Adds the security scheme and the errors common to each kind of route.
pub struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        if let Some(components) = openapi.components.as_mut() {
            let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
            components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
                &mut item.put,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_responses(path, operation);
            }
        }
    }
}

fn add_common_responses(path: &str, operation: &mut Operation) {
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if path.starts_with("/v1/") {
        operation.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        errors.push(("401", "Missing or unknown credential"));
        errors.push((
            "403",
            "The credential may not call this route (admin token vs. tenant API key)",
        ));
        errors.push(("400", "A query parameter is malformed"));
        errors.push(("500", "Herald failed; the cause is logged"));
    }
    if path.contains('{') {
        errors.push(("404", "No such resource, or it belongs to another tenant"));
    }
    if operation.request_body.is_some() {
        errors.push(("400", "The body is not valid JSON"));
        errors.push((
            "413",
            "The body is too large (1 MiB for management calls, --max-payload for events)",
        ));
        errors.push(("415", "The body is not sent as application/json"));
        errors.push(("422", "The body has an unknown, missing or invalid field"));
    }
    if path.starts_with("/v1/webhooks/subscriptions") && operation.request_body.is_some() {
        errors.push(("409", "The target is already subscribed to the filter"));
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem_response(description).into());
    }
}

fn problem_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build()
}

/// The document, serialized once at start-up and shared by every request.
#[derive(Clone)]
pub struct ServedDocument(pub Bytes);

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn openapi_json(Extension(document): Extension<ServedDocument>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document.0)
}
