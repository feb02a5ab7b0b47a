//! The OpenAPI document: it parses, it lists every route, every route it lists is
//! served, and an independent validator accepts it.

use std::collections::BTreeSet;
use std::process::Command;

use reqwest::Method;
use serde_json::Value;
use utoipa::openapi::OpenApi;

use crate::helpers::TestApp;

const EXPECTED_ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("post", "/v1/tenants"),
    ("get", "/v1/tenants"),
    ("get", "/v1/tenants/{id}"),
    ("patch", "/v1/tenants/{id}"),
    ("delete", "/v1/tenants/{id}"),
    ("post", "/v1/tenants/{id}/api-keys"),
    ("get", "/v1/tenants/{id}/api-keys"),
    ("delete", "/v1/tenants/{id}/api-keys/{keyId}"),
    ("post", "/v1/webhooks/targets"),
    ("get", "/v1/webhooks/targets"),
    ("get", "/v1/webhooks/targets/{id}"),
    ("patch", "/v1/webhooks/targets/{id}"),
    ("delete", "/v1/webhooks/targets/{id}"),
    ("post", "/v1/webhooks/filters"),
    ("get", "/v1/webhooks/filters"),
    ("get", "/v1/webhooks/filters/{id}"),
    ("patch", "/v1/webhooks/filters/{id}"),
    ("delete", "/v1/webhooks/filters/{id}"),
    ("post", "/v1/webhooks/subscriptions"),
    ("get", "/v1/webhooks/subscriptions"),
    ("get", "/v1/webhooks/subscriptions/{id}"),
    ("patch", "/v1/webhooks/subscriptions/{id}"),
    ("delete", "/v1/webhooks/subscriptions/{id}"),
    ("post", "/v1/webhooks/targets/{id}/rotate-secret"),
    ("post", "/v1/events"),
    ("post", "/v1/events/batch"),
    ("post", "/v1/events/{event}"),
    ("get", "/v1/events/{event}"),
    ("get", "/v1/deliveries"),
    ("get", "/v1/deliveries/{id}"),
    ("get", "/v1/deliveries/{id}/attempts"),
    ("post", "/v1/deliveries/{id}/retry"),
    ("get", "/v1/dead-letters"),
    ("post", "/v1/dead-letters/redrive"),
    ("get", "/v1/kafka/parked"),
    ("get", "/v1/instances"),
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |method| (method.clone(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_document_parses_and_lists_every_route() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let parsed: OpenApi =
        serde_json::from_value(document.clone()).expect("a valid OpenAPI document");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    assert_eq!(parsed.info.title, "Herald");

    let expected: BTreeSet<(String, String)> = EXPECTED_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented_routes(&document), expected);

    for (method, path) in expected {
        let operation = &document["paths"][&path][&method];
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents success"
        );
        if path.starts_with("/v1/") {
            for status in ["401", "403", "500"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} documents {status}"
                );
            }
            assert_eq!(
                operation["security"][0]["bearer"],
                Value::Array(vec![]),
                "{method} {path} security"
            );
        }
        if path.contains('{') {
            assert!(
                responses.contains_key("404"),
                "{method} {path} documents 404"
            );
        }
        if (method == "post" || method == "patch") && operation.get("requestBody").is_some() {
            assert!(
                responses.contains_key("422"),
                "{method} {path} documents 422"
            );
        }
    }
    for schema in [
        "Problem",
        "TargetIn",
        "TargetOut",
        "FilterIn",
        "SubscriptionIn",
        "TenantCreated",
    ] {
        assert!(
            document["components"]["schemas"].get(schema).is_some(),
            "schema {schema}"
        );
    }
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    for (method, path) in documented_routes(&document) {
        let concrete = path
            .replace("{id}", "ten_00000000000000000000000000000000")
            .replace("{keyId}", "key_00000000000000000000000000000000")
            .replace("{event}", "a.b");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let answer = app.call(method.clone(), &concrete, None, None).await;
        let expected = if path.starts_with("/v1/") { 401 } else { 200 };
        assert_eq!(
            answer.status.as_u16(),
            expected,
            "{method} {path}: {answer:#?}"
        );
    }
}

/// The Python interpreter with `openapi-spec-validator`, set up by `scripts/test`.
fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[tokio::test]
async fn an_independent_validator_accepts_the_document() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&document).expect("serialize")).expect("write");
    let script = "import json, sys\n\
                  from openapi_spec_validator import validate\n\
                  validate(json.load(open(sys.argv[1])))\n\
                  print('valid')";
    let output = Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect(
            "run python (set HERALD_TEST_PYTHON, or run scripts/test which installs the validator)",
        );
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document (is it installed? scripts/test installs it):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
