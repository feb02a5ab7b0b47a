//! Everything Herald was told survives a restart on the same data directory.

use std::time::Duration;

use herald::config::ServeArgs;
use serde_json::{Value, json};

use crate::helpers::{ADMIN, TestApp, eventually, eventually_within, string};
use crate::receiver::TestReceiver;

#[tokio::test]
async fn everything_is_still_there_after_a_restart() {
    let app = TestApp::spawn().await;
    let (tenant, key) = app.tenant("Acme").await;
    let target = app
        .post(
            "/v1/webhooks/targets",
            &key,
            json!({ "url": "https://a.example.com/hook", "headers": { "X-A": "1" }, "rateLimitPerSecond": 5.5 }),
        )
        .await
        .expect(201);
    let target_id = string(&target["id"]);
    let filter = app
        .filter(&key, &["core.orders.*", "billing.invoice.paid"])
        .await;
    let subscription = app
        .subscription(&key, &target_id, &string(&filter["id"]))
        .await;
    let target_before = app
        .get(&format!("/v1/webhooks/targets/{target_id}"), &key)
        .await
        .expect(200);
    let tenant_before = app
        .get(&format!("/v1/tenants/{tenant}"), ADMIN)
        .await
        .expect(200);

    let app = app.restart().await;

    assert_eq!(
        app.get(&format!("/v1/tenants/{tenant}"), ADMIN)
            .await
            .expect(200),
        tenant_before
    );
    assert_eq!(
        app.get(&format!("/v1/webhooks/targets/{target_id}"), &key)
            .await
            .expect(200),
        target_before,
        "the API key still works and the target is unchanged"
    );
    let filter_path = format!("/v1/webhooks/filters/{}", string(&filter["id"]));
    assert_eq!(app.get(&filter_path, &key).await.expect(200), filter);
    let subscription_path = format!("/v1/webhooks/subscriptions/{}", string(&subscription["id"]));
    assert_eq!(
        app.get(&subscription_path, &key).await.expect(200),
        subscription
    );
    app.get("/readyz", &key).await.expect(200);
}

/// Publishes one event to a target that answers its first request after
/// `answer_after` (and later ones at once), then stops Herald with `grace` while that
/// attempt is under way and starts it again. Returns the receiver and the delivery as
/// the restarted instance reports it, once it has succeeded.
async fn stop_during_an_attempt(answer_after: Duration, grace: &str) -> (TestReceiver, Value) {
    let receiver = TestReceiver::start().await;
    receiver.set_delay(answer_after);
    let settings = |args: &mut ServeArgs| {
        args.shutdown_grace = Some(grace.into());
        // A shared store recovers a stopped instance's leases when they run out.
        args.delivery_lease = Some("3s".into());
    };
    let app = TestApp::spawn_with(settings).await;
    let (_, key) = app.tenant("Acme").await;
    app.subscribed_target(&key, &receiver.url("/hook"), json!({ "timeoutMs": 30_000 }))
        .await;
    let event = app
        .post(
            "/v1/events",
            &key,
            json!({ "type": "order.paid", "payload": { "n": 1 } }),
        )
        .await
        .expect(202);
    eventually("the attempt to reach the receiver", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;
    receiver.set_delay(Duration::ZERO);

    let app = app.restart_with(settings).await;

    let event = app
        .get(&format!("/v1/events/{}", string(&event["id"])), &key)
        .await
        .expect(200);
    let delivery = string(&event["deliveries"][0]["id"]);
    // On a shared store the restarted instance first waits for the stopped one's
    // leadership and leases to run out (a few seconds).
    let done = eventually_within(
        "the delivery to succeed",
        Duration::from_secs(30),
        || async {
            let body = app
                .get(&format!("/v1/deliveries/{delivery}"), &key)
                .await
                .expect(200);
            (body["status"] == "succeeded").then_some(body)
        },
    )
    .await;
    (receiver, done)
}

#[tokio::test]
async fn a_stop_waits_for_the_attempts_under_way() {
    // Longer than the 5 s the suite's other stops wait: only the setting makes it wait.
    let (receiver, delivery) = stop_during_an_attempt(Duration::from_secs(6), "10s").await;
    assert_eq!(
        delivery["attempts"], 1,
        "the answer that came during the stop was recorded: {delivery}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1, "nothing was sent twice");
}

#[tokio::test]
async fn an_attempt_past_the_grace_is_cancelled_by_the_stop() {
    let receiver = TestReceiver::start().await;
    receiver.set_delay(Duration::from_secs(30));
    let app = TestApp::spawn_with(|args| args.shutdown_grace = Some("0s".into())).await;
    let (_, key) = app.tenant("Acme").await;
    app.subscribed_target(&key, &receiver.url("/hook"), json!({ "timeoutMs": 60_000 }))
        .await;
    app.post(
        "/v1/events",
        &key,
        json!({ "type": "order.paid", "payload": {} }),
    )
    .await
    .expect(202);
    eventually("the attempt to reach the receiver", || async {
        (receiver.in_flight() == 1).then_some(())
    })
    .await;
    app.stop().await;
    eventually("the abandoned request to end at the receiver", || async {
        (receiver.in_flight() == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_attempt_past_the_grace_is_sent_again_after_the_restart() {
    let (receiver, delivery) = stop_during_an_attempt(Duration::from_secs(10), "0s").await;
    assert_eq!(
        receiver.received().len(),
        2,
        "the attempt cut short by the stop was made again (at least once, never lost)"
    );
    assert_eq!(
        delivery["attempts"], 1,
        "only the attempt that finished is recorded: {delivery}"
    );
}
