//! Configuration: read once at start-up from flags, `HERALD_*` variables and a TOML
//! file (in that order of precedence), validated, and typed from then on.
//!
//! Every message names the setting in all three spellings, so an operator can find it
//! wherever it was set. Secrets (the admin token, the database URL) are never printed.

mod cli;
mod file;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::retry::RetryPolicy;
use ipnet::IpNet;

pub use cli::{Cli, Command, ServeArgs};
use file::{FileConfig, FileValue};

/// Shortest admin token accepted from `HERALD_ADMIN_TOKEN`.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A configuration problem, reported before Herald starts serving.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has unknown keys.
    #[error("the config file {} is not valid: {source}", path.display())]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A setting has a value Herald cannot use.
    #[error("{setting}: {message}")]
    Invalid {
        /// Which setting, in all its spellings.
        setting: Setting,
        /// What is wrong with it.
        message: String,
    },
}

/// A setting's names: its flag, environment variable and config file key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    flag: &'static str,
    env: &'static str,
}

impl Setting {
    const fn new(flag: &'static str, env: &'static str) -> Self {
        Self { flag, env }
    }

    fn invalid(self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            setting: self,
            message: message.into(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.flag.trim_start_matches("--").replace('-', "_");
        if self.flag.is_empty() {
            write!(f, "{}", self.env)
        } else {
            write!(
                f,
                "{} ({}, `{key}` in the config file)",
                self.flag, self.env
            )
        }
    }
}

/// The names of every setting, as used in messages.
pub mod settings {
    use super::Setting;

    pub const LISTEN: Setting = Setting::new("--listen", "HERALD_LISTEN");
    pub const DATA_DIR: Setting = Setting::new("--data-dir", "HERALD_DATA_DIR");
    pub const DATABASE_URL: Setting = Setting::new("--database-url", "HERALD_DATABASE_URL");
    pub const DATABASE_POOL_SIZE: Setting =
        Setting::new("--database-pool-size", "HERALD_DATABASE_POOL_SIZE");
    pub const ADMIN_TOKEN: Setting = Setting::new("", "HERALD_ADMIN_TOKEN");
    pub const ALLOW_TARGETS: Setting = Setting::new("--allow-targets", "HERALD_ALLOW_TARGETS");
    pub const RETRY_INITIAL: Setting = Setting::new("--retry-initial", "HERALD_RETRY_INITIAL");
    pub const RETRY_MAX_DELAY: Setting =
        Setting::new("--retry-max-delay", "HERALD_RETRY_MAX_DELAY");
    pub const RETRY_MAX_AGE: Setting = Setting::new("--retry-max-age", "HERALD_RETRY_MAX_AGE");
    pub const RETRY_MAX_ATTEMPTS: Setting =
        Setting::new("--retry-max-attempts", "HERALD_RETRY_MAX_ATTEMPTS");
    pub const DELIVERY_LEASE: Setting = Setting::new("--delivery-lease", "HERALD_DELIVERY_LEASE");
    pub const SHUTDOWN_GRACE: Setting = Setting::new("--shutdown-grace", "HERALD_SHUTDOWN_GRACE");
    pub const DELIVERY_CONCURRENCY: Setting =
        Setting::new("--delivery-concurrency", "HERALD_DELIVERY_CONCURRENCY");
    pub const CIRCUIT_FAILURES: Setting =
        Setting::new("--circuit-failures", "HERALD_CIRCUIT_FAILURES");
    pub const CIRCUIT_COOLDOWN: Setting =
        Setting::new("--circuit-cooldown", "HERALD_CIRCUIT_COOLDOWN");
    pub const RETENTION: Setting = Setting::new("--retention", "HERALD_RETENTION");
    pub const MAX_PAYLOAD: Setting = Setting::new("--max-payload", "HERALD_MAX_PAYLOAD");
    pub const TENANT_RATE_LIMIT: Setting =
        Setting::new("--tenant-rate-limit", "HERALD_TENANT_RATE_LIMIT");
    pub const KAFKA_BROKERS: Setting = Setting::new("--kafka-brokers", "HERALD_KAFKA_BROKERS");
    pub const KAFKA_TOPICS: Setting = Setting::new("--kafka-topics", "HERALD_KAFKA_TOPICS");
    pub const KAFKA_GROUP: Setting = Setting::new("--kafka-group", "HERALD_KAFKA_GROUP");
}

/// When a target's circuit opens.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitConfig {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// First open period.
    pub cooldown: Duration,
}

