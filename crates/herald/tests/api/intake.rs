//! Event intake: batches with per-item results, and bad input answered as problems.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, answer};

async fn post_raw(
    app: &TestApp,
    key: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut request = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(key)
        .body(body);
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    answer(request.send().await.expect("sent")).await
}

#[tokio::test]
async fn a_batch_answers_each_event_on_its_own() {
    let app = TestApp::spawn().await;
    let (_, key) = app.tenant("Acme").await;
    let target = app.target(&key, "http://127.0.0.1:9/unused").await;
    let filter = app.filter(&key, &["orders.*"]).await;
    app.subscription(
        &key,
        target["id"].as_str().expect("id"),
        filter["id"].as_str().expect("id"),
    )
    .await;
    let batch = json!({ "events": [
        { "type": "orders.created", "payload": { "n": 1 }, "idempotencyKey": "k1" },
        { "type": "bad..type", "payload": {} },
        { "type": "orders.created", "payload": { "n": 1 }, "idempotencyKey": "k1" },
        { "type": "users.created", "payload": null },
        { "type": "orders.paid", "payload": 1, "surprise": true },
    ]});
    let results = app.post("/v1/events/batch", &key, batch).await.expect(200);
    let results = results["results"].as_array().expect("results").clone();
    let statuses: Vec<&Value> = results.iter().map(|r| &r["status"]).collect();
    assert_eq!(
        statuses,
        [
            &json!(202),
            &json!(422),
            &json!(200),
            &json!(202),
            &json!(422)
        ]
    );
    assert_eq!(results[0]["deliveries"], 1);
    assert_eq!(
        results[1]["error"]["type"],
        "urn:herald:problem:validation-failed"
    );
    assert_eq!(results[1]["error"]["field"], "type");
    assert_eq!(
        results[2]["id"], results[0]["id"],
        "a duplicate within the batch names the original"
    );
    assert_eq!(results[2]["duplicate"], true);
    assert_eq!(
        results[3]["deliveries"], 0,
        "no subscription matches users.*"
    );
    assert_eq!(
        results[4]["error"]["type"],
        "urn:herald:problem:invalid-body"
    );
}

/// (name, path, content type, body, status, problem slug)
type BadEvent = (
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test]
async fn bad_events_get_clear_problems() {
    let app = TestApp::spawn_with(|args| args.max_payload = Some("1KiB".into())).await;
    let (_, key) = app.tenant("Acme").await;
    let big = format!(r#"{{"type":"a.b","payload":"{}"}}"#, "x".repeat(2000)).into_bytes();
    let too_many = json!({ "events": vec![json!({ "type": "a.b", "payload": 1 }); 1001] })
        .to_string()
        .into_bytes();
    let cases: Vec<BadEvent> = vec![
        (
            "payload over --max-payload",
            "/v1/events",
            "application/json",
            big,
            413,
            "payload-too-large",
        ),
        (
            "raw body over --max-payload",
            "/v1/events/a.b",
            "text/plain",
            vec![b'x'; 2000],
            413,
            "payload-too-large",
        ),
        (
            "batch over 1,000 events",
            "/v1/events/batch",
            "application/json",
            too_many,
            413,
            "payload-too-large",
        ),
        (
            "batch of 200,000 values (counted past 1,000, never kept)",
            "/v1/events/batch",
            "application/json",
            format!("{{\"events\":[{}0]}}", "0,".repeat(199_999)).into_bytes(),
            413,
            "payload-too-large",
        ),
        (
            "raw event of type `batch` (the batch route)",
            "/v1/events/batch",
            "text/plain",
            b"x".to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            "envelope not JSON",
            "/v1/events",
            "application/json",
            b"{\"type\":".to_vec(),
            400,
            "malformed-body",
        ),
        (
            "envelope without payload",
            "/v1/events",
            "application/json",
            br#"{"type":"a.b"}"#.to_vec(),
            422,
            "invalid-body",
        ),
        (
            "envelope as text/plain",
            "/v1/events",
            "text/plain",
            br#"{"type":"a.b","payload":1}"#.to_vec(),
            415,
            "unsupported-media-type",
        ),
        (
            "invalid event type",
            "/v1/events",
            "application/json",
            br#"{"type":"a b","payload":1}"#.to_vec(),
            422,
            "validation-failed",
        ),
        (
            "invalid raw event type",
            "/v1/events/a..b",
            "text/plain",
            b"x".to_vec(),
            422,
            "validation-failed",
        ),
        (
            "empty idempotency key",
            "/v1/events",
            "application/json",
            br#"{"type":"a.b","payload":1,"idempotencyKey":""}"#.to_vec(),
            422,
            "validation-failed",
        ),
        (
            "raw content type without a slash",
            "/v1/events/a.b",
            "nonsense",
            b"x".to_vec(),
            422,
            "validation-failed",
        ),
    ];
    for (name, path, content_type, body, status, problem) in cases {
        let answer = post_raw(&app, &key, path, content_type, body).await;
        assert_eq!(answer.status.as_u16(), status, "{name}: {answer:#?}");
        answer.assert_problem(status, problem);
    }
    let fits = format!(r#"{{"type":"a.b","payload":"{}"}}"#, "x".repeat(900)).into_bytes();
    post_raw(&app, &key, "/v1/events", "application/json", fits)
        .await
        .expect(202);
}
