//! Flow control against real loopback receivers: the circuit breaker's every state
//! change, rate limits, `maxInFlight`, slowing down on 429/502, disabling on 410,
//! fairness under a flood, and the per-tenant ingest limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Storage, TestApp, eventually, string};
use crate::receiver::{Received, TestReceiver};

async fn publish(app: &TestApp, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = app
            .post(
                "/v1/events",
                key,
                json!({ "type": "flow.test", "payload": { "n": i } }),
            )
            .await
            .expect(202);
        ids.push(string(&body["id"]));
    }
    ids
}

async fn circuit(app: &TestApp, key: &str, target: &str) -> Value {
    app.get(&format!("/v1/webhooks/targets/{target}"), key)
        .await
        .expect(200)["circuit"]
        .clone()
}

async fn wait_for_circuit(app: &TestApp, key: &str, target: &str, state: &str) -> Value {
    eventually(&format!("circuit to be {state}"), || async {
        let circuit = circuit(app, key, target).await;
        (circuit["state"] == state).then_some(circuit)
    })
    .await
}

async fn deliveries(app: &TestApp, key: &str, query: &str) -> Vec<Value> {
    app.list_all(&format!("/v1/deliveries?{query}"), key, 250)
        .await
        .0
}

async fn wait_for_succeeded(app: &TestApp, key: &str, count: usize) {
    eventually(&format!("{count} deliveries to succeed"), || async {
        (deliveries(app, key, "status=succeeded").await.len() == count).then_some(())
    })
    .await;
}

fn millis_between(earlier: &str, later: &str) -> i64 {
    let parse = |t: &str| {
        humantime::parse_rfc3339(t)
            .expect("RFC 3339 time")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis()
    };
    i64::try_from(parse(later)).unwrap_or(i64::MAX) - i64::try_from(parse(earlier)).unwrap_or(0)
}

fn always(status: u16) -> crate::receiver::Script {
    Arc::new(move |_| (status, Vec::new()))
}