/// A PostgreSQL database shared by Herald instances.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Its URL (may hold a password: never printed).
    pub url: String,
    /// Most connections this instance opens.
    pub pool_size: usize,
}

/// The Kafka source: where to read and as which consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: String,
    /// The topics to consume.
    pub topics: Vec<String>,
    /// The consumer group (default `herald`).
    pub group: String,
}

/// Herald's validated configuration.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded store and the generated admin token.
    pub data_dir: PathBuf,
    /// The shared PostgreSQL store to use instead of the embedded one.
    pub database: Option<DatabaseConfig>,
    /// Admin token from `HERALD_ADMIN_TOKEN`; generated into the data dir when absent.
    pub admin_token: Option<String>,
    /// Networks targets may reach despite the SSRF guard.
    pub allow_targets: Vec<IpNet>,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// How long a claim holds a delivery.
    pub delivery_lease: Duration,
    /// How long a stop waits for the attempts under way.
    pub shutdown_grace: Duration,
    /// Most delivery requests in flight at once.
    pub delivery_concurrency: u32,
    /// Circuit breaker thresholds.
    pub circuit: CircuitConfig,
    /// Largest accepted event payload, in bytes.
    pub max_payload: u64,
    /// How long finished events (with their deliveries and attempts) are kept;
    /// `None`: forever.
    pub retention: Option<Duration>,
    /// The Kafka source, if enabled.
    pub kafka: Option<KafkaConfig>,
    /// Default per-tenant ingest limit, events per second.
    pub tenant_rate_limit: Option<f64>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database",
                &self
                    .database
                    .as_ref()
                    .map(|d| format!("<url set>, pool of {}", d.pool_size)),
            )
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("allow_targets", &self.allow_targets)
            .field("retry", &self.retry)
            .field("delivery_lease", &self.delivery_lease)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("delivery_concurrency", &self.delivery_concurrency)
            .field("circuit", &self.circuit)
            .field("max_payload", &self.max_payload)
            .field("retention", &self.retention)
            .field("kafka", &self.kafka)
            .field("tenant_rate_limit", &self.tenant_rate_limit)
            .finish()
    }
}

