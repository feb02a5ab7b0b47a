//! Durability: `kill -9` of the real `herald` process under a steady stream of events
//! loses no accepted event. Every event answered 202 is delivered after a restart on
//! the same data directory; the duplicates the crash caused are counted and reported.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::json;

use crate::cli::Server;
use crate::helpers::{Accepted, client, eventually, spawn_producer};
use crate::receiver::TestReceiver;

const PRODUCERS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_mid_stream_loses_no_accepted_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = [
        "--allow-targets",
        "127.0.0.0/8",
        "--retry-initial",
        "100ms",
        "--retry-max-delay",
        "500ms",
    ];
    let server = Server::start_with(dir.path(), &flags);
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).expect("admin token");
    let http = client();
    let receiver = TestReceiver::start().await;

    let call = |base: &str, path: &str, token: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let tenant: serde_json::Value = call(
        &server.base,
        "/v1/tenants",
        &admin,
        json!({ "name": "Acme" }),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    let key = tenant["apiKey"].as_str().expect("key").to_owned();
    let target: serde_json::Value = call(
        &server.base,
        "/v1/webhooks/targets",
        &key,
        json!({ "url": receiver.url("/crash") }),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    let filter: serde_json::Value = call(
        &server.base,
        "/v1/webhooks/filters",
        &key,
        json!({ "events": ["*"] }),
    )
    .await
    .expect("sent")
    .json()
    .await
    .expect("json");
    let subscription = json!({ "targetId": target["id"], "filterId": filter["id"] });
    assert!(
        call(
            &server.base,
            "/v1/webhooks/subscriptions",
            &key,
            subscription
        )
        .await
        .expect("sent")
        .status()
        .is_success()
    );

    // Producers publish until the server dies under them; only 202s count as accepted.
    let accepted: Accepted = Arc::default();
    let never = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|n| {
            let (base, key) = (server.base.clone(), key.clone());
            spawn_producer(
                base,
                key,
                "crash.test",
                n,
                Arc::clone(&accepted),
                Arc::clone(&never),
            )
        })
        .collect();
    eventually("a steady stream to be flowing", || async {
        let delivered = receiver.received().len();
        (accepted.lock().expect("lock").len() >= 300 && delivered >= 50).then_some(())
    })
    .await;
    server.kill_9();
    for producer in producers {
        producer.await.expect("producer ends when the server dies");
    }
    let accepted = accepted.lock().expect("lock").clone();
    let delivered_before_restart = receiver.received().len();

    let restarted = Server::start_with(dir.path(), &flags);
    let missing = eventually("every accepted event to be delivered", || async {
        let seen: HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        let missing = accepted.iter().filter(|id| !seen.contains(*id)).count();
        (missing == 0).then_some(missing)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for request in receiver.received() {
        *per_event
            .entry(request.header("webhook-id").to_owned())
            .or_default() += 1;
    }
    let duplicates: usize = per_event.values().map(|n| n - 1).sum();
    eprintln!(
        "crash test: {} events accepted, {} deliveries before kill -9, {} after restart, {missing} lost, {duplicates} duplicates",
        accepted.len(),
        delivered_before_restart,
        receiver.received().len() - delivered_before_restart
    );
    assert_eq!(missing, 0);
    restarted.terminate();
}
