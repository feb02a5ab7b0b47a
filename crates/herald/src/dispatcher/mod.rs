//! The dispatcher: makes one signed HTTP request for a claimed delivery and reports
//! what came of it. It never retries, schedules or writes; the scheduler and the
//! outcome recorder do that.
//!
//! One pooled client serves every target (keep-alive, HTTP/1.1 and HTTP/2 over
//! rustls), with redirects off, no proxy, and the [`ssrf`] guard on every connection.

pub mod ssrf;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use herald_core::id::AttemptId;
use herald_core::model::Attempt;
use herald_core::outcome::AttemptResult;
use herald_core::signing::signature_header;
use herald_core::store::Claim;
use herald_core::time::Timestamp;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use url::Host;

use ssrf::{Guard, GuardedResolver};

/// Most bytes of a response body kept in the attempt log.
pub const MAX_CAPTURED_BODY: usize = 4096;
/// Most response headers kept in the attempt log.
const MAX_CAPTURED_HEADERS: usize = 32;
/// The `User-Agent` of every delivery.
const AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// Sends deliveries.
#[derive(Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

/// The delivery client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the delivery HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

impl Dispatcher {
    /// A dispatcher whose connections pass `guard`.
    pub fn new(guard: Guard) -> Result<Self, ClientError> {
        install_crypto_provider();
        let guard = Arc::new(guard);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&guard))))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .user_agent(AGENT)
            .build()
            .map_err(ClientError)?;
        Ok(Self { client, guard })
    }

    /// Makes the attempt for `claim` and reports it.
    pub async fn attempt(&self, claim: &Claim) -> (AttemptResult, Attempt) {
        let started_at = Timestamp::now();
        let clock = Instant::now();
        let (result, response_headers, response_body) = match self.send(claim, started_at).await {
            Ok(response) => capture(response).await,
            Err(error) => (AttemptResult::Failed { error }, Vec::new(), None),
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

    async fn send(&self, claim: &Claim, now: Timestamp) -> Result<reqwest::Response, String> {
        let target = &claim.target;
        if let Some(ip) = literal_ip(target.url.url())
            && !self.guard.permits(ip)
        {
            return Err(format!(
                "refused by the SSRF guard: {ip} is not a public address; allow it with --allow-targets"
            ));
        }
        let headers = headers(claim, now)?;
        self.client
            .post(target.url.url().clone())
            .headers(headers)
            .body(claim.event.payload.clone())
            .timeout(target.timeout.duration())
            .send()
            .await
            .map_err(|error| describe(error, target.timeout.duration()))
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
    let mut put = |name: &str, value: &str| -> Result<(), String> {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        headers.insert(name, value);
        Ok(())
    };
    for (name, value) in target.headers.as_map() {
        put(name, value)?;
    }
    put(CONTENT_TYPE.as_str(), event.content_type.as_str())?;
    put(USER_AGENT.as_str(), AGENT)?;
    put("webhook-id", event.id.as_str())?;
    put("webhook-timestamp", &seconds.to_string())?;
    put("webhook-signature", &signature)?;
    put("herald-event-type", event.event_type.as_str())?;
    put("herald-attempt", &(claim.delivery.attempts + 1).to_string())?;
    put("herald-delivery-id", claim.delivery.id.as_str())?;
    Ok(headers)
}

/// The result, headers and start of the body of a response.
async fn capture(
    mut response: reqwest::Response,
) -> (AttemptResult, Vec<(String, String)>, Option<String>) {
    let status = response.status().as_u16();
    let result = if response.status().is_success() {
        AttemptResult::Delivered { status }
    } else {
        AttemptResult::Rejected {
            status,
            retry_after: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(parse_retry_after),
        }
    };
    let headers = response
        .headers()
        .iter()
        .take(MAX_CAPTURED_HEADERS)
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while body.len() < MAX_CAPTURED_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_CAPTURED_BODY);
    let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
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

/// A sentence for a request that got no response.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    // The URL may carry a secret (a token in its path or query); the error is logged.
    let error = error.without_url();
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