impl Config {
    /// Validates the settings: `args` (flags and environment, as clap read them) over
    /// the file named by `args.config`, and the admin token from the environment.
    pub fn resolve(args: ServeArgs, admin_token: Option<String>) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut raw = RawSettings::merge(args, file);
        let kafka = raw.kafka()?;
        let retry = RetryPolicy {
            initial: parse_or(
                raw.retry_initial,
                settings::RETRY_INITIAL,
                "5s",
                values::duration,
            )?,
            max_delay: parse_or(
                raw.retry_max_delay,
                settings::RETRY_MAX_DELAY,
                "2h",
                values::duration,
            )?,
            max_age: parse_or(
                raw.retry_max_age,
                settings::RETRY_MAX_AGE,
                "24h",
                values::duration,
            )?,
            max_attempts: parse_opt(raw.retry_max_attempts, settings::RETRY_MAX_ATTEMPTS, |t| {
                values::count(t, 1, 1_000_000)
            })?,
        };
        let config = Self {
            listen: parse_or(raw.listen, settings::LISTEN, "127.0.0.1:8080", socket_addr)?,
            data_dir: parse_or(raw.data_dir, settings::DATA_DIR, "./herald-data", data_dir)?,
            database: database(raw.database_url, raw.database_pool_size)?,
            admin_token: admin_token.map(check_admin_token).transpose()?,
            allow_targets: parse_or(
                raw.allow_targets,
                settings::ALLOW_TARGETS,
                "",
                values::cidrs,
            )?,
            retry,
            delivery_lease: parse_or(
                raw.delivery_lease,
                settings::DELIVERY_LEASE,
                "15s",
                values::duration,
            )?,
            shutdown_grace: parse_or(
                raw.shutdown_grace,
                settings::SHUTDOWN_GRACE,
                "30s",
                values::duration,
            )?,
            delivery_concurrency: parse_or(
                raw.delivery_concurrency,
                settings::DELIVERY_CONCURRENCY,
                "256",
                |t| values::count(t, 1, 100_000),
            )?,
            circuit: CircuitConfig {
                failures: parse_or(
                    raw.circuit_failures,
                    settings::CIRCUIT_FAILURES,
                    "10",
                    |t| values::count(t, 1, 1_000_000),
                )?,
                cooldown: parse_or(
                    raw.circuit_cooldown,
                    settings::CIRCUIT_COOLDOWN,
                    "30s",
                    values::duration,
                )?,
            },
            max_payload: parse_or(raw.max_payload, settings::MAX_PAYLOAD, "5MiB", values::size)?,
            retention: parse_or(raw.retention, settings::RETENTION, "7d", retention)?,
            kafka,
            tenant_rate_limit: parse_opt(
                raw.tenant_rate_limit,
                settings::TENANT_RATE_LIMIT,
                values::rate,
            )?,
        };
        config.check_consistency()?;
        Ok(config)
    }

    /// Cross-field rules no single value can break alone.
    fn check_consistency(&self) -> Result<(), ConfigError> {
        if self.database.is_some() && self.admin_token.is_none() {
            return Err(settings::ADMIN_TOKEN.invalid(
                "must be set when --database-url is: every instance sharing the database must accept the \
                 same admin token, so it cannot be generated into one instance's data directory",
            ));
        }
        if self.retry.initial.is_zero() {
            return Err(settings::RETRY_INITIAL.invalid("must be longer than 0s"));
        }
        if self.retry.max_delay < self.retry.initial {
            return Err(settings::RETRY_MAX_DELAY.invalid(format!(
                "{} is shorter than the first retry delay ({}); it must be at least as long",
                humantime::format_duration(self.retry.max_delay),
                humantime::format_duration(self.retry.initial)
            )));
        }
        if self.retry.max_age.is_zero() {
            return Err(settings::RETRY_MAX_AGE.invalid("must be longer than 0s"));
        }
        if self.delivery_lease < MIN_LEASE {
            return Err(settings::DELIVERY_LEASE.invalid(format!(
                "{} is shorter than {}s; leases are renewed every third of their length while the \
                 attempt runs, and a shorter one could run out between two renewals",
                humantime::format_duration(self.delivery_lease),
                MIN_LEASE.as_secs()
            )));
        }
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return Err(settings::SHUTDOWN_GRACE.invalid(format!(
                "{} is longer than {}; a stop that long would outlast any process supervisor's patience",
                humantime::format_duration(self.shutdown_grace),
                humantime::format_duration(MAX_SHUTDOWN_GRACE)
            )));
        }
        if self
            .retention
            .is_some_and(|retention| retention < self.retry.max_age)
        {
            return Err(settings::RETENTION.invalid(format!(
                "is shorter than --retry-max-age ({}): events would be deleted while their deliveries \
                 may still be retried",
                humantime::format_duration(self.retry.max_age)
            )));
        }
        if self.circuit.cooldown.is_zero() {
            return Err(settings::CIRCUIT_COOLDOWN.invalid("must be longer than 0s"));
        }
        if self.max_payload == 0 || self.max_payload > MAX_PAYLOAD_LIMIT {
            return Err(settings::MAX_PAYLOAD.invalid("must be between 1 byte and 256MiB"));
        }
        Ok(())
    }
}

/// Shortest lease: renewals every third of it must keep it alive through a slow write.
const MIN_LEASE: Duration = Duration::from_secs(3);

/// Longest accepted shutdown grace. Attempts end within their target's timeout (at most
/// 60 s), so a longer grace buys nothing; the bound catches a slip such as `30h`.
const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(3600);

