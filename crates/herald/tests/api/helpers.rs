//! `TestApp`: one Herald instance in this process, and an HTTP client for it.

use std::path::PathBuf;
use std::sync::Arc;

use herald::app::{self, RunningApp};
use herald::config::{Config, ServeArgs};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The admin token every test instance is configured with.
pub const ADMIN: &str = "test-admin-token-0123456789";

/// An answer: status, content type and JSON body (`Null` when there is none).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with this status and problem slug; returns its detail.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "status of {self:#?}");
        assert_eq!(
            self.content_type, "application/problem+json",
            "content type of {self:#?}"
        );
        assert_eq!(
            self.body["type"],
            format!("urn:herald:problem:{slug}"),
            "type of {self:#?}"
        );
        assert_eq!(self.body["status"], status, "status member of {self:#?}");
        assert!(
            self.body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "title of {self:#?}"
        );
        let detail = self.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "detail of {self:#?}");
        detail
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        self.body
    }
}

/// The variable choosing the store the in-process tests run on: `postgres` for a fresh
/// database per test on the server `scripts/test` starts; anything else for the
/// embedded store.
pub const TEST_BACKEND: &str = "HERALD_TEST_BACKEND";

/// Where a test instance keeps its data: a data directory, and when the tests run on
/// PostgreSQL, a fresh database of its own.
#[derive(Clone)]
pub struct Storage {
    pub dir: Arc<TempDir>,
    pub database_url: Option<String>,
}

impl Storage {
    /// New, empty storage on the backend the tests run on.
    pub async fn new() -> Self {
        let database_url = if std::env::var(TEST_BACKEND).is_ok_and(|b| b == "postgres") {
            let server = herald_store::postgres::testing::server_url();
            Some(herald_store::postgres::testing::fresh_database(&server).await)
        } else {
            None
        };
        Self {
            dir: Arc::new(tempfile::tempdir().expect("temporary directory")),
            database_url,
        }
    }
}

/// A running Herald and where it keeps its data.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub storage: Storage,
    running: Option<RunningApp>,
}

impl TestApp {
    /// A fresh instance with an empty store.
    pub async fn spawn() -> Self {
        Self::spawn_in(Storage::new().await).await
    }

    /// A fresh instance whose settings `adjust` changes from the test defaults.
    pub async fn spawn_with(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let storage = Storage::new().await;
        let mut args = test_args(&storage);
        adjust(&mut args);
        Self::start(storage, args).await
    }

    /// An instance on existing storage.
    pub async fn spawn_in(storage: Storage) -> Self {
        Self::spawn_in_with(storage, |_| {}).await
    }

    /// An instance on existing storage whose settings `adjust` changes.
    pub async fn spawn_in_with(storage: Storage, adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = test_args(&storage);
        adjust(&mut args);
        Self::start(storage, args).await
    }

    async fn start(storage: Storage, args: ServeArgs) -> Self {
        let config = Config::resolve(args, Some(ADMIN.into())).expect("valid test config");
        let running = app::start(&config).await.expect("Herald starts");
        Self {
            base: format!("http://{}", running.local_address()),
            client: client(),
            storage,
            running: Some(running),
        }
    }

    /// Stops this instance cleanly (within its shutdown grace).
    pub async fn stop(mut self) {
        let running = self.running.take().expect("running");
        running.stop().await.expect("clean stop");
    }

    /// Stops this instance and starts a new one on the same storage.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops this instance and starts a new one on the same storage, with settings
    /// `adjust` changes.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let running = self.running.take().expect("running");
        running.stop().await.expect("clean stop");
        Self::spawn_in_with(self.storage.clone(), adjust).await
    }

    /// Sends a request with an optional bearer credential and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, credential: &str) -> Answer {
        self.call(Method::GET, path, Some(credential), None).await
    }

    pub async fn post(&self, path: &str, credential: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(credential), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, credential: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(credential), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, credential: &str) -> Answer {
        self.call(Method::DELETE, path, Some(credential), None)
            .await
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("scraped")
            .text()
            .await
            .expect("exposition text")
    }

    /// The value of one sample of `/metrics` (its name with labels, as exposed), or 0
    /// while it has none.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_value(&self.metrics().await, sample)
    }

    /// Creates a tenant; returns its id and API key.
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let body = self
            .post("/v1/tenants", ADMIN, json!({ "name": name }))
            .await
            .expect(201);
        (string(&body["id"]), string(&body["apiKey"]))
    }

    /// Creates a target for the tenant of `key`; returns its body.
    pub async fn target(&self, key: &str, url: &str) -> Value {
        self.post("/v1/webhooks/targets", key, json!({ "url": url }))
            .await
            .expect(201)
    }

    /// Creates a filter for the tenant of `key`; returns its body.
    pub async fn filter(&self, key: &str, events: &[&str]) -> Value {
        self.post("/v1/webhooks/filters", key, json!({ "events": events }))
            .await
            .expect(201)
    }

    /// Subscribes a target to a filter; returns the subscription's body.
    pub async fn subscription(&self, key: &str, target_id: &str, filter_id: &str) -> Value {
        let body = json!({ "targetId": target_id, "filterId": filter_id });
        self.post("/v1/webhooks/subscriptions", key, body)
            .await
            .expect(201)
    }

    /// Creates a target at `url` with `settings` merged in, subscribed to every event;
    /// returns its id.
    pub async fn subscribed_target(&self, key: &str, url: &str, settings: Value) -> String {
        let mut body = json!({ "url": url });
        if let (Some(body), Some(settings)) = (body.as_object_mut(), settings.as_object()) {
            body.extend(settings.clone());
        }
        let target = self
            .post("/v1/webhooks/targets", key, body)
            .await
            .expect(201);
        let filter = self.filter(key, &["*"]).await;
        self.subscription(key, &string(&target["id"]), &string(&filter["id"]))
            .await;
        string(&target["id"])
    }

    /// Every item of a list, following `nextCursor` with pages of `limit`; also
    /// returns how many pages it took.
    pub async fn list_all(&self, path: &str, key: &str, limit: u32) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let joiner = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(cursor) => format!("{path}{joiner}limit={limit}&cursor={cursor}"),
                None => format!("{path}{joiner}limit={limit}"),
            };
            let body = self.get(&url, key).await.expect(200);
            pages += 1;
            items.extend(body["data"].as_array().expect("data array").iter().cloned());
            match body["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return (items, pages),
            }
        }
    }
}

