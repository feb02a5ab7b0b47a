//! The queue's lanes as SQL both backends run unchanged, and the row they read back.
//!
//! A pending delivery waits in its target's first-attempt lane or its retry lane, each
//! with a partial index `(target_id, next_attempt_at)` of its own.

use herald_core::store::WaitingTarget;
use herald_core::time::Timestamp;

use crate::decode::{self, CIRCUIT_COLUMNS, Columns, TARGET_COLUMNS, Undecodable, qualified};

/// The condition selecting the first-attempt lane of pending deliveries (it matches
/// the `deliveries_first_due` partial index).
pub(crate) const FIRST_LANE: &str = "attempts = 0";
/// The condition selecting the retry lane (the `deliveries_retry_due` index).
pub(crate) const RETRY_LANE: &str = "attempts > 0";
/// The partial index of the first-attempt lane.
pub(crate) const FIRST_LANE_INDEX: &str = "deliveries_first_due";
/// The partial index of the retry lane.
pub(crate) const RETRY_LANE_INDEX: &str = "deliveries_retry_due";

/// The smallest target id above `previous` with a pending delivery in one lane: with
/// the lane's index, one seek per target however many deliveries wait (a loose index
/// scan).
fn next_waiting_target(lane: &str, previous: &str) -> String {
    format!(
        "SELECT min(target_id) FROM deliveries WHERE status = 'pending' AND {lane} AND target_id > {previous}"
    )
}

/// Every active target with pending deliveries: its columns, each lane's earliest due
/// time, its circuit's columns (read by [`waiting_target`]).
pub(crate) fn waiting_targets_sql() -> String {
    let (first, retry) = (FIRST_LANE, RETRY_LANE);
    format!(
        "WITH RECURSIVE \
           first_lane(target_id) AS ( \
             SELECT ({first_start}) \
             UNION ALL SELECT ({first_next}) FROM first_lane WHERE first_lane.target_id IS NOT NULL), \
           retry_lane(target_id) AS ( \
             SELECT ({retry_start}) \
             UNION ALL SELECT ({retry_next}) FROM retry_lane WHERE retry_lane.target_id IS NOT NULL), \
           waiting(target_id) AS ( \
             SELECT target_id FROM first_lane WHERE target_id IS NOT NULL \
             UNION SELECT target_id FROM retry_lane WHERE target_id IS NOT NULL) \
         SELECT {columns}, \
           (SELECT min(next_attempt_at) FROM deliveries d \
             WHERE d.status = 'pending' AND d.{first} AND d.target_id = w.target_id), \
           (SELECT min(next_attempt_at) FROM deliveries d \
             WHERE d.status = 'pending' AND d.{retry} AND d.target_id = w.target_id), \
           {circuit} \
         FROM waiting w JOIN targets t ON t.id = w.target_id LEFT JOIN circuits c ON c.target_id = t.id \
         WHERE t.active",
        first_start = next_waiting_target(first, "''"),
        first_next = next_waiting_target(first, "first_lane.target_id"),
        retry_start = next_waiting_target(retry, "''"),
        retry_next = next_waiting_target(retry, "retry_lane.target_id"),
        columns = qualified(TARGET_COLUMNS, "t"),
        circuit = qualified(CIRCUIT_COLUMNS, "c"),
    )
}

/// A row of [`waiting_targets_sql`]. An unreadable circuit is treated as closed (the
/// breaker relearns the target); an unreadable target is an error, which the caller
/// logs and skips, so one bad row never stops delivery to the others.
pub(crate) fn waiting_target(row: &impl Columns) -> Result<WaitingTarget, Undecodable> {
    let width = decode::width(TARGET_COLUMNS);
    let target = decode::target(row)?;
    let circuit = decode::circuit(row, width + 2).unwrap_or_else(|error| {
        tracing::error!(target = %target.id, %error, "ignoring a circuit that no longer decodes");
        None
    });
    Ok(WaitingTarget {
        target,
        first_due: row.integer(width)?.map(Timestamp::from_millis),
        retry_due: row.integer(width + 1)?.map(Timestamp::from_millis),
        circuit,
    })
}