/// Largest payload limit an operator may configure.
const MAX_PAYLOAD_LIMIT: u64 = 256 << 20;

/// Each setting's text, from the flag or environment if given, else from the file.
struct RawSettings {
    listen: Option<String>,
    data_dir: Option<String>,
    database_url: Option<String>,
    database_pool_size: Option<String>,
    allow_targets: Option<String>,
    retry_initial: Option<String>,
    retry_max_delay: Option<String>,
    retry_max_age: Option<String>,
    retry_max_attempts: Option<String>,
    delivery_lease: Option<String>,
    shutdown_grace: Option<String>,
    delivery_concurrency: Option<String>,
    circuit_failures: Option<String>,
    circuit_cooldown: Option<String>,
    max_payload: Option<String>,
    retention: Option<String>,
    tenant_rate_limit: Option<String>,
    kafka_brokers: Option<String>,
    kafka_topics: Option<String>,
    kafka_group: Option<String>,
}

impl RawSettings {
    fn merge(args: ServeArgs, file: FileConfig) -> Self {
        let pick = |arg: Option<String>, file: Option<FileValue>| {
            arg.or_else(|| file.map(FileValue::into_text))
        };
        Self {
            listen: pick(args.listen, file.listen),
            data_dir: pick(args.data_dir, file.data_dir),
            database_url: pick(args.database_url, file.database_url),
            database_pool_size: pick(args.database_pool_size, file.database_pool_size),
            allow_targets: pick(args.allow_targets, file.allow_targets),
            retry_initial: pick(args.retry_initial, file.retry_initial),
            retry_max_delay: pick(args.retry_max_delay, file.retry_max_delay),
            retry_max_age: pick(args.retry_max_age, file.retry_max_age),
            retry_max_attempts: pick(args.retry_max_attempts, file.retry_max_attempts),
            delivery_lease: pick(args.delivery_lease, file.delivery_lease),
            shutdown_grace: pick(args.shutdown_grace, file.shutdown_grace),
            delivery_concurrency: pick(args.delivery_concurrency, file.delivery_concurrency),
            circuit_failures: pick(args.circuit_failures, file.circuit_failures),
            circuit_cooldown: pick(args.circuit_cooldown, file.circuit_cooldown),
            max_payload: pick(args.max_payload, file.max_payload),
            retention: pick(args.retention, file.retention),
            tenant_rate_limit: pick(args.tenant_rate_limit, file.tenant_rate_limit),
            kafka_brokers: pick(args.kafka_brokers, file.kafka_brokers),
            kafka_topics: pick(args.kafka_topics, file.kafka_topics),
            kafka_group: pick(args.kafka_group, file.kafka_group),
        }
    }

    /// The Kafka source's settings: off unless brokers are given; then topics are
    /// required, and this build must have the source.
    fn kafka(&mut self) -> Result<Option<KafkaConfig>, ConfigError> {
        let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
        if !given(&self.kafka_brokers) {
            if given(&self.kafka_topics) || given(&self.kafka_group) {
                return Err(settings::KAFKA_BROKERS.invalid(
                    "must be set for the Kafka source (--kafka-topics or --kafka-group is set without it)",
                ));
            }
            return Ok(None);
        }
        if !cfg!(feature = "kafka") {
            return Err(settings::KAFKA_BROKERS.invalid(
                "this build of Herald has no Kafka source; build it with `cargo build --release --features kafka`",
            ));
        }
        let brokers = list(self.kafka_brokers.take().unwrap_or_default());
        if let Some(bad) = brokers.iter().find(|b| !b.contains(':')) {
            return Err(settings::KAFKA_BROKERS.invalid(format!(
                "{bad:?} is not a host:port; write host:port,host:port"
            )));
        }
        let topics = list(self.kafka_topics.take().unwrap_or_default());
        if topics.is_empty() {
            return Err(settings::KAFKA_TOPICS.invalid("must name at least one topic to consume"));
        }
        if let Some(bad) = topics.iter().find(|t| !valid_topic(t)) {
            return Err(settings::KAFKA_TOPICS.invalid(format!(
                "{bad:?} is not a Kafka topic name (1 to 249 of [A-Za-z0-9._-])"
            )));
        }
        let group = self
            .kafka_group
            .take()
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "herald".to_owned());
        Ok(Some(KafkaConfig {
            brokers: brokers.join(","),
            topics,
            group,
        }))
    }
}

