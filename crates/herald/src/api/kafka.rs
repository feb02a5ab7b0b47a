//! `/v1/kafka/parked`: the Kafka records the Kafka source refused, for an operator.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_core::id::ParkedId;
use herald_core::store::ParkedRecord;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::AdminAccess;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::pagination::{ListOf, ListParams};
use super::wire::rfc3339;

/// A Kafka record that carried no acceptable event; the consumer moved on past it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParkedOut {
    /// Its id.
    id: String,
    /// The topic it was read from.
    topic: String,
    /// Its partition.
    partition: i32,
    /// Its offset.
    offset: i64,
    /// Why it was refused.
    reason: String,
    /// Its headers, in order, as `[name, value]` (values read as UTF-8).
    headers: Vec<(String, String)>,
    /// The first 64 KiB of its value, base64-encoded (`null` for a tombstone).
    value: Option<String>,
    /// The value's full size in bytes.
    value_bytes: u64,
    /// When it was parked.
    parked_at: String,
}

fn parked_out(record: ParkedRecord) -> ParkedOut {
    ParkedOut {
        id: record.id.to_string(),
        topic: record.topic,
        partition: record.partition,
        offset: record.offset,
        reason: record.reason,
        headers: record.headers,
        value: record.value.map(|value| STANDARD.encode(value)),
        value_bytes: record.value_bytes,
        parked_at: rfc3339(record.parked_at),
    }
}

/// List parked Kafka records, oldest first.
#[utoipa::path(get, path = "/v1/kafka/parked", tag = "operations", params(ListParams),
    responses((status = 200, description = "A page of parked records", body = ListOf<ParkedOut>)))]
pub async fn list_parked(
    _: AdminAccess,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListOf<ParkedOut>>, ApiError> {
    let page = params.page(|id| ParkedId::parse(id).is_some())?;
    let parked = state.management.parked_records(&page).await?;
    Ok(Json(ListOf::from_page(parked, parked_out)))
}
