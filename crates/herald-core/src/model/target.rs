//! Targets: the endpoints that receive webhooks, and their delivery settings.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use crate::id::{TargetId, TenantId};
use crate::secret::TargetSecret;
use crate::time::Timestamp;
use crate::validation::ValidationError;

use super::text::Description;

/// Longest target URL, in bytes.
const MAX_URL_LEN: usize = 2048;
/// Most custom headers on one target.
const MAX_HEADERS: usize = 32;
/// Longest custom header value, in bytes.
const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Longest custom header name, in bytes (far above any real one, far below what an
/// HTTP client would refuse to send).
const MAX_HEADER_NAME_LEN: usize = 256;
/// Header names Herald sets itself; a target may not override them.
const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
    "te",
];
/// Header name prefixes Herald owns (Standard Webhooks headers and its own).
const RESERVED_HEADER_PREFIXES: [&str; 2] = ["webhook-", "herald-"];

/// An absolute `http` or `https` URL with a host and no credentials or fragment.
///
/// Whether the host may be reached is decided at delivery time, after DNS, by the
/// SSRF guard; this type only checks the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl(Url);

impl TargetUrl {
    /// Validates `text` as a target URL sent in `field`.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        if text.len() > MAX_URL_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_URL_LEN} bytes"),
            ));
        }
        let url = Url::parse(text).map_err(|error| {
            ValidationError::new(field, format!("{text:?} is not an absolute URL: {error}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ValidationError::new(
                field,
                format!("the scheme must be http or https, not {:?}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ValidationError::new(field, "the URL must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ValidationError::new(
                field,
                "the URL must not carry credentials; send them in a custom header instead",
            ));
        }
        if url.fragment().is_some() {
            return Err(ValidationError::new(
                field,
                "the URL must not have a #fragment",
            ));
        }
        Ok(Self(url))
    }

    /// The URL, normalised.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// Extra HTTP headers sent with every delivery to a target, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomHeaders(BTreeMap<String, String>);

impl CustomHeaders {
    /// Validates header names and values sent in `field`.
    ///
    /// Names must be HTTP tokens and not one Herald sets itself; values must be
    /// visible ASCII or spaces (no line breaks, so no header injection).
    /// Names are at most 256 bytes, and no name may appear twice in
    /// different cases.
    pub fn parse(headers: BTreeMap<String, String>, field: &str) -> Result<Self, ValidationError> {
        check_count(&headers, field)?;
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &headers {
            if name.len() > MAX_HEADER_NAME_LEN {
                return Err(ValidationError::new(
                    field,
                    format!("header names must be at most {MAX_HEADER_NAME_LEN} bytes"),
                ));
            }
            let field = format!("{field}.{name}");
            check_header(name, value, &field)?;
            // HTTP names are case-insensitive: two spellings would be one header, and
            // only one of the values would be sent.
            if !seen.insert(name.to_ascii_lowercase()) {
                return Err(ValidationError::new(
                    &field,
                    format!("{name:?} is given twice (header names ignore case)"),
                ));
            }
        }
        Ok(Self(headers))
    }

    /// Headers read back from the store, checked as every version of Herald checked
    /// them on the way in (token names, safe values): a stricter rule added later must
    /// not make a target stored before it unreadable.
    pub fn stored(headers: BTreeMap<String, String>, field: &str) -> Result<Self, ValidationError> {
        check_count(&headers, field)?;
        for (name, value) in &headers {
            check_header(name, value, &format!("{field}.{name}"))?;
        }
        Ok(Self(headers))
    }

    /// The headers, by name.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

fn check_count(headers: &BTreeMap<String, String>, field: &str) -> Result<(), ValidationError> {
    if headers.len() > MAX_HEADERS {
        return Err(ValidationError::new(
            field,
            format!("at most {MAX_HEADERS} headers are allowed"),
        ));
    }
    Ok(())
}

fn check_header(name: &str, value: &str, field: &str) -> Result<(), ValidationError> {
    let is_token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(ValidationError::new(
            field,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
    {
        return Err(ValidationError::new(
            field,
            format!("{name:?} is set by Herald and cannot be overridden"),
        ));
    }
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_HEADER_VALUE_LEN} bytes"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return Err(ValidationError::new(
            field,
            "header values must be printable ASCII without line breaks",
        ));
    }
    Ok(())
}

/// Deliveries per second a target accepts: more than 0, at most 100,000.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit(f64);

impl RateLimit {
    /// Highest accepted rate.
    pub const MAX: f64 = 100_000.0;

    /// Validates a rate sent in `field`.
    pub fn parse(per_second: f64, field: &str) -> Result<Self, ValidationError> {
        if per_second.is_finite() && per_second > 0.0 && per_second <= Self::MAX {
            Ok(Self(per_second))
        } else {
            Err(ValidationError::new(
                field,
                format!("must be greater than 0 and at most {}", Self::MAX),
            ))
        }
    }

    /// Deliveries per second.
    pub fn per_second(self) -> f64 {
        self.0
    }
}

/// How many requests to one target may be in flight at once: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxInFlight(u32);

impl MaxInFlight {
    /// Used when a target does not say.
    pub const DEFAULT: Self = Self(32);
    /// Highest accepted value.
    pub const MAX: u32 = 10_000;

    /// Validates a limit sent in `field`.
    pub fn parse(value: i64, field: &str) -> Result<Self, ValidationError> {
        match u32::try_from(value) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ValidationError::new(
                field,
                format!("must be between 1 and {}", Self::MAX),
            )),
        }
    }

    /// The limit.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How long one request to a target may take: 1 ms to 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// Used when a target does not say.
    pub const DEFAULT: Self = Self(Duration::from_secs(10));
    /// Longest accepted timeout, in milliseconds.
    pub const MAX_MS: u64 = 60_000;

    /// Validates a timeout in milliseconds sent in `field`.
    pub fn parse_millis(millis: i64, field: &str) -> Result<Self, ValidationError> {
        match u64::try_from(millis) {
            Ok(ms) if (1..=Self::MAX_MS).contains(&ms) => Ok(Self(Duration::from_millis(ms))),
            _ => Err(ValidationError::new(
                field,
                format!("must be between 1 and {} milliseconds", Self::MAX_MS),
            )),
        }
    }

    /// The timeout.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// The timeout in whole milliseconds.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// An endpoint that receives webhooks, with its secret and delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The target's id.
    pub id: TargetId,
    /// The tenant owning it.
    pub tenant_id: TenantId,
    /// Where deliveries are POSTed.
    pub url: TargetUrl,
    /// Optional human description.
    pub description: Option<Description>,
    /// The key that signs every delivery.
    pub secret: TargetSecret,
    /// The key before the last rotation, still signing during its grace period.
    pub previous_secret: Option<RetiringSecret>,
    /// Extra headers sent with every delivery.
    pub headers: CustomHeaders,
    /// Deliveries per second, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight at once.
    pub max_in_flight: MaxInFlight,
    /// Time one request may take.
    pub timeout: Timeout,
    /// Inactive targets receive nothing; their deliveries wait.
    pub active: bool,
    /// Why Herald switched the target off (it answered `410 Gone`), if it did.
    pub disabled_reason: Option<String>,
    /// When the target was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A rotated-out secret that keeps signing, beside the new one, until `expires_at`, so
