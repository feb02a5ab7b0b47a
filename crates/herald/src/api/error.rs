//! The one place errors become HTTP: every failure is answered as
//! `application/problem+json` (RFC 9457) with a stable `type` and `title` and a
//! human `detail`. Server-side failures are logged with their cause chain and
//! answered blandly, so internals never leak to clients.

use std::error::Error as StdError;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_core::service::ServiceError;
use herald_core::store::StoreError;
use herald_core::validation::ValidationError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The state of a rate limit, as the `RateLimit-*` headers (IETF httpapi draft) say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests (events) allowed per second.
    pub limit: u64,
    /// How many could be sent right now.
    pub remaining: u64,
    /// Seconds until the quota is whole again.
    pub reset_secs: u64,
    /// Seconds to wait before the refused request would pass.
    pub retry_after_secs: u64,
}

impl Quota {
    /// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
    pub fn write_headers(&self, headers: &mut axum::http::HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining),
            ("ratelimit-reset", self.reset_secs),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, stable across releases (`urn:herald:problem:<slug>`).
    #[serde(rename = "type")]
    #[schema(example = "urn:herald:problem:validation-failed")]
    pub kind: String,
    /// A short summary of the kind of problem, the same for every occurrence.
    #[schema(example = "The request is not valid")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    /// What went wrong this time, for a human.
    #[schema(example = "the scheme must be http or https, not \"ftp\"")]
    pub detail: String,
    /// The request field at fault, for validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "url")]
    pub field: Option<String>,
}

/// Every way an API call can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials, or credentials Herald does not know.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Valid credentials that may not make this call.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The resource does not exist (or is another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("this route does not accept the {0} method")]
    MethodNotAllowed(String),
    /// A field breaks a rule.
    #[error(transparent)]
    Validation(ValidationError),
    /// The request clashes with stored data.
    #[error("{0}")]
    Conflict(String),
    /// The body is not syntactically valid JSON.
    #[error("{0}")]
    MalformedBody(String),
    /// The body is JSON of the wrong shape (unknown or missing field, wrong type).
    #[error("{0}")]
    InvalidBody(String),
    /// The body is larger than this route accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body's Content-Type is not one this route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A query parameter is malformed or out of range.
    #[error("{0}")]
    InvalidQuery(String),
    /// The store cannot be reached or is not ready.
    /// The tenant is over its ingest rate limit; nothing of the request was accepted.
    #[error("{detail}")]
    RateLimited {
        /// What happened, for the client.
        detail: String,
        /// The limit's state, for the `RateLimit-*` and `Retry-After` headers.
        quota: Quota,
    },
    #[error("the store is not available")]
    Unavailable(#[source] StoreError),
    /// A bug or an unexpected failure.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    /// Status, problem slug and title for this error.
    fn kind(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication is required",
            ),
            Self::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "This credential may not do that",
            ),
            Self::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not-found",
                "The resource does not exist",
            ),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "The method is not allowed here",
            ),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "The request is not valid",
            ),
            Self::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "The request conflicts with existing data",
            ),
            Self::MalformedBody(_) => (
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "The body is not valid JSON",
            ),
            Self::InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "The body does not have the expected shape",
            ),
            Self::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "The body is too large",
            ),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "The Content-Type is not supported",
            ),
            Self::InvalidQuery(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "A query parameter is not valid",
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many events",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is not available",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// The problem document for this error (also used inside batch answers).
    pub fn to_problem(&self) -> Problem {
        let (status, slug, title) = self.kind();
        let (detail, field) = match self {
            Self::Validation(error) => (error.message.clone(), Some(error.field.clone())),
            Self::Internal(_) => (
                "Herald failed to handle this request; the cause has been logged.".into(),
                None,
            ),
            other => (other.to_string(), None),
        };
        Problem {
            kind: format!("urn:herald:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail,
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Internal(_) | Self::Unavailable(_)) {
            tracing::error!(error = %error_chain(&self), "request failed");
        }
        let problem = self.to_problem();
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RateLimited { quota, .. } = &self {
            quota.write_headers(headers);
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(quota.retry_after_secs),
            );
        }
        response
    }
}

/// `error: cause: cause's cause`, for logs.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound { .. } => Self::NotFound(error.to_string()),
            ServiceError::Invalid(validation) => Self::Validation(validation),
            ServiceError::Conflict(message) => Self::Conflict(message),
            ServiceError::Store(store) => Self::Internal(Box::new(store)),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        Self::Validation(error)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(detail),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::InvalidBody(detail),
            _ => Self::MalformedBody(detail),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(rejection.body_text()),
            _ => Self::MalformedBody(rejection.body_text()),
        }
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => Self::InvalidBody(error.to_string()),
            _ => Self::MalformedBody(error.to_string()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::InvalidQuery(rejection.body_text())
    }
}
