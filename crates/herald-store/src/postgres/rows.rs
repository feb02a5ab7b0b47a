//! Running statements and reading their rows with the shared decoders.
//!
//! Every statement is prepared once per connection and then reused, so PostgreSQL
//! plans the hot ones once instead of parsing them on every call.

use deadpool_postgres::GenericClient;
use herald_core::store::{Page, StoreError};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::error::translate;
use crate::decode::{Columns, Undecodable};

/// Statement parameters, as the driver takes them.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A decoder of one row.
pub(super) type Decode<T> = fn(&Row) -> Result<T, Undecodable>;

impl Columns for Row {
    fn text(&self, index: usize) -> Result<Option<String>, Undecodable> {
        self.try_get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn integer(&self, index: usize) -> Result<Option<i64>, Undecodable> {
        self.try_get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn real(&self, index: usize) -> Result<Option<f64>, Undecodable> {
        self.try_get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn flag(&self, index: usize) -> Result<Option<bool>, Undecodable> {
        self.try_get(index).map_err(|e| Undecodable::new(index, e))
    }

    fn blob(&self, index: usize) -> Result<Option<Vec<u8>>, Undecodable> {
        self.try_get(index).map_err(|e| Undecodable::new(index, e))
    }
}

/// Runs one statement, returning how many rows it changed.
pub(super) async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(translate)?;
    client.execute(&statement, params).await.map_err(translate)
}

/// Runs one query, returning its rows undecoded.
pub(super) async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(translate)?;
    client.query(&statement, params).await.map_err(translate)
}

/// Reads one row, or `None`.
pub(super) async fn optional<T>(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    decode: Decode<T>,
) -> Result<Option<T>, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(translate)?;
    let row = client
        .query_opt(&statement, params)
        .await
        .map_err(translate)?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// Reads every row.
pub(super) async fn all<T>(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let rows = query(client, sql, params).await?;
    Ok(rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?)
}

/// Reads one page: `sql` must select `limit + 1` rows in id order.
pub(super) async fn page<T>(
    client: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
    limit: u32,
    decode: Decode<T>,
    id_of: fn(&T) -> String,
) -> Result<Page<T>, StoreError> {
    Ok(Page::from_overfetch(
        all(client, sql, params, decode).await?,
        limit,
        id_of,
    ))
}

/// A count or other non-negative number, as Rust wants it.
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A duration or size as a `BIGINT` parameter.
pub(super) fn big(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}