/// receivers can switch secrets without dropping deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiringSecret {
    /// The old secret.
    pub secret: TargetSecret,
    /// When it stops signing.
    pub expires_at: Timestamp,
}

impl Target {
    /// The secrets that sign a delivery made at `now`: the current one first, then the
    /// previous one while its grace period lasts.
    pub fn signing_secrets(&self, now: Timestamp) -> impl Iterator<Item = &TargetSecret> {
        let retiring = self
            .previous_secret
            .as_ref()
            .filter(|previous| previous.expires_at > now)
            .map(|previous| &previous.secret);
        std::iter::once(&self.secret).chain(retiring)
    }

    /// Replaces the secret with `new`; the old one keeps signing for `grace`.
    pub fn rotate_secret(&mut self, new: TargetSecret, grace: Duration, now: Timestamp) {
        let old = std::mem::replace(&mut self.secret, new);
        self.previous_secret = Some(RetiringSecret {
            secret: old,
            expires_at: now.plus(grace),
        });
        self.updated_at = now;
    }
}

/// What a tenant gives to create a target; `None` takes the default.
#[derive(Debug, Clone)]
pub struct NewTarget {
    /// Where deliveries go.
    pub url: TargetUrl,
    /// Optional human description.
    pub description: Option<Description>,
    /// Generated when absent.
    pub secret: Option<TargetSecret>,
    /// Extra headers.
    pub headers: CustomHeaders,
    /// No limit when absent.
    pub rate_limit: Option<RateLimit>,
    /// [`MaxInFlight::DEFAULT`] when absent.
    pub max_in_flight: Option<MaxInFlight>,
    /// [`Timeout::DEFAULT`] when absent.
    pub timeout: Option<Timeout>,
    /// `true` when absent.
    pub active: Option<bool>,
}

