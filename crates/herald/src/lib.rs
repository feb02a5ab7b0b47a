//! The Herald binary's edges, around `herald-core`.
//!
//! - [`config`]: flags, environment and TOML file, validated into a [`config::Config`].
//! - [`app`]: wiring and lifecycle of one instance (store, services, HTTP server).
//! - [`api`]: the HTTP API, its problem+json errors and its OpenAPI document.
//! - [`admin_token`]: the admin credential, configured or generated once.
//! - [`telemetry`]: log output.
//!
//! Dependencies point inward: `api` uses `herald-core`'s services; only `app` knows
//! the concrete store backend.

pub mod admin_token;
pub mod api;
pub mod app;
pub mod config;
pub mod telemetry;
