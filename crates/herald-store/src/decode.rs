//! Reading stored rows back into the model, the same way for every backend.
//!
//! Both backends store the same columns with the same meaning (ids and JSON as text,
//! times as milliseconds since the epoch, integers as 64-bit), so one set of decoders
//! serves both; each backend only says how to read one column of its row type
//! ([`Columns`]). Stored values are validated again on the way out: a row that no
//! longer passes (a manual edit, a bug) is [`Undecodable`] instead of a panic.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_core::auth::{ApiKey, KeyHash};
use herald_core::filter::EventType;
use herald_core::flow::{Circuit, CircuitState};
use herald_core::id::{
    ApiKeyId, AttemptId, DeliveryId, EventId, FilterId, SubscriptionId, TargetId, TenantId,
};
use herald_core::model::{
    Attempt, ContentType, CustomHeaders, Delivery, DeliveryStatus, Description, Event, Filter,
    FilterPatterns, IdempotencyKey, MaxInFlight, RateLimit, RetiringSecret, Subscription, Target,
    TargetUrl, Tenant, TenantName, Timeout,
};
use herald_core::secret::TargetSecret;
use herald_core::store::StoreError;
use herald_core::time::Timestamp;
use herald_core::validation::ValidationError;

/// Columns read by [`tenant`], in order.
pub(crate) const TENANT_COLUMNS: &str = "id, name, created_at, updated_at, ingest_rate_limit";
/// Columns read by [`api_key`], in order.
pub(crate) const API_KEY_COLUMNS: &str = "id, tenant_id, key_hash, visible_prefix, created_at";
/// Columns read by [`target`], in order.
pub(crate) const TARGET_COLUMNS: &str = "id, tenant_id, url, description, secret, headers, \
     rate_limit_per_second, max_in_flight, timeout_ms, active, created_at, updated_at, previous_secret, \
     previous_secret_expires_at, disabled_reason";
/// Columns read by [`circuit`], in order.
pub(crate) const CIRCUIT_COLUMNS: &str = "state, since, consecutive_failures, next_probe_at, opens";
/// Columns read by [`event`], in order.
pub(crate) const EVENT_COLUMNS: &str =
    "id, tenant_id, event_type, content_type, payload, idempotency_key, created_at";
/// Columns read by [`delivery`], in order.
pub(crate) const DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, target_id, subscription_id, event_type, status, \
     attempts, next_attempt_at, window_start, last_status_code, last_error, created_at, updated_at";
/// Columns read by [`attempt`], in order.
pub(crate) const ATTEMPT_COLUMNS: &str = "id, delivery_id, tenant_id, number, started_at, duration_ms, status_code, \
     error, response_headers, response_body";
/// Columns read by [`filter`], in order.
pub(crate) const FILTER_COLUMNS: &str =
    "id, tenant_id, description, patterns, created_at, updated_at";
/// Columns read by [`subscription`], in order.
pub(crate) const SUBSCRIPTION_COLUMNS: &str =
    "id, tenant_id, target_id, filter_id, active, created_at, updated_at";

/// How many columns a column list names.
pub(crate) fn width(columns: &str) -> usize {
    columns.split(',').count()
}

/// A column list with every column qualified by a table alias, for joins.
pub(crate) fn qualified(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{alias}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stored value that cannot be read back into the model.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {detail}")]
pub(crate) struct Undecodable {
    /// The column's position in the row.
    pub column: usize,
    /// What is wrong with it.
    pub detail: String,
}

impl Undecodable {
    pub(crate) fn new(column: usize, detail: impl ToString) -> Self {
        Self {
            column,
            detail: detail.to_string(),
        }
    }
}

impl From<Undecodable> for StoreError {
    fn from(error: Undecodable) -> Self {
        StoreError::Corrupt {
            detail: error.to_string(),
        }
    }
}

/// One row of a backend's result, read column by column (`None`: SQL `NULL`).
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, index: usize) -> Result<Option<String>, Undecodable>;
    /// An integer column.
    fn integer(&self, index: usize) -> Result<Option<i64>, Undecodable>;
    /// A floating-point column.
    fn real(&self, index: usize) -> Result<Option<f64>, Undecodable>;
    /// A boolean column.
    fn flag(&self, index: usize) -> Result<Option<bool>, Undecodable>;
    /// A binary column.
    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, Undecodable>;
}

