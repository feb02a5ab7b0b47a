//! The load tool's client of Herald's public API: set-up calls and publishing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A publish that takes longer fails the run instead of hanging it (a wedged Herald).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Herald's API at `base`, over pooled clients shared by every producer.
#[derive(Clone)]
pub struct Api {
    /// The client of the set-up calls and reads.
    pub http: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The client of the publishing hot path: plain hyper, so that the tool's own CPU
    /// per request stays small beside Herald's (reqwest's layers cost it about a
    /// quarter more per request).
    publisher: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    /// Herald's API at `base`, set up through `http`.
    pub fn new(http: reqwest::Client, base: String) -> Self {
        // No Nagle delay, like reqwest and Herald's own dispatcher.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let publisher = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            http,
            base,
            publisher,
        }
    }

    /// POSTs `body` with `token`; the answer's JSON, or an error for a non-2xx.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("POST {path} answered {status}: {}", response.text().await?);
        }
        Ok(response.json().await?)
    }

    /// Creates a tenant; returns its API key.
    pub async fn tenant(&self, admin_token: &str, name: &str) -> anyhow::Result<String> {
        Ok(self.tenant_with_id(admin_token, name).await?.1)
    }

    /// Creates a tenant; returns its id and API key.
    pub async fn tenant_with_id(
        &self,
        admin_token: &str,
        name: &str,
    ) -> anyhow::Result<(String, String)> {
        let tenant = self
            .post("/v1/tenants", admin_token, &json!({ "name": name }))
            .await?;
        Ok((
            tenant["id"].as_str().context("no id")?.to_owned(),
            tenant["apiKey"].as_str().context("no apiKey")?.to_owned(),
        ))
    }

    /// Creates a target at `url` with `settings` merged in, subscribed to every event.
    pub async fn subscribed_target(
        &self,
        key: &str,
        url: &str,
        settings: &Value,
    ) -> anyhow::Result<()> {
        let mut body = json!({ "url": url });
        if let (Some(body), Some(settings)) = (body.as_object_mut(), settings.as_object()) {
            body.extend(settings.clone());
        }
        let target = self.post("/v1/webhooks/targets", key, &body).await?;
        let filter = self
            .post("/v1/webhooks/filters", key, &json!({ "events": ["*"] }))
            .await?;
        self.post(
            "/v1/webhooks/subscriptions",
            key,
            &json!({ "targetId": target["id"], "filterId": filter["id"] }),
        )
        .await?;
        Ok(())
    }

    /// Publishes one event envelope (already serialized); fails unless it is accepted.
    pub async fn publish(&self, key: &str, envelope: String) -> anyhow::Result<()> {
        self.publish_to("/v1/events", key, envelope).await
    }

    /// Publishes `count` events of `payload_bytes` through the batch endpoint, `batch`
    /// per request, from `producers` concurrent connections.
    pub async fn publish_batches(
        &self,
        key: &str,
        count: u64,
        batch: u64,
        payload_bytes: usize,
        producers: usize,
    ) -> anyhow::Result<()> {
        let batches = count.div_ceil(batch);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..producers.max(1) {
            let (api, key, next) = (self.clone(), key.to_owned(), Arc::clone(&next));
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= batches {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let size = batch.min(count - n * batch);
                    let events: Vec<String> =
                        (0..size).map(|_| super::envelope(payload_bytes)).collect();
                    let body = format!("{{\"events\":[{}]}}", events.join(","));
                    api.publish_to("/v1/events/batch", &key, body).await?;
                }
            });
        }
        while let Some(result) = tasks.join_next().await {
            result??;
        }
        Ok(())
    }

    /// The value of one sample of `/metrics` (its name and labels as exposed, e.g.
    /// `herald_deliveries_total{result="success"}`); 0 while it has none.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0))
    }

    /// POSTs a serialized body to an intake path; fails unless it is accepted.
    pub async fn publish_to(&self, path: &str, key: &str, body: String) -> anyhow::Result<()> {
        let request = http::Request::post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let response = self.publisher.request(request).await?;
            let status = response.status();
            // Read to the end, so the connection goes back to the pool.
            let answer = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                bail!(
                    "publishing answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            Ok(())
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, exchange)
            .await
            .context("publishing timed out")?
    }
}
