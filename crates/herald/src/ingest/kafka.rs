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
use herald_core::service::{Management, UnknownTenant};
use herald_core::store::{PARKED_VALUE_LIMIT, ParkedRecord};
use herald_core::time::Timestamp;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;

/// The Kafka client this build speaks through (for tests and tools that produce).
pub use rdkafka;

use super::record::{self, RawRecord};
use crate::metrics::Metrics;
use crate::scheduler::Hints;

/// Most records in one batch.
const MAX_BATCH: usize = 500;
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
            message = consumer.recv() => message,
        };
        let first = match first {
            Ok(message) => message.detach(),
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
        commit(&consumer, &batch);
        sinks.metrics.kafka_batch_took(started.elapsed());
        if Instant::now() >= next_lag {
            // Asking the brokers blocks: off the async workers.
            let (consumer, metrics) = (Arc::clone(&consumer), Arc::clone(&sinks.metrics));
            tokio::task::spawn_blocking(move || report_lag(&consumer, &metrics));
            next_lag = Instant::now() + LAG_EVERY;
        }
    }
}

/// `first` and whatever else arrives within [`BATCH_WAIT`], up to [`MAX_BATCH`].
async fn gather(consumer: &StreamConsumer, first: OwnedMessage) -> Vec<OwnedMessage> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    while batch.len() < MAX_BATCH {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(message.detach()),
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading from Kafka failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// Stores the batch, retrying while the store fails: its offsets must not be committed
/// before it is durable. `false` if Herald is stopping before it could.
async fn store_until_done(
    batch: &[OwnedMessage],
    settings: &KafkaSettings,
    sinks: &Sinks,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let mut pause = Duration::from_millis(100);
    loop {
        match store_batch(batch, settings, sinks).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::error!(
                    error = %error, records = batch.len(),
                    "storing a Kafka batch failed; retrying before committing its offsets"
                );
                if *shutdown.borrow() {
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

/// Decodes the batch, stores its events in one commit, parks its bad records.
async fn store_batch(
    batch: &[OwnedMessage],
    settings: &KafkaSettings,
    sinks: &Sinks,
) -> Result<(), herald_core::service::ServiceError> {
    let raw: Vec<RawRecord> = batch.iter().map(raw_record).collect();
    let mut good = Vec::new();
    let mut good_records = Vec::new();
    let mut bad = Vec::new();
    for record in &raw {
        match record::decode(record, settings.max_payload) {
            Ok(decoded) => {
                good.push((decoded.tenant, decoded.event));
                good_records.push(record);
            }
            Err(reason) => bad.push((record, reason)),
        }
    }
    let published = sinks.management.publish_many(good).await?;
    let (mut accepted, mut duplicates) = (0, 0);
    let mut targets = Vec::new();
    for (record, result) in good_records.into_iter().zip(published) {
        match result {
            Ok(published) if published.duplicate => duplicates += 1,
            Ok(published) => {
                accepted += 1;
                targets.extend(published.targets);
            }
            Err(UnknownTenant(tenant)) => {
                bad.push((record, format!("tenant {tenant} does not exist")));
            }
        }
    }
    let parked = park(&bad);
    sinks
        .management
        .store()
        .park_records(parked)
        .await
        .map_err(herald_core::service::ServiceError::from)?;
    sinks.hints.first_attempts(targets, Timestamp::now());
    sinks.metrics.events_ingested("kafka", accepted);
    sinks.metrics.kafka_records("accepted", accepted);
    sinks.metrics.kafka_records("duplicate", duplicates);
    sinks
        .metrics
        .kafka_records("parked", u64::try_from(bad.len()).unwrap_or(u64::MAX));
    Ok(())
}

/// The bad records as the store keeps them, each logged with its position.
fn park(bad: &[(&RawRecord, String)]) -> Vec<ParkedRecord> {
    bad.iter()
        .map(|(record, reason)| {
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
                reason: reason.clone(),
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

fn raw_record(message: &OwnedMessage) -> RawRecord {
    let headers = message
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
                .collect()
        })
        .unwrap_or_default();
    RawRecord {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        headers,
        value: message.payload().map(<[u8]>::to_vec),
    }
}

/// Commits, for each partition of the batch, the offset after its last record. A
/// commit that fails (the partition moved to another member meanwhile) is only logged:
/// the new owner re-reads those records and their keys make them duplicates.
fn commit(consumer: &StreamConsumer, batch: &[OwnedMessage]) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic(), message.partition()))
            .or_insert(0);
        *entry = (*entry).max(message.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        if let Err(error) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::warn!(%error, topic, partition, "cannot name an offset to commit");
        }
    }
    if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
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
