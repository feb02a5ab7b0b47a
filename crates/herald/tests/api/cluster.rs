//! Several real `herald` processes sharing one PostgreSQL database (a fresh one per
//! test, on the server `scripts/test` starts): work is shared and never done twice
//! while every instance lives, a `kill -9` loses nothing, and a target's limits hold
//! across instances instead of being multiplied by their number.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::cli::Server;
use crate::helpers::{
    Accepted, client, eventually, post_json, spawn_producer, subscribed_over_http,
};
use crate::receiver::TestReceiver;

const ADMIN: &str = "cluster-admin-token-0123456789";

/// Instances of one cluster, each with its own (unused) data directory.
struct Cluster {
    servers: Vec<Option<Server>>,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    /// Starts `size` instances on a fresh database with `extra` flags.
    async fn start(size: usize, extra: &[&str]) -> Self {
        let server = herald_store::postgres::testing::server_url();
        let url = herald_store::postgres::testing::fresh_database(&server).await;
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..size {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut flags = vec![
                "--database-url",
                url.as_str(),
                "--allow-targets",
                "127.0.0.0/8",
            ];
            flags.extend_from_slice(extra);
            servers.push(Some(Server::start_with_env(
                dir.path(),
                &flags,
                &[("HERALD_ADMIN_TOKEN", ADMIN)],
            )));
            dirs.push(dir);
        }
        Self {
            servers,
            _dirs: dirs,
        }
    }

    fn base(&self, index: usize) -> String {
        self.servers[index].as_ref().expect("alive").base.clone()
    }

    fn bases(&self) -> Vec<String> {
        self.servers
            .iter()
            .flatten()
            .map(|server| server.base.clone())
            .collect()
    }

    fn kill_9(&mut self, index: usize) {
        self.servers[index].take().expect("alive").kill_9();
    }

    /// Which live instance says it is the housekeeping leader, if one does.
    async fn leader(&self) -> Option<usize> {
        for (index, server) in self.servers.iter().enumerate() {
            let Some(server) = server else { continue };
            let text = client()
                .get(format!("{}/metrics", server.base))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            if text.lines().any(|line| line == "herald_leader 1") {
                return Some(index);
            }
        }
        None
    }
}

/// A tenant with one target (with `settings`) subscribed to everything; returns the
/// tenant's key.
async fn subscribed(base: &str, url: &str, settings: Value) -> String {
    subscribed_over_http(base, ADMIN, url, settings).await.1
}

