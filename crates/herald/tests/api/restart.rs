//! Everything Herald was told survives a restart on the same data directory.

use serde_json::json;

use crate::helpers::{ADMIN, TestApp, string};

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
