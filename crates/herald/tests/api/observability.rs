//! Operability: `/metrics` counts what happened (and parses as OpenMetrics), the
//! Grafana dashboard only uses exported metrics, JSON log lines of a delivery carry its
//! ids and never its payload, and `/readyz` fails when the store is not usable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::Server;
use crate::helpers::{TestApp, eventually, string};
use crate::receiver::TestReceiver;

/// Samples of the exposition text: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(app: &TestApp) -> (String, String) {
    let response = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("scraped");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("text")
        .to_owned();
    (content_type, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_ingest_results_durations_and_the_queue() {
    let app = TestApp::spawn_with(|args| {
        args.retry_max_attempts = Some("2".into());
        args.retry_max_delay = Some("60s".into());
    })
    .await;
    let (_, key) = app.tenant("Acme").await;
    let ok = TestReceiver::start().await;
    let broken = TestReceiver::scripted(Arc::new(|_| (500, Vec::new()))).await;
    let busy =
        TestReceiver::scripted(Arc::new(|_| (429, vec![("retry-after", "30".to_owned())]))).await;
    for receiver in [&ok, &broken] {
        app.subscribed_target(&key, &receiver.url("/hook"), json!({}))
            .await;
    }
    // One request at a time, so the 429 is answered before the second delivery goes.
    app.subscribed_target(&key, &busy.url("/hook"), json!({ "maxInFlight": 1 }))
        .await;
    for n in 0..2 {
        app.post(
            "/v1/events",
            &key,
            json!({ "type": "m.e", "payload": { "n": n } }),
        )
        .await
        .expect(202);
    }
    // 2 successes, 2 × (500, 500 → dead), and one 429 (which pauses its target).
    eventually("every attempt to be counted", || async {
        let (_, text) = scrape(&app).await;
        let counted = samples(&text)
            .get("herald_attempt_duration_seconds_count")
            .copied();
        (counted == Some(7.0)).then_some(())
    })
    .await;
    // Queue gauges are counted at most once a second: scrape again after that.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, text) = scrape(&app).await;
    let values = samples(&text);
    let value = |name: &str| values.get(name).copied().unwrap_or(-1.0);
    assert_eq!(value(r#"herald_events_ingested_total{source="http"}"#), 2.0);
    assert_eq!(value(r#"herald_deliveries_total{result="success"}"#), 2.0);
    assert_eq!(
        value(r#"herald_deliveries_total{result="failure"}"#),
        3.0,
        "two 500s before dying and one 429"
    );
    assert_eq!(value(r#"herald_deliveries_total{result="dead"}"#), 2.0);
    assert_eq!(value("herald_requests_in_flight"), 0.0);
    assert_eq!(
        value(r#"herald_attempts_started_total{from="claim"}"#).max(0.0)
            + value(r#"herald_attempts_started_total{from="intake"}"#).max(0.0),
        7.0,
        "every attempt started once, claimed or at intake"
    );
    // The 429's Retry-After pauses its target: its retry waits 30 s, and the second
    // event's delivery to it is due but held back by the pause.
    assert_eq!(value("herald_deliveries_due"), 1.0);
    assert_eq!(value("herald_deliveries_waiting"), 1.0);
    assert_eq!(value("herald_circuits_open"), 0.0);
    assert!(value("herald_store_commit_seconds_count") > 0.0);
    assert_eq!(value("herald_leader"), 1.0, "a lone instance leads");

    // Exactly the exposition format Prometheus reads, per an independent parser.
    let (content_type, text) = scrape(&app).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    let python = std::env::var("HERALD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut parser = std::process::Command::new(python)
        .args([
            "-c",
            "import sys\n\
             from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
             names = [f.name for f in text_string_to_metric_families(sys.stdin.read())]\n\
             print(len(names))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python runs (scripts/test provides prometheus_client)");
    use std::io::Write;
    parser
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("written");
    let parsed = parser.wait_with_output().expect("parser ends");
    assert!(
        parsed.status.success(),
        "the exposition parses: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let families: usize = String::from_utf8_lossy(&parsed.stdout)
        .trim()
        .parse()
        .expect("a count");
    assert_eq!(
        families, 12,
        "every metric family is there (a family with no sample yet is left out)"
    );

    // The dashboard only queries metrics Herald exports.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/grafana/herald.json"
        ))
        .expect("the dashboard file"),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("an expression");
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("herald_"))
            {
                assert!(
                    text.lines().any(|line| line.starts_with(name)),
                    "the dashboard queries {name}, which /metrics does not export"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_schema_is_not_the_expected_one() {
    let app = TestApp::spawn().await;
    let readyz = || async {
        let response = app
            .client
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .expect("sent");
        crate::helpers::answer(response).await
    };
    readyz().await.expect(200);
    let schema = SchemaVersion::open(&app.storage).await;
    let version = schema.get().await;
    schema.set(version + 1).await;
    readyz().await.assert_problem(503, "unavailable");
    schema.set(version).await;
    readyz().await.expect(200);
}

/// The schema version recorded in a test instance's store, read and written behind
/// Herald's back.
enum SchemaVersion {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl SchemaVersion {
    async fn open(storage: &crate::helpers::Storage) -> Self {
        match &storage.database_url {
            None => {
                let path = storage.dir.path().join(herald_store::sqlite::DATABASE_FILE);
                Self::Sqlite(rusqlite::Connection::open(&path).expect("raw connection"))
            }
            Some(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("raw connection");
                tokio::spawn(connection);
                Self::Postgres(client)
            }
        }
    }

    async fn get(&self) -> i64 {
        match self {
            Self::Sqlite(raw) => raw
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .expect("version"),
            Self::Postgres(raw) => raw
                .query_one("SELECT max(version) FROM herald_schema", &[])
                .await
                .expect("version")
                .get(0),
        }
    }

    async fn set(&self, version: i64) {
        match self {
            Self::Sqlite(raw) => raw
                .pragma_update(None, "user_version", version)
                .expect("set the version"),
            Self::Postgres(raw) => {
                raw.execute("UPDATE herald_schema SET version = $1", &[&version])
                    .await
                    .expect("set the version");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_a_delivery_carry_its_ids_and_never_its_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "observability-admin-token-0123";
    let mut server = Server::start_with_env(
        dir.path(),
        &[
            "--allow-targets",
            "127.0.0.0/8",
            "--retry-initial",
            "50ms",
            "--retry-max-delay",
            "100ms",
        ],
        &[
            ("HERALD_ADMIN_TOKEN", token),
            // Debug only inside delivery spans: the success line is written only if
            // its span exists when the filter looks at it.
            ("RUST_LOG", "info,[delivery]=debug"),
        ],
    );
    let client = crate::helpers::client();
    let post = |path: &str, credential: &str, body: Value| {
        let request = client
            .post(format!("{}{path}", server.base))
            .bearer_auth(credential)
            .json(&body);
        async move {
            let response = request.send().await.expect("sent");
            response.json::<Value>().await.expect("json")
        }
    };
    let tenant = post("/v1/tenants", token, json!({ "name": "Logs" })).await;
    let key = string(&tenant["apiKey"]);
    let receiver =
        TestReceiver::scripted(Arc::new(|n| (if n == 0 { 503 } else { 204 }, Vec::new()))).await;
    let target = post(
        "/v1/webhooks/targets",
        &key,
        json!({ "url": receiver.url("/logged") }),
    )
    .await;
    let filter = post("/v1/webhooks/filters", &key, json!({ "events": ["*"] })).await;
    post(
        "/v1/webhooks/subscriptions",
        &key,
        json!({ "targetId": target["id"], "filterId": filter["id"] }),
    )
    .await;
    let marker = "payload-marker-that-must-never-be-logged";
    let event = post(
        "/v1/events",
        &key,
        json!({ "type": "log.test", "payload": { "secret": marker } }),
    )
    .await;
    eventually("the retry to succeed", || async {
        (receiver.received().len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let lines: Vec<String> = server.output().to_vec();
    assert!(
        lines.iter().all(|line| !line.contains(marker)),
        "no log line carries payload bytes"
    );
    let about_the_delivery: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["span"]["name"] == "delivery")
        .collect();
    let messages: Vec<&str> = about_the_delivery
        .iter()
        .filter_map(|line| line["message"].as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("retry scheduled")),
        "{messages:?}"
    );
    assert!(messages.contains(&"delivered"), "{messages:?}");
    for line in &about_the_delivery {
        let span = &line["span"];
        assert_eq!(span["tenant"], tenant["id"]);
        assert_eq!(span["event"], event["id"]);
        assert_eq!(span["target"], target["id"]);
        assert!(
            span["delivery"]
                .as_str()
                .is_some_and(|d| d.starts_with("dlv_"))
        );
    }
    server.terminate();
}
