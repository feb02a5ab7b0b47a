//! SQL of parked Kafka records: the ones the Kafka source refused.

use herald_core::store::{Page, PageRequest, ParkedRecord, StoreError};
use rusqlite::{Connection, params};

use super::rows::{self, execute};
use crate::decode::{self, PARKED_COLUMNS};

pub(super) fn park(connection: &Connection, records: &[ParkedRecord]) -> Result<(), StoreError> {
    for record in records {
        execute(
            connection,
            "INSERT INTO parked_records (id, topic, partition, record_offset, reason, headers, value, \
             value_bytes, parked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (topic, partition, record_offset) DO NOTHING",
            params![
                record.id.as_str(),
                record.topic,
                record.partition,
                record.offset,
                record.reason,
                decode::parked_headers_json(&record.headers),
                record.value,
                i64::try_from(record.value_bytes).unwrap_or(i64::MAX),
                record.parked_at.as_millis(),
            ],
        )?;
    }
    Ok(())
}

pub(super) fn list(
    connection: &Connection,
    page: &PageRequest,
) -> Result<Page<ParkedRecord>, StoreError> {
    let sql =
        format!("SELECT {PARKED_COLUMNS} FROM parked_records WHERE id > ?1 ORDER BY id LIMIT ?2");
    rows::page(
        connection,
        &sql,
        params![
            page.after.clone().unwrap_or_default(),
            i64::from(page.limit) + 1
        ],
        page.limit,
        rows::parked,
        |r| r.id.to_string(),
    )
}
