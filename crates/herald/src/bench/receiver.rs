//! The benchmark's receiver: counts deliveries and measures publish→receipt latency
//! from the time stamped at the start of each payload.
//!
//! It is hyper's HTTP/1.1 server with no router or extractors on top, answering every
//! request the same way: the tool shares the machine with Herald, so the less it
//! spends per webhook the more of the machine is left to what is measured.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Default)]
struct Tally {
    count: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    last: Mutex<Option<Instant>>,
}

/// A loopback receiver.
pub struct Receiver {
    base: String,
    tally: Arc<Tally>,
}

impl Receiver {
    /// Listens on a random loopback port and answers 204 at once.
    pub async fn start() -> anyhow::Result<Self> {
        Self::serve(false).await
    }

    /// Listens on a random loopback port and never answers (each request is counted,
    /// then held until the client gives up): a dead endpoint.
    pub async fn blackhole() -> anyhow::Result<Self> {
        Self::serve(true).await
    }

    async fn serve(blackhole: bool) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally::default());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(accept(listener, Arc::clone(&tally), blackhole));
        Ok(Self { base, tally })
    }

    /// A URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Deliveries received.
    pub fn count(&self) -> u64 {
        self.tally.count.load(Ordering::Relaxed)
    }

    /// When the last delivery arrived.
    pub fn last_receipt(&self) -> Option<Instant> {
        self.tally.last.lock().ok().and_then(|last| *last)
    }

    /// Waits until `expected` deliveries arrived or `limit` passed.
    pub async fn wait_for(&self, expected: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Forgets the latencies measured so far (a new phase begins).
    pub fn reset_latencies(&self) {
        if let Ok(mut latencies) = self.tally.latencies_us.lock() {
            latencies.clear();
        }
    }

    /// Latency percentiles in milliseconds.
    pub fn latency_percentiles<const N: usize>(&self, percentiles: [f64; N]) -> [f64; N] {
        let mut latencies = self
            .tally
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        latencies.sort_unstable();
        percentiles.map(|p| {
            if latencies.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
            latencies[rank.min(latencies.len() - 1)] as f64 / 1000.0
        })
    }
}

/// Serves every connection `listener` accepts, each on a task of its own.
async fn accept(listener: TcpListener, tally: Arc<Tally>, blackhole: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: let the ones open finish first.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Answers go out at once, as from any receiver that serves HTTP well.
        let _ = stream.set_nodelay(true);
        let tally = Arc::clone(&tally);
        let service = service_fn(move |request: Request<Incoming>| {
            let tally = Arc::clone(&tally);
            async move {
                let status = if blackhole {
                    hold(&tally).await
                } else {
                    match request.into_body().collect().await {
                        Ok(body) => receive(&tally, &body.to_bytes()),
                        Err(_) => StatusCode::BAD_REQUEST,
                    }
                };
                let mut response = Response::new(Empty::<Bytes>::new());
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(async move {
            // A connection the client drops mid-request simply ends.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn receive(tally: &Tally, body: &[u8]) -> StatusCode {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    if let Some(sent) = sent_at(body)
        && let Ok(mut latencies) = tally.latencies_us.lock()
    {
        latencies.push(u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX));
    }
    if let Ok(mut last) = tally.last.lock() {
        *last = Some(Instant::now());
    }
    tally.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn hold(tally: &Tally) -> StatusCode {
    tally.count.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::NO_CONTENT
}

/// The microseconds in a payload starting `{"t":<micros>,`.
fn sent_at(body: &[u8]) -> Option<u128> {
    let rest = body.strip_prefix(b"{\"t\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}
