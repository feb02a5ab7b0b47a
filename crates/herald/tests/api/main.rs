//! Integration tests: a real Herald on a random port with its own temporary data
//! directory, driven over HTTP like any client would.

mod cli;
mod cluster;
mod crash;
mod delivery;
mod example_config;
mod filters;
mod flow_control;
mod helpers;
mod intake;
mod isolation;
#[cfg(feature = "kafka")]
mod kafka;
mod observability;
mod openapi;
mod receiver;
mod restart;
mod signatures;
mod subscriptions;
mod targets;
mod tenants;
mod validation;
