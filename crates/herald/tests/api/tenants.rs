//! Tenants, their API keys, and authentication.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN, TestApp, string};

#[tokio::test]
async fn tenant_crud() {
    let app = TestApp::spawn().await;
    let created = app
        .post("/v1/tenants", ADMIN, json!({ "name": "Acme" }))
        .await
        .expect(201);
    let id = string(&created["id"]);
    assert!(id.starts_with("ten_"));
    assert!(string(&created["apiKey"]).starts_with("hrk_"));
    assert_eq!(created["createdAt"], created["updatedAt"]);

    let fetched = app
        .get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .expect(200);
    assert_eq!(fetched["name"], "Acme");
    assert!(
        fetched.get("apiKey").is_none(),
        "the key is shown only at creation"
    );

    let patched = app
        .patch(
            &format!("/v1/tenants/{id}"),
            ADMIN,
            json!({ "name": "Acme Corp" }),
        )
        .await
        .expect(200);
    assert_eq!(patched["name"], "Acme Corp");
    assert_eq!(patched["createdAt"], created["createdAt"]);

    let listed = app.get("/v1/tenants", ADMIN).await.expect(200);
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["data"][0]["name"], "Acme Corp");
    assert!(listed["nextCursor"].is_null());

    app.delete(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .expect(204);
    app.get(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .assert_problem(404, "not-found");
    app.delete(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .assert_problem(404, "not-found");
}

#[tokio::test]
async fn tenants_paginate_across_pages() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for n in 0..7 {
        created.push(app.tenant(&format!("tenant {n}")).await.0);
    }
    let (items, pages) = app.list_all("/v1/tenants", ADMIN, 3).await;
    assert_eq!(pages, 3);
    let listed: Vec<String> = items.iter().map(|t| string(&t["id"])).collect();
    assert_eq!(listed, created);
}

#[tokio::test]
async fn deleting_a_tenant_revokes_its_keys() {
    let app = TestApp::spawn().await;
    let (id, key) = app.tenant("Acme").await;
    app.get("/v1/webhooks/targets", &key).await.expect(200);
    app.delete(&format!("/v1/tenants/{id}"), ADMIN)
        .await
        .expect(204);
    app.get("/v1/webhooks/targets", &key)
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn api_keys_can_be_added_and_revoked() {
    let app = TestApp::spawn().await;
    let (id, first_key) = app.tenant("Acme").await;
    let second = app
        .post(&format!("/v1/tenants/{id}/api-keys"), ADMIN, json!({}))
        .await
        .expect(201);
    let second_key = string(&second["apiKey"]);
    assert!(second_key.starts_with(&string(&second["prefix"])));
    app.get("/v1/webhooks/targets", &second_key)
        .await
        .expect(200);

    let keys = app
        .get(&format!("/v1/tenants/{id}/api-keys"), ADMIN)
        .await
        .expect(200);
    let keys = keys.as_array().expect("array");
    assert_eq!(keys.len(), 2);
    assert!(
        keys.iter().all(|k| k.get("apiKey").is_none()),
        "listing never shows keys"
    );

    let key_id = string(&second["id"]);
    app.delete(&format!("/v1/tenants/{id}/api-keys/{key_id}"), ADMIN)
        .await
        .expect(204);
    app.get("/v1/webhooks/targets", &second_key)
        .await
        .assert_problem(401, "unauthorized");
    app.get("/v1/webhooks/targets", &first_key)
        .await
        .expect(200);
}

#[tokio::test]
async fn authentication_failures() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;

    let missing = app
        .call(Method::GET, "/v1/webhooks/targets", None, None)
        .await;
    missing.assert_problem(401, "unauthorized");
    assert_eq!(
        missing
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().ok()),
        Some(Some("Bearer"))
    );
    app.get("/v1/webhooks/targets", "hrk_not-a-real-key")
        .await
        .assert_problem(401, "unauthorized");
    app.call(Method::GET, "/v1/tenants", None, None)
        .await
        .assert_problem(401, "unauthorized");
    app.get("/v1/tenants", "wrong-admin-token-000000")
        .await
        .assert_problem(401, "unauthorized");

    // Basic auth instead of Bearer.
    let basic = app
        .client
        .get(format!("{}/v1/webhooks/targets", app.base))
        .basic_auth("user", Some(&key))
        .send()
        .await
        .expect("sent");
    crate::helpers::answer(basic)
        .await
        .assert_problem(401, "unauthorized");

    // The right credential for the wrong kind of route.
    app.get("/v1/tenants", &key)
        .await
        .assert_problem(403, "forbidden");
    app.get("/v1/webhooks/targets", ADMIN)
        .await
        .assert_problem(403, "forbidden");
}
