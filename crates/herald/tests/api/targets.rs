//! Targets: full CRUD and pagination.

use serde_json::json;

use crate::helpers::{TestApp, string};

#[tokio::test]
async fn target_crud() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let body = json!({
        "url": "https://hooks.example.com/in",
        "description": "billing",
        "headers": { "X-Team": "billing" },
        "rateLimitPerSecond": 20,
        "maxInFlight": 4,
        "timeoutMs": 2500,
    });
    let created = app
        .post("/v1/webhooks/targets", &key, body)
        .await
        .expect(201);
    let id = string(&created["id"]);
    assert!(id.starts_with("tgt_"));
    let secret = string(&created["secret"]);
    assert!(
        secret.starts_with("whsec_"),
        "a secret is generated: {secret}"
    );
    assert_eq!(created["headers"], json!({ "X-Team": "billing" }));
    assert_eq!(created["rateLimitPerSecond"], 20.0);
    assert_eq!(created["maxInFlight"], 4);
    assert_eq!(created["timeoutMs"], 2500);
    assert_eq!(created["active"], true);

    let path = format!("/v1/webhooks/targets/{id}");
    let fetched = app.get(&path, &key).await.expect(200);
    assert_eq!(fetched["url"], "https://hooks.example.com/in");
    assert!(
        fetched.get("secret").is_none(),
        "the secret is shown only at creation"
    );

    let patch = json!({ "description": null, "rateLimitPerSecond": null, "active": false, "timeoutMs": 60000 });
    let patched = app.patch(&path, &key, patch).await.expect(200);
    assert!(patched["description"].is_null());
    assert!(patched["rateLimitPerSecond"].is_null());
    assert_eq!(patched["active"], false);
    assert_eq!(patched["timeoutMs"], 60000);
    assert_eq!(patched["maxInFlight"], 4, "absent fields are kept");
    assert_eq!(patched["url"], "https://hooks.example.com/in");

    let again = app.get(&path, &key).await.expect(200);
    assert_eq!(again, patched);

    app.delete(&path, &key).await.expect(204);
    app.get(&path, &key).await.assert_problem(404, "not-found");
    app.patch(&path, &key, json!({ "active": true }))
        .await
        .assert_problem(404, "not-found");
    app.delete(&path, &key)
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn a_given_secret_is_kept_and_defaults_apply() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = json!({ "url": "http://127.0.0.1:9/x", "secret": secret });
    let created = app
        .post("/v1/webhooks/targets", &key, body)
        .await
        .expect(201);
    assert_eq!(created["secret"], secret);
    assert_eq!(created["maxInFlight"], 32);
    assert_eq!(created["timeoutMs"], 10000);
    assert!(created["rateLimitPerSecond"].is_null());
    assert_eq!(created["headers"], json!({}));
}

#[tokio::test]
async fn targets_paginate_across_pages() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let mut created = Vec::new();
    for n in 0..12 {
        let target = app
            .target(&key, &format!("https://hooks.example.com/{n}"))
            .await;
        created.push(string(&target["id"]));
    }
    let (items, pages) = app.list_all("/v1/webhooks/targets", &key, 5).await;
    assert_eq!(pages, 3);
    let listed: Vec<String> = items.iter().map(|t| string(&t["id"])).collect();
    assert_eq!(listed, created, "every target once, in creation order");

    let default_page = app.get("/v1/webhooks/targets", &key).await.expect(200);
    assert_eq!(default_page["data"].as_array().map(Vec::len), Some(12));
    assert!(default_page["nextCursor"].is_null());
}
