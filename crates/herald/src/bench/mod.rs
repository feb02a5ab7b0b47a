//! `herald bench`: the load tool. It starts `herald serve` as a child process on a
//! temporary data directory (the embedded store, default durability), a loopback
//! receiver in this process, sets up targets through the public API, publishes events
//! (as fast as possible or at a fixed rate), and reports ingest/s, delivered/s,
//! ingest→receipt latency percentiles and Herald's CPU time per delivery (from /proc).
//!
//! The payload carries the publish time, so the receiver measures latency without any
//! shared state with Herald. Herald runs as its own process so its CPU time is its own.

mod receiver;
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use receiver::Receiver;
use server::ChildServer;

/// Options of `herald bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Events to publish.
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Targets each event fans out to.
    #[arg(long, default_value_t = 1)]
    pub fan_out: u32,
    /// Events per second across all producers; 0 publishes as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Concurrent producers (HTTP connections publishing events).
    #[arg(long, default_value_t = 32)]
    pub producers: usize,
    /// Print the result as one JSON line as well.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.fan_out == 0 || args.producers == 0 {
        bail!("--events, --fan-out and --producers must be at least 1");
    }
    crate::dispatcher::install_crypto_provider();
    let receiver = Receiver::start().await?;
    let server = ChildServer::start().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.producers)
        .build()?;
    let key = set_up(&http, &server, &receiver, args.fan_out).await?;

    let expected = args.events * u64::from(args.fan_out);
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    publish(&http, &server.base, &key, &args).await?;
    let ingest_elapsed = started.elapsed();
    let deadline = Duration::from_secs(60) + Duration::from_millis(args.events);
    receiver.wait_for(expected, deadline).await;
    let delivered_elapsed = receiver
        .last_receipt()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    let cpu = server.cpu_seconds()? - cpu_before;

    let report = Report::new(
        &args,
        &receiver,
        expected,
        ingest_elapsed,
        delivered_elapsed,
        cpu,
    );
    report.print(args.json);
    server.stop();
    if report.received < expected {
        bail!(
            "only {} of {expected} deliveries arrived before the deadline",
            report.received
        );
    }
    Ok(())
}

/// Creates a tenant and `fan_out` targets subscribed to everything; returns the API key.
async fn set_up(
    http: &reqwest::Client,
    server: &ChildServer,
    receiver: &Receiver,
    fan_out: u32,
) -> anyhow::Result<String> {
    let post = |path: &str, token: &str, body: Value| {
        let request = http
            .post(format!("{}{path}", server.base))
            .bearer_auth(token)
            .json(&body);
        async move {
            let response = request.send().await?.error_for_status()?;
            Ok::<Value, anyhow::Error>(response.json().await?)
        }
    };
    let tenant = post(
        "/v1/tenants",
        &server.admin_token,
        json!({ "name": "bench" }),
    )
    .await?;
    let key = tenant["apiKey"].as_str().context("no apiKey")?.to_owned();
    let filter = post("/v1/webhooks/filters", &key, json!({ "events": ["*"] })).await?;
    for n in 0..fan_out {
        let body = json!({ "url": receiver.url(&format!("/t{n}")), "maxInFlight": 256 });
        let target = post("/v1/webhooks/targets", &key, body).await?;
        post(
            "/v1/webhooks/subscriptions",
            &key,
            json!({ "targetId": target["id"], "filterId": filter["id"] }),
        )
        .await?;
    }
    Ok(key)
}

/// Publishes `args.events` events from `args.producers` concurrent producers.
async fn publish(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|_| {
            let (http, url, key, next, args) = (
                http.clone(),
                format!("{base}/v1/events"),
                key.to_owned(),
                Arc::clone(&next),
                args.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= args.events {
                        return Ok::<(), anyhow::Error>(());
                    }
                    if args.rate > 0 {
                        let due = started + Duration::from_secs_f64(n as f64 / args.rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let body = envelope(args.payload_bytes);
                    let response = http
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if response.status() != reqwest::StatusCode::ACCEPTED {
                        bail!("publishing answered {}", response.status());
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await??;
    }
    Ok(())
}

/// An event envelope whose payload starts with the publish time in microseconds and
/// is padded to `size` bytes.
fn envelope(size: usize) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let head = format!("{{\"t\":{micros},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!(
        "{{\"type\":\"bench.event\",\"payload\":{head}{}\"}}}}",
        "x".repeat(pad)
    )
}

/// What a run measured.
struct Report {
    events: u64,
    fan_out: u32,
    rate: u64,
    received: u64,
    ingest_per_second: f64,
    delivered_per_second: f64,
    latency_ms: [f64; 4],
    cpu_ms_per_delivery: f64,
    cores: usize,
    load: String,
}

impl Report {
    fn new(
        args: &BenchArgs,
        receiver: &Receiver,
        expected: u64,
        ingest: Duration,
        delivered: Duration,
        cpu: f64,
    ) -> Self {
        let received = receiver.count();
        Self {
            events: args.events,
            fan_out: args.fan_out,
            rate: args.rate,
            received,
            ingest_per_second: args.events as f64 / ingest.as_secs_f64(),
            delivered_per_second: received.min(expected) as f64 / delivered.as_secs_f64(),
            latency_ms: receiver.latency_percentiles([50.0, 90.0, 99.0, 100.0]),
            cpu_ms_per_delivery: cpu * 1000.0 / received.max(1) as f64,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            load: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    fn print(&self, json: bool) {
        let [p50, p90, p99, max] = self.latency_ms;
        println!(
            "events {} × fan-out {} (rate {}): ingest {:.0}/s, delivered {:.0}/s ({} deliveries), \
             latency p50 {p50:.1} ms p90 {p90:.1} ms p99 {p99:.1} ms max {max:.1} ms, \
             Herald CPU {:.3} ms/delivery; {} cores, load {}",
            self.events,
            self.fan_out,
            if self.rate == 0 {
                "max".to_owned()
            } else {
                format!("{}/s", self.rate)
            },
            self.ingest_per_second,
            self.delivered_per_second,
            self.received,
            self.cpu_ms_per_delivery,
            self.cores,
            self.load
        );
        if json {
            let line = json!({
                "events": self.events, "fanOut": self.fan_out, "rate": self.rate, "deliveries": self.received,
                "ingestPerSecond": self.ingest_per_second, "deliveredPerSecond": self.delivered_per_second,
                "latencyMs": { "p50": p50, "p90": p90, "p99": p99, "max": max },
                "cpuMsPerDelivery": self.cpu_ms_per_delivery, "cores": self.cores, "load": self.load,
            });
            println!("{line}");
        }
    }
}
