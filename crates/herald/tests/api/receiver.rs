//! `TestReceiver`: a real HTTP server on loopback that records every delivery and
//! answers as the test scripts it (status codes, `Retry-After`, slowness), counting
//! how many requests it is serving at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Requests being served when this one arrived, itself included.
    pub concurrent: usize,
}

impl Received {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// How the receiver answers the n-th request (0-based) it gets.
pub type Script = Arc<dyn Fn(usize) -> (u16, Vec<(&'static str, String)>) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    count: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    delay: Arc<Mutex<Duration>>,
    script: Arc<Mutex<Script>>,
}

/// A running receiver.
pub struct TestReceiver {
    pub base: String,
    shared: Shared,
}

impl TestReceiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Self {
        Self::scripted(Arc::new(|_| (200, Vec::new()))).await
    }

    /// A receiver that answers as `script` says.
    pub async fn scripted(script: Script) -> Self {
        let shared = Shared {
            received: Arc::default(),
            count: Arc::default(),
            in_flight: Arc::default(),
            peak: Arc::default(),
            delay: Arc::default(),
            script: Arc::new(Mutex::new(script)),
        };
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, shared }
    }

    /// A URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Changes how later requests are answered.
    pub fn rescript(&self, script: Script) {
        *self.shared.script.lock().expect("script lock") = script;
    }

    /// Makes later requests wait this long before they are answered.
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().expect("delay lock") = delay;
    }

    /// Requests being served now (a request ends when answered or when its client goes).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests served at once so far.
    pub fn peak_concurrency(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received lock").clone()
    }

    /// What was received on `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = shared.count.fetch_add(1, Ordering::SeqCst);
    let concurrent = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    // Decrements when the request ends, answered or abandoned by a timing-out client.
    let _serving = Serving(Arc::clone(&shared.in_flight));
    shared.peak.fetch_max(concurrent, Ordering::SeqCst);
    shared
        .received
        .lock()
        .expect("received lock")
        .push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
            concurrent,
        });
    let delay = *shared.delay.lock().expect("delay lock");
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let script = Arc::clone(&shared.script.lock().expect("script lock"));
    let (status, headers) = script(n);
    let mut response = StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response();
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Counts one request as being served for as long as it lives.
struct Serving(Arc<AtomicUsize>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
