//! Reading rows back into the model, and writing model values as SQL parameters.
//!
//! Stored values are validated again on the way out: a row that no longer passes
//! (a manual edit, a bug) surfaces as [`StoreError::Corrupt`] instead of a panic.

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
use herald_core::store::{Page, StoreError};
use herald_core::time::Timestamp;
use herald_core::validation::ValidationError;
use rusqlite::types::Type;
use rusqlite::{Connection, Params, Row};

use super::error::translate;

/// Columns read by [`tenant`], in order.
pub(super) const TENANT_COLUMNS: &str = "id, name, created_at, updated_at, ingest_rate_limit";
/// Columns read by [`api_key`], in order.
pub(super) const API_KEY_COLUMNS: &str = "id, tenant_id, key_hash, visible_prefix, created_at";
/// Columns read by [`target`], in order.
pub(super) const TARGET_COLUMNS: &str = "id, tenant_id, url, description, secret, headers, \
     rate_limit_per_second, max_in_flight, timeout_ms, active, created_at, updated_at, previous_secret, \
     previous_secret_expires_at, disabled_reason";
/// Columns read by [`circuit`], in order.
pub(super) const CIRCUIT_COLUMNS: &str = "state, since, consecutive_failures, next_probe_at, opens";
/// Columns read by [`event`], in order.
pub(super) const EVENT_COLUMNS: &str =
    "id, tenant_id, event_type, content_type, payload, idempotency_key, created_at";
/// Columns read by [`delivery`], in order.
pub(super) const DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, target_id, subscription_id, event_type, status, \
     attempts, next_attempt_at, window_start, last_status_code, last_error, created_at, updated_at";
/// Columns read by [`attempt`], in order.
pub(super) const ATTEMPT_COLUMNS: &str = "id, delivery_id, tenant_id, number, started_at, duration_ms, status_code, \
     error, response_headers, response_body";
/// Columns read by [`filter`], in order.
pub(super) const FILTER_COLUMNS: &str =
    "id, tenant_id, description, patterns, created_at, updated_at";
/// Columns read by [`subscription`], in order.
pub(super) const SUBSCRIPTION_COLUMNS: &str =
    "id, tenant_id, target_id, filter_id, active, created_at, updated_at";

pub(super) fn tenant(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: id(row, 0, TenantId::parse)?,
        name: valid(1, TenantName::parse(&row.get::<_, String>(1)?, "name"))?,
        created_at: timestamp(row, 2)?,
        updated_at: timestamp(row, 3)?,
        ingest_rate_limit: rate_limit(row, 4, "ingest_rate_limit")?,
    })
}

fn rate_limit(row: &Row<'_>, index: usize, field: &str) -> rusqlite::Result<Option<RateLimit>> {
    row.get::<_, Option<f64>>(index)?
        .map(|rate| valid(index, RateLimit::parse(rate, field)))
        .transpose()
}

/// A circuit read from [`CIRCUIT_COLUMNS`] starting at `start`; `None` when the row
/// has none (a `LEFT JOIN` that found nothing).
pub(super) fn circuit(row: &Row<'_>, start: usize) -> rusqlite::Result<Option<Circuit>> {
    let Some(state) = row.get::<_, Option<String>>(start)? else {
        return Ok(None);
    };
    let state = CircuitState::parse(&state).ok_or_else(|| {
        invalid(
            start,
            ValidationError::new("state", format!("unknown circuit state {state:?}")),
        )
    })?;
    Ok(Some(Circuit {
        state,
        since: timestamp(row, start + 1)?,
        consecutive_failures: row.get(start + 2)?,
        next_probe_at: row
            .get::<_, Option<i64>>(start + 3)?
            .map(Timestamp::from_millis),
        opens: row.get(start + 4)?,
    }))
}

pub(super) fn api_key(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let hash: Vec<u8> = row.get(2)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| invalid(2, ValidationError::new("key_hash", "not 32 bytes")))?;
    Ok(ApiKey {
        id: id(row, 0, ApiKeyId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        hash: KeyHash(hash),
        visible_prefix: row.get(3)?,
        created_at: timestamp(row, 4)?,
    })
}