/// How many times each event was delivered.
fn deliveries_per_event(received: &[crate::receiver::Received]) -> HashMap<String, usize> {
    let mut per_event = HashMap::new();
    for request in received {
        *per_event
            .entry(request.header("webhook-id").to_owned())
            .or_insert(0) += 1;
    }
    per_event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_share_the_work_and_a_kill_9_loses_nothing() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--delivery-lease",
            "3s",
            "--retry-initial",
            "100ms",
            "--retry-max-delay",
            "500ms",
        ],
    )
    .await;
    let receiver = TestReceiver::start().await;
    // Slow enough that each instance has attempts under way when one is killed.
    receiver.set_delay(Duration::from_millis(20));
    let key = subscribed(
        &cluster.base(0),
        &receiver.url("/cluster"),
        json!({ "maxInFlight": 64 }),
    )
    .await;

    // One producer per instance publishes until its instance dies or it is told to stop.
    let accepted: Accepted = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = cluster
        .bases()
        .into_iter()
        .enumerate()
        .map(|(n, base)| {
            spawn_producer(
                base,
                key.clone(),
                "cluster.test",
                n,
                Arc::clone(&accepted),
                Arc::clone(&stop),
            )
        })
        .collect();
    eventually("a steady stream through all three", || async {
        let delivered = receiver.received().len();
        (accepted.lock().expect("lock").len() >= 600 && delivered >= 200).then_some(())
    })
    .await;

    // Kill the leader, so leadership has to move too.
    let leader = eventually("a leader", || cluster.leader()).await;
    let killed_at = Instant::now();
    cluster.kill_9(leader);
    let before_kill: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.at < killed_at)
        .collect();
    let twice_before_kill = deliveries_per_event(&before_kill)
        .values()
        .filter(|n| **n > 1)
        .count();
    assert_eq!(
        twice_before_kill, 0,
        "while all instances lived, no event was delivered twice"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.await.expect("producer ends");
    }
    let accepted = accepted.lock().expect("lock").clone();

    let missing = eventually("every accepted event to be delivered", || async {
        let seen = deliveries_per_event(&receiver.received());
        let missing = accepted.iter().filter(|id| !seen.contains_key(*id)).count();
        (missing == 0).then_some(missing)
    })
    .await;
    let new_leader = eventually("a new leader", || cluster.leader()).await;
    assert_ne!(new_leader, leader);
    let instances: Value = client()
        .get(format!("{}/v1/instances", cluster.base(new_leader)))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        instances["data"].as_array().map(Vec::len),
        Some(3),
        "the registry lists all three until the dead one has been silent a minute: {instances}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_event = deliveries_per_event(&receiver.received());
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    eprintln!(
        "cluster test: {} events accepted by 3 instances, {} deliveries before kill -9 of the leader, \
         {} in all, {missing} lost, {duplicates} duplicates (deliveries the killed instance had under way)",
        accepted.len(),
        before_kill.len(),
        receiver.received().len(),
    );
    assert_eq!(missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_targets_rate_and_max_in_flight_hold_across_two_instances() {
    let cluster = Cluster::start(2, &[]).await;
    let limited = TestReceiver::start().await;
    let limited_key = subscribed(
        &cluster.base(0),
        &limited.url("/limited"),
        json!({ "rateLimitPerSecond": 20 }),
    )
    .await;
    let narrow = TestReceiver::start().await;
    narrow.set_delay(Duration::from_millis(100));
    let narrow_key = subscribed(
        &cluster.base(1),
        &narrow.url("/narrow"),
        json!({ "maxInFlight": 3 }),
    )
    .await;

    // Both instances ingest, so both have the work at hand.
    let bases = cluster.bases();
    let started = Instant::now();
    for i in 0..60 {
        let base = &bases[i % 2];
        let event = json!({ "type": "limit.test", "payload": { "i": i } });
        post_json(base, "/v1/events", &limited_key, event.clone()).await;
        post_json(base, "/v1/events", &narrow_key, event).await;
    }
    eventually("the narrow target to get its 60", || async {
        (narrow.received().len() >= 60).then_some(())
    })
    .await;
    let arrivals = eventually_all(&limited, 60).await;
    let took = arrivals.last().expect("arrivals").duration_since(started);
    let busiest_second = arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|at| **at >= *start && at.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "rate test: 60 deliveries at 20/s through 2 instances took {took:?}; busiest second {busiest_second}; \
         peak concurrency of the maxInFlight 3 target {}",
        narrow.peak_concurrency()
    );
    assert!(
        busiest_second <= 22,
        "20/s plus a burst of 2 in total, not per instance: {busiest_second} in one second"
    );
    assert!(
        took >= Duration::from_millis(2_700),
        "60 deliveries at 20/s take about 3 s, not 1.5 s: {took:?}"
    );
    assert!(
        narrow.peak_concurrency() <= 3,
        "maxInFlight 3 across both instances: {} at once",
        narrow.peak_concurrency()
    );
}

/// Waits until `receiver` has `count` requests; returns their arrival times in order.
async fn eventually_all(receiver: &TestReceiver, count: usize) -> Vec<Instant> {
    eventually("every rate-limited delivery", || async {
        let received = receiver.received();
        (received.len() >= count).then(|| {
            let mut arrivals: Vec<Instant> = received.iter().map(|r| r.at).collect();
            arrivals.sort();
            arrivals
        })
    })
    .await
}

