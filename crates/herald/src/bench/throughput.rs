//! The throughput scenarios: `throughput`, `fan-out-10`, `steady`, `backlog` and
//! `baseline`. One tenant, `--fan-out` targets on a loopback receiver, `--events`
//! published as fast as possible (or at `--rate`) from `--producers` connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::ValueEnum;
use serde_json::{Value, json};

use super::api::Api;
use super::postgres::{self, PgProbe};
use super::receiver::Receiver;
use super::server::ChildServer;
use super::{BenchArgs, Scenario, envelope, machine_load, payload, process};
use herald_core::auth::{ADMIN_TOKEN_PREFIX, NewCredential};

/// Events per preload request (the batch endpoint's maximum).
const PRELOAD_BATCH: u64 = 1000;
/// Payload size of preloaded events: the backlog measures queue size, not disk.
const PRELOAD_PAYLOAD: usize = 64;

/// What one measured run is asked to do.
#[derive(Debug, Clone, Copy)]
struct Load {
    events: u64,
    fan_out: u32,
    rate: u64,
    payload_bytes: usize,
    producers: usize,
    /// Events per publish request.
    batch: u64,
}

impl Load {
    /// The scenario's defaults, overridden by the flags given.
    fn of(args: &BenchArgs) -> Self {
        let (events, fan_out, rate) = match args.scenario {
            Scenario::FanOut10 => (10_000, 10, 0),
            Scenario::Steady => (30_000, 1, 1_000),
            // `throughput` and each of the backlog's measured runs (as long as the
            // scenario the ratio refers to: shorter runs moved by ±15 %), and the others.
            _ => (50_000, 1, 0),
        };
        Self {
            events: args.events.unwrap_or(events),
            fan_out: args.fan_out.unwrap_or(fan_out),
            rate: args.rate.unwrap_or(rate),
            payload_bytes: args.payload_bytes,
            producers: args.producers,
            batch: args.publish_batch,
        }
    }

    fn deliveries(&self) -> u64 {
        self.events * u64::from(self.fan_out)
    }
}

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let load = Load::of(&args);
    if load.events == 0 || load.fan_out == 0 || load.producers == 0 {
        bail!("--events, --fan-out and --producers must be at least 1");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(load.producers)
        // A wedged Herald fails the run instead of hanging it.
        .timeout(Duration::from_secs(60))
        .build()?;
    if args.instances == 0 || (args.instances > 1 && args.database_url.is_none()) {
        bail!(
            "--instances must be 1, or more with --database-url (the embedded store has one instance)"
        );
    }
    let report = match args.scenario {
        Scenario::Baseline => baseline(&http, load).await?,
        Scenario::Backlog => backlog(&http, load, args.backlog).await?,
        _ => {
            let deployment =
                Deployment::start(&http, args.database_url.as_deref(), args.instances).await?;
            measure(&deployment, load, "bench").await?
        }
    };
    let name = args
        .scenario
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned());
    print(&name, &report, args.json);
    if report["deliveries"].as_u64() < report["expected"].as_u64() {
        bail!("not every delivery arrived before the deadline");
    }
    Ok(())
}

/// The Herald under test: one instance on the embedded store, or instances sharing
/// a fresh PostgreSQL database (watched by a probe).
struct Deployment {
    servers: Vec<ChildServer>,
    apis: Vec<Api>,
    postgres: Option<Arc<PgProbe>>,
}

impl Deployment {
    async fn start(
        http: &reqwest::Client,
        database_url: Option<&str>,
        instances: usize,
    ) -> anyhow::Result<Self> {
        let database = match database_url {
            Some(server) => Some(postgres::fresh_database(server).await?),
            None => None,
        };
        let admin_token = NewCredential::generate(ADMIN_TOKEN_PREFIX).plaintext;
        let mut servers = Vec::new();
        for _ in 0..instances {
            servers
                .push(ChildServer::start_on(database.as_deref(), admin_token.clone(), &[]).await?);
        }
        let postgres = match &database {
            Some(url) => Some(Arc::new(PgProbe::connect(url).await?)),
            None => None,
        };
        let apis = servers
            .iter()
            .map(|server| Api::new(http.clone(), server.base.clone()))
            .collect();
        Ok(Self {
            servers,
            apis,
            postgres,
        })
    }

