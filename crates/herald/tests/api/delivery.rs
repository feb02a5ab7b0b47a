//! End-to-end delivery to real loopback receivers: fan-out, filters, signatures,
//! byte-exact payloads, idempotency, retries, Retry-After, dead letters and redrive.

use std::sync::Arc;
use std::time::Duration;

use herald_core::secret::TargetSecret;
use herald_core::signing::verify;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, string};
use crate::receiver::{Received, TestReceiver};

/// Posts a raw JSON text as an event envelope (so its exact bytes are under test).
async fn publish_text(app: &TestApp, key: &str, body: &str) -> crate::helpers::Answer {
    let response = app
        .client
        .post(format!("{}/v1/events", app.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    crate::helpers::answer(response).await
}

/// Creates a target at `url` subscribed to `patterns`; returns (target id, secret).
async fn subscribed_target(
    app: &TestApp,
    key: &str,
    url: &str,
    patterns: &[&str],
) -> (String, String) {
    let target = app
        .post(
            "/v1/webhooks/targets",
            key,
            json!({ "url": url, "headers": { "X-Team": "billing" } }),
        )
        .await
        .expect(201);
    let filter = app.filter(key, patterns).await;
    app.subscription(key, &string(&target["id"]), &string(&filter["id"]))
        .await;
    (string(&target["id"]), string(&target["secret"]))
}

fn assert_signed(received: &Received, secret: &str) {
    let secret = TargetSecret::parse(secret, "secret").expect("valid secret");
    let timestamp: i64 = received
        .header("webhook-timestamp")
        .parse()
        .expect("numeric timestamp");
    assert!(
        verify(
            &secret,
            received.header("webhook-id"),
            timestamp,
            &received.body,
            received.header("webhook-signature")
        ),
        "signature verifies with the target's secret"
    );
}

async fn wait_for_status(app: &TestApp, key: &str, delivery: &str, status: &str) -> Value {
    eventually(&format!("delivery {delivery} to be {status}"), || async {
        let body = app
            .get(&format!("/v1/deliveries/{delivery}"), key)
            .await
            .expect(200);
        (body["status"] == status).then_some(body)
    })
    .await
}

async fn only_delivery(app: &TestApp, key: &str, event: &str) -> String {
    let body = app
        .get(&format!("/v1/events/{event}"), key)
        .await
        .expect(200);
    let deliveries = body["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{body}");
    string(&deliveries[0]["id"])
}

/// Publishes one `a.b` event; returns the id of its only delivery.
async fn publish_one(app: &TestApp, key: &str) -> String {
    let event = app
        .post("/v1/events", key, json!({ "type": "a.b", "payload": [1] }))
        .await
        .expect(202);
    only_delivery(app, key, &string(&event["id"])).await
}

async fn retry(app: &TestApp, key: &str, delivery: &str) -> crate::helpers::Answer {
    app.call(
        Method::POST,
        &format!("/v1/deliveries/{delivery}/retry"),
        Some(key),
        None,
    )
    .await
}

#[tokio::test]
async fn events_fan_out_to_matching_targets_signed_and_byte_exact() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant("Acme").await;
    let (_, secret_a) =
        subscribed_target(&app, &key, &receiver.url("/a"), &["core.orders.*"]).await;
    let (_, secret_b) =
        subscribed_target(&app, &key, &receiver.url("/b"), &["core.orders.created"]).await;
    subscribed_target(&app, &key, &receiver.url("/nomatch"), &["billing.*"]).await;
    let (inactive_target, _) =
        subscribed_target(&app, &key, &receiver.url("/inactive-target"), &["*"]).await;
    app.patch(
        &format!("/v1/webhooks/targets/{inactive_target}"),
        &key,
        json!({ "active": false }),
    )
    .await
    .expect(200);
    let paused = subscribed_target(&app, &key, &receiver.url("/paused"), &["*"]).await;
    let subs = app
        .get("/v1/webhooks/subscriptions", &key)
        .await
        .expect(200);
    let paused_sub = subs["data"]
        .as_array()
        .expect("subs")
        .iter()
        .find(|s| s["targetId"] == paused.0)
        .expect("found")
        .clone();
    app.patch(
        &format!("/v1/webhooks/subscriptions/{}", string(&paused_sub["id"])),
        &key,
        json!({ "active": false }),
    )
    .await
    .expect(200);

    let payload = r#"{"order" : 42,  "items":[1, 2 ],"note":"é\u00e9"}"#;
    let envelope = format!(r#"{{"type":"core.orders.created","payload":{payload}}}"#);
    let accepted = publish_text(&app, &key, &envelope).await.expect(202);
    assert_eq!(accepted["deliveries"], 2);
    assert_eq!(accepted["duplicate"], false);
    let event_id = string(&accepted["id"]);

    eventually("both deliveries", || async {
        (receiver.received().len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        2,
        "only the two matching, active subscriptions: {received:?}"
    );
    for (path, secret) in [("/a", &secret_a), ("/b", &secret_b)] {
        let request = receiver
            .received_on(path)
            .pop()
            .unwrap_or_else(|| panic!("{path} received"));
        assert_eq!(
            &request.body[..],
            payload.as_bytes(),
            "payload delivered byte for byte"
        );
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.header("webhook-id"), event_id);
        assert_eq!(request.header("herald-event-type"), "core.orders.created");
        assert_eq!(request.header("herald-attempt"), "1");
        assert_eq!(request.header("x-team"), "billing");
        assert!(request.header("user-agent").starts_with("Herald/"));
        assert_signed(&request, secret);
        let other = if path == "/a" { &secret_b } else { &secret_a };
        let wrong = TargetSecret::parse(other, "s").expect("secret");
        let ts: i64 = request.header("webhook-timestamp").parse().expect("ts");
        assert!(
            !verify(
                &wrong,
                &event_id,
                ts,
                &request.body,
                request.header("webhook-signature")
            ),
            "secrets are per target"
        );
    }
    let event = eventually("deliveries to succeed", || async {
        let body = app
            .get(&format!("/v1/events/{event_id}"), &key)
            .await
            .expect(200);
        body["deliveries"]
            .as_array()
            .is_some_and(|d| d.iter().all(|d| d["status"] == "succeeded"))
            .then_some(body)
    })
    .await;
    assert_eq!(
        event["payload"],
        serde_json::from_str::<Value>(payload).expect("json")
    );
}

#[tokio::test]
async fn raw_events_keep_their_bytes_and_content_type() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant("Acme").await;
    let (_, secret) = subscribed_target(&app, &key, &receiver.url("/raw"), &["files.*"]).await;
    let bytes: Vec<u8> = (0..=255u8).chain(b"\r\n\x00 end".iter().copied()).collect();
    let response = app
        .client
        .post(format!("{}/v1/events/files.uploaded", app.base))
        .bearer_auth(&key)
        .header("content-type", "application/x-custom; v=2")
        .body(bytes.clone())
        .send()
        .await
        .expect("sent");
    let accepted = crate::helpers::answer(response).await.expect(202);
    assert_eq!(accepted["deliveries"], 1);
    let request = eventually("the raw delivery", || async { receiver.received().pop() }).await;
    assert_eq!(&request.body[..], &bytes[..]);
    assert_eq!(request.header("content-type"), "application/x-custom; v=2");
    assert_signed(&request, &secret);
}

#[tokio::test]
async fn an_idempotency_key_delivers_once() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant("Acme").await;
    subscribed_target(&app, &key, &receiver.url("/x"), &["*"]).await;
    let event = json!({ "type": "a.b", "payload": { "n": 1 }, "idempotencyKey": "order-42" });
    let first = app
        .post("/v1/events", &key, event.clone())
        .await
        .expect(202);
    let again = app.post("/v1/events", &key, event).await.expect(200);
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["deliveries"], 1);
    eventually("the delivery", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_failing_target_is_retried_with_backoff_until_it_succeeds() {
    let app = TestApp::spawn().await;
    let receiver =
        TestReceiver::scripted(Arc::new(|n| (if n < 2 { 500 } else { 204 }, Vec::new()))).await;
    let (_, key) = app.tenant("Acme").await;
    subscribed_target(&app, &key, &receiver.url("/flaky"), &["*"]).await;
    let event = app
        .post("/v1/events", &key, json!({ "type": "a.b", "payload": {} }))
        .await
        .expect(202);
    let delivery = only_delivery(&app, &key, &string(&event["id"])).await;
    let done = wait_for_status(&app, &key, &delivery, "succeeded").await;
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["lastStatusCode"], 204);

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let numbers: Vec<&str> = received
        .iter()
        .map(|r| r.header("herald-attempt"))
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    assert!(
        received
            .iter()
            .all(|r| r.header("webhook-id") == string(&event["id"])),
        "same webhook-id on every retry"
    );
    // Retry ceilings are 100 ms then 200 ms (full jitter below them), and nothing retries in a busy loop.
    let gaps: Vec<Duration> = received.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_millis(1200)),
        "gaps within the backoff ceilings: {gaps:?}"
    );

    let attempts = app
        .get(&format!("/v1/deliveries/{delivery}/attempts"), &key)
        .await
        .expect(200);
    let attempts = attempts["data"].as_array().expect("attempts");
    let codes: Vec<&Value> = attempts.iter().map(|a| &a["statusCode"]).collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(204)]);
    assert_eq!(attempts[0]["error"], "HTTP 500");
    assert!(
        attempts
            .windows(2)
            .all(|w| string(&w[0]["startedAt"]) <= string(&w[1]["startedAt"]))
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    // Retry-After is capped by the longest retry delay, so make that longer than 2 s.
    let app = TestApp::spawn_with(|args| args.retry_max_delay = Some("5s".into())).await;
    let script = Arc::new(|n| {
        if n == 0 {
            (429, vec![("retry-after", "2".to_owned())])
        } else {
            (200, Vec::new())
        }
    });
    let receiver = TestReceiver::scripted(script).await;
    let (_, key) = app.tenant("Acme").await;
    subscribed_target(&app, &key, &receiver.url("/busy"), &["*"]).await;
    app.post("/v1/events", &key, json!({ "type": "a.b", "payload": 1 }))
        .await
        .expect(202);
    eventually("the retry", || async {
        (receiver.received().len() >= 2).then_some(())
    })
    .await;
    let received = receiver.received();
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "waited for Retry-After (2 s), not the 100 ms backoff: {gap:?}"
    );
}