/// A target that always answers `status`, one request at a time, on an instance whose
/// circuits open after `failures` in a row for `cooldown`: the instance, the tenant's
/// key, the receiver and the target's id.
async fn failing_target(
    failures: &str,
    cooldown: &str,
    status: u16,
) -> (TestApp, String, TestReceiver, String) {
    let app = TestApp::spawn_with(|args| {
        args.circuit_failures = Some(failures.into());
        args.circuit_cooldown = Some(cooldown.into());
    })
    .await;
    let (_, key) = app.tenant("Acme").await;
    let receiver = TestReceiver::scripted(always(status)).await;
    let target = app
        .subscribed_target(&key, &receiver.url("/down"), json!({ "maxInFlight": 1 }))
        .await;
    (app, key, receiver, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_holds_deliveries_without_spending_attempts_and_a_probe_closes_it() {
    let (app, key, receiver, target) = failing_target("3", "1s", 500).await;

    let closed = circuit(&app, &key, &target).await;
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["consecutiveFailures"], 0);

    publish(&app, &key, 3).await;
    let open = wait_for_circuit(&app, &key, &target, "open").await;
    assert_eq!(open["consecutiveFailures"], 3);
    assert!(open["nextProbeAt"].is_string(), "{open}");
    let cooldown = millis_between(
        open["since"].as_str().expect("since"),
        open["nextProbeAt"].as_str().expect("nextProbeAt"),
    );
    assert!(
        (990..=1010).contains(&cooldown),
        "first cool-down is 1 s: {cooldown} ms"
    );

    // While open: new deliveries wait, nothing is sent, no attempt is spent.
    let sent_when_opened = receiver.received().len();
    publish(&app, &key, 5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_while_open = receiver.received().len();
    assert_eq!(sent_when_opened, 3, "exactly the three failures");
    assert_eq!(sent_while_open, 3, "no request while the circuit is open");
    let all = deliveries(&app, &key, "").await;
    let attempts: u64 = all.iter().filter_map(|d| d["attempts"].as_u64()).sum();
    assert_eq!(all.len(), 8);
    assert_eq!(attempts, 3, "waiting deliveries spent no attempt");

    // The probe: one request, held open by a slow receiver so half_open shows.
    receiver.rescript(always(200));
    receiver.set_delay(Duration::from_millis(700));
    let half_open = wait_for_circuit(&app, &key, &target, "half_open").await;
    assert!(half_open["nextProbeAt"].is_null());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 4, "one probe, nothing beside it");

    // Its success closes the circuit and the backlog drains.
    receiver.set_delay(Duration::ZERO);
    let closed = wait_for_circuit(&app, &key, &target, "closed").await;
    assert_eq!(closed["consecutiveFailures"], 0);
    wait_for_succeeded(&app, &key, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_reopens_for_longer_and_the_state_survives_a_restart() {
    let (app, key, receiver, target) = failing_target("2", "1s", 503).await;
    publish(&app, &key, 2).await;
    let first = wait_for_circuit(&app, &key, &target, "open").await;

    // The probe fails: open again, for twice as long.
    let reopened = eventually("the circuit to reopen after its probe", || async {
        let circuit = circuit(&app, &key, &target).await;
        (circuit["state"] == "open" && circuit["since"] != first["since"]).then_some(circuit)
    })
    .await;
    let cooldown = millis_between(
        reopened["since"].as_str().expect("since"),
        reopened["nextProbeAt"].as_str().expect("nextProbeAt"),
    );
    assert!((1990..=2010).contains(&cooldown), "doubled: {cooldown} ms");
    assert_eq!(reopened["consecutiveFailures"], 3);
    let sent = receiver.received().len();
    assert_eq!(sent, 3, "two failures and one probe");

    // A restart keeps the open circuit: nothing is sent before the probe is due.
    let app = app.restart().await;
    let after_restart = circuit(&app, &key, &target).await;
    assert_eq!(after_restart["state"], "open");
    assert_eq!(after_restart["nextProbeAt"], reopened["nextProbeAt"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        sent,
        "still waiting for the probe"
    );
    receiver.rescript(always(204));
    wait_for_circuit(&app, &key, &target, "closed").await;
    wait_for_succeeded(&app, &key, 2).await;
}

/// The most requests that arrived within any one-second window.
fn busiest_second(received: &[Received]) -> usize {
    let times: Vec<Instant> = received.iter().map(|r| r.at).collect();
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_target_gets_at_most_its_rate_while_its_backlog_drains() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let receiver = TestReceiver::start().await;
    app.subscribed_target(
        &key,
        &receiver.url("/limited"),
        json!({ "rateLimitPerSecond": 20 }),
    )
    .await;
    let started = Instant::now();
    publish(&app, &key, 60).await;
    wait_for_succeeded(&app, &key, 60).await;
    let received = receiver.received();
    assert_eq!(received.len(), 60);
    let busiest = busiest_second(&received);
    // 20 per second plus the bucket's burst of 2, counted where the requests arrive:
    // on a loaded machine a request can reach the receiver up to ~100 ms after the
    // token that sent it, so a second of arrivals may hold 0.1 s more of tokens (2).
    // A limiter that did not hold would send the 60 in a burst.
    assert!(busiest <= 24, "{busiest} requests in one second");
    assert!(busiest >= 15, "the limit is used: {busiest}");
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "60 deliveries at 20/s take about 3 s, not {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_never_exceeded() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let receiver = TestReceiver::start().await;
    receiver.set_delay(Duration::from_millis(150));
    app.subscribed_target(&key, &receiver.url("/slow"), json!({ "maxInFlight": 3 }))
        .await;
    publish(&app, &key, 24).await;
    wait_for_succeeded(&app, &key, 24).await;
    assert_eq!(
        receiver.peak_concurrency(),
        3,
        "used up to, never beyond, maxInFlight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_the_whole_target() {
    let app = TestApp::spawn_with(|args| args.retry_max_delay = Some("10s".into())).await;
    let (_, key) = app.tenant("Acme").await;
    let receiver = TestReceiver::scripted(Arc::new(|n| match n {
        0 => (429, vec![("retry-after", "1".to_owned())]),
        _ => (200, Vec::new()),
    }))
    .await;
    app.subscribed_target(&key, &receiver.url("/busy"), json!({}))
        .await;
    publish(&app, &key, 1).await;
    eventually("the 429", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    publish(&app, &key, 3).await;
    wait_for_succeeded(&app, &key, 4).await;
    let received = receiver.received();
    let refused_at = received[0].at;
    for later in &received[1..] {
        let waited = later.at.duration_since(refused_at);
        assert!(
            waited >= Duration::from_millis(950),
            "a request came {waited:?} after the 429 asked for 1 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_halve_the_target_concurrency() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let receiver =
        TestReceiver::scripted(Arc::new(|n| (if n < 8 { 502 } else { 200 }, Vec::new()))).await;
    receiver.set_delay(Duration::from_millis(300));
    app.subscribed_target(
        &key,
        &receiver.url("/overloaded"),
        json!({ "maxInFlight": 8 }),
    )
    .await;
    publish(&app, &key, 16).await;
    wait_for_succeeded(&app, &key, 16).await;
    let received = receiver.received();
    assert_eq!(
        received[..8].iter().map(|r| r.concurrent).max(),
        Some(8),
        "the window starts at maxInFlight"
    );
    let after = received[8..12]
        .iter()
        .map(|r| r.concurrent)
        .max()
        .unwrap_or(0);
    assert!(after <= 4, "after the 502s at most half: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_target_and_switching_it_back_on_resumes_delivery() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let receiver =
        TestReceiver::scripted(Arc::new(|n| (if n == 0 { 410 } else { 200 }, Vec::new()))).await;
    let target = app
        .subscribed_target(&key, &receiver.url("/gone"), json!({}))
        .await;
    publish(&app, &key, 1).await;
    let disabled = eventually("the target to be disabled", || async {
        let body = app
            .get(&format!("/v1/webhooks/targets/{target}"), &key)
            .await
            .expect(200);
        (body["active"] == false).then_some(body)
    })
    .await;
    assert!(
        disabled["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{disabled}"
    );
    // The failed delivery waits (its retry would be due within 400 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len(), 1);
    let waiting = deliveries(&app, &key, "status=pending").await;
    assert_eq!(waiting.len(), 1);

    let enabled = app
        .patch(
            &format!("/v1/webhooks/targets/{target}"),
            &key,
            json!({ "active": true }),
        )
        .await
        .expect(200);
    assert_eq!(enabled["disabledReason"], Value::Null);
    wait_for_succeeded(&app, &key, 1).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_not_starved_behind_fresh_deliveries_on_a_one_at_a_time_target() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let receiver =
        TestReceiver::scripted(Arc::new(|n| (if n == 0 { 500 } else { 200 }, Vec::new()))).await;
    receiver.set_delay(Duration::from_millis(30));
    app.subscribed_target(&key, &receiver.url("/one"), json!({ "maxInFlight": 1 }))
        .await;
    publish(&app, &key, 1).await;
    eventually("the first failure", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    // About a second of fresh work; the retry is due within 400 ms.
    publish(&app, &key, 30).await;
    wait_for_succeeded(&app, &key, 31).await;
    let position = receiver
        .received()
        .iter()
        .position(|r| r.header("herald-attempt") == "2")
        .expect("the retry was sent");
    assert!(position < 25, "the retry waited behind {position} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_and_a_blackhole_do_not_delay_a_quiet_tenant() {
    let app = TestApp::spawn_with(|args| args.delivery_concurrency = Some("8".into())).await;
    let (_, loud) = app.tenant("Loud").await;
    let (_, quiet) = app.tenant("Quiet").await;
    let blackhole = TestReceiver::start().await;
    blackhole.set_delay(Duration::from_secs(30));
    let fast = TestReceiver::start().await;
    app.subscribed_target(
        &loud,
        &blackhole.url("/blackhole"),
        json!({ "timeoutMs": 5000, "maxInFlight": 4 }),
    )
    .await;
    app.subscribed_target(&loud, &fast.url("/flood"), json!({}))
        .await;
    let quiet_receiver = TestReceiver::start().await;
    app.subscribed_target(&quiet, &quiet_receiver.url("/quiet"), json!({}))
        .await;

    // 300 events, each to the blackhole and the fast target.
    let batch: Vec<Value> = (0..300)
        .map(|n| json!({ "type": "flood.event", "payload": { "n": n } }))
        .collect();
    app.post("/v1/events/batch", &loud, json!({ "events": batch }))
        .await
        .expect(200);
    let published = Instant::now();
    publish(&app, &quiet, 1).await;
    eventually("the quiet tenant's delivery", || async {
        (!quiet_receiver.received().is_empty()).then_some(())
    })
    .await;
    let latency = quiet_receiver.received()[0].at.duration_since(published);
    assert!(
        latency < Duration::from_millis(1_000),
        "quiet tenant waited {latency:?}"
    );
    assert!(
        blackhole.peak_concurrency() <= 4,
        "the blackhole holds at most its maxInFlight workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_ingest_limit_answers_429_and_drops_nothing_accepted() {
    let app = TestApp::spawn_with(|args| args.tenant_rate_limit = Some("1000".into())).await;
    let created = app
        .post(
            "/v1/tenants",
            crate::helpers::ADMIN,
            json!({ "name": "Metered", "ingestRateLimit": 5 }),
        )
        .await
        .expect(201);
    assert_eq!(created["ingestRateLimit"], 5.0);
    let key = string(&created["apiKey"]);
    let receiver = TestReceiver::start().await;
    app.subscribed_target(&key, &receiver.url("/metered"), json!({}))
        .await;

    let send = || async {
        app.client
            .post(format!("{}/v1/events", app.base))
            .bearer_auth(&key)
            .json(&json!({ "type": "metered.event", "payload": {} }))
            .send()
            .await
            .expect("sent")
    };
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..8 {
        let response = send().await;
        if response.status() == 202 {
            accepted += 1;
            assert_eq!(response.headers()["ratelimit-limit"], "5");
        } else {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the limit was reached");
    assert_eq!(accepted, 5, "a burst of one second's worth");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    assert_eq!(refused.headers()["ratelimit-remaining"], "0");
    let problem = crate::helpers::answer(refused).await;
    problem.assert_problem(429, "rate-limited");

    let batch = json!({ "events": [
        { "type": "metered.event", "payload": {} },
        { "type": "metered.event", "payload": {} }
    ]});
    app.post("/v1/events/batch", &key, batch.clone())
        .await
        .assert_problem(429, "rate-limited");
    wait_for_succeeded(&app, &key, 5).await;
    assert_eq!(
        deliveries(&app, &key, "").await.len(),
        5,
        "everything accepted is delivered; nothing refused was stored"
    );

    // After waiting as told, publishing works again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    app.post("/v1/events/batch", &key, batch).await.expect(200);

    // Lifting the tenant's own limit falls back to the server default (1000/s).
    let tenant = string(&created["id"]);
    let patched = app
        .patch(
            &format!("/v1/tenants/{tenant}"),
            crate::helpers::ADMIN,
            json!({ "ingestRateLimit": null }),
        )
        .await
        .expect(200);
    assert_eq!(patched["ingestRateLimit"], Value::Null);
    // A fractional rate still admits a batch up to its whole burst.
    app.patch(
        &format!("/v1/tenants/{tenant}"),
        crate::helpers::ADMIN,
        json!({ "ingestRateLimit": 2.5 }),
    )
    .await
    .expect(200);
    let pair = json!({ "events": [
        { "type": "metered.event", "payload": {} },
        { "type": "metered.event", "payload": {} }
    ]});
    app.post("/v1/events/batch", &key, pair).await.expect(200);
    app.patch(
        &format!("/v1/tenants/{tenant}"),
        crate::helpers::ADMIN,
        json!({ "ingestRateLimit": null }),
    )
    .await
    .expect(200);
    for _ in 0..20 {
        assert_eq!(send().await.status(), 202);
    }
    app.post(
        "/v1/tenants",
        crate::helpers::ADMIN,
        json!({ "name": "Bad", "ingestRateLimit": 0 }),
    )
    .await
    .assert_problem(422, "validation-failed");
}

/// Makes every save of a circuit state fail (`fail`) or work again, with a trigger in
/// the store itself: the failure Herald sees is the database's own.
async fn fail_circuit_saves(storage: &Storage, fail: bool) {
    match &storage.database_url {
        Some(url) => {
            let sql = if fail {
                "CREATE FUNCTION herald_test_refuse() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER refuse_circuits BEFORE INSERT OR UPDATE ON circuits \
                 FOR EACH ROW EXECUTE FUNCTION herald_test_refuse();"
            } else {
                "DROP TRIGGER refuse_circuits ON circuits;"
            };
            herald_store::postgres::testing::execute(url, sql).await;
        }
        None => {
            let sql = if fail {
                "CREATE TRIGGER refuse_circuit_inserts BEFORE INSERT ON circuits \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END; \
                 CREATE TRIGGER refuse_circuit_updates BEFORE UPDATE ON circuits \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
            } else {
                "DROP TRIGGER refuse_circuit_inserts; DROP TRIGGER refuse_circuit_updates;"
            };
            let path = storage.dir.path().join("herald.db");
            let connection = rusqlite::Connection::open(path).expect("open the store");
            connection
                .busy_timeout(Duration::from_secs(5))
                .expect("busy timeout");
            connection.execute_batch(sql).expect("the trigger changes");
        }
    }
}

#[tokio::test]
async fn a_circuit_state_whose_save_failed_is_saved_again() {
    // A cool-down long enough that nothing else changes the circuit during the test.
    let (app, key, receiver, target) = failing_target("3", "60s", 500).await;
    fail_circuit_saves(&app.storage, true).await;

    publish(&app, &key, 3).await;
    eventually("three failed attempts", || async {
        (receiver.received().len() >= 3).then_some(())
    })
    .await;
    // The circuit opened in the scheduler; its save keeps failing meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        circuit(&app, &key, &target).await["state"],
        "closed",
        "the store refused the open circuit"
    );

    fail_circuit_saves(&app.storage, false).await;
    let open = wait_for_circuit(&app, &key, &target, "open").await;
    assert_eq!(open["consecutiveFailures"], 3);
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing sent while it was open"
    );
}
