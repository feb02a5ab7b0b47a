//! The dispatcher: makes one signed HTTP request for a claimed delivery and reports
//! what came of it. It never retries, schedules or writes; the scheduler and the
//! outcome recorder do that.
//!
//! One pooled client serves every target (keep-alive, HTTP/1.1 and HTTP/2 over
//! rustls with the platform's certificate verifier), with no redirects, no proxy, and
//! the [`ssrf`] guard on every connection. It is hyper's own pooled client rather
//! than reqwest: a delivery needs none of reqwest's layers (redirects, retries, URL
//! handling), which cost about a quarter of the client's CPU per request.

pub mod ssrf;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

use herald_core::id::AttemptId;
use herald_core::model::Attempt;
use herald_core::outcome::AttemptResult;
use herald_core::signing::signature_header;
use herald_core::store::Claim;
use herald_core::time::Timestamp;
use url::Host;

use ssrf::{Guard, GuardedResolver};

/// Most bytes of a response body kept in the attempt log.
pub const MAX_CAPTURED_BODY: usize = 4096;
/// Most response headers kept in the attempt log.
const MAX_CAPTURED_HEADERS: usize = 32;
/// The `User-Agent` of every delivery.
const AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

// The Standard Webhooks headers and Herald's own, made once instead of per request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const HERALD_EVENT_TYPE: HeaderName = HeaderName::from_static("herald-event-type");
const HERALD_ATTEMPT: HeaderName = HeaderName::from_static("herald-attempt");
const HERALD_DELIVERY_ID: HeaderName = HeaderName::from_static("herald-delivery-id");

/// The connections of the delivery client: TCP through the SSRF guard's resolver,
/// then TLS when the URL says `https`.
type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// Sends deliveries.
#[derive(Clone)]
pub struct Dispatcher {
    client: Client<Connector, Full<Bytes>>,
    guard: Arc<Guard>,
}

/// The delivery client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the delivery HTTP client")]
pub struct ClientError(#[source] rustls::Error);

impl Dispatcher {
    /// A dispatcher whose connections pass `guard`.
    pub fn new(guard: Guard) -> Result<Self, ClientError> {
        install_crypto_provider();
        let guard = Arc::new(guard);
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver::new(Arc::clone(&guard)));
        // `https` URLs go through the TLS layer wrapped around this connector.
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let tls = rustls::ClientConfig::builder()
            .with_platform_verifier()
            .map_err(ClientError)?
            .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client, guard })
    }

    /// Makes the attempt for `claim` and reports it. The target's timeout covers
    /// connecting, the request and its response headers; the body is then read until
    /// that same deadline (what arrived by then is kept).
    pub async fn attempt(&self, claim: &Claim) -> (AttemptResult, Attempt) {
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let timeout = claim.target.timeout.duration();
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, self.send(claim, started_at)).await;
        let (result, response_headers, response_body) = match sent {
            Ok(Ok(response)) => capture(response, deadline).await,
            Ok(Err(error)) => (AttemptResult::Failed { error }, Vec::new(), None),
            Err(_) => (
                AttemptResult::Failed {
                    error: format!("timed out after {} ms", timeout.as_millis()),
                },
                Vec::new(),
                None,
            ),
        };
        let attempt = Attempt {
            id: AttemptId::generate(),
            delivery_id: claim.delivery.id.clone(),
            tenant_id: claim.delivery.tenant_id.clone(),
            number: claim.delivery.attempts + 1,
            started_at,
            duration_ms: u32::try_from(clock.elapsed().as_millis()).unwrap_or(u32::MAX),
            status_code: result.status_code(),
            error: result.error(),
            response_headers,
            response_body,
        };
        (result, attempt)
    }

    async fn send(&self, claim: &Claim, now: Timestamp) -> Result<Response<Incoming>, String> {
        let target = &claim.target;
        if let Some(ip) = literal_ip(target.url.url())
            && !self.guard.permits(ip)
        {
            return Err(format!(
                "refused by the SSRF guard: {ip} is not a public address; allow it with --allow-targets"
            ));
        }
        let uri: http::Uri = target
            .url
            .url()
            .as_str()
            .parse()
            .map_err(|error| format!("the target URL cannot be requested: {error}"))?;
        let mut request = Request::post(uri)
            .body(Full::new(claim.event.payload.clone()))
            .map_err(|error| format!("cannot build the request: {error}"))?;
        *request.headers_mut() = headers(claim, now)?;
        self.client.request(request).await.map_err(describe)
    }
}

