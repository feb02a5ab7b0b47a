//! The `kafka` scenario: records produced to a topic, consumed by Herald's Kafka source,
//! delivered to a loopback receiver. Reports how fast records went into the store (the
//! source's own counter, polled from `/metrics`) and how fast they were delivered.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_core::auth::{ADMIN_TOKEN_PREFIX, NewCredential};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use super::api::Api;
use super::receiver::Receiver;
use super::server::ChildServer;
use super::{BenchArgs, machine_load, payload, process};
use crate::ingest::kafka::rdkafka;

/// Partitions of the benchmark's topic.
const PARTITIONS: i32 = 4;

/// Runs the scenario and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let brokers = args
        .kafka_brokers
        .clone()
        .context("the kafka scenario needs --kafka-brokers")?;
    let records = args.events.unwrap_or(50_000);
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("herald-bench-{suffix}");
    create_topic(&brokers, &topic).await?;
    let admin_token = NewCredential::generate(ADMIN_TOKEN_PREFIX).plaintext;
    let group = format!("herald-bench-{suffix}");
    let server = ChildServer::start_on(
        args.database_url.as_deref(),
        admin_token.clone(),
        &[
            "--kafka-brokers",
            &brokers,
            "--kafka-topics",
            &topic,
            "--kafka-group",
            &group,
        ],
    )
    .await?;
    let api = Api::new(reqwest::Client::new(), server.base.clone());
    let receiver = Receiver::start().await?;
    let (tenant, key) = api.tenant_with_id(&admin_token, "kafka").await?;
    api.subscribed_target(
        &key,
        &receiver.url("/kafka"),
        &json!({ "maxInFlight": 256 }),
    )
    .await?;

    let herald_cpu = server.cpu_seconds()?;
    let started = Instant::now();
    produce(&brokers, &topic, &tenant, records, args.payload_bytes).await?;
    let produced = started.elapsed();
    let stored = wait_until_stored(&api, records, started).await?;
    receiver.wait_for(records, Duration::from_secs(120)).await;
    let delivered = receiver
        .last_receipt()
        .map_or(started.elapsed(), |last| last.duration_since(started));
    let herald_cpu = server.cpu_seconds()? - herald_cpu;
    let received = receiver.count();
    let [p50, p99] = receiver.latency_percentiles([50.0, 99.0]);
    let (cores, load) = machine_load();
    let report = json!({
        "scenario": "kafka", "records": records, "partitions": PARTITIONS,
        "producedPerSecond": records as f64 / produced.as_secs_f64(),
        "storedPerSecond": records as f64 / stored.as_secs_f64(),
        "deliveredPerSecond": received.min(records) as f64 / delivered.as_secs_f64(),
        "deliveries": received,
        "latencyMs": { "p50": p50, "p99": p99 },
        "cpuMsPerRecord": herald_cpu * 1000.0 / received.max(1) as f64,
        "toolCpuSeconds": process::cpu_seconds(std::process::id())?,
        "cores": cores, "load": load,
    });
    println!(
        "kafka: {records} records on {PARTITIONS} partitions: produced {:.0}/s, stored {:.0}/s, delivered {:.0}/s \
         ({received} deliveries), produce→receipt p50 {p50:.1} ms p99 {p99:.1} ms, Herald CPU {:.3} ms/record; \
         {cores} cores, load {load}",
        report["producedPerSecond"].as_f64().unwrap_or(0.0),
        report["storedPerSecond"].as_f64().unwrap_or(0.0),
        report["deliveredPerSecond"].as_f64().unwrap_or(0.0),
        report["cpuMsPerRecord"].as_f64().unwrap_or(0.0),
    );
    if args.json {
        println!("{report}");
    }
    if received < records {
        bail!("not every record was delivered before the deadline");
    }
    Ok(())
}

async fn create_topic(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    for result in admin
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create {topic}: {code}"))?;
    }
    Ok(())
}

/// Produces `records` envelopes for `tenant` as fast as the broker takes them.
async fn produce(
    brokers: &str,
    topic: &str,
    tenant: &str,
    records: u64,
    payload_bytes: usize,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()?;
    let mut pending = Vec::new();
    for _ in 0..records {
        let value = format!(
            "{{\"tenant\":\"{tenant}\",\"type\":\"bench.event\",\"payload\":{}}}",
            payload(payload_bytes)
        );
        let record = FutureRecord::<(), str>::to(topic).payload(&value);
        match producer.send_result(record) {
            Ok(delivery) => pending.push(delivery),
            Err((error, _)) => bail!("cannot queue a record: {error}"),
        }
        // Bound what waits in the client's queue.
        if pending.len() >= 10_000 {
            for delivery in pending.drain(..) {
                delivery.await?.map_err(|(error, _)| error)?;
            }
        }
    }
    for delivery in pending {
        delivery.await?.map_err(|(error, _)| error)?;
    }
    Ok(())
}

/// Polls `/metrics` until the source has stored every record; returns how long that
/// took from `started`.
async fn wait_until_stored(api: &Api, records: u64, started: Instant) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let accepted = api
            .metric(r#"herald_kafka_records_total{result="accepted"}"#)
            .await?;
        if accepted >= records as f64 {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("only {accepted} of {records} records were stored before the deadline");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