impl NewTarget {
    /// The target this input creates for `tenant_id`, defaults filled in.
    pub fn into_target(self, tenant_id: TenantId, now: Timestamp) -> Target {
        Target {
            id: TargetId::generate(),
            tenant_id,
            url: self.url,
            description: self.description,
            secret: self.secret.unwrap_or_else(TargetSecret::generate),
            previous_secret: None,
            headers: self.headers,
            rate_limit: self.rate_limit,
            max_in_flight: self.max_in_flight.unwrap_or(MaxInFlight::DEFAULT),
            timeout: self.timeout.unwrap_or(Timeout::DEFAULT),
            active: self.active.unwrap_or(true),
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// A change to a target; absent fields stay as they are. The secret changes only by
/// rotation.
#[derive(Debug, Clone, Default)]
pub struct TargetPatch {
    /// A new URL.
    pub url: Option<TargetUrl>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<Description>>,
    /// Replaces all custom headers.
    pub headers: Option<CustomHeaders>,
    /// `Some(None)` removes the rate limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// A new in-flight limit.
    pub max_in_flight: Option<MaxInFlight>,
    /// A new timeout.
    pub timeout: Option<Timeout>,
    /// Switches delivery on or off.
    pub active: Option<bool>,
}

impl TargetPatch {
    /// Applies the change to `target`, stamping it with `now`.
    pub fn apply(self, target: &mut Target, now: Timestamp) {
        if let Some(url) = self.url {
            target.url = url;
        }
        if let Some(description) = self.description {
            target.description = description;
        }
        if let Some(headers) = self.headers {
            target.headers = headers;
        }
        if let Some(rate_limit) = self.rate_limit {
            target.rate_limit = rate_limit;
        }
        if let Some(max_in_flight) = self.max_in_flight {
            target.max_in_flight = max_in_flight;
        }
        if let Some(timeout) = self.timeout {
            target.timeout = timeout;
        }
        if let Some(active) = self.active {
            target.active = active;
            // Whoever switches a target on or off by hand overrides Herald's reason.
            target.disabled_reason = None;
        }
        target.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(TargetUrl::parse("https://example.com/hook?x=1", "url").is_ok());
        assert!(TargetUrl::parse("http://127.0.0.1:9000/", "url").is_ok());
        for bad in [
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "http://",
            "javascript:alert(1)",
        ] {
            assert!(
                TargetUrl::parse(bad, "url").is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn headers_herald_owns_or_that_could_inject_are_refused() {
        let parse = |name: &str, value: &str| {
            CustomHeaders::parse(
                BTreeMap::from([(name.to_owned(), value.to_owned())]),
                "headers",
            )
        };
        assert!(parse("X-Team", "payments").is_ok());
        for (name, value) in [
            ("Webhook-Signature", "v1,x"),
            ("herald-attempt", "1"),
            ("Content-Type", "text/plain"),
            ("Host", "evil"),
            ("Bad Name", "x"),
            ("", "x"),
            ("X-Ok", "a\r\nX-Injected: 1"),
        ] {
            assert!(
                parse(name, value).is_err(),
                "{name:?}: {value:?} should be refused"
            );
        }
        assert!(parse(&"a".repeat(256), "x").is_ok());
        let long = parse(&"a".repeat(70_000), "x").expect_err("a name no client sends");
        assert!(
            long.to_string().len() < 200,
            "the error does not echo the name"
        );
    }

    #[test]
    fn a_header_named_twice_in_different_cases_is_refused() {
        let headers = BTreeMap::from([
            ("X-Team".to_owned(), "a".to_owned()),
            ("x-team".to_owned(), "b".to_owned()),
        ]);
        let error = CustomHeaders::parse(headers.clone(), "headers").expect_err("one, twice");
        assert!(error.to_string().contains("twice"), "{error}");
        // A target stored before the rule still reads back.
        assert!(CustomHeaders::stored(headers, "headers").is_ok());
    }

    #[test]
    fn numeric_settings_have_ranges() {
        assert!(RateLimit::parse(0.5, "r").is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 100_001.0] {
            assert!(RateLimit::parse(bad, "r").is_err());
        }
        assert!(MaxInFlight::parse(0, "m").is_err());
        assert!(MaxInFlight::parse(i64::from(u32::MAX) + 1, "m").is_err());
        assert_eq!(
            Timeout::parse_millis(60_000, "t").map(Timeout::as_millis),
            Ok(60_000)
        );
        assert!(Timeout::parse_millis(0, "t").is_err());
        assert!(Timeout::parse_millis(60_001, "t").is_err());
    }
}
