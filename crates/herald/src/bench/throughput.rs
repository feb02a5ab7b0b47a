//! The throughput scenario: one tenant, `--fan-out` targets on a loopback receiver,
//! `--events` published as fast as possible (or at `--rate`); reports ingest/s,
//! delivered/s, ingest→receipt latency and Herald's CPU time per delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::api::Api;
use super::receiver::Receiver;
use super::server::ChildServer;
use super::{BenchArgs, envelope, machine_load};

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.fan_out == 0 || args.producers == 0 {
        bail!("--events, --fan-out and --producers must be at least 1");
    }
    let receiver = Receiver::start().await?;
    let server = ChildServer::start().await?;
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.producers)
            .build()?,
        base: server.base.clone(),
    };
    let key = set_up(&api, &server, &receiver, args.fan_out).await?;

    let expected = args.events * u64::from(args.fan_out);
    let cpu_before = server.cpu_seconds()?;
    let started = Instant::now();
    publish(&api, &key, &args).await?;
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
    api: &Api,
    server: &ChildServer,
    receiver: &Receiver,
    fan_out: u32,
) -> anyhow::Result<String> {
    let key = api.tenant(&server.admin_token, "bench").await?;
    for n in 0..fan_out {
        let url = receiver.url(&format!("/t{n}"));
        api.subscribed_target(&key, &url, &json!({ "maxInFlight": 256 }))
            .await?;
    }
    Ok(key)
}

/// Publishes `args.events` events from `args.producers` concurrent producers.
async fn publish(api: &Api, key: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|_| {
            let (api, key, next, args) =
                (api.clone(), key.to_owned(), Arc::clone(&next), args.clone());
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
                    api.publish(&key, envelope(args.payload_bytes)).await?;
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await??;
    }
    Ok(())
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
        let (cores, load) = machine_load();
        Self {
            events: args.events,
            fan_out: args.fan_out,
            rate: args.rate,
            received,
            ingest_per_second: args.events as f64 / ingest.as_secs_f64(),
            delivered_per_second: received.min(expected) as f64 / delivered.as_secs_f64(),
            latency_ms: receiver.latency_percentiles([50.0, 90.0, 99.0, 100.0]),
            cpu_ms_per_delivery: cpu * 1000.0 / received.max(1) as f64,
            cores,
            load,
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
                "scenario": "throughput",
                "events": self.events, "fanOut": self.fan_out, "rate": self.rate, "deliveries": self.received,
                "ingestPerSecond": self.ingest_per_second, "deliveredPerSecond": self.delivered_per_second,
                "latencyMs": { "p50": p50, "p90": p90, "p99": p99, "max": max },
                "cpuMsPerDelivery": self.cpu_ms_per_delivery, "cores": self.cores, "load": self.load,
            });
            println!("{line}");
        }
    }
}
