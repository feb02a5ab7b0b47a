//! The Kafka source: a consumer group member that turns records into events.
//!
//! At least once, never lost: records are read in batches; a batch's events (with their
//! fan-out) are stored in one commit and its bad records parked, and only then are the
//! batch's offsets committed. A crash in between re-reads the batch after the restart
//! (or on whichever instance gets the partition), and every record's idempotency key —
//! its own, or its topic/partition/offset — makes the second reading store nothing new.
//!
//! A record that carries no acceptable event (see [`super::record`]) never stalls its
//! partition: it is counted, logged with its position, parked in the store for an
//! operator (`GET /v1/kafka/parked`), and the consumer moves on.
//!
//! When the store cannot be written the batch is retried, with growing pauses, and
//! nothing is committed until it succeeds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::id::ParkedId;
use herald_core::service::{Management, ServiceError, UnknownTenant};
use herald_core::store::{PARKED_VALUE_LIMIT, ParkedRecord, StoreError};
use herald_core::time::Timestamp;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

/// The Kafka client this build speaks through (for tests and tools that produce).
pub use rdkafka;

use super::record::{self, RawRecord};
use crate::metrics::Metrics;
use crate::scheduler::Hints;

/// Most records in one batch.
const MAX_BATCH: usize = 500;
/// Most bytes of record values in one batch.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// How long a batch waits for more records once it has one.
const BATCH_WAIT: Duration = Duration::from_millis(5);
/// The longest pause between attempts to store a batch while the store fails.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// How often the consumer lag is read from the brokers.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// How the source connects and what it reads.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topics to consume.
    pub topics: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// This instance's id, part of the client id the brokers see.
    pub instance_id: String,
    /// Largest accepted payload, in bytes.
    pub max_payload: usize,
}

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
#[error("--kafka-brokers (HERALD_KAFKA_BROKERS): cannot start the Kafka consumer: {0}")]
pub struct KafkaError(#[from] rdkafka::error::KafkaError);

/// The source's connections to the rest of Herald.
pub struct Sinks {
    /// Stores events (and finds their tenants' routes).
    pub management: Management,
    /// Told which targets have new work.
    pub hints: Arc<Hints>,
    /// Counts records and batches.
    pub metrics: Arc<Metrics>,
}

/// Joins the consumer group and subscribes; the returned consumer is run by [`run`].
pub fn connect(settings: &KafkaSettings) -> Result<StreamConsumer, KafkaError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", format!("herald-{}", settings.instance_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A member that dies is noticed within this, and its partitions move.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .create()?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `shutdown` turns true (or its sender is dropped).
pub async fn run(
    consumer: StreamConsumer,
    settings: KafkaSettings,
    sinks: Sinks,
    mut shutdown: watch::Receiver<bool>,
) {
    let consumer = Arc::new(consumer);
    let mut next_lag = Instant::now();
    loop {
        let first = tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
            message = consumer.recv() => message.map(|m| raw_record(&m)),
        };
        let first = match first {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(%error, "reading from Kafka failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let started = Instant::now();
        let batch = gather(&consumer, first).await;
        if !store_until_done(&batch, &settings, &sinks, &shutdown).await {
            // Stopping with the batch unstored: its offsets stay uncommitted, so the
            // group reads it again.
            break;
        }
        // A synchronous commit blocks (up to seconds while the group coordinator
        // moves): off the async workers.
        let offsets = next_offsets(&batch);
        let committer = Arc::clone(&consumer);
        if let Err(error) = tokio::task::spawn_blocking(move || commit(&committer, &offsets)).await
        {
            tracing::error!(%error, "the offset commit task failed");
        }
        sinks.metrics.kafka_batch_took(started.elapsed());
        if Instant::now() >= next_lag {
            let (consumer, metrics) = (Arc::clone(&consumer), Arc::clone(&sinks.metrics));
            tokio::task::spawn_blocking(move || report_lag(&consumer, &metrics));
            next_lag = Instant::now() + LAG_EVERY;
        }
    }
}

/// `first` and whatever else arrives within [`BATCH_WAIT`], up to [`MAX_BATCH`] records
/// or [`MAX_BATCH_BYTES`] of values.
async fn gather(consumer: &StreamConsumer, first: RawRecord) -> Vec<RawRecord> {
    let mut bytes = value_bytes(&first);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => {
                let record = raw_record(&message);
                bytes += value_bytes(&record);
                batch.push(record);
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading from Kafka failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

fn value_bytes(record: &RawRecord) -> usize {
    record.value.as_ref().map_or(0, Vec::len)
}

/// Stores the batch: its events in one commit (retried while the store is
/// unreachable), then its bad records. Offsets must not be committed before both are
/// durable. `false` if Herald is stopping before that.
async fn store_until_done(
    batch: &[RawRecord],
    settings: &KafkaSettings,
    sinks: &Sinks,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for record in batch {
        match record::decode(record, settings.max_payload) {
            Ok(decoded) => good.push((record, decoded)),
            Err(reason) => bad.push((record, reason)),
        }
    }
    let Some(outcome) = retrying(shutdown, "storing a batch of Kafka events", || {
        publish(&sinks.management, &good)
    })
    .await
    else {
        return false;
    };
    bad.extend(outcome.refused);
    let parked = park(&bad);
    let store = sinks.management.store();
    let parking = retrying(shutdown, "parking bad Kafka records", || {
        store.park_records(parked.clone())
    });
    if parking.await.is_none() {
        return false;
    }
    sinks
        .hints
        .first_attempts(outcome.targets, Timestamp::now());
    let metrics = &sinks.metrics;
    metrics.events_ingested("kafka", outcome.accepted);
    metrics.kafka_records("accepted", outcome.accepted);
    metrics.kafka_records("duplicate", outcome.duplicates);
    metrics.kafka_records("parked", u64::try_from(bad.len()).unwrap_or(u64::MAX));
    true
}

/// Runs `attempt` until it succeeds, pausing longer after each failure; `None` if Herald
/// starts stopping meanwhile.
async fn retrying<T, E, F, Fut>(
    shutdown: &watch::Receiver<bool>,
    what: &str,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(100);
    let mut shutdown = shutdown.clone();
    loop {
        match attempt().await {
            Ok(value) => return Some(value),
            Err(error) => {
                tracing::error!(%error, "{what} failed; retrying before committing offsets");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return None;
                }
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

/// What storing a batch's events did.
struct Published<'a> {
    accepted: u64,
    duplicates: u64,
    /// Targets with new deliveries.
    targets: Vec<herald_core::id::TargetId>,
    /// Records refused by the store's rules (an unknown tenant), with the reason.
    refused: Vec<(&'a RawRecord, String)>,
}

/// Stores the events in one commit. When the store refuses the batch for something
/// in the data rather than being unreachable, each event is stored on its own and the
/// ones refused join the bad records, so one cannot stall the partition.
async fn publish<'a>(
    management: &Management,
    good: &[(&'a RawRecord, record::Decoded)],
) -> Result<Published<'a>, ServiceError> {
    let events = |items: &[(&RawRecord, record::Decoded)]| {
        items
            .iter()
            .map(|(_, d)| (d.tenant.clone(), d.event.clone()))
            .collect::<Vec<_>>()
    };
    match management.publish_many(events(good)).await {
        Ok(results) => Ok(tally(good.iter().map(|(r, _)| *r).zip(results))),
        Err(ServiceError::Store(StoreError::Backend(error))) => {
            Err(ServiceError::Store(StoreError::Backend(error)))
        }
        Err(batch_error) => {
            tracing::warn!(%batch_error, "the store refused a Kafka batch; storing its records one by one");
            let mut results = Vec::with_capacity(good.len());
            let mut refused = Vec::new();
            for item in good {
                match management
                    .publish_many(events(std::slice::from_ref(item)))
                    .await
                {
                    Ok(mut one) => results.push((item.0, one.remove(0))),
                    Err(ServiceError::Store(StoreError::Backend(error))) => {
                        return Err(ServiceError::Store(StoreError::Backend(error)));
                    }
                    Err(error) => refused.push((item.0, format!("the store refused it: {error}"))),
                }
            }
            let mut published = tally(results);
            published.refused.extend(refused);
            Ok(published)
        }
    }
}

fn tally<'a>(
    results: impl IntoIterator<
        Item = (
            &'a RawRecord,
            Result<herald_core::service::Published, UnknownTenant>,
        ),
    >,
) -> Published<'a> {
    let mut published = Published {
        accepted: 0,
        duplicates: 0,
        targets: Vec::new(),
        refused: Vec::new(),
    };
    for (record, result) in results {
        match result {
            Ok(event) if event.duplicate => published.duplicates += 1,
            Ok(event) => {
                published.accepted += 1;
                published.targets.extend(event.targets);
            }
            Err(UnknownTenant(tenant)) => published
                .refused
                .push((record, format!("tenant {tenant} does not exist"))),
        }
    }
    published
}

/// The bad records as the store keeps them, each logged with its position.
fn park(bad: &[(&RawRecord, String)]) -> Vec<ParkedRecord> {
    bad.iter()
        .map(|(record, reason)| {
            // The reason may quote the record (a field name): no control characters,
            // which a database text column may refuse.
            let reason: String = reason.chars().flat_map(char::escape_default).collect();
            tracing::warn!(
                topic = record.topic,
                partition = record.partition,
                offset = record.offset,
                reason = reason.as_str(),
                "parked a Kafka record that carries no acceptable event"
            );
            let value = record.value.as_ref();
            ParkedRecord {
                id: ParkedId::generate(),
                topic: record.topic.clone(),
                partition: record.partition,
                offset: record.offset,
                reason,
                headers: record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
                value: value.map(|v| v[..v.len().min(PARKED_VALUE_LIMIT)].to_vec()),
                value_bytes: value.map_or(0, |v| u64::try_from(v.len()).unwrap_or(u64::MAX)),
                parked_at: Timestamp::now(),
            }
        })
        .collect()
}

/// A message as [`record::decode`] reads it. rdkafka panics on a header name that is
/// not UTF-8 (which brokers do not refuse): such a record is marked instead, and parked.
fn raw_record(message: &impl Message) -> RawRecord {
    let headers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    }));
    let (headers, headers_readable) = match headers {
        Ok(headers) => (headers, true),
        Err(_) => (Vec::new(), false),
    };
    RawRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        headers,
        headers_readable,
        value: message.payload().map(<[u8]>::to_vec),
    }
}

/// For each partition of the batch, the offset after its last record.
fn next_offsets(batch: &[RawRecord]) -> Vec<(String, i32, i64)> {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for record in batch {
        let entry = next
            .entry((record.topic.as_str(), record.partition))
            .or_insert(0);
        *entry = (*entry).max(record.offset + 1);
    }
    next.into_iter()
        .map(|((topic, partition), offset)| (topic.to_owned(), partition, offset))
        .collect()
}

/// Commits the offsets (blocking). A commit that fails (the partition moved to another
/// member meanwhile) is only logged: the new owner re-reads those records and their
/// keys make them duplicates.
fn commit(consumer: &StreamConsumer, offsets: &[(String, i32, i64)]) {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        if let Err(error) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(%error, topic, partition, "cannot name an offset to commit");
        }
    }
    if let Err(error) = consumer.commit(&list, CommitMode::Sync) {
        tracing::warn!(%error, "committing Kafka offsets failed; the records will be read again and deduplicated");
    }
}

/// Reads how far behind the end of its partitions this member is (blocking).
fn report_lag(consumer: &StreamConsumer, metrics: &Metrics) {
    if let Some(lag) = lag(consumer) {
        metrics.set_kafka_lag(lag);
    }
}

/// The records between this member's position and the end of each of its partitions.
fn lag(consumer: &StreamConsumer) -> Option<i64> {
    let positions = consumer.position().ok()?;
    let mut lag = 0_i64;
    for element in positions.elements() {
        let (_, high) = consumer
            .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(1))
            .ok()?;
        if let Offset::Offset(position) = element.offset() {
            lag += (high - position).max(0);
        }
    }
    Some(lag)
}
