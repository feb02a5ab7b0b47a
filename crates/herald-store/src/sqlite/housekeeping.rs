//! SQL of the work that keeps the store healthy: lease renewal, the instance registry,
//! leadership, and retention.

use herald_core::id::DeliveryId;
use herald_core::store::{Instance, StoreError};
use herald_core::time::Timestamp;
use rusqlite::{Connection, params};

use super::rows::{self, execute};

/// The role the housekeeping leader holds.
const HOUSEKEEPING: &str = "housekeeping";

pub(super) fn extend_leases(
    connection: &Connection,
    leases: &[(DeliveryId, i64)],
    until: Timestamp,
) -> Result<u64, StoreError> {
    let mut extended = 0;
    for (delivery, token) in leases {
        extended += execute(
            connection,
            "UPDATE deliveries SET lease_expires_at = ?1 \
             WHERE id = ?2 AND lease_token = ?3 AND status = 'delivering'",
            params![until.as_millis(), delivery.as_str(), token],
        )?;
    }
    Ok(u64::try_from(extended).unwrap_or(u64::MAX))
}

pub(super) fn heartbeat(connection: &Connection, instance: &Instance) -> Result<(), StoreError> {
    execute(
        connection,
        "INSERT INTO instances (id, description, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        params![
            instance.id,
            instance.description,
            instance.started_at.as_millis(),
            instance.heartbeat_at.as_millis()
        ],
    )
    .map(drop)
}

pub(super) fn instances(connection: &Connection) -> Result<Vec<Instance>, StoreError> {
    rows::all(
        connection,
        "SELECT id, description, started_at, heartbeat_at FROM instances ORDER BY id",
        [],
        |row| {
            Ok(Instance {
                id: row.get(0)?,
                description: row.get(1)?,
                started_at: Timestamp::from_millis(row.get(2)?),
                heartbeat_at: Timestamp::from_millis(row.get(3)?),
            })
        },
    )
}

pub(super) fn forget_instances(
    connection: &Connection,
    stale_before: Timestamp,
) -> Result<u64, StoreError> {
    let forgotten = execute(
        connection,
        "DELETE FROM instances WHERE heartbeat_at < ?1",
        [stale_before.as_millis()],
    )?;
    Ok(u64::try_from(forgotten).unwrap_or(u64::MAX))
}

pub(super) fn take_leadership(
    connection: &Connection,
    instance: &str,
    now: Timestamp,
    until: Timestamp,
) -> Result<bool, StoreError> {
    let holder = rows::optional(
        connection,
        "INSERT INTO leadership (role, holder, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leadership.holder = excluded.holder OR leadership.expires_at <= ?4 \
         RETURNING holder",
        params![HOUSEKEEPING, instance, until.as_millis(), now.as_millis()],
        |row| row.get::<_, String>(0),
    )?;
    Ok(holder.is_some())
}

pub(super) fn purge_finished(
    connection: &Connection,
    created_before: Timestamp,
    limit: u32,
) -> Result<u64, StoreError> {
    let purged = execute(
        connection,
        "DELETE FROM events WHERE id IN ( \
           SELECT e.id FROM events e WHERE e.created_at < ?1 AND NOT EXISTS ( \
             SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status IN ('pending', 'delivering')) \
           ORDER BY e.created_at LIMIT ?2)",
        params![created_before.as_millis(), limit],
    )?;
    let parked = execute(
        connection,
        "DELETE FROM parked_records WHERE id IN ( \
           SELECT id FROM parked_records WHERE parked_at < ?1 ORDER BY id LIMIT ?2)",
        params![created_before.as_millis(), limit],
    )?;
    Ok(u64::try_from(purged + parked).unwrap_or(u64::MAX))
}