    /// The instances' CPU time so far, together.
    /// Attempts started at intake so far, over every instance.
    async fn started_at_intake(&self) -> anyhow::Result<f64> {
        let mut total = 0.0;
        for api in &self.apis {
            total += api
                .metric(r#"herald_attempts_started_total{from="intake"}"#)
                .await?;
        }
        Ok(total)
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.servers.iter().map(ChildServer::cpu_seconds).sum()
    }

    /// The largest instance's resident memory.
    fn rss_bytes(&self) -> anyhow::Result<u64> {
        self.servers
            .iter()
            .map(ChildServer::rss_bytes)
            .try_fold(0, |most, rss| Ok(most.max(rss?)))
    }
}

/// Sets up a tenant with `load.fan_out` targets on a fresh receiver, publishes through
/// every instance, and measures until every delivery arrived.
async fn measure(deployment: &Deployment, load: Load, tenant: &str) -> anyhow::Result<Value> {
    let receiver = Receiver::start().await?;
    let setup = &deployment.apis[0];
    let key = setup
        .tenant(&deployment.servers[0].admin_token, tenant)
        .await?;
    for n in 0..load.fan_out {
        let url = receiver.url(&format!("/t{n}"));
        setup
            .subscribed_target(&key, &url, &json!({ "maxInFlight": 256 }))
            .await?;
    }
    let herald_cpu = deployment.cpu_seconds()?;
    let at_intake = deployment.started_at_intake().await?;
    let tool_cpu = process::cpu_seconds(std::process::id())?;
    let postgres_cpu = match &deployment.postgres {
        Some(probe) => Some(probe.cpu_seconds()?),
        None => None,
    };
    let sampling = deployment.postgres.as_ref().map(PgProbe::sample);
    let started = Instant::now();
    publish(&deployment.apis, &key, load, envelope).await?;
    let ingest = started.elapsed();
    let deadline = Duration::from_secs(60) + Duration::from_millis(load.events);
    receiver.wait_for(load.deliveries(), deadline).await;
    let delivered = receiver
        .last_receipt()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    let herald_cpu = deployment.cpu_seconds()? - herald_cpu;
    let tool_cpu = process::cpu_seconds(std::process::id())? - tool_cpu;
    let mut report = figures(load, &receiver, ingest, delivered, tool_cpu);
    let received = receiver.count().max(1) as f64;
    report["instances"] = json!(deployment.servers.len());
    report["cpuMsPerDelivery"] = json!(herald_cpu * 1000.0 / received);
    report["startedAtIntake"] = json!(deployment.started_at_intake().await? - at_intake);
    report["heraldRssMb"] = json!(deployment.rss_bytes()? as f64 / 1_048_576.0);
    if let (Some(probe), Some(before), Some(sampling)) =
        (&deployment.postgres, postgres_cpu, sampling)
    {
        report["postgresCpuMsPerDelivery"] =
            json!((probe.cpu_seconds()? - before) * 1000.0 / received);
        report["postgres"] = sampling.finish();
    }
    Ok(report)
}

/// The tool alone: its producers publish straight to its receiver.
async fn baseline(http: &reqwest::Client, load: Load) -> anyhow::Result<Value> {
    let receiver = Receiver::start().await?;
    let api = Api::new(http.clone(), receiver.url(""));
    // The receiver takes one delivery per request, so the baseline never batches.
    let load = Load {
        fan_out: 1,
        batch: 1,
        ..load
    };
    let tool_cpu = process::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    // Straight to the receiver, the body is what Herald would deliver: the payload.
    publish(&[api], "baseline", load, payload).await?;
    let elapsed = started.elapsed();
    receiver
        .wait_for(load.events, Duration::from_secs(10))
        .await;
    let tool_cpu = process::cpu_seconds(std::process::id())? - tool_cpu;
    Ok(figures(load, &receiver, elapsed, elapsed, tool_cpu))
}

/// Rounds of the backlog scenario. Each measures the empty queue and the full one
/// once, in alternating order (empty first in even rounds), so a slow spell of the
/// machine falls on both alike; single runs here move by ±15 %, and the ratio of two
/// single runs by more.
const BACKLOG_ROUNDS: usize = 3;

/// `throughput` on two instances side by side, one with an empty queue and one with
/// `waiting` deliveries queued for a target that takes 0.01 per second, measured
/// alternately: the median full-queue run, with the ratio of the medians.
async fn backlog(http: &reqwest::Client, load: Load, waiting: u64) -> anyhow::Result<Value> {
    let empty = Deployment::start(http, None, 1).await?;
    let full = Deployment::start(http, None, 1).await?;
    // A first run warms each instance up (connections, caches), so the measured runs
    // compare the queue, not a cold start with a warm one.
    let warm_up = Load {
        events: load.events.min(5_000),
        ..load
    };
    for deployment in [&empty, &full] {
        measure(deployment, warm_up, "warm-up").await?;
    }
    let preload_started = Instant::now();
    preload(&full.apis[0], &full.servers[0], waiting, load.producers).await?;
    let preload_seconds = preload_started.elapsed().as_secs_f64();
    let rss_after_preload = full.servers[0].rss_bytes()? as f64 / 1_048_576.0;
    let (mut empty_runs, mut full_runs) = (Vec::new(), Vec::new());
    for round in 0..BACKLOG_ROUNDS {
        let full_first = round % 2 == 1;
        for measuring_full in [full_first, !full_first] {
            // The instance not measured must be idle, not finishing the last run's
            // work (a checkpoint of the preload, say) on the cores the run needs.
            for deployment in [&empty, &full] {
                settle(&deployment.servers[0]).await?;
            }
            let (deployment, runs, name) = if measuring_full {
                (&full, &mut full_runs, "full queue")
            } else {
                (&empty, &mut empty_runs, "empty queue")
            };
            let run = measure(deployment, load, &format!("{name} {round}")).await?;
            if run["deliveries"].as_u64() < run["expected"].as_u64() {
                bail!("not every delivery of a {name} run arrived before the deadline");
            }
            runs.push(run);
        }
    }
    // The most the instance holding the backlog used: after the preload or after any
    // of its runs (each reports the instance's memory at its end).
    let rss_waiting = full_runs
        .iter()
        .filter_map(|run| run["heraldRssMb"].as_f64())
        .fold(rss_after_preload, f64::max);
    let rate = |run: &Value| run["deliveredPerSecond"].as_f64().unwrap_or(0.0);
    let rates = |runs: &[Value]| runs.iter().map(rate).collect::<Vec<_>>();
    let (empty_rates, full_rates) = (rates(&empty_runs), rates(&full_runs));
    let mut report = median_run(full_runs, rate);
    let empty_median = rate(&median_run(empty_runs, rate));
    report["backlog"] = json!(waiting);
    report["preloadSeconds"] = json!(preload_seconds);
    report["emptyQueueDeliveredPerSecond"] = json!(empty_median);
    report["ratioToEmptyQueue"] = json!(rate(&report) / empty_median.max(f64::MIN_POSITIVE));
    report["emptyQueueRuns"] = json!(empty_rates);
    report["fullQueueRuns"] = json!(full_rates);
    report["heraldRssMbWaiting"] = json!(rss_waiting);
    Ok(report)
}

/// Waits until `server` uses under 5 % of a core (over half a second), or 30 s.
async fn settle(server: &ChildServer) -> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = server.cpu_seconds()?;
    while Instant::now() < deadline {
        tokio::time::sleep(WINDOW).await;
        let now = server.cpu_seconds()?;
        if now - before < 0.05 * WINDOW.as_secs_f64() {
            break;
        }
        before = now;
    }
    Ok(())
}

