//! The fairness scenario. Three tenants share one Herald:
//!
//! - A floods `--flood-events` events (batches of 500, `--producers` at once) at its
//!   target, building a backlog;
//! - B publishes a steady `--quiet-rate` events/s to its own target;
//! - C publishes a steady trickle to a target that never answers (each request waits
//!   for its timeout).
//!
//! B's ingest→receipt latency is measured first without the flood (its baseline, for
//! `--baseline-seconds`), then for as long as the flood's deliveries take. The goal:
//! B's p99 under the flood within 2× its baseline and under 100 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use tokio::task::JoinSet;

use super::api::Api;
use super::receiver::Receiver;
use super::server::ChildServer;
use super::{BenchArgs, envelope, machine_load};

/// Events per flood request.
const FLOOD_BATCH: u64 = 500;
/// The dead tenant's events per second.
const DEAD_RATE: u64 = 5;
/// How long the dead endpoint's requests may take.
const DEAD_TIMEOUT_MS: u64 = 10_000;

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.flood_events == 0 || args.quiet_rate == 0 || args.baseline_seconds == 0 {
        bail!("--flood-events, --quiet-rate and --baseline-seconds must be at least 1");
    }
    let server = ChildServer::start().await?;
    let api = Api::new(
        reqwest::Client::builder()
            .pool_max_idle_per_host(args.producers.max(4))
            .timeout(Duration::from_secs(60))
            .build()?,
        server.base.clone(),
    );
    let (flood_rx, quiet_rx, dead_rx) = (
        Receiver::start().await?,
        Receiver::start().await?,
        Receiver::blackhole().await?,
    );
    let loud = api.tenant(&server.admin_token, "A (flood)").await?;
    api.subscribed_target(
        &loud,
        &flood_rx.url("/flood"),
        &json!({ "maxInFlight": 256 }),
    )
    .await?;
    let quiet = api.tenant(&server.admin_token, "B (quiet)").await?;
    api.subscribed_target(&quiet, &quiet_rx.url("/quiet"), &json!({}))
        .await?;
    let dead = api.tenant(&server.admin_token, "C (dead endpoint)").await?;
    api.subscribed_target(
        &dead,
        &dead_rx.url("/dead"),
        &json!({ "timeoutMs": DEAD_TIMEOUT_MS }),
    )
    .await?;

    let stop_dead = Arc::new(AtomicBool::new(false));
    let dead_publisher = tokio::spawn(steady(
        api.clone(),
        dead,
        DEAD_RATE,
        args.payload_bytes,
        Arc::clone(&stop_dead),
    ));

    // Phase 1: B alone (beside the dead endpoint).
    let baseline_published = steady_for(
        &api,
        &quiet,
        &args,
        Duration::from_secs(args.baseline_seconds),
    )
    .await?;
    let baseline_sent = baseline_published.count;
    quiet_rx
        .wait_for(baseline_sent, Duration::from_secs(30))
        .await;
    let baseline = quiet_rx.latency_percentiles([50.0, 99.0, 100.0]);
    quiet_rx.reset_latencies();

    // Phase 2: B while A floods, until A's deliveries are all done.
    let started = Instant::now();
    let flood = tokio::spawn(flood(api.clone(), loud, args.clone()));
    let flood_done = Arc::new(AtomicBool::new(false));
    let quiet_during = tokio::spawn(steady(
        api.clone(),
        quiet.clone(),
        args.quiet_rate,
        args.payload_bytes,
        Arc::clone(&flood_done),
    ));
    let flood_ingest = flood.await??;
    let deadline = Duration::from_secs(120) + Duration::from_millis(args.flood_events);
    flood_rx.wait_for(args.flood_events, deadline).await;
    let flood_elapsed = flood_rx
        .last_receipt()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    flood_done.store(true, Ordering::Relaxed);
    let during_published = quiet_during.await??;
    let during_sent = during_published.count;
    quiet_rx
        .wait_for(baseline_sent + during_sent, Duration::from_secs(30))
        .await;
    let during = quiet_rx.latency_percentiles([50.0, 99.0, 100.0]);
    stop_dead.store(true, Ordering::Relaxed);
    let dead_sent = dead_publisher.await??.count;

    let report = Report {
        flood_events: args.flood_events,
        flood_delivered: flood_rx.count(),
        flood_ingest_per_second: args.flood_events as f64 / flood_ingest.as_secs_f64(),
        flood_delivered_per_second: flood_rx.count() as f64 / flood_elapsed.as_secs_f64(),
        quiet_rate: args.quiet_rate,
        quiet_baseline: (baseline_sent, baseline),
        quiet_during_flood: (during_sent, during),
        quiet_publish_ms: [
            baseline_published.percentiles([50.0, 99.0]),
            during_published.percentiles([50.0, 99.0]),
        ],
        quiet_received: quiet_rx.count(),
        dead_published: dead_sent,
        dead_requests: dead_rx.count(),
    };
    report.print(args.json);
    server.stop();
    if report.flood_delivered < args.flood_events
        || report.quiet_received < baseline_sent + during_sent
    {
        bail!("not every delivery arrived before the deadline");
    }
    Ok(())
}

