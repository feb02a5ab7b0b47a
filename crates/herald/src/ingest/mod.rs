//! Event sources other than the HTTP API.
//!
//! - [`record`]: what a Kafka record means (always built, so its rules are tested
//!   without a broker);
//! - `kafka`: the consumer group member (with the `kafka` Cargo feature).

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod record;