pub(super) fn target(row: &Row<'_>) -> rusqlite::Result<Target> {
    let headers: BTreeMap<String, String> = json(row, 5)?;
    Ok(Target {
        id: id(row, 0, TargetId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        url: valid(2, TargetUrl::parse(&row.get::<_, String>(2)?, "url"))?,
        description: description(row, 3)?,
        secret: valid(4, TargetSecret::parse(&row.get::<_, String>(4)?, "secret"))?,
        headers: valid(5, CustomHeaders::parse(headers, "headers"))?,
        rate_limit: rate_limit(row, 6, "rate_limit_per_second")?,
        max_in_flight: valid(7, MaxInFlight::parse(row.get(7)?, "max_in_flight"))?,
        timeout: valid(8, Timeout::parse_millis(row.get(8)?, "timeout_ms"))?,
        active: row.get(9)?,
        created_at: timestamp(row, 10)?,
        updated_at: timestamp(row, 11)?,
        previous_secret: previous_secret(row, 12)?,
        disabled_reason: row.get(14)?,
    })
}

fn previous_secret(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<RetiringSecret>> {
    let Some(text) = row.get::<_, Option<String>>(index)? else {
        return Ok(None);
    };
    Ok(Some(RetiringSecret {
        secret: valid(index, TargetSecret::parse(&text, "previous_secret"))?,
        expires_at: Timestamp::from_millis(row.get::<_, Option<i64>>(index + 1)?.unwrap_or(0)),
    }))
}

pub(super) fn event(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: id(row, 0, EventId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        event_type: valid(2, EventType::parse(&row.get::<_, String>(2)?, "event_type"))?,
        content_type: valid(
            3,
            ContentType::parse(&row.get::<_, String>(3)?, "content_type"),
        )?,
        payload: Bytes::from(row.get::<_, Vec<u8>>(4)?),
        idempotency_key: row
            .get::<_, Option<String>>(5)?
            .map(|key| valid(5, IdempotencyKey::parse(&key, "idempotency_key")))
            .transpose()?,
        created_at: timestamp(row, 6)?,
    })
}

pub(super) fn delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(6)?;
    Ok(Delivery {
        id: id(row, 0, DeliveryId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        event_id: id(row, 2, EventId::parse)?,
        target_id: id(row, 3, TargetId::parse)?,
        subscription_id: id(row, 4, SubscriptionId::parse)?,
        event_type: valid(5, EventType::parse(&row.get::<_, String>(5)?, "event_type"))?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| {
            invalid(
                6,
                ValidationError::new("status", format!("unknown status {status:?}")),
            )
        })?,
        attempts: row.get(7)?,
        next_attempt_at: timestamp(row, 8)?,
        window_start: timestamp(row, 9)?,
        last_status_code: row.get(10)?,
        last_error: row.get(11)?,
        created_at: timestamp(row, 12)?,
        updated_at: timestamp(row, 13)?,
    })
}

pub(super) fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: id(row, 0, AttemptId::parse)?,
        delivery_id: id(row, 1, DeliveryId::parse)?,
        tenant_id: id(row, 2, TenantId::parse)?,
        number: row.get(3)?,
        started_at: timestamp(row, 4)?,
        duration_ms: row.get(5)?,
        status_code: row.get(6)?,
        error: row.get(7)?,
        response_headers: json(row, 8)?,
        response_body: row.get(9)?,
    })
}

pub(super) fn filter(row: &Row<'_>) -> rusqlite::Result<Filter> {
    let patterns: Vec<String> = json(row, 3)?;
    Ok(Filter {
        id: id(row, 0, FilterId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        description: description(row, 2)?,
        patterns: valid(3, FilterPatterns::parse(&patterns, "patterns"))?,
        created_at: timestamp(row, 4)?,
        updated_at: timestamp(row, 5)?,
    })
}

pub(super) fn subscription(row: &Row<'_>) -> rusqlite::Result<Subscription> {
    Ok(Subscription {
        id: id(row, 0, SubscriptionId::parse)?,
        tenant_id: id(row, 1, TenantId::parse)?,
        target_id: id(row, 2, TargetId::parse)?,
        filter_id: id(row, 3, FilterId::parse)?,
        active: row.get(4)?,
        created_at: timestamp(row, 5)?,
        updated_at: timestamp(row, 6)?,
    })
}

/// Headers as stored: a JSON object.
pub(super) fn headers_json(headers: &CustomHeaders) -> String {
    serde_json::Value::from(serde_json::Map::from_iter(
        headers
            .as_map()
            .iter()
            .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str()))),
    ))
    .to_string()
}

/// Patterns as stored: a JSON array of strings.
pub(super) fn patterns_json(patterns: &FilterPatterns) -> String {
    serde_json::Value::from_iter(patterns.as_slice().iter().map(|p| p.as_str())).to_string()
}

/// Runs one statement (cached), returning how many rows it changed.
pub(super) fn execute(
    connection: &Connection,
    sql: &str,
    params: impl Params,
) -> Result<usize, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(translate)?;
    statement.execute(params).map_err(translate)
}

/// Reads one row, or `None`.
pub(super) fn optional<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(translate)?;
    let mut rows = statement.query(params).map_err(translate)?;
    match rows.next().map_err(translate)? {
        Some(row) => map(row).map(Some).map_err(translate),
        None => Ok(None),
    }
}

/// Reads every row.
pub(super) fn all<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(translate)?;
    let rows = statement.query_map(params, map).map_err(translate)?;
    rows.collect::<Result<Vec<T>, _>>().map_err(translate)
}

/// Reads one page: `sql` must select `limit + 1` rows in id order.
pub(super) fn page<T>(
    connection: &Connection,
    sql: &str,
    params: impl Params,
    limit: u32,
    map: fn(&Row<'_>) -> rusqlite::Result<T>,
    id_of: fn(&T) -> String,
) -> Result<Page<T>, StoreError> {
    Ok(Page::from_overfetch(
        all(connection, sql, params, map)?,
        limit,
        id_of,
    ))
}

fn id<T>(row: &Row<'_>, index: usize, parse: fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| {
        invalid(
            index,
            ValidationError::new("id", format!("{text:?} is not a valid id")),
        )
    })
}

fn timestamp(row: &Row<'_>, index: usize) -> rusqlite::Result<Timestamp> {
    row.get(index).map(Timestamp::from_millis)
}

fn description(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Description>> {
    row.get::<_, Option<String>>(index)?
        .map(|text| valid(index, Description::parse(&text, "description")))
        .transpose()
}

fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, index: usize) -> rusqlite::Result<T> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(error))
    })
}

fn valid<T>(index: usize, result: Result<T, ValidationError>) -> rusqlite::Result<T> {
    result.map_err(|error| invalid(index, error))
}

fn invalid(index: usize, error: ValidationError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(error))
}