/// The comma-separated items of `text`, trimmed, without empty ones.
fn list(text: String) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn valid_topic(topic: &str) -> bool {
    (1..=249).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn parse_or<T>(
    value: Option<String>,
    setting: Setting,
    default: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    parse(value.as_deref().unwrap_or(default)).map_err(|message| setting.invalid(message))
}

fn parse_opt<T>(
    value: Option<String>,
    setting: Setting,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    value
        .filter(|text| !text.trim().is_empty() && text.trim() != "unlimited")
        .map(|text| parse(&text).map_err(|message| setting.invalid(message)))
        .transpose()
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an IP address and port like 127.0.0.1:8080 or [::1]:8080")
    })
}

fn data_dir(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(text))
}

/// The PostgreSQL settings, if a database URL is given (an empty one means none).
fn database(
    url: Option<String>,
    pool_size: Option<String>,
) -> Result<Option<DatabaseConfig>, ConfigError> {
    let Some(url) = url.filter(|url| !url.trim().is_empty()) else {
        return Ok(None);
    };
    let url = url.trim().to_owned();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(settings::DATABASE_URL.invalid(
            "must be a PostgreSQL URL starting with postgres:// or postgresql:// (the value is not shown)",
        ));
    }
    let pool_size = parse_or(pool_size, settings::DATABASE_POOL_SIZE, "16", |t| {
        values::count(t, 1, 1_000)
    })?;
    Ok(Some(DatabaseConfig {
        url,
        pool_size: usize::try_from(pool_size).unwrap_or(usize::MAX),
    }))
}

/// A retention period, or `forever`.
fn retention(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "forever" {
        return Ok(None);
    }
    match values::duration(text)? {
        period if period < Duration::from_secs(60) => Err(format!(
            "{text:?} is shorter than a minute; write a longer period, or `forever`"
        )),
        period => Ok(Some(period)),
    }
}