fn required<T>(index: usize, value: Option<T>) -> Result<T, Undecodable> {
    value.ok_or_else(|| Undecodable::new(index, "unexpected NULL"))
}

fn text(row: &impl Columns, index: usize) -> Result<String, Undecodable> {
    required(index, row.text(index)?)
}

fn flag(row: &impl Columns, index: usize) -> Result<bool, Undecodable> {
    required(index, row.flag(index)?)
}

fn small<T: TryFrom<i64>>(index: usize, value: i64) -> Result<T, Undecodable> {
    T::try_from(value).map_err(|_| Undecodable::new(index, format!("{value} is out of range")))
}

fn number<T: TryFrom<i64>>(row: &impl Columns, index: usize) -> Result<T, Undecodable> {
    small(index, required(index, row.integer(index)?)?)
}

fn optional_number<T: TryFrom<i64>>(
    row: &impl Columns,
    index: usize,
) -> Result<Option<T>, Undecodable> {
    row.integer(index)?
        .map(|value| small(index, value))
        .transpose()
}

fn timestamp(row: &impl Columns, index: usize) -> Result<Timestamp, Undecodable> {
    Ok(Timestamp::from_millis(required(
        index,
        row.integer(index)?,
    )?))
}

fn optional_timestamp(row: &impl Columns, index: usize) -> Result<Option<Timestamp>, Undecodable> {
    Ok(row.integer(index)?.map(Timestamp::from_millis))
}

fn valid<T>(index: usize, result: Result<T, ValidationError>) -> Result<T, Undecodable> {
    result.map_err(|error| Undecodable::new(index, error))
}

fn id<T>(
    row: &impl Columns,
    index: usize,
    parse: fn(String) -> Result<T, String>,
) -> Result<T, Undecodable> {
    parse(text(row, index)?)
        .map_err(|text| Undecodable::new(index, format!("{text:?} is not a valid id")))
}

fn json<T: serde::de::DeserializeOwned>(
    row: &impl Columns,
    index: usize,
) -> Result<T, Undecodable> {
    serde_json::from_str(&text(row, index)?).map_err(|error| Undecodable::new(index, error))
}

fn description(row: &impl Columns, index: usize) -> Result<Option<Description>, Undecodable> {
    row.text(index)?
        .map(|text| valid(index, Description::parse(&text, "description")))
        .transpose()
}

fn rate_limit(
    row: &impl Columns,
    index: usize,
    field: &str,
) -> Result<Option<RateLimit>, Undecodable> {
    row.real(index)?
        .map(|rate| valid(index, RateLimit::parse(rate, field)))
        .transpose()
}

/// A row of [`TENANT_COLUMNS`].
pub(crate) fn tenant(row: &impl Columns) -> Result<Tenant, Undecodable> {
    Ok(Tenant {
        id: id(row, 0, TenantId::parse_owned)?,
        name: valid(1, TenantName::parse(&text(row, 1)?, "name"))?,
        created_at: timestamp(row, 2)?,
        updated_at: timestamp(row, 3)?,
        ingest_rate_limit: rate_limit(row, 4, "ingest_rate_limit")?,
    })
}

