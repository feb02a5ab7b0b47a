//! SQL of the work that keeps the store healthy: lease renewal, the instance registry,
//! leadership (a lease row: whoever holds an unexpired term leads; a dead leader's term
//! runs out and another instance takes it), and retention.

use herald_core::id::DeliveryId;
use herald_core::store::{Instance, StoreError};
use herald_core::time::Timestamp;

use super::Database;
use super::rows;
use crate::decode::{Columns, Undecodable};

/// The role the housekeeping leader holds.
const HOUSEKEEPING: &str = "housekeeping";

pub(super) async fn extend_leases(
    store: &Database,
    leases: Vec<(DeliveryId, i64)>,
    until: Timestamp,
) -> Result<u64, StoreError> {
    if leases.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = leases.iter().map(|(id, _)| id.as_str()).collect();
    let tokens: Vec<i64> = leases.iter().map(|(_, token)| *token).collect();
    let client = store.client().await?;
    rows::execute(
        &client,
        "UPDATE deliveries d SET lease_expires_at = $3 \
         FROM UNNEST($1::text[], $2::bigint[]) AS l(id, token) \
         WHERE d.id = l.id AND d.lease_token = l.token AND d.status = 'delivering'",
        &[&ids, &tokens, &until.as_millis()],
    )
    .await
}

pub(super) async fn heartbeat(store: &Database, instance: &Instance) -> Result<(), StoreError> {
    let client = store.client().await?;
    rows::execute(
        &client,
        "INSERT INTO instances (id, description, started_at, heartbeat_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        &[
            &instance.id,
            &instance.description,
            &instance.started_at.as_millis(),
            &instance.heartbeat_at.as_millis(),
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn instances(store: &Database) -> Result<Vec<Instance>, StoreError> {
    let client = store.client().await?;
    rows::all(
        &client,
        "SELECT id, description, started_at, heartbeat_at FROM instances ORDER BY id",
        &[],
        instance,
    )
    .await
}

fn instance(row: &tokio_postgres::Row) -> Result<Instance, Undecodable> {
    let text = |i| {
        row.text(i)?
            .ok_or_else(|| Undecodable::new(i, "unexpected NULL"))
    };
    let time = |i| {
        row.integer(i)?
            .map(Timestamp::from_millis)
            .ok_or_else(|| Undecodable::new(i, "unexpected NULL"))
    };
    Ok(Instance {
        id: text(0)?,
        description: text(1)?,
        started_at: time(2)?,
        heartbeat_at: time(3)?,
    })
}

pub(super) async fn forget_instances(
    store: &Database,
    stale_before: Timestamp,
) -> Result<u64, StoreError> {
    let client = store.client().await?;
    rows::execute(
        &client,
        "DELETE FROM instances WHERE heartbeat_at < $1",
        &[&stale_before.as_millis()],
    )
    .await
}

pub(super) async fn take_leadership(
    store: &Database,
    instance: &str,
    now: Timestamp,
    until: Timestamp,
) -> Result<bool, StoreError> {
    let client = store.client().await?;
    let holder = rows::query(
        &client,
        "INSERT INTO leadership (role, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leadership.holder = excluded.holder OR leadership.expires_at <= $4 \
         RETURNING holder",
        &[&HOUSEKEEPING, &instance, &until.as_millis(), &now.as_millis()],
    )
    .await?;
    Ok(!holder.is_empty())
}

pub(super) async fn purge_finished(
    store: &Database,
    created_before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let client = store.client().await?;
    let params: rows::Params<'_> = &[&created_before.as_millis(), &i64::from(limit)];
    let events = rows::execute(
        &client,
        "DELETE FROM events WHERE id IN ( \
           SELECT e.id FROM events e WHERE e.created_at < $1 AND NOT EXISTS ( \
             SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'delivering')) \
           ORDER BY e.created_at LIMIT $2)",
        params,
    )
    .await?;
    let parked = rows::execute(
        &client,
        "DELETE FROM parked_records WHERE id IN ( \
           SELECT id FROM parked_records WHERE parked_at < $1 ORDER BY id LIMIT $2)",
        params,
    )
    .await?;
    Ok(events + parked)
}
