//! Filters: full CRUD and pagination.

use serde_json::json;

use crate::helpers::{TestApp, string};

#[tokio::test]
async fn filter_crud() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let body = json!({ "events": ["core.orders.*", "core.refunds.created.v1", "core.orders.*"], "description": "orders" });
    let created = app
        .post("/v1/webhooks/filters", &key, body)
        .await
        .expect(201);
    let id = string(&created["id"]);
    assert!(id.starts_with("flt_"));
    assert_eq!(
        created["events"],
        json!(["core.orders.*", "core.refunds.created.v1"]),
        "duplicates dropped"
    );
    assert_eq!(created["description"], "orders");

    let path = format!("/v1/webhooks/filters/{id}");
    assert_eq!(app.get(&path, &key).await.expect(200), created);

    let patched = app
        .patch(&path, &key, json!({ "events": ["*"] }))
        .await
        .expect(200);
    assert_eq!(patched["events"], json!(["*"]));
    assert_eq!(patched["description"], "orders");
    let cleared = app
        .patch(&path, &key, json!({ "description": null }))
        .await
        .expect(200);
    assert!(cleared["description"].is_null());

    app.delete(&path, &key).await.expect(204);
    app.get(&path, &key).await.assert_problem(404, "not-found");
}

#[tokio::test]
async fn filters_paginate_across_pages() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(string(
            &app.filter(&key, &[&format!("app.event{n}")]).await["id"],
        ));
    }
    let (items, pages) = app.list_all("/v1/webhooks/filters", &key, 2).await;
    assert_eq!(pages, 3);
    assert_eq!(
        items.iter().map(|f| string(&f["id"])).collect::<Vec<_>>(),
        created
    );
}
