//! `herald bench`: the load tool. It starts `herald serve` as a child process on a
//! temporary data directory (the embedded store, default durability), loopback
//! receivers in this process, sets up targets through the public API, publishes events
//! (as fast as possible or at a fixed rate), and reports ingest/s, delivered/s,
//! ingest→receipt latency percentiles, Herald's CPU time per delivery and the tool's
//! own (both from /proc), and Herald's resident memory.
//!
//! Named scenarios (`--scenario`), each printing one JSON line with `--json`:
//! `throughput` (fan-out 1 by default), `fan-out-10`, `steady` (1,000 events/s),
//! `backlog` (throughput with a million deliveries waiting, and memory), `baseline`
//! (the tool alone: driver straight to receiver) and `fairness`.
//!
//! The payload carries the publish time, so the receiver measures latency without any
//! shared state with Herald. Herald runs as its own process so its CPU time is its own.
//!
//! `HERALD_BENCH_SERVE_PREFIX` names a command every child `herald serve` runs under
//! (`scripts/count` runs them under callgrind, to count instructions per delivery);
//! such a child is stopped with SIGTERM, so the command can write its results.

mod api;
mod fairness;
#[cfg(feature = "kafka")]
mod kafka;
mod postgres;
mod process;
mod receiver;
mod server;
mod throughput;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};

/// The scenarios the load tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One tenant publishing `--events` (default 50,000) at `--fan-out` (default 1) as
    /// fast as possible: throughput, latency, CPU per delivery.
    Throughput,
    /// `throughput` at fan-out 10 (10,000 events, 100,000 deliveries).
    #[value(name = "fan-out-10")]
    FanOut10,
    /// A steady 1,000 events/s for 30 s: latency under a normal load.
    Steady,
    /// `throughput` on two instances, one with an empty queue and one with `--backlog`
    /// deliveries waiting (for a target limited to 0.01/s), measured alternately three
    /// times each: the ratio of the medians, and Herald's memory.
    Backlog,
    /// The tool alone: its producers publish straight to its receiver, no Herald.
    Baseline,
    /// Records (`--events`, default 50,000) produced to a new topic on
    /// `--kafka-brokers`, consumed by Herald's Kafka source and delivered: records/s into
    /// the store and delivered/s (a build with `--features kafka`).
    Kafka,
    /// Tenant A floods `--flood-events` at its target, tenant B publishes
    /// `--quiet-rate` events/s to its own, tenant C's target never answers: B's latency
    /// with and without the flood.
    Fairness,
}

/// Options of `herald bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::Throughput)]
    pub scenario: Scenario,
    /// Events to publish [default: set by the scenario].
    #[arg(long)]
    pub events: Option<u64>,
    /// Targets each event fans out to [default: set by the scenario].
    #[arg(long)]
    pub fan_out: Option<u32>,
    /// Events per second across all producers; 0 publishes as fast as possible
    /// [default: set by the scenario].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Backlog: deliveries waiting while throughput is measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Concurrent producers (HTTP connections publishing events).
    #[arg(long, default_value_t = 32)]
    pub producers: usize,
    /// Events per publish request: 1 posts each to `/v1/events`, more post them
    /// together to `/v1/events/batch` (at most 1,000), as a busy producer would.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub publish_batch: u64,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    pub json: bool,
    /// Fairness: events tenant A floods (in batches of 500).
    #[arg(long, default_value_t = 100_000)]
    pub flood_events: u64,
    /// Fairness: tenant B's steady events per second.
    #[arg(long, default_value_t = 10)]
    pub quiet_rate: u64,
    /// Fairness: seconds tenant B publishes without the flood (its baseline).
    #[arg(long, default_value_t = 10)]
    pub baseline_seconds: u64,
    /// Run Herald on this PostgreSQL server instead of the embedded store (the tool
    /// creates a fresh database on it), and report PostgreSQL's CPU time per delivery
    /// and what its backends wait on. The server must run on this machine.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The Kafka brokers of the `kafka` scenario (host:port).
    #[arg(long, value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// Herald instances sharing the PostgreSQL database; producers spread across them
    /// (throughput, fan-out-10 and steady scenarios).
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
}

/// Runs the chosen scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    crate::dispatcher::install_crypto_provider();
    match args.scenario {
        Scenario::Fairness => fairness::run(args).await,
        #[cfg(feature = "kafka")]
        Scenario::Kafka => kafka::run(args).await,
        #[cfg(not(feature = "kafka"))]
        Scenario::Kafka => {
            anyhow::bail!("this build has no Kafka source; build it with --features kafka")
        }
        _ => throughput::run(args).await,
    }
}

/// An event envelope whose payload starts with the publish time in microseconds and
/// is padded to `size` bytes.
pub(crate) fn envelope(size: usize) -> String {
    format!("{{\"type\":\"bench.event\",\"payload\":{}}}", payload(size))
}

/// A JSON payload starting with the current time in microseconds, padded to `size`
/// bytes; the receiver reads the time back to measure latency.
pub(crate) fn payload(size: usize) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let head = format!("{{\"t\":{micros},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The machine's cores and its 1/5/15-minute load, for every report.
pub(crate) fn machine_load() -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    (cores, load)
}