/// Two in-process instances on one fresh database, with settings `adjust` changes
/// (given each instance's index).
async fn two_in_process_instances(
    adjust: impl Fn(usize, &mut herald::config::ServeArgs),
) -> (crate::helpers::TestApp, crate::helpers::TestApp) {
    let server = herald_store::postgres::testing::server_url();
    let url = herald_store::postgres::testing::fresh_database(&server).await;
    let storage = || crate::helpers::Storage {
        dir: Arc::new(tempfile::tempdir().expect("tempdir")),
        database_url: Some(url.clone()),
    };
    (
        crate::helpers::TestApp::spawn_in_with(storage(), |args| adjust(0, args)).await,
        crate::helpers::TestApp::spawn_in_with(storage(), |args| adjust(1, args)).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_configuration_change_reaches_every_instance_at_once() {
    let (a, b) = two_in_process_instances(|_, _| {}).await;
    let receiver = TestReceiver::start().await;
    let (_, key) = a.tenant("Acme").await;
    a.subscribed_target(&key, &receiver.url("/config"), json!({}))
        .await;
    assert_eq!(publish(&b, &key).await, 1, "b routes by a's subscription");
    eventually("the first delivery", || async {
        (receiver.received().len() == 1).then_some(())
    })
    .await;

    // b has the tenant's routes cached now (for a second). a switches the target off;
    // b must route by the change well within that second.
    let targets = a.get("/v1/webhooks/targets", &key).await.expect(200);
    let target = targets["data"][0]["id"].as_str().expect("an id").to_owned();
    a.patch(
        &format!("/v1/webhooks/targets/{target}"),
        &key,
        json!({ "active": false }),
    )
    .await
    .expect(200);
    let changed = Instant::now();
    let routed = eventually("b to see the change", || async {
        (publish(&b, &key).await == 0).then(|| changed.elapsed())
    })
    .await;
    eprintln!(
        "config test: b stopped routing to the switched-off target {routed:?} after the change"
    );
    assert!(
        routed < Duration::from_millis(500),
        "invalidated by notification, not by the cache's 1 s expiry: {routed:?}"
    );
}

/// Publishes one event through `app`; returns how many deliveries it made.
async fn publish(app: &crate::helpers::TestApp, key: &str) -> u64 {
    app.post(
        "/v1/events",
        key,
        json!({ "type": "config.test", "payload": {} }),
    )
    .await
    .expect(202)["deliveries"]
        .as_u64()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_circuit_opened_by_one_instance_holds_on_the_other() {
    // Only `a` would ever open the circuit on its own: if `b` holds back, it is because
    // it took `a`'s circuit from the store.
    let (a, b) = two_in_process_instances(|index, args| {
        args.circuit_failures = Some(if index == 0 { "3" } else { "1000" }.into());
        args.circuit_cooldown = Some("30s".into());
    })
    .await;
    let receiver = TestReceiver::scripted(Arc::new(|_| (500, Vec::new()))).await;
    let (_, key) = a.tenant("Acme").await;
    let target = a
        .subscribed_target(&key, &receiver.url("/down"), json!({}))
        .await;
    for app in [&a, &b, &a] {
        publish(app, &key).await;
    }
    // `a` opens the circuit once it has seen three failures in a row.
    let open = eventually("the circuit to open", || async {
        let body = b
            .get(&format!("/v1/webhooks/targets/{target}"), &key)
            .await
            .expect(200);
        (body["circuit"]["state"] == "open").then(|| receiver.received().len())
    })
    .await;
    // Both instances now hold the target's work, old and new, for the cool-down.
    for app in [&a, &b, &a, &b] {
        publish(app, &key).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let sent = receiver.received().len();
    eprintln!("circuit test: {open} requests until the circuit opened, {sent} after 1.5 s more");
    assert!(
        sent <= open + 1,
        "neither instance sends while the circuit is open: {open} then {sent} (one may have been under way)"
    );
}
