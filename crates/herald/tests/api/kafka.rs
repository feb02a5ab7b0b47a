//! The Kafka source against a real Kafka-compatible broker (the one `scripts/test`
//! starts, named by `HERALD_TEST_KAFKA_BROKERS`): both record formats, bad records
//! parked without stalling, no loss and no duplicate across `kill -9`, and two instances
//! sharing a consumer group's partitions.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use herald::ingest::kafka::rdkafka;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::cli::Server;
use crate::helpers::{TestApp, eventually, sample_value, subscribed_over_http};
use crate::receiver::TestReceiver;

/// The test broker's address.
fn broker() -> String {
    std::env::var("HERALD_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!("HERALD_TEST_KAFKA_BROKERS is not set: run the tests with scripts/test, which starts a broker")
    })
}

/// A new topic (and a name for a new consumer group) of its own for one test.
async fn fresh_topic(partitions: i32) -> (String, String) {
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("herald-test-{suffix}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
    (topic, format!("herald-test-group-{suffix}"))
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer")
}

/// Sends one record and waits for the broker's acknowledgement.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    headers: &[(&str, &str)],
    value: &str,
) {
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let mut record = FutureRecord::<(), str>::to(topic)
        .payload(value)
        .headers(owned);
    if let Some(partition) = partition {
        record = record.partition(partition);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("the broker took the record");
}

fn envelope(tenant: &str, key: Option<&str>, n: usize) -> String {
    let mut value = json!({ "tenant": tenant, "type": "kafka.test", "payload": { "n": n } });
    if let Some(key) = key {
        value["idempotencyKey"] = json!(key);
    }
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_record_formats_are_delivered_and_a_bad_record_is_parked_without_stalling() {
    let (topic, group) = fresh_topic(1).await;
    let app = TestApp::spawn_with(|args| {
        args.kafka_brokers = Some(broker());
        args.kafka_topics = Some(topic.clone());
        args.kafka_group = Some(group.clone());
    })
    .await;
    let receiver = TestReceiver::start().await;
    let (tenant, key) = app.tenant("Acme").await;
    app.subscribed_target(&key, &receiver.url("/kafka"), json!({}))
        .await;

    let producer = producer();
    let raw = "{ \"order\" :  7 }";
    produce(
        &producer,
        &topic,
        None,
        &[
            ("herald-event-type", "orders.created"),
            ("herald-tenant", &tenant),
            ("herald-idempotency-key", "order-7"),
        ],
        raw,
    )
    .await;
    produce(
        &producer,
        &topic,
        None,
        &[],
        &envelope(&tenant, Some("e-1"), 1),
    )
    .await;
    produce(&producer, &topic, None, &[], "not an envelope").await;
    produce(&producer, &topic, None, &[], &envelope(&tenant, None, 3)).await;

    let received = eventually("three deliveries", || async {
        let received = receiver.received();
        (received.len() >= 3).then_some(received)
    })
    .await;
    assert_eq!(received.len(), 3);
    let body = |wanted: &[u8]| received.iter().find(|r| &r.body[..] == wanted);
    let headers_format = body(raw.as_bytes()).expect("the value, byte for byte");
    assert_eq!(headers_format.header("herald-event-type"), "orders.created");
    assert!(body(b"{\"n\":1}").is_some(), "the envelope's payload");
    assert!(body(b"{\"n\":3}").is_some(), "the record after the bad one");

    let parked = app
        .get("/v1/kafka/parked", crate::helpers::ADMIN)
        .await
        .expect(200);
    let items = parked["data"].as_array().expect("a list");
    assert_eq!(items.len(), 1, "{parked}");
    assert_eq!(items[0]["topic"], topic.as_str());
    assert_eq!(items[0]["partition"], 0);
    assert_eq!(items[0]["offset"], 2);
    assert!(
        items[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a Herald envelope")),
        "{parked}"
    );
    let metrics = app.metrics().await;
    for expected in [
        r#"herald_kafka_records_total{result="accepted"} 3"#,
        r#"herald_kafka_records_total{result="parked"} 1"#,
        r#"herald_events_ingested_total{source="kafka"} 3"#,
    ] {
        assert!(
            metrics.lines().any(|line| line == expected),
            "{expected} in {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_read_again_store_nothing_new() {
    // A second consumer group reads the topic from its start: exactly what happens to
    // records whose offsets were not committed when Herald crashed after storing them.
    let (topic, group) = fresh_topic(1).await;
    let kafka = |group: String| {
        let topic = topic.clone();
        move |args: &mut herald::config::ServeArgs| {
            args.kafka_brokers = Some(broker());
            args.kafka_topics = Some(topic);
            args.kafka_group = Some(group);
        }
    };
    let app = TestApp::spawn_with(kafka(group.clone())).await;
    let receiver = TestReceiver::start().await;
    let (tenant, key) = app.tenant("Acme").await;
    app.subscribed_target(&key, &receiver.url("/again"), json!({}))
        .await;
    let producer = producer();
    for n in 0..20 {
        let own_key = format!("again-{n}");
        let key = (n % 2 == 0).then_some(own_key.as_str());
        produce(&producer, &topic, None, &[], &envelope(&tenant, key, n)).await;
    }
    eventually("the first reading delivered", || async {
        (receiver.received().len() == 20).then_some(())
    })
    .await;

    let app = app.restart_with(kafka(format!("{group}-again"))).await;
    let records = |result: &str| format!("herald_kafka_records_total{{result=\"{result}\"}}");
    let text = eventually("the second reading", || async {
        let text = app.metrics().await;
        (sample_value(&text, &records("duplicate")) == 20.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample_value(&text, &records("accepted")),
        0.0,
        "nothing new stored"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 20, "nothing delivered twice");
}

/// Waits up to `limit` for `check` to hold.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Distinct bodies (one per record) and distinct events (one per stored event) seen.
fn distinct(receiver: &TestReceiver) -> (usize, usize) {
    let received = receiver.received();
    let bodies: HashSet<Vec<u8>> = received.iter().map(|r| r.body.to_vec()).collect();
    let events: HashSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    (bodies.len(), events.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_mid_stream_loses_no_record_and_stores_none_twice() {
    const RECORDS: usize = 1_500;
    let (topic, group) = fresh_topic(2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = broker();
    let flags = [
        "--allow-targets",
        "127.0.0.0/8",
        "--kafka-brokers",
        broker.as_str(),
        "--kafka-topics",
        topic.as_str(),
        "--kafka-group",
        group.as_str(),
    ];
    let server = Server::start_with(dir.path(), &flags);
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).expect("admin token");
    let receiver = TestReceiver::start().await;
    let (tenant, _) = subscribed_over_http(
        &server.base,
        admin.trim(),
        &receiver.url("/crash"),
        json!({}),
    )
    .await;

    // Half the records carry their own key, half are keyed by their position.
    let producing = tokio::spawn({
        let (topic, tenant) = (topic.clone(), tenant.clone());
        async move {
            let producer = producer();
            // Queued without waiting for each acknowledgement, so the stream is steady.
            let mut sent = Vec::new();
            for n in 0..RECORDS {
                let own_key = format!("key-{n}");
                let key = (n % 2 == 0).then_some(own_key.as_str());
                let value = envelope(&tenant, key, n);
                let record = FutureRecord::<(), str>::to(&topic).payload(&value);
                sent.push(producer.send_result(record).expect("queued"));
            }
            for delivery in sent {
                delivery
                    .await
                    .expect("delivered to the broker")
                    .expect("the broker took the record");
            }
        }
    });
    within(
        Duration::from_secs(30),
        "the consumer to be storing",
        || async { receiver.received().len() >= 200 },
    )
    .await;
    server.kill_9();
    let before_restart = receiver.received().len();
    producing.await.expect("every record produced");

    let restarted = Server::start_with(dir.path(), &flags);
    within(
        Duration::from_secs(60),
        "every record delivered",
        || async { distinct(&receiver).0 >= RECORDS },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (bodies, events) = distinct(&receiver);
    let deliveries = receiver.received().len();
    eprintln!(
        "kafka crash test: {RECORDS} records; {before_restart} deliveries before kill -9, {deliveries} in all; \
         {bodies} distinct records delivered as {events} distinct events; {} deliveries repeated \
         (attempts under way at the kill)",
        deliveries - events
    );
    assert_eq!(bodies, RECORDS, "no record lost");
    assert_eq!(
        events, RECORDS,
        "no record stored twice, though a batch was read again after the restart"
    );
    restarted.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_partitions_and_lose_nothing_when_one_dies() {
    const RECORDS: usize = 600;
    let (topic, group) = fresh_topic(2).await;
    let server_url = herald_store::postgres::testing::server_url();
    let database = herald_store::postgres::testing::fresh_database(&server_url).await;
    let admin = "kafka-cluster-admin-token-0123";
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let broker = broker();
    let flags = [
        "--database-url",
        database.as_str(),
        "--allow-targets",
        "127.0.0.0/8",
        "--kafka-brokers",
        broker.as_str(),
        "--kafka-topics",
        topic.as_str(),
        "--kafka-group",
        group.as_str(),
    ];
    let first = Server::start_with_env(dirs[0].path(), &flags, &[("HERALD_ADMIN_TOKEN", admin)]);
    let second = Server::start_with_env(dirs[1].path(), &flags, &[("HERALD_ADMIN_TOKEN", admin)]);
    let receiver = TestReceiver::start().await;
    let (tenant, _) =
        subscribed_over_http(&first.base, admin, &receiver.url("/shared"), json!({})).await;

    let producer = producer();
    // Alternating partitions, so each instance owns part of the stream.
    let produce_range = |range: std::ops::Range<usize>| {
        let (producer, topic, tenant) = (&producer, &topic, &tenant);
        async move {
            for n in range {
                let partition = i32::try_from(n % 2).expect("0 or 1");
                let value = envelope(tenant, None, n);
                produce(producer, topic, Some(partition), &[], &value).await;
            }
        }
    };
    produce_range(0..RECORDS / 2).await;
    within(
        Duration::from_secs(30),
        "the first half delivered",
        || async { receiver.received().len() >= RECORDS / 2 },
    )
    .await;
    first.kill_9();
    produce_range(RECORDS / 2..RECORDS).await;
    // The survivor takes the dead member's partition once its session times out.
    within(
        Duration::from_secs(60),
        "every record delivered",
        || async { distinct(&receiver).0 >= RECORDS },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (bodies, events) = distinct(&receiver);
    eprintln!(
        "kafka group test: {RECORDS} records over 2 partitions, one of 2 instances killed: {bodies} records \
         delivered as {events} events in {} deliveries",
        receiver.received().len()
    );
    assert_eq!(events, RECORDS, "none stored twice");
    second.terminate();
}
