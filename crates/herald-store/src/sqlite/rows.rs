//! Reading rows back into the model, and writing model values as SQL parameters.
//!
//! Stored values are validated again on the way out: a row that no longer passes
//! (a manual edit, a bug) surfaces as [`StoreError::Corrupt`] instead of a panic.

use herald_core::store::{Page, StoreError};
use rusqlite::types::Type;
use rusqlite::{Connection, Params, Row};

use super::error::translate;
use crate::decode::{self, Columns, Undecodable};

pub(super) use crate::decode::{
    API_KEY_COLUMNS, ATTEMPT_COLUMNS, CIRCUIT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS,
    FILTER_COLUMNS, SUBSCRIPTION_COLUMNS, TARGET_COLUMNS, TENANT_COLUMNS, headers_json,
    patterns_json,
};

impl Columns for Row<'_> {
    fn text(&self, index: usize) -> Result<Option<String>, Undecodable> {
        self.get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn integer(&self, index: usize) -> Result<Option<i64>, Undecodable> {
        self.get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn real(&self, index: usize) -> Result<Option<f64>, Undecodable> {
        self.get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn flag(&self, index: usize) -> Result<Option<bool>, Undecodable> {
        self.get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, Undecodable> {
        self.get(index).map_err(|e| Undecodable::new(index, e))
    }
}

/// The shared decoders, in the shape rusqlite's row mapping wants: an undecodable
/// value becomes a conversion failure, which [`translate`] reports as corrupt data.
fn sqlite<T>(decoded: Result<T, Undecodable>) -> rusqlite::Result<T> {
    decoded.map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(error.column, Type::Text, error.detail.into())
    })
}

pub(super) fn tenant(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Tenant> {
    sqlite(decode::tenant(row))
}

pub(super) fn api_key(row: &Row<'_>) -> rusqlite::Result<herald_core::auth::ApiKey> {
    sqlite(decode::api_key(row))
}

pub(super) fn target(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Target> {
    sqlite(decode::target(row))
}

/// A circuit read from [`CIRCUIT_COLUMNS`] starting at `start`; `None` when the row
/// has none (a `LEFT JOIN` that found nothing).
pub(super) fn circuit(
    row: &Row<'_>,
    start: usize,
) -> rusqlite::Result<Option<herald_core::flow::Circuit>> {
    sqlite(decode::circuit(row, start))
}

pub(super) fn event(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Event> {
    sqlite(decode::event(row))
}

pub(super) fn delivery(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Delivery> {
    sqlite(decode::delivery(row))
}

pub(super) fn attempt(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Attempt> {
    sqlite(decode::attempt(row))
}

pub(super) fn filter(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Filter> {
    sqlite(decode::filter(row))
}

pub(super) fn subscription(row: &Row<'_>) -> rusqlite::Result<herald_core::model::Subscription> {
    sqlite(decode::subscription(row))
}

pub(super) fn parked(row: &Row<'_>) -> rusqlite::Result<herald_core::store::ParkedRecord> {
    sqlite(decode::parked(row))
}

pub(super) fn route(row: &Row<'_>) -> rusqlite::Result<herald_core::routing::Route> {
    sqlite(decode::route(row))
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
