//! The command line: subcommands and the flags of `herald serve`.
//!
//! Every flag is read as text and also from its `HERALD_*` environment variable
//! (clap gives the flag precedence). Parsing and validation happen in
//! [`super::Config::resolve`], so that the file, the environment and the flags are
//! all checked by the same code with the same messages.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Herald: webhook delivery that never loses an event.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Herald server: the HTTP API and the delivery engine.
    Serve(Box<ServeArgs>),
    /// Measure Herald: start it with a loopback receiver, publish events, report
    /// ingest/s, delivered/s, latency percentiles and CPU per delivery.
    Bench(crate::bench::BenchArgs),
}

/// Settings of `herald serve`. Each flag overrides its environment variable, which
/// overrides the TOML file given by `--config`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with settings (keys are the flag names with `_` for `-`).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory of the embedded store [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// PostgreSQL URL (postgres://user:password@host:port/database) to use instead of
    /// the embedded store; every instance given the same URL shares the work. Needs
    /// HERALD_ADMIN_TOKEN.
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Most PostgreSQL connections this instance opens [default: 16].
    #[arg(long, env = "HERALD_DATABASE_POOL_SIZE", value_name = "N")]
    pub database_pool_size: Option<String>,
    /// Comma-separated CIDRs that targets may reach despite the SSRF guard [default: none].
    #[arg(long, env = "HERALD_ALLOW_TARGETS", value_name = "CIDRS")]
    pub allow_targets: Option<String>,
    /// First retry delay, before jitter [default: 5s].
    #[arg(long, env = "HERALD_RETRY_INITIAL", value_name = "DURATION")]
    pub retry_initial: Option<String>,
    /// Longest retry delay [default: 2h].
    #[arg(long, env = "HERALD_RETRY_MAX_DELAY", value_name = "DURATION")]
    pub retry_max_delay: Option<String>,
    /// Age at which a delivery is dead [default: 24h].
    #[arg(long, env = "HERALD_RETRY_MAX_AGE", value_name = "DURATION")]
    pub retry_max_age: Option<String>,
    /// Attempts after which a delivery is dead [default: unlimited within the max age].
    #[arg(long, env = "HERALD_RETRY_MAX_ATTEMPTS", value_name = "N")]
    pub retry_max_attempts: Option<String>,
    /// How long a claim holds a delivery unless renewed; renewed every third of it while
    /// the attempt runs, so a crashed instance's work is taken over within one lease
    /// [default: 15s, at least 3s].
    #[arg(long, env = "HERALD_DELIVERY_LEASE", value_name = "DURATION")]
    pub delivery_lease: Option<String>,
    /// How long a stop (SIGTERM, Ctrl-C) waits for delivery requests under way, so their
    /// outcomes are recorded; any still running then are sent again after the restart.
    /// A second signal stops at once [default: 30s, at most 1h].
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Most delivery requests in flight at once [default: 256].
    #[arg(long, env = "HERALD_DELIVERY_CONCURRENCY", value_name = "N")]
    pub delivery_concurrency: Option<String>,
    /// Consecutive failures that open a target's circuit [default: 10].
    #[arg(long, env = "HERALD_CIRCUIT_FAILURES", value_name = "N")]
    pub circuit_failures: Option<String>,
    /// First open period of a circuit [default: 30s].
    #[arg(long, env = "HERALD_CIRCUIT_COOLDOWN", value_name = "DURATION")]
    pub circuit_cooldown: Option<String>,
    /// Largest accepted event payload [default: 5MiB].
    #[arg(long, env = "HERALD_MAX_PAYLOAD", value_name = "SIZE")]
    pub max_payload: Option<String>,
    /// How long finished events (with their deliveries and attempts) and parked Kafka
    /// records are kept, or `forever`; also how long an idempotency key is remembered
    /// [default: 7d].
    #[arg(long, env = "HERALD_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// Default per-tenant ingest limit in events per second [default: unlimited].
    #[arg(long, env = "HERALD_TENANT_RATE_LIMIT", value_name = "PER_SECOND")]
    pub tenant_rate_limit: Option<String>,
    /// Kafka bootstrap servers (host:port,host:port); setting them enables the Kafka
    /// source (a build with `--features kafka`). A record names its tenant and type in
    /// the `herald-tenant` and `herald-event-type` headers (its value is then the
    /// payload, byte for byte), or carries a JSON envelope {"tenant", "type", "payload",
    /// "idempotencyKey"}; offsets are committed only after the events are stored.
    #[arg(long, env = "HERALD_KAFKA_BROKERS", value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// Comma-separated Kafka topics to consume.
    #[arg(long, env = "HERALD_KAFKA_TOPICS", value_name = "TOPICS")]
    pub kafka_topics: Option<String>,
    /// Kafka consumer group [default: herald].
    #[arg(long, env = "HERALD_KAFKA_GROUP", value_name = "GROUP")]
    pub kafka_group: Option<String>,
}
