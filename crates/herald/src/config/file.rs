//! The optional TOML configuration file.
//!
//! Keys are the flag names with `_` instead of `-` (`data_dir`, `retry_max_age`).
//! Values may be written as TOML strings, numbers or (for lists) arrays; they are
//! turned into the same text a flag would carry and validated by the same code.
//! Unknown keys are refused, so a typo cannot silently fall back to a default.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// A setting's value as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileValue {
    /// `listen = "127.0.0.1:8080"`
    Text(String),
    /// `retry_max_attempts = 10`
    Integer(i64),
    /// `tenant_rate_limit = 2.5`
    Float(f64),
    /// `allow_targets = ["127.0.0.0/8", "10.0.0.0/8"]`
    List(Vec<String>),
}

impl FileValue {
    /// The value as a flag would carry it (lists comma-separated).
    pub fn into_text(self) -> String {
        match self {
            Self::Text(text) => text,
            Self::Integer(n) => n.to_string(),
            Self::Float(x) => x.to_string(),
            Self::List(items) => items.join(","),
        }
    }
}

/// Every key the file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<FileValue>,
    pub data_dir: Option<FileValue>,
    pub database_url: Option<FileValue>,
    pub database_pool_size: Option<FileValue>,
    pub allow_targets: Option<FileValue>,
    pub retry_initial: Option<FileValue>,
    pub retry_max_delay: Option<FileValue>,
    pub retry_max_age: Option<FileValue>,
    pub retry_max_attempts: Option<FileValue>,
    pub delivery_lease: Option<FileValue>,
    pub shutdown_grace: Option<FileValue>,
    pub delivery_concurrency: Option<FileValue>,
    pub circuit_failures: Option<FileValue>,
    pub circuit_cooldown: Option<FileValue>,
    pub max_payload: Option<FileValue>,
    pub retention: Option<FileValue>,
    pub tenant_rate_limit: Option<FileValue>,
    pub kafka_brokers: Option<FileValue>,
    pub kafka_topics: Option<FileValue>,
    pub kafka_group: Option<FileValue>,
}

impl FileConfig {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::ParseFile {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}
