//! The Herald binary's edges, around `herald-core`.
//!
//! - [`config`]: flags, environment and TOML file, validated into a [`config::Config`].
//! - [`app`]: wiring and lifecycle of one instance (store, services, HTTP server).
//! - [`api`]: the HTTP API, its problem+json errors and its OpenAPI document.
//! - [`scheduler`] → [`dispatcher`] → [`outcome`]: the delivery engine, in the order a
//!   delivery meets them (claim under a lease, signed request, batched recording).
//! - [`admin_token`]: the admin credential, configured or generated once.
//! - [`telemetry`]: log output.
//! - [`bench`]: the load tool (`herald bench`).
//!
//! Dependencies point inward: `api` uses `herald-core`'s services; only `app` knows
//! the concrete store backend.
#![forbid(unsafe_code)]

pub mod admin_token;
pub mod api;
pub mod app;
pub mod bench;
pub mod config;
pub mod dispatcher;
pub mod housekeeping;
pub mod ingest;
pub mod metrics;
pub mod outcome;
pub mod scheduler;
pub mod telemetry;
