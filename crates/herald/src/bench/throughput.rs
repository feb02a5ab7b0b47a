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
use super::receiver::Receiver;
use super::server::ChildServer;
use super::{BenchArgs, Scenario, envelope, machine_load, payload, process};

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
}

impl Load {
    /// The scenario's defaults, overridden by the flags given.
    fn of(args: &BenchArgs) -> Self {
        let (events, fan_out, rate) = match args.scenario {
            Scenario::FanOut10 => (10_000, 10, 0),
            Scenario::Steady => (30_000, 1, 1_000),
            Scenario::Backlog => (20_000, 1, 0),
            _ => (50_000, 1, 0),
        };
        Self {
            events: args.events.unwrap_or(events),
            fan_out: args.fan_out.unwrap_or(fan_out),
            rate: args.rate.unwrap_or(rate),
            payload_bytes: args.payload_bytes,
            producers: args.producers,
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
    let report = match args.scenario {
        Scenario::Baseline => baseline(&http, load).await?,
        Scenario::Backlog => backlog(&http, load, args.backlog).await?,
        _ => {
            let server = ChildServer::start().await?;
            let api = Api {
                http,
                base: server.base.clone(),
            };
            let report = measure(&api, &server, load, "bench").await?;
            server.stop();
            report
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

/// Sets up a tenant with `load.fan_out` targets on a fresh receiver, publishes, and
/// measures until every delivery arrived.
async fn measure(
    api: &Api,
    server: &ChildServer,
    load: Load,
    tenant: &str,
) -> anyhow::Result<Value> {
    let receiver = Receiver::start().await?;
    let key = api.tenant(&server.admin_token, tenant).await?;
    for n in 0..load.fan_out {
        let url = receiver.url(&format!("/t{n}"));
        api.subscribed_target(&key, &url, &json!({ "maxInFlight": 256 }))
            .await?;
    }
    let herald_cpu = server.cpu_seconds()?;
    let tool_cpu = process::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    publish(api, &key, load, envelope).await?;
    let ingest = started.elapsed();
    let deadline = Duration::from_secs(60) + Duration::from_millis(load.events);
    receiver.wait_for(load.deliveries(), deadline).await;
    let delivered = receiver
        .last_receipt()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    let herald_cpu = server.cpu_seconds()? - herald_cpu;
    let tool_cpu = process::cpu_seconds(std::process::id())? - tool_cpu;
    let mut report = figures(load, &receiver, ingest, delivered, tool_cpu);
    let received = receiver.count().max(1) as f64;
    report["cpuMsPerDelivery"] = json!(herald_cpu * 1000.0 / received);
    report["heraldRssMb"] = json!(server.rss_bytes()? as f64 / 1_048_576.0);
    Ok(report)
}

/// The tool alone: its producers publish straight to its receiver.
async fn baseline(http: &reqwest::Client, load: Load) -> anyhow::Result<Value> {
    let receiver = Receiver::start().await?;
    let api = Api {
        http: http.clone(),
        base: receiver.url(""),
    };
    let load = Load { fan_out: 1, ..load };
    let tool_cpu = process::cpu_seconds(std::process::id())?;
    let started = Instant::now();
    // Straight to the receiver, the body is what Herald would deliver: the payload.
    publish(&api, "baseline", load, payload).await?;
    let elapsed = started.elapsed();
    receiver
        .wait_for(load.events, Duration::from_secs(10))
        .await;
    let tool_cpu = process::cpu_seconds(std::process::id())? - tool_cpu;
    Ok(figures(load, &receiver, elapsed, elapsed, tool_cpu))
}

/// `throughput` on an empty queue, then with `waiting` deliveries queued for a target
/// that takes 0.01 per second.
async fn backlog(http: &reqwest::Client, load: Load, waiting: u64) -> anyhow::Result<Value> {
    let server = ChildServer::start().await?;
    let api = Api {
        http: http.clone(),
        base: server.base.clone(),
    };
    // A first run warms Herald up (connections, caches), so the two measured runs
    // compare the queue, not a cold start with a warm one.
    let warm_up = Load {
        events: load.events.min(5_000),
        ..load
    };
    measure(&api, &server, warm_up, "warm-up").await?;
    let empty = measure(&api, &server, load, "empty queue").await?;
    if empty["deliveries"].as_u64() < empty["expected"].as_u64() {
        bail!("not every delivery of the empty-queue run arrived before the deadline");
    }
    let preload_started = Instant::now();
    preload(&api, &server, waiting, load.producers).await?;
    let preload_seconds = preload_started.elapsed().as_secs_f64();
    let rss_waiting = server.rss_bytes()?;
    let mut full = measure(&api, &server, load, "full queue").await?;
    let ratio = full["deliveredPerSecond"].as_f64().unwrap_or(0.0)
        / empty["deliveredPerSecond"].as_f64().unwrap_or(f64::MAX);
    full["backlog"] = json!(waiting);
    full["preloadSeconds"] = json!(preload_seconds);
    full["emptyQueueDeliveredPerSecond"] = empty["deliveredPerSecond"].clone();
    full["ratioToEmptyQueue"] = json!(ratio);
    full["heraldRssMbWaiting"] = json!(rss_waiting as f64 / 1_048_576.0);
    server.stop();
    Ok(full)
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
/// producers.
async fn publish(
    api: &Api,
    key: &str,
    load: Load,
    body: fn(usize) -> String,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..load.producers {
        let (api, key, next) = (api.clone(), key.to_owned(), Arc::clone(&next));
        producers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= load.events {
                    return Ok::<(), anyhow::Error>(());
                }
                if load.rate > 0 {
                    let due = started + Duration::from_secs_f64(n as f64 / load.rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                api.publish(&key, body(load.payload_bytes)).await?;
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
        "{scenario}: {} events × fan-out {} (rate {}): ingest {:.0}/s, delivered {:.0}/s ({} deliveries), \
         latency p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms max {:.1} ms",
        report["events"],
        report["fanOut"],
        match report["rate"].as_u64() {
            Some(0) | None => "max".to_owned(),
            Some(rate) => format!("{rate}/s"),
        },
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
            ", Herald CPU {:.3} ms/delivery, Herald RSS {:.0} MB",
            number("cpuMsPerDelivery"),
            number("heraldRssMb")
        ));
    }
    if report.get("ratioToEmptyQueue").is_some() {
        line.push_str(&format!(
            ", with {} waiting: {:.0}% of the empty-queue {:.0}/s, Herald RSS {:.0} MB while they wait",
            report["backlog"],
            number("ratioToEmptyQueue") * 100.0,
            number("emptyQueueDeliveredPerSecond"),
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