/// Makes `ring` the process's TLS crypto provider (every rustls client needs one).
/// Installing it again, or after another was installed, changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The host of `url` if it is an IP literal (those skip DNS, so the guard checks them here).
fn literal_ip(url: &url::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(ip.into()),
        Host::Ipv6(ip) => Some(ip.into()),
        Host::Domain(_) => None,
    }
}

/// The Standard Webhooks headers, Herald's own, and the target's custom headers.
fn headers(claim: &Claim, now: Timestamp) -> Result<HeaderMap, String> {
    let event = &claim.event;
    let target = &claim.target;
    let seconds = now.as_millis() / 1000;
    let signature = signature_header(
        target.signing_secrets(now),
        event.id.as_str(),
        seconds,
        &event.payload,
    );
    let mut headers = HeaderMap::with_capacity(8 + target.headers.as_map().len());
    let invalid = |name: &str, error: &dyn std::fmt::Display| format!("header {name}: {error}");
    let value_of =
        |name: &str, value: &str| HeaderValue::from_str(value).map_err(|e| invalid(name, &e));
    for (name, value) in target.headers.as_map() {
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(name, &e))?;
        headers.insert(parsed, value_of(name, value)?);
    }
    // Herald's own go in last: a custom header of the same name is replaced.
    let own = [
        (CONTENT_TYPE, event.content_type.as_str()),
        (USER_AGENT, AGENT),
        (WEBHOOK_ID, event.id.as_str()),
        (WEBHOOK_TIMESTAMP, &seconds.to_string()),
        (WEBHOOK_SIGNATURE, &signature),
        (HERALD_EVENT_TYPE, event.event_type.as_str()),
        (HERALD_ATTEMPT, &(claim.delivery.attempts + 1).to_string()),
        (HERALD_DELIVERY_ID, claim.delivery.id.as_str()),
    ];
    for (name, value) in own {
        let value = value_of(name.as_str(), value)?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// The result, headers and start of the body of a response (read until `deadline`).
async fn capture(
    response: Response<Incoming>,
    deadline: tokio::time::Instant,
) -> (AttemptResult, Vec<(String, String)>, Option<String>) {
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16();
    let result = if parts.status.is_success() {
        AttemptResult::Delivered { status }
    } else {
        AttemptResult::Rejected {
            status,
            retry_after: parts.headers.get(RETRY_AFTER).and_then(parse_retry_after),
        }
    };
    let headers = parts
        .headers
        .iter()
        .take(MAX_CAPTURED_HEADERS)
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut captured = Vec::new();
    while captured.len() < MAX_CAPTURED_BODY {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    captured.extend_from_slice(data);
                }
            }
            // The end, a broken body or the deadline: keep what arrived.
            Ok(None | Some(Err(_))) | Err(_) => break,
        }
    }
    captured.truncate(MAX_CAPTURED_BODY);
    let body = (!captured.is_empty()).then(|| String::from_utf8_lossy(&captured).into_owned());
    (result, headers, body)
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(
        date.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A sentence for a request that got no response: the error and its causes (hyper's
/// errors never carry the URL, which may hold a secret).
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let parsed =
            parse_retry_after(&HeaderValue::from_str(&soon).expect("header")).expect("date");
        assert!(
            parsed > Duration::from_secs(25) && parsed <= Duration::from_secs(30),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