fn check_admin_token(token: String) -> Result<String, ConfigError> {
    if token.len() < MIN_ADMIN_TOKEN_LEN
        || token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(settings::ADMIN_TOKEN.invalid(format!(
            "must be at least {MIN_ADMIN_TOKEN_LEN} characters with no spaces (the value is not shown)"
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        Config::resolve(args, None)
    }

    #[test]
    fn defaults_follow_the_brief() {
        let config = resolve(ServeArgs::default()).expect("defaults are valid");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.data_dir, PathBuf::from("./herald-data"));
        assert_eq!(config.retry.initial, Duration::from_secs(5));
        assert_eq!(config.retry.max_delay, Duration::from_secs(7200));
        assert_eq!(config.retry.max_age, Duration::from_secs(86_400));
        assert_eq!(config.retry.max_attempts, None);
        assert_eq!(config.circuit.failures, 10);
        assert_eq!(config.circuit.cooldown, Duration::from_secs(30));
        assert_eq!(config.max_payload, 5 << 20);
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.tenant_rate_limit, None);
        assert!(config.allow_targets.is_empty());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("herald.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_payload = \"1MiB\"\nallow_targets = [\"127.0.0.0/8\"]\nretry_max_attempts = 7\nshutdown_grace = \"0s\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:9001".into()),
            ..ServeArgs::default()
        };
        let config = resolve(args).expect("valid");
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.max_payload, 1 << 20);
        assert_eq!(config.allow_targets.len(), 1);
        assert_eq!(config.retry.max_attempts, Some(7));
        assert_eq!(
            config.shutdown_grace,
            Duration::ZERO,
            "0s: a stop does not wait"
        );
    }

    #[test]
    fn bad_values_name_their_setting() {
        let cases: Vec<(ServeArgs, &str)> = vec![
            (
                ServeArgs {
                    listen: Some("nowhere".into()),
                    ..Default::default()
                },
                "--listen",
            ),
            (
                ServeArgs {
                    max_payload: Some("lots".into()),
                    ..Default::default()
                },
                "--max-payload",
            ),
            (
                ServeArgs {
                    retry_initial: Some("5".into()),
                    ..Default::default()
                },
                "--retry-initial",
            ),
            (
                ServeArgs {
                    retry_max_delay: Some("1s".into()),
                    ..Default::default()
                },
                "--retry-max-delay",
            ),
            (
                ServeArgs {
                    shutdown_grace: Some("later".into()),
                    ..Default::default()
                },
                "--shutdown-grace",
            ),
            (
                // Longer than any stop should take.
                ServeArgs {
                    shutdown_grace: Some("1000000years".into()),
                    ..Default::default()
                },
                "--shutdown-grace",
            ),
            (
                ServeArgs {
                    circuit_failures: Some("0".into()),
                    ..Default::default()
                },
                "--circuit-failures",
            ),
            (
                ServeArgs {
                    allow_targets: Some("10.0.0.0/99".into()),
                    ..Default::default()
                },
                "--allow-targets",
            ),
            (
                ServeArgs {
                    tenant_rate_limit: Some("-3".into()),
                    ..Default::default()
                },
                "--tenant-rate-limit",
            ),
            (
                ServeArgs {
                    database_url: Some("mysql://x".into()),
                    ..Default::default()
                },
                "--database-url",
            ),
            (
                ServeArgs {
                    database_url: Some("postgres://x".into()),
                    database_pool_size: Some("0".into()),
                    ..Default::default()
                },
                "--database-pool-size",
            ),
            (
                ServeArgs {
                    database_url: Some("postgres://x".into()),
                    ..Default::default()
                },
                "HERALD_ADMIN_TOKEN",
            ),
        ];
        for (args, flag) in cases {
            let message = resolve(args).expect_err("invalid").to_string();
            assert!(message.starts_with(flag), "{message}");
        }
    }

    #[test]
    fn kafka_settings_are_checked_together() {
        let kafka = |brokers: Option<&str>, topics: Option<&str>| ServeArgs {
            kafka_brokers: brokers.map(Into::into),
            kafka_topics: topics.map(Into::into),
            ..Default::default()
        };
        let message = resolve(kafka(None, Some("orders")))
            .expect_err("topics need brokers")
            .to_string();
        assert!(message.starts_with("--kafka-brokers"), "{message}");
        let enabled = resolve(kafka(Some("127.0.0.1:9092"), Some("orders, refunds")));
        if cfg!(feature = "kafka") {
            let config = enabled.expect("valid").kafka.expect("enabled");
            assert_eq!(config.topics, ["orders", "refunds"]);
            assert_eq!(config.group, "herald");
            for (args, flag) in [
                (kafka(Some("127.0.0.1:9092"), None), "--kafka-topics"),
                (
                    kafka(Some("127.0.0.1:9092"), Some("bad topic")),
                    "--kafka-topics",
                ),
                (kafka(Some("nohost"), Some("orders")), "--kafka-brokers"),
            ] {
                let message = resolve(args).expect_err("invalid").to_string();
                assert!(message.starts_with(flag), "{message}");
            }
        } else {
            let message = enabled.expect_err("no Kafka in this build").to_string();
            assert!(message.contains("--features kafka"), "{message}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("herald.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:9000\"\n").expect("write");
        let message = resolve(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown key")
        .to_string();
        assert!(message.contains("lisen"), "{message}");
    }

    #[test]
    fn a_short_admin_token_is_refused_without_echoing_it() {
        let message = Config::resolve(ServeArgs::default(), Some("hunter2".into()))
            .expect_err("too short")
            .to_string();
        assert!(message.starts_with("HERALD_ADMIN_TOKEN"), "{message}");
        assert!(!message.contains("hunter2"));
    }
}
