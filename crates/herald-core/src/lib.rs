//! Herald's vocabulary and every rule about it, with no I/O of its own.
//!
//! Read in this order: [`id`] and [`time`] (how things are named and dated),
//! [`validation`] (how bad input is described), [`filter`] (event types and the
//! patterns that match them), [`secret`] and [`auth`] (signing secrets and API keys),
//! [`model`] (tenants, targets, filters, subscriptions), [`store`] (the one storage
//! trait every backend implements) and [`service`] (the operations the API exposes).
//!
//! This crate knows no SQL, no HTTP and no JSON: backends live in `herald-store`, the
//! wire formats in the `herald` binary crate.
#![forbid(unsafe_code)]

pub mod auth;
pub mod filter;
pub mod flow;
pub mod id;
pub mod model;
pub mod outcome;
pub mod retry;
pub mod routing;
pub mod secret;
pub mod service;
pub mod signing;
pub mod store;
pub mod time;
pub mod validation;
