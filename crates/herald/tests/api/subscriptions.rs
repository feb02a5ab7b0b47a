//! Subscriptions: full CRUD, references and cascades.

use serde_json::json;

use crate::helpers::{TestApp, string};

#[tokio::test]
async fn subscription_crud() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let target = string(&app.target(&key, "https://hooks.example.com/a").await["id"]);
    let other_target = string(&app.target(&key, "https://hooks.example.com/b").await["id"]);
    let filter = string(&app.filter(&key, &["core.*"]).await["id"]);

    let created = app.subscription(&key, &target, &filter).await;
    let id = string(&created["id"]);
    assert!(id.starts_with("sub_"));
    assert_eq!(created["targetId"], target);
    assert_eq!(created["filterId"], filter);
    assert_eq!(created["active"], true);

    let path = format!("/v1/webhooks/subscriptions/{id}");
    assert_eq!(app.get(&path, &key).await.expect(200), created);
    let patched = app
        .patch(
            &path,
            &key,
            json!({ "active": false, "targetId": other_target }),
        )
        .await
        .expect(200);
    assert_eq!(patched["active"], false);
    assert_eq!(patched["targetId"], other_target);

    let (items, _) = app.list_all("/v1/webhooks/subscriptions", &key, 10).await;
    assert_eq!(items, vec![patched]);

    app.delete(&path, &key).await.expect(204);
    app.get(&path, &key).await.assert_problem(404, "not-found");
}

#[tokio::test]
async fn subscriptions_paginate_across_pages() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let filter = string(&app.filter(&key, &["*"]).await["id"]);
    let mut created = Vec::new();
    for n in 0..5 {
        let target = string(
            &app.target(&key, &format!("https://hooks.example.com/{n}"))
                .await["id"],
        );
        created.push(string(
            &app.subscription(&key, &target, &filter).await["id"],
        ));
    }
    let (items, pages) = app.list_all("/v1/webhooks/subscriptions", &key, 2).await;
    assert_eq!(pages, 3);
    assert_eq!(
        items.iter().map(|s| string(&s["id"])).collect::<Vec<_>>(),
        created
    );
}

#[tokio::test]
async fn a_target_is_subscribed_to_a_filter_once() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let target = string(&app.target(&key, "https://hooks.example.com/a").await["id"]);
    let filter = string(&app.filter(&key, &["core.*"]).await["id"]);
    app.subscription(&key, &target, &filter).await;
    let again = json!({ "targetId": target, "filterId": filter });
    app.post("/v1/webhooks/subscriptions", &key, again)
        .await
        .assert_problem(409, "conflict");
}

#[tokio::test]
async fn deleting_a_target_or_filter_deletes_its_subscriptions() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let target = string(&app.target(&key, "https://hooks.example.com/a").await["id"]);
    let filter = string(&app.filter(&key, &["core.*"]).await["id"]);
    let other_filter = string(&app.filter(&key, &["billing.*"]).await["id"]);
    let by_target = string(&app.subscription(&key, &target, &filter).await["id"]);
    let other_target = string(&app.target(&key, "https://hooks.example.com/b").await["id"]);
    let by_filter = string(&app.subscription(&key, &other_target, &other_filter).await["id"]);

    app.delete(&format!("/v1/webhooks/targets/{target}"), &key)
        .await
        .expect(204);
    app.get(&format!("/v1/webhooks/subscriptions/{by_target}"), &key)
        .await
        .assert_problem(404, "not-found");
    app.get(&format!("/v1/webhooks/subscriptions/{by_filter}"), &key)
        .await
        .expect(200);
    app.delete(&format!("/v1/webhooks/filters/{other_filter}"), &key)
        .await
        .expect(204);
    app.get(&format!("/v1/webhooks/subscriptions/{by_filter}"), &key)
        .await
        .assert_problem(404, "not-found");
}