/// The settings of a test instance: port 0, the given storage, loopback receivers
/// allowed past the SSRF guard, and retries in milliseconds, not seconds.
pub fn test_args(storage: &Storage) -> ServeArgs {
    ServeArgs {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(storage.dir.path().to_string_lossy().into_owned()),
        database_url: storage.database_url.clone(),
        database_pool_size: storage.database_url.as_ref().map(|_| "4".into()),
        allow_targets: Some("127.0.0.0/8".into()),
        retry_initial: Some("100ms".into()),
        retry_max_delay: Some("400ms".into()),
        // Stops wait at most this for attempts under way: tests whose targets never
        // answer would otherwise wait out the default 30 s at every restart.
        shutdown_grace: Some("5s".into()),
        ..ServeArgs::default()
    }
}

/// Waits up to ten seconds for `check` to return `Some`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, std::time::Duration::from_secs(10), check).await
}

/// Waits up to `within` for `check` to return `Some`.
pub async fn eventually_within<T, F, Fut>(
    what: &str,
    within: std::time::Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads a response into an [`Answer`].
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// A JSON string value as a `String`.
#[track_caller]
pub fn string(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_owned()
}

/// The path of the `herald` binary built for these tests.
pub fn herald_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herald"))
}

/// An HTTP client for tests (TLS-capable, so the crypto provider is installed first).
pub fn client() -> reqwest::Client {
    herald::dispatcher::install_crypto_provider();
    reqwest::Client::new()
}

/// Ids of the events a server accepted (answered 202), collected by producers.
pub type Accepted = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// A producer publishing events of `event_type` to `base` with `key`, one after the
/// other, until a publish fails (the server died under it) or `stop` is set. Only 202
/// answers count: their event ids go into `accepted`.
pub fn spawn_producer(
    base: String,
    key: String,
    event_type: &'static str,
    producer: usize,
    accepted: Accepted,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let http = client();
    tokio::spawn(async move {
        for i in 0.. {
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let event = json!({ "type": event_type, "payload": { "producer": producer, "i": i } });
            let Ok(response) = http
                .post(format!("{base}/v1/events"))
                .bearer_auth(&key)
                .json(&event)
                .send()
                .await
            else {
                break;
            };
            if response.status() != 202 {
                break;
            }
            let Ok(body) = response.json::<Value>().await else {
                break;
            };
            let id = body["id"].as_str().unwrap_or_default().to_owned();
            accepted.lock().expect("lock").insert(id);
        }
    })
}

/// POSTs `body` to `base` + `path` with `token`; asserts success and returns the JSON
/// answer (for servers running as separate processes).
pub async fn post_json(base: &str, path: &str, token: &str, body: Value) -> Value {
    let response = client()
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.expect("json")
}

/// On the server at `base`: a tenant with one target at `url` (with `settings`)
/// subscribed to every event. Returns the tenant's id and key.
pub async fn subscribed_over_http(
    base: &str,
    admin: &str,
    url: &str,
    settings: Value,
) -> (String, String) {
    let tenant = post_json(base, "/v1/tenants", admin, json!({ "name": "Acme" })).await;
    let key = string(&tenant["apiKey"]);
    let mut target = json!({ "url": url });
    if let (Some(target), Some(settings)) = (target.as_object_mut(), settings.as_object()) {
        target.extend(settings.clone());
    }
    let target = post_json(base, "/v1/webhooks/targets", &key, target).await;
    let filter = post_json(
        base,
        "/v1/webhooks/filters",
        &key,
        json!({ "events": ["*"] }),
    )
    .await;
    let subscription = json!({ "targetId": target["id"], "filterId": filter["id"] });
    post_json(base, "/v1/webhooks/subscriptions", &key, subscription).await;
    (string(&tenant["id"]), key)
}

/// The value of one sample (name with labels) in exposition `text`, or 0 without it.
pub fn sample_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}