/// A row of [`API_KEY_COLUMNS`].
pub(crate) fn api_key(row: &impl Columns) -> Result<ApiKey, Undecodable> {
    let hash: [u8; 32] = required(2, row.blob(2)?)?
        .try_into()
        .map_err(|_| Undecodable::new(2, "a key hash is not 32 bytes"))?;
    Ok(ApiKey {
        id: id(row, 0, ApiKeyId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        hash: KeyHash(hash),
        visible_prefix: text(row, 3)?,
        created_at: timestamp(row, 4)?,
    })
}

/// A row of [`TARGET_COLUMNS`].
pub(crate) fn target(row: &impl Columns) -> Result<Target, Undecodable> {
    let headers: BTreeMap<String, String> = json(row, 5)?;
    Ok(Target {
        id: id(row, 0, TargetId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        url: valid(2, TargetUrl::parse(&text(row, 2)?, "url"))?,
        description: description(row, 3)?,
        secret: valid(4, TargetSecret::parse(&text(row, 4)?, "secret"))?,
        headers: valid(5, CustomHeaders::stored(headers, "headers"))?,
        rate_limit: rate_limit(row, 6, "rate_limit_per_second")?,
        max_in_flight: valid(7, MaxInFlight::parse(number(row, 7)?, "max_in_flight"))?,
        timeout: valid(8, Timeout::parse_millis(number(row, 8)?, "timeout_ms"))?,
        active: flag(row, 9)?,
        created_at: timestamp(row, 10)?,
        updated_at: timestamp(row, 11)?,
        previous_secret: previous_secret(row, 12)?,
        disabled_reason: row.text(14)?,
    })
}

fn previous_secret(
    row: &impl Columns,
    index: usize,
) -> Result<Option<RetiringSecret>, Undecodable> {
    let Some(text) = row.text(index)? else {
        return Ok(None);
    };
    Ok(Some(RetiringSecret {
        secret: valid(index, TargetSecret::parse(&text, "previous_secret"))?,
        expires_at: optional_timestamp(row, index + 1)?.unwrap_or(Timestamp::from_millis(0)),
    }))
}

/// A circuit read from [`CIRCUIT_COLUMNS`] starting at `start`; `None` when the row
/// has none (a `LEFT JOIN` that found nothing).
pub(crate) fn circuit(row: &impl Columns, start: usize) -> Result<Option<Circuit>, Undecodable> {
    let Some(state) = row.text(start)? else {
        return Ok(None);
    };
    let state = CircuitState::parse(&state)
        .ok_or_else(|| Undecodable::new(start, format!("unknown circuit state {state:?}")))?;
    Ok(Some(Circuit {
        state,
        since: timestamp(row, start + 1)?,
        consecutive_failures: number(row, start + 2)?,
        next_probe_at: optional_timestamp(row, start + 3)?,
        opens: number(row, start + 4)?,
    }))
}

/// A row of [`EVENT_COLUMNS`].
pub(crate) fn event(row: &impl Columns) -> Result<Event, Undecodable> {
    Ok(Event {
        id: id(row, 0, EventId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        event_type: valid(2, EventType::parse(&text(row, 2)?, "event_type"))?,
        content_type: valid(3, ContentType::parse(&text(row, 3)?, "content_type"))?,
        payload: Bytes::from(required(4, row.blob(4)?)?),
        idempotency_key: row
            .text(5)?
            .map(|key| valid(5, IdempotencyKey::parse(&key, "idempotency_key")))
            .transpose()?,
        created_at: timestamp(row, 6)?,
    })
}

/// A row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery(row: &impl Columns) -> Result<Delivery, Undecodable> {
    let status = text(row, 6)?;
    Ok(Delivery {
        id: id(row, 0, DeliveryId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        event_id: id(row, 2, EventId::parse_owned)?,
        target_id: id(row, 3, TargetId::parse_owned)?,
        subscription_id: id(row, 4, SubscriptionId::parse_owned)?,
        event_type: valid(5, EventType::parse(&text(row, 5)?, "event_type"))?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| Undecodable::new(6, format!("unknown status {status:?}")))?,
        attempts: number(row, 7)?,
        next_attempt_at: timestamp(row, 8)?,
        window_start: timestamp(row, 9)?,
        last_status_code: optional_number(row, 10)?,
        last_error: row.text(11)?,
        created_at: timestamp(row, 12)?,
        updated_at: timestamp(row, 13)?,
    })
}

/// A row of [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt(row: &impl Columns) -> Result<Attempt, Undecodable> {
    Ok(Attempt {
        id: id(row, 0, AttemptId::parse_owned)?,
        delivery_id: id(row, 1, DeliveryId::parse_owned)?,
        tenant_id: id(row, 2, TenantId::parse_owned)?,
        number: number(row, 3)?,
        started_at: timestamp(row, 4)?,
        duration_ms: number(row, 5)?,
        status_code: optional_number(row, 6)?,
        error: row.text(7)?,
        response_headers: json(row, 8)?,
        response_body: row.text(9)?,
    })
}

/// A row of [`FILTER_COLUMNS`].
pub(crate) fn filter(row: &impl Columns) -> Result<Filter, Undecodable> {
    let patterns: Vec<String> = json(row, 3)?;
    Ok(Filter {
        id: id(row, 0, FilterId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        description: description(row, 2)?,
        patterns: valid(3, FilterPatterns::parse(&patterns, "patterns"))?,
        created_at: timestamp(row, 4)?,
        updated_at: timestamp(row, 5)?,
    })
}

/// A row of [`SUBSCRIPTION_COLUMNS`].
pub(crate) fn subscription(row: &impl Columns) -> Result<Subscription, Undecodable> {
    Ok(Subscription {
        id: id(row, 0, SubscriptionId::parse_owned)?,
        tenant_id: id(row, 1, TenantId::parse_owned)?,
        target_id: id(row, 2, TargetId::parse_owned)?,
        filter_id: id(row, 3, FilterId::parse_owned)?,
        active: flag(row, 4)?,
        created_at: timestamp(row, 5)?,
        updated_at: timestamp(row, 6)?,
    })
}

/// A route row: subscription id, target id, the filter's patterns (JSON).
pub(crate) fn route(row: &impl Columns) -> Result<herald_core::routing::Route, Undecodable> {
    let patterns: Vec<String> = json(row, 2)?;
    Ok(herald_core::routing::Route {
        subscription_id: id(row, 0, SubscriptionId::parse_owned)?,
        target_id: id(row, 1, TargetId::parse_owned)?,
        patterns: valid(2, FilterPatterns::parse(&patterns, "patterns"))?,
    })
}

/// Columns read by [`parked`], in order.
pub(crate) const PARKED_COLUMNS: &str =
    "id, topic, partition, record_offset, reason, headers, value, value_bytes, parked_at";

/// A row of [`PARKED_COLUMNS`].
pub(crate) fn parked(row: &impl Columns) -> Result<herald_core::store::ParkedRecord, Undecodable> {
    Ok(herald_core::store::ParkedRecord {
        id: id(row, 0, herald_core::id::ParkedId::parse_owned)?,
        topic: text(row, 1)?,
        partition: number(row, 2)?,
        offset: number(row, 3)?,
        reason: text(row, 4)?,
        headers: json(row, 5)?,
        value: row.blob(6)?,
        value_bytes: number(row, 7)?,
        parked_at: timestamp(row, 8)?,
    })
}

/// A parked record's headers as stored: a JSON array of `[name, value]` pairs.
pub(crate) fn parked_headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned())
}

/// Headers as stored: a JSON object.
pub(crate) fn headers_json(headers: &CustomHeaders) -> String {
    serde_json::Value::from(serde_json::Map::from_iter(
        headers
            .as_map()
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str()))),
    ))
    .to_string()
}

/// Patterns as stored: a JSON array of strings.
pub(crate) fn patterns_json(patterns: &FilterPatterns) -> String {
    serde_json::Value::from_iter(patterns.as_slice().iter().map(|p| p.as_str())).to_string()
}