#[tokio::test]
async fn a_delivery_goes_dead_and_a_redrive_delivers_it() {
    let app = TestApp::spawn_with(|args| args.retry_max_attempts = Some("2".into())).await;
    let receiver = TestReceiver::scripted(Arc::new(|_| (503, Vec::new()))).await;
    let (_, key) = app.tenant("Acme").await;
    let (target, _) = subscribed_target(&app, &key, &receiver.url("/down"), &["*"]).await;
    let delivery = publish_one(&app, &key).await;
    let dead = wait_for_status(&app, &key, &delivery, "dead").await;
    assert_eq!(dead["attempts"], 2);
    let letters = app
        .get(&format!("/v1/dead-letters?targetId={target}"), &key)
        .await
        .expect(200);
    assert_eq!(letters["data"][0]["id"], delivery);

    receiver.rescript(Arc::new(|_| (200, Vec::new())));
    let other_target = app
        .post(
            "/v1/dead-letters/redrive",
            &key,
            json!({ "eventType": "other.type" }),
        )
        .await
        .expect(200);
    assert_eq!(other_target["requeued"], 0, "the selection is honoured");
    let redriven = app
        .post(
            "/v1/dead-letters/redrive",
            &key,
            json!({ "targetId": target }),
        )
        .await
        .expect(200);
    assert_eq!(redriven["requeued"], 1);
    let done = wait_for_status(&app, &key, &delivery, "succeeded").await;
    assert_eq!(done["attempts"], 3);
    let letters = app.get("/v1/dead-letters", &key).await.expect(200);
    assert_eq!(letters["data"], json!([]));

    let again = retry(&app, &key, &delivery).await;
    assert_eq!(
        again.status.as_u16(),
        202,
        "a succeeded delivery can be re-sent: {again:?}"
    );
    eventually("the re-send", || async {
        (receiver.received().len() == 4).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deleted_targets_received_deliveries_stay_as_history_and_are_not_resent() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::scripted(Arc::new(|_| (200, Vec::new()))).await;
    let (_, key) = app.tenant("Acme").await;
    let (target, _) = subscribed_target(&app, &key, &receiver.url("/in"), &["*"]).await;
    let delivery = publish_one(&app, &key).await;
    wait_for_status(&app, &key, &delivery, "succeeded").await;

    app.delete(&format!("/v1/webhooks/targets/{target}"), &key)
        .await
        .expect(204);

    let kept = app
        .get(&format!("/v1/deliveries?targetId={target}"), &key)
        .await
        .expect(200);
    assert_eq!(kept["data"][0]["id"], delivery, "{kept}");
    assert_eq!(kept["data"][0]["status"], "succeeded");
    let resend = retry(&app, &key, &delivery).await;
    let detail = resend.assert_problem(409, "conflict");
    assert!(
        detail.contains(&target) && detail.contains("deleted"),
        "{detail}"
    );
    assert_eq!(receiver.received().len(), 1, "nothing was sent again");
}

#[tokio::test]
async fn the_ssrf_guard_refuses_internal_addresses() {
    let app = TestApp::spawn_with(|args| {
        args.allow_targets = None;
        args.retry_max_attempts = Some("1".into());
    })
    .await;
    let receiver = TestReceiver::start().await;
    let port = receiver.base.rsplit(':').next().expect("port").to_owned();
    let (_, key) = app.tenant("Acme").await;
    for url in [
        receiver.url("/loopback"),
        "http://10.0.0.1/private".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://localhost:{port}/by-name"),
    ] {
        subscribed_target(&app, &key, &url, &["*"]).await;
    }
    let event = app
        .post("/v1/events", &key, json!({ "type": "a.b", "payload": {} }))
        .await
        .expect(202);
    assert_eq!(event["deliveries"], 4);
    let event_id = string(&event["id"]);
    let deliveries = eventually("every delivery to die", || async {
        let body = app
            .get(&format!("/v1/events/{event_id}"), &key)
            .await
            .expect(200);
        let deliveries = body["deliveries"].as_array().cloned().unwrap_or_default();
        deliveries
            .iter()
            .all(|d| d["status"] == "dead")
            .then_some(deliveries)
    })
    .await;
    for delivery in deliveries {
        let error = string(&delivery["lastError"]);
        assert!(
            error.contains("SSRF guard"),
            "refused by the guard: {error}"
        );
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reached the loopback receiver"
    );
}

#[tokio::test]
async fn deliveries_list_by_status_target_and_event_type() {
    let app = TestApp::spawn_with(|args| args.retry_max_attempts = Some("1".into())).await;
    let ok = TestReceiver::start().await;
    let down = TestReceiver::scripted(Arc::new(|_| (500, Vec::new()))).await;
    let (_, key) = app.tenant("Acme").await;
    let (good, _) = subscribed_target(&app, &key, &ok.url("/ok"), &["*"]).await;
    let (bad, _) = subscribed_target(&app, &key, &down.url("/down"), &["orders.*"]).await;
    for event_type in ["orders.created", "users.created"] {
        app.post(
            "/v1/events",
            &key,
            json!({ "type": event_type, "payload": {} }),
        )
        .await
        .expect(202);
    }
    let count = |query: String| {
        let (app, key) = (&app, &key);
        async move {
            let body = app
                .get(&format!("/v1/deliveries{query}"), key)
                .await
                .expect(200);
            body["data"].as_array().map_or(0, Vec::len)
        }
    };
    eventually("all deliveries to settle", || async {
        (count("?status=succeeded".into()).await == 2 && count("?status=dead".into()).await == 1)
            .then_some(())
    })
    .await;
    assert_eq!(count(String::new()).await, 3);
    assert_eq!(count(format!("?targetId={good}")).await, 2);
    assert_eq!(count(format!("?targetId={bad}&status=dead")).await, 1);
    assert_eq!(count("?eventType=users.created".into()).await, 1);
    assert_eq!(count("?status=pending".into()).await, 0);
    app.get("/v1/deliveries?status=lost", &key)
        .await
        .assert_problem(400, "invalid-query");
    app.get("/v1/deliveries?targetId=nope", &key)
        .await
        .assert_problem(400, "invalid-query");
}

/// The counter of attempts started, by how their delivery reached the scheduler.
async fn attempts_started(app: &TestApp, from: &str) -> f64 {
    app.metric(&format!("herald_attempts_started_total{{from=\"{from}\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_deliveries_start_at_intake_when_workers_are_free() {
    let app = TestApp::spawn().await;
    let receiver = TestReceiver::start().await;
    let (_, key) = app.tenant("Acme").await;
    app.subscribed_target(&key, &receiver.url("/free"), json!({}))
        .await;
    // Its tokens are spent by claims, so it never starts at intake.
    app.subscribed_target(
        &key,
        &receiver.url("/limited"),
        json!({ "rateLimitPerSecond": 1000 }),
    )
    .await;
    let publish = |n: usize| {
        let app = &app;
        let key = &key;
        async move {
            app.post(
                "/v1/events",
                key,
                json!({ "type": "a.b", "payload": { "n": n } }),
            )
            .await
            .expect(202)
        }
    };
    // The first event of a target the scheduler does not know yet is queued.
    publish(0).await;
    eventually("the first deliveries", || async {
        (receiver.received().len() == 2).then_some(())
    })
    .await;
    for n in 1..=20 {
        publish(n).await;
    }
    eventually("every delivery", || async {
        (receiver.received().len() == 42).then_some(())
    })
    .await;

    let ids = |path: &str| {
        let received = receiver.received_on(path);
        let ids: std::collections::HashSet<String> = received
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect();
        (received.len(), ids.len())
    };
    assert_eq!(ids("/free"), (21, 21), "each event once");
    assert_eq!(ids("/limited"), (21, 21), "each event once");
    let (at_intake, claimed) = (
        attempts_started(&app, "intake").await,
        attempts_started(&app, "claim").await,
    );
    assert_eq!(at_intake + claimed, 42.0);
    if app.storage.database_url.is_some() {
        assert_eq!(at_intake, 0.0, "a shared store: every delivery is claimed");
    } else {
        assert!(
            (10.0..=20.0).contains(&at_intake),
            "most of the free target's deliveries start at intake, none of the limited one's: {at_intake}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 42, "nothing is delivered twice");
}

/// A loopback server that answers every request with `response` (raw HTTP/1.1
/// bytes), or never answers when it is `None`; returns its base URL.
async fn raw_server(response: Option<Vec<u8>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0_u8; 8192];
            let _ = stream.read(&mut request).await;
            match &response {
                Some(bytes) => {
                    let _ = stream.write_all(bytes).await;
                }
                None => held.push(stream),
            }
        }
    });
    format!("http://{address}")
}

/// The first attempt of the only delivery of a new event to a target at `url`.
async fn first_attempt(app: &TestApp, key: &str, url: &str, timeout_ms: u64) -> Value {
    let target = app
        .subscribed_target(key, url, json!({ "timeoutMs": timeout_ms }))
        .await;
    let event = app
        .post("/v1/events", key, json!({ "type": "a.b", "payload": 1 }))
        .await
        .expect(202);
    let delivery = only_delivery(app, key, &string(&event["id"])).await;
    let attempt = eventually("the first attempt", || async {
        let attempts = app
            .get(&format!("/v1/deliveries/{delivery}/attempts"), key)
            .await
            .expect(200);
        attempts["data"].as_array().and_then(|a| a.first().cloned())
    })
    .await;
    app.patch(
        &format!("/v1/webhooks/targets/{target}"),
        key,
        json!({ "active": false }),
    )
    .await
    .expect(200);
    attempt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_time_out_keep_4_kib_of_a_body_and_name_a_refused_connection() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;

    let silent = raw_server(None).await;
    let attempt = first_attempt(&app, &key, &format!("{silent}/hook"), 300).await;
    assert_eq!(attempt["error"], "timed out after 300 ms");
    assert!(attempt["statusCode"].is_null());

    let mut large =
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 10000\r\nx-why: full\r\n\r\n"
            .to_vec();
    large.extend(std::iter::repeat_n(b'x', 10_000));
    let answering = raw_server(Some(large)).await;
    let attempt = first_attempt(&app, &key, &format!("{answering}/hook"), 5_000).await;
    assert_eq!(attempt["statusCode"], 500);
    assert_eq!(attempt["responseBody"].as_str().map(str::len), Some(4096));
    assert!(
        attempt["responseHeaders"].to_string().contains("x-why"),
        "{attempt}"
    );

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    let attempt = first_attempt(&app, &key, &format!("http://127.0.0.1:{port}/hook"), 5_000).await;
    let error = string(&attempt["error"]);
    assert!(error.to_lowercase().contains("refused"), "{error}");
}