/// The run whose `key` is the median (the upper one of an even count).
fn median_run(mut runs: Vec<Value>, key: impl Fn(&Value) -> f64) -> Value {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = runs.len() / 2;
    runs.into_iter().nth(middle).unwrap_or(Value::Null)
}

/// Queues `count` deliveries for a target limited to 0.01 per second, so they wait.
async fn preload(
    api: &Api,
    server: &ChildServer,
    count: u64,
    producers: usize,
) -> anyhow::Result<()> {
    let receiver = Receiver::start().await?;
    let key = api.tenant(&server.admin_token, "backlog").await?;
    api.subscribed_target(
        &key,
        &receiver.url("/backlog"),
        &json!({ "rateLimitPerSecond": 0.01 }),
    )
    .await?;
    api.publish_batches(
        &key,
        count,
        PRELOAD_BATCH,
        PRELOAD_PAYLOAD,
        producers.clamp(1, 8),
    )
    .await
}

/// Publishes `load.events` bodies made by `body` from `load.producers` concurrent
/// producers, spread evenly over `apis` (the instances), `load.batch` per request.
async fn publish(
    apis: &[Api],
    key: &str,
    load: Load,
    body: fn(usize) -> String,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for (api, _) in apis.iter().cycle().zip(0..load.producers) {
        let (api, key, next) = (api.clone(), key.to_owned(), Arc::clone(&next));
        producers.spawn(async move {
            loop {
                let first = next.fetch_add(load.batch, Ordering::Relaxed);
                if first >= load.events {
                    return Ok::<(), anyhow::Error>(());
                }
                if load.rate > 0 {
                    let due = started + Duration::from_secs_f64(first as f64 / load.rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let count = load.batch.min(load.events - first);
                if load.batch == 1 {
                    api.publish(&key, body(load.payload_bytes)).await?;
                } else {
                    let events: Vec<String> =
                        (0..count).map(|_| body(load.payload_bytes)).collect();
                    let batch = format!("{{\"events\":[{}]}}", events.join(","));
                    api.publish_to("/v1/events/batch", &key, batch).await?;
                }
            }
        });
    }
    while let Some(result) = producers.join_next().await {
        result??;
    }
    Ok(())
}

/// The figures every throughput scenario reports.
fn figures(
    load: Load,
    receiver: &Receiver,
    ingest: Duration,
    delivered: Duration,
    tool_cpu: f64,
) -> Value {
    let received = receiver.count();
    let [p50, p90, p99, max] = receiver.latency_percentiles([50.0, 90.0, 99.0, 100.0]);
    let (cores, load_average) = machine_load();
    json!({
        "events": load.events, "fanOut": load.fan_out, "rate": load.rate,
        "publishBatch": load.batch,
        "expected": load.deliveries(), "deliveries": received,
        "ingestPerSecond": load.events as f64 / ingest.as_secs_f64(),
        "deliveredPerSecond": received.min(load.deliveries()) as f64 / delivered.as_secs_f64(),
        "latencyMs": { "p50": p50, "p90": p90, "p99": p99, "max": max },
        "toolCpuMsPerDelivery": tool_cpu * 1000.0 / received.max(1) as f64,
        "cores": cores, "load": load_average,
    })
}

/// Prints the report as a line for people and, with `--json`, as one JSON line.
fn print(scenario: &str, report: &Value, json: bool) {
    let number = |key: &str| report[key].as_f64().unwrap_or(0.0);
    let latency = |key: &str| report["latencyMs"][key].as_f64().unwrap_or(0.0);
    let mut line = format!(
        "{scenario}: {} events × fan-out {} (rate {}, {} per request): ingest {:.0}/s, delivered {:.0}/s ({} deliveries), \
         latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
        report["events"],
        report["fanOut"],
        match report["rate"].as_u64() {
            Some(0) | None => "max".to_owned(),
            Some(rate) => format!("{rate}/s"),
        },
        report["publishBatch"],
        number("ingestPerSecond"),
        number("deliveredPerSecond"),
        report["deliveries"],
        latency("p50"),
        latency("p90"),
        latency("p99"),
        latency("max"),
    );
    if report.get("cpuMsPerDelivery").is_some() {
        line.push_str(&format!(
            ", Herald CPU {:.3} ms/delivery, Herald RSS {:.0} MB, {:.0}% started at intake",
            number("cpuMsPerDelivery"),
            number("heraldRssMb"),
            number("startedAtIntake") * 100.0 / number("deliveries").max(1.0),
        ));
    }
    if report.get("postgresCpuMsPerDelivery").is_some() {
        let postgres = &report["postgres"];
        line.push_str(&format!(
            ", {} instance(s) on PostgreSQL: its CPU {:.3} ms/delivery, {:.1} active backends on average \
             waiting on locks {:.1}%, on the WAL flush {:.1}%, on internal locks {:.1}% of the time",
            report["instances"],
            number("postgresCpuMsPerDelivery"),
            postgres["activeBackendsAvg"].as_f64().unwrap_or(0.0),
            postgres["lockWaitShare"].as_f64().unwrap_or(0.0) * 100.0,
            postgres["walFlushWaitShare"].as_f64().unwrap_or(0.0) * 100.0,
            postgres["internalLockWaitShare"].as_f64().unwrap_or(0.0) * 100.0,
        ));
    }
    if report.get("ratioToEmptyQueue").is_some() {
        line.push_str(&format!(
            ", with {} waiting: {:.0}% of the empty-queue {:.0}/s (medians of {} runs each), Herald RSS {:.0} MB \
             while they wait",
            report["backlog"],
            number("ratioToEmptyQueue") * 100.0,
            number("emptyQueueDeliveredPerSecond"),
            BACKLOG_ROUNDS,
            number("heraldRssMbWaiting"),
        ));
    }
    line.push_str(&format!(
        "; tool CPU {:.3} ms/delivery; {} cores, load {}",
        number("toolCpuMsPerDelivery"),
        report["cores"],
        report["load"].as_str().unwrap_or_default()
    ));
    println!("{line}");
    if json {
        let mut with_name = report.clone();
        with_name["scenario"] = json!(scenario);
        println!("{with_name}");
    }
}
