//! Tenant isolation: another tenant's ids answer 404 and never appear in lists.

use serde_json::json;

use crate::helpers::{TestApp, string};

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_resources() {
    let app = TestApp::spawn().await;
    let (_, key_a) = app.tenant("A").await;
    let (_, key_b) = app.tenant("B").await;
    let target = string(&app.target(&key_a, "https://a.example.com/hook").await["id"]);
    let filter = string(&app.filter(&key_a, &["a.*"]).await["id"]);
    let subscription = string(&app.subscription(&key_a, &target, &filter).await["id"]);

    for path in [
        format!("/v1/webhooks/targets/{target}"),
        format!("/v1/webhooks/filters/{filter}"),
        format!("/v1/webhooks/subscriptions/{subscription}"),
    ] {
        app.get(&path, &key_b)
            .await
            .assert_problem(404, "not-found");
        app.patch(&path, &key_b, json!({}))
            .await
            .assert_problem(404, "not-found");
        app.delete(&path, &key_b)
            .await
            .assert_problem(404, "not-found");
        app.get(&path, &key_a).await.expect(200);
    }
    for list in [
        "/v1/webhooks/targets",
        "/v1/webhooks/filters",
        "/v1/webhooks/subscriptions",
    ] {
        let body = app.get(list, &key_b).await.expect(200);
        assert_eq!(body["data"], json!([]), "{list} of B is empty");
        let body = app.get(list, &key_a).await.expect(200);
        assert_eq!(
            body["data"].as_array().map(Vec::len),
            Some(1),
            "{list} of A"
        );
    }
}

#[tokio::test]
async fn a_subscription_cannot_reference_another_tenants_target_or_filter() {
    let app = TestApp::spawn().await;
    let (_, key_a) = app.tenant("A").await;
    let (_, key_b) = app.tenant("B").await;
    let target_a = string(&app.target(&key_a, "https://a.example.com/hook").await["id"]);
    let filter_a = string(&app.filter(&key_a, &["a.*"]).await["id"]);
    let target_b = string(&app.target(&key_b, "https://b.example.com/hook").await["id"]);
    let filter_b = string(&app.filter(&key_b, &["b.*"]).await["id"]);

    let answer = app
        .post(
            "/v1/webhooks/subscriptions",
            &key_b,
            json!({ "targetId": target_a, "filterId": filter_b }),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.body["field"], "targetId");
    let answer = app
        .post(
            "/v1/webhooks/subscriptions",
            &key_b,
            json!({ "targetId": target_b, "filterId": filter_a }),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    assert_eq!(answer.body["field"], "filterId");

    // Nor be moved onto one by a patch.
    let own = string(&app.subscription(&key_b, &target_b, &filter_b).await["id"]);
    let answer = app
        .patch(
            &format!("/v1/webhooks/subscriptions/{own}"),
            &key_b,
            json!({ "targetId": target_a }),
        )
        .await;
    answer.assert_problem(422, "validation-failed");
    let unchanged = app
        .get(&format!("/v1/webhooks/subscriptions/{own}"), &key_b)
        .await
        .expect(200);
    assert_eq!(unchanged["targetId"], target_b);
}

#[tokio::test]
async fn a_cursor_from_another_list_is_refused() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("A").await;
    app.target(&key, "https://a.example.com/1").await;
    app.target(&key, "https://a.example.com/2").await;
    let page = app
        .get("/v1/webhooks/targets?limit=1", &key)
        .await
        .expect(200);
    let cursor = string(&page["nextCursor"]);
    app.get(&format!("/v1/webhooks/filters?cursor={cursor}"), &key)
        .await
        .assert_problem(400, "invalid-query");
}
