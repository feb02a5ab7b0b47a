//! Small conversions shared by the wire types of every resource.

use herald_core::time::Timestamp;
use herald_core::validation::{ValidationError, quoted};
use serde::{Deserialize, Deserializer};

use super::error::ApiError;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T20:19:06.123Z`.
pub fn rfc3339(timestamp: Timestamp) -> String {
    humantime::format_rfc3339_millis(timestamp.to_system_time()).to_string()
}

/// For PATCH fields: tells "absent" (`None`) from "explicitly null" (`Some(None)`).
/// Use with `#[serde(default, deserialize_with = "patch_field")]`.
pub fn patch_field<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A PATCH field that may be changed but not cleared: explicit `null` is refused.
pub fn not_null<T>(value: Option<Option<T>>, field: &str) -> Result<Option<T>, ValidationError> {
    match value {
        Some(None) => Err(ValidationError::new(
            field,
            "cannot be null; leave it out to keep the current value",
        )),
        Some(Some(value)) => Ok(Some(value)),
        None => Ok(None),
    }
}

/// Parses a path id; text that cannot be such an id names no resource, hence 404.
pub fn path_id<T>(text: &str, parse: fn(&str) -> Option<T>, kind: &str) -> Result<T, ApiError> {
    parse(text).ok_or_else(|| ApiError::NotFound(format!("{kind} {} does not exist", quoted(text))))
}
