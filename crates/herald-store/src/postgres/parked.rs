//! SQL of parked Kafka records: the ones the Kafka source refused.

use herald_core::store::{Page, PageRequest, ParkedRecord, StoreError};

use super::{Database, rows};
use crate::decode::{self, PARKED_COLUMNS};

pub(super) async fn park(store: &Database, records: Vec<ParkedRecord>) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&ParkedRecord) -> &str| records.iter().map(f).collect::<Vec<_>>();
    let partitions: Vec<i64> = records.iter().map(|r| i64::from(r.partition)).collect();
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    let headers: Vec<String> = records
        .iter()
        .map(|r| decode::parked_headers_json(&r.headers))
        .collect();
    let values: Vec<Option<&[u8]>> = records.iter().map(|r| r.value.as_deref()).collect();
    let sizes: Vec<i64> = records
        .iter()
        .map(|r| i64::try_from(r.value_bytes).unwrap_or(i64::MAX))
        .collect();
    let parked_at: Vec<i64> = records.iter().map(|r| r.parked_at.as_millis()).collect();
    let client = store.client().await?;
    rows::execute(
        &client,
        "INSERT INTO parked_records (id, topic, partition, record_offset, reason, headers, value, \
         value_bytes, parked_at) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], \
         $7::bytea[], $8::bigint[], $9::bigint[]) \
         ON CONFLICT (topic, partition, record_offset) DO NOTHING",
        &[
            &text(|r| r.id.as_str()),
            &text(|r| r.topic.as_str()),
            &partitions,
            &offsets,
            &text(|r| r.reason.as_str()),
            &headers,
            &values,
            &sizes,
            &parked_at,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn list(
    store: &Database,
    page: &PageRequest,
) -> Result<Page<ParkedRecord>, StoreError> {
    let sql =
        format!("SELECT {PARKED_COLUMNS} FROM parked_records WHERE id > $1 ORDER BY id LIMIT $2");
    let client = store.client().await?;
    rows::page(
        &client,
        &sql,
        &[
            &page.after.clone().unwrap_or_default(),
            &(i64::from(page.limit) + 1),
        ],
        page.limit,
        decode::parked,
        |r| r.id.to_string(),
    )
    .await
}
