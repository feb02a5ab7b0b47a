//! Prometheus metrics, one registry per running Herald (no global recorder, so tests
//! can run several instances in one process and count exactly).
//!
//! Labels are bounded: a source, a result — never an id of a tenant, target or event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::store::{QueueStats, Store};
use herald_core::time::Timestamp;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A label set of one bounded label.
type Label = [(&'static str, &'static str); 1];

/// How long queue counts are reused: counting reads both lane indexes, so scrapes
/// (which anyone may send) must not do it more often than this.
const QUEUE_REFRESH: Duration = Duration::from_secs(1);

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric Herald exports.
pub struct Metrics {
    registry: Registry,
    events_ingested: Family<Label, Counter>,
    deliveries: Family<Label, Counter>,
    attempts_started: Family<Label, Counter>,
    attempt_duration: Histogram,
    in_flight: Gauge,
    due: Gauge,
    waiting: Gauge,
    circuits_open: Gauge,
    leader: Gauge,
    kafka_records: Family<Label, Counter>,
    kafka_batch_duration: Histogram,
    kafka_lag: Gauge,
    commit_duration: Histogram,
    /// When the queue gauges were last read from the store; one refresh at a time.
    queue_refreshed: tokio::sync::Mutex<Option<Instant>>,
}

/// How an attempt ended, for `herald_deliveries_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The target answered 2xx.
    Success,
    /// The attempt failed and a retry is scheduled.
    Failure,
    /// The attempt failed and the delivery is dead.
    Dead,
}

impl DeliveryResult {
    fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Dead => "dead",
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("herald");
        let events_ingested = Family::<Label, Counter>::default();
        registry.register(
            "events_ingested",
            "Events accepted and committed, by source",
            events_ingested.clone(),
        );
        let deliveries = Family::<Label, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by how they ended: success, failure (a retry is scheduled) or dead (no retry left)",
            deliveries.clone(),
        );
        let attempts_started = Family::<Label, Counter>::default();
        registry.register(
            "attempts_started",
            "Delivery attempts started, by how the delivery got to this instance: claimed from the queue, or started in flight at intake",
            attempts_started.clone(),
        );
        // 1 ms to about 65 s: loopback answers to the longest target timeout.
        let attempt_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "attempt_duration",
            "Time from sending a delivery to its answer (or failure)",
            Unit::Seconds,
            attempt_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Delivery requests under way",
            in_flight.clone(),
        );
        let due = Gauge::default();
        registry.register(
            "deliveries_due",
            "Pending deliveries due now (the backlog to autoscale on)",
            due.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "deliveries_waiting",
            "Pending deliveries due later (retries waiting for their time)",
            waiting.clone(),
        );
        let circuits_open = Gauge::default();
        registry.register(
            "circuits_open",
            "Targets whose circuit is open or half-open",
            circuits_open.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance is the leader that runs housekeeping (lease recovery, retention)",
            leader.clone(),
        );
        let kafka_records = Family::<Label, Counter>::default();
        registry.register(
            "kafka_records",
            "Kafka records consumed, by result: accepted (stored), duplicate (stored before) or parked (bad)",
            kafka_records.clone(),
        );
        // 1 ms to about 16 s.
        let kafka_batch_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register_with_unit(
            "kafka_batch",
            "Time to store one batch of Kafka records and commit its offsets",
            Unit::Seconds,
            kafka_batch_duration.clone(),
        );
        let kafka_lag = Gauge::default();
        registry.register(
            "kafka_lag",
            "Kafka records not yet consumed on this instance's partitions (last read, at most every 5 s)",
            kafka_lag.clone(),
        );
        // 0.1 ms to about 3 s.
        let commit_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register_with_unit(
            "store_commit",
            "Time one group of store writes takes, from BEGIN to the end of COMMIT",
            Unit::Seconds,
            commit_duration.clone(),
        );
        Arc::new(Self {
            registry,
            events_ingested,
            deliveries,
            attempts_started,
            attempt_duration,
            in_flight,
            due,
            waiting,
            circuits_open,
            leader,
            kafka_records,
            kafka_batch_duration,
            kafka_lag,
            commit_duration,
            queue_refreshed: tokio::sync::Mutex::new(None),
        })
    }

    /// Counts events ingested from `source` (`http`, `kafka`).
    pub fn events_ingested(&self, source: &'static str, count: u64) {
        self.events_ingested
            .get_or_create(&[("source", source)])
            .inc_by(count);
    }

    /// Counts one finished attempt and its duration.
    pub fn attempt_finished(&self, result: DeliveryResult, duration: Duration) {
        self.deliveries
            .get_or_create(&[("result", result.label())])
            .inc();
        self.attempt_duration.observe(duration.as_secs_f64());
    }

    /// Counts one attempt started, of a delivery started in flight at intake or claimed.
    pub fn attempt_started(&self, at_intake: bool) {
        let how = if at_intake { "intake" } else { "claim" };
        self.attempts_started.get_or_create(&[("from", how)]).inc();
    }

    /// Sets how many delivery requests are under way.
    pub fn set_in_flight(&self, count: u32) {
        self.in_flight.set(i64::from(count));
    }

    /// Counts Kafka records by result (`accepted`, `duplicate`, `parked`).
    pub fn kafka_records(&self, result: &'static str, count: u64) {
        self.kafka_records
            .get_or_create(&[("result", result)])
            .inc_by(count);
    }

    /// Observes one Kafka batch, from its first record read to its offsets committed.
    pub fn kafka_batch_took(&self, duration: Duration) {
        self.kafka_batch_duration.observe(duration.as_secs_f64());
    }

    /// Sets the consumer lag of this instance's partitions.
    pub fn set_kafka_lag(&self, records: i64) {
        self.kafka_lag.set(records);
    }

    /// Says whether this instance leads now.
    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Observes one store group commit.
    pub fn commit_took(&self, duration: Duration) {
        self.commit_duration.observe(duration.as_secs_f64());
    }

    /// Reads the queue gauges from the store unless they were read less than a second
    /// ago. A failure keeps the last counts (and is logged), so the rest of the metrics
    /// are still served when the store struggles.
    pub async fn refresh_queue(&self, store: &Store) {
        let mut refreshed = self.queue_refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < QUEUE_REFRESH) {
            return;
        }
        match store.queue_stats(Timestamp::now()).await {
            Ok(stats) => {
                self.set_queue(&stats);
                *refreshed = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(%error, "counting the queue for /metrics failed; serving the last counts");
            }
        }
    }

    /// Sets the queue gauges from the store's counts.
    fn set_queue(&self, stats: &QueueStats) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.due.set(gauge(stats.due));
        self.waiting.set(gauge(stats.waiting));
        self.circuits_open.set(gauge(stats.open_circuits));
    }

    /// The exposition text (OpenMetrics, which Prometheus scrapes natively).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