/// Publishes to `key` at `rate` events/s for `duration`; returns how many.
async fn steady_for(
    api: &Api,
    key: &str,
    args: &BenchArgs,
    duration: Duration,
) -> anyhow::Result<Published> {
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(steady(
        api.clone(),
        key.to_owned(),
        args.quiet_rate,
        args.payload_bytes,
        Arc::clone(&stop),
    ));
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await?
}

/// Publishes at `rate` events/s until `stop`; each on its own task so a slow answer
/// does not slow the rate. Returns how many were published.
async fn steady(
    api: Api,
    key: String,
    rate: u64,
    payload_bytes: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Published> {
    let started = Instant::now();
    let mut sent = JoinSet::new();
    let mut n = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (api, key) = (api.clone(), key.clone());
        sent.spawn(async move {
            let begun = Instant::now();
            api.publish(&key, envelope(payload_bytes)).await?;
            Ok::<Duration, anyhow::Error>(begun.elapsed())
        });
        n += 1;
    }
    let mut took = Vec::with_capacity(sent.len());
    while let Some(result) = sent.join_next().await {
        took.push(result??);
    }
    Ok(Published { count: n, took })
}

/// What a steady publisher did: how many events, and how long each publish took.
struct Published {
    count: u64,
    took: Vec<Duration>,
}

impl Published {
    /// The publish-time percentiles, in milliseconds.
    fn percentiles<const N: usize>(&self, percentiles: [f64; N]) -> [f64; N] {
        let mut took: Vec<f64> = self.took.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        took.sort_by(f64::total_cmp);
        percentiles.map(|p| {
            let rank = ((p / 100.0) * took.len().saturating_sub(1) as f64).round() as usize;
            took.get(rank).copied().unwrap_or(0.0)
        })
    }
}

/// Publishes `args.flood_events` in batches from `args.producers` producers; returns
/// how long intake took.
async fn flood(api: Api, key: String, args: BenchArgs) -> anyhow::Result<Duration> {
    let started = Instant::now();
    api.publish_batches(
        &key,
        args.flood_events,
        FLOOD_BATCH,
        args.payload_bytes,
        args.producers,
    )
    .await?;
    Ok(started.elapsed())
}

/// What the scenario measured.
struct Report {
    flood_events: u64,
    flood_delivered: u64,
    flood_ingest_per_second: f64,
    flood_delivered_per_second: f64,
    quiet_rate: u64,
    quiet_baseline: (u64, [f64; 3]),
    quiet_during_flood: (u64, [f64; 3]),
    /// B's publish (ingest) p50/p99 before and during the flood.
    quiet_publish_ms: [[f64; 2]; 2],
    quiet_received: u64,
    dead_published: u64,
    dead_requests: u64,
}

impl Report {
    fn print(&self, json: bool) {
        let (cores, load) = machine_load();
        let (base_n, [base_p50, base_p99, base_max]) = self.quiet_baseline;
        let (flood_n, [flood_p50, flood_p99, flood_max]) = self.quiet_during_flood;
        let ratio = flood_p99 / base_p99.max(f64::MIN_POSITIVE);
        let [
            [ingest_base_p50, ingest_base_p99],
            [ingest_flood_p50, ingest_flood_p99],
        ] = self.quiet_publish_ms;
        println!(
            "fairness: A flooded {} events (ingest {:.0}/s, delivered {:.0}/s); \
             B at {}/s: baseline p50 {base_p50:.1} ms p99 {base_p99:.1} ms max {base_max:.1} ms ({base_n} events), \
             during the flood p50 {flood_p50:.1} ms p99 {flood_p99:.1} ms max {flood_max:.1} ms ({flood_n} events), \
             p99 ratio {ratio:.2}; B's publish alone p50 {ingest_base_p50:.1} ms p99 {ingest_base_p99:.1} ms, \
             during the flood p50 {ingest_flood_p50:.1} ms p99 {ingest_flood_p99:.1} ms; C's dead endpoint got {} requests for {} events; {cores} cores, load {load}",
            self.flood_events,
            self.flood_ingest_per_second,
            self.flood_delivered_per_second,
            self.quiet_rate,
            self.dead_requests,
            self.dead_published,
        );
        if json {
            let line = json!({
                "scenario": "fairness",
                "floodEvents": self.flood_events, "floodDelivered": self.flood_delivered,
                "floodIngestPerSecond": self.flood_ingest_per_second,
                "floodDeliveredPerSecond": self.flood_delivered_per_second,
                "quietRate": self.quiet_rate,
                "quietBaselineMs": { "events": base_n, "p50": base_p50, "p99": base_p99, "max": base_max },
                "quietDuringFloodMs": { "events": flood_n, "p50": flood_p50, "p99": flood_p99, "max": flood_max },
                "p99Ratio": ratio,
                "quietPublishMs": {
                    "baseline": { "p50": ingest_base_p50, "p99": ingest_base_p99 },
                    "duringFlood": { "p50": ingest_flood_p50, "p99": ingest_flood_p99 },
                },
                "deadPublished": self.dead_published, "deadRequests": self.dead_requests,
                "cores": cores, "load": load,
            });
            println!("{line}");
        }
    }
}
