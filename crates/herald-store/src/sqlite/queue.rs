//! SQL of the delivery queue: event intake with fan-out, claims under leases,
//! outcomes under fencing, and the reads and requeues of the operations API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::flow::Circuit;
use herald_core::id::{DeliveryId, EventId, TargetId, TenantId};
use herald_core::model::{Attempt, Delivery, DeliveryStatus, Event};
use herald_core::routing::Route;
use herald_core::store::{
    Claim, ClaimRequest, Claimed, Conflict, DeliveryQuery, EventRecord, INTAKE_LEASE_TOKEN,
    Inserted, OutcomeRecord, Page, PageRequest, QueueStats, Requeue, StoreError, WaitingTarget,
};
use herald_core::time::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::error::translate;
use super::rows::{
    self, ATTEMPT_COLUMNS, CIRCUIT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, TARGET_COLUMNS,
    execute,
};
use crate::lanes::{self, FIRST_LANE, FIRST_LANE_INDEX, RETRY_LANE, RETRY_LANE_INDEX};
use crate::limits::{self, SavedBucket};

pub(super) fn routes(connection: &Connection, tenant: &TenantId) -> Result<Vec<Route>, StoreError> {
    rows::all(
        connection,
        "SELECT s.id, s.target_id, f.patterns FROM subscriptions s \
         JOIN targets t ON t.id = s.target_id JOIN filters f ON f.id = s.filter_id \
         WHERE s.tenant_id = ?1 AND s.active = 1 AND t.active = 1 ORDER BY s.id",
        [tenant.as_str()],
        rows::route,
    )
}

pub(super) fn insert_events(
    connection: &Connection,
    records: &[EventRecord],
) -> Result<Vec<Inserted>, StoreError> {
    let mut targets = LiveTargets::default();
    records
        .iter()
        .map(|record| insert_event(connection, record, &mut targets))
        .collect()
}

/// The targets one intake write has found still there. Routes are read before the
/// write, and a target deleted in between must not be left a delivery that nothing
/// claims or removes; each target is looked up once per write, where a reference
/// would have been checked for every delivery.
/// Keyed by target id (unique across tenants), holding the tenant it was found under;
/// borrowed from the write's records, which outlive it.
#[derive(Default)]
struct LiveTargets<'a>(HashMap<&'a str, &'a str>);

impl<'a> LiveTargets<'a> {
    /// Fails with [`Conflict::MissingReference`] if the delivery's target is gone.
    fn require(
        &mut self,
        connection: &Connection,
        delivery: &'a Delivery,
    ) -> Result<(), StoreError> {
        let (target, tenant) = (delivery.target_id.as_str(), delivery.tenant_id.as_str());
        if self.0.get(target) == Some(&tenant) {
            return Ok(());
        }
        let exists = rows::optional(
            connection,
            "SELECT 1 FROM targets WHERE id = ?1 AND tenant_id = ?2",
            [target, tenant],
            |_| Ok(()),
        )?;
        if exists.is_none() {
            return Err(StoreError::Conflict(Conflict::MissingReference));
        }
        self.0.insert(target, tenant);
        Ok(())
    }
}

fn insert_event<'a>(
    connection: &Connection,
    record: &'a EventRecord,
    targets: &mut LiveTargets<'a>,
) -> Result<Inserted, StoreError> {
    let event = &record.event;
    if let Some(key) = &event.idempotency_key {
        let original = rows::optional(
            connection,
            "SELECT id FROM events WHERE tenant_id = ?1 AND idempotency_key = ?2",
            [event.tenant_id.as_str(), key.as_str()],
            |row| row.get::<_, String>(0),
        )?;
        if let Some(original) = original {
            let deliveries: u32 = connection
                .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE event_id = ?1")
                .and_then(|mut s| s.query_row([original.as_str()], |row| row.get(0)))
                .map_err(translate)?;
            let original = EventId::parse(&original).ok_or_else(|| StoreError::Corrupt {
                detail: format!("bad event id {original:?}"),
            })?;
            return Ok(Inserted::Duplicate {
                original,
                deliveries,
            });
        }
    }
    execute(
        connection,
        "INSERT INTO events (id, tenant_id, event_type, content_type, payload, idempotency_key, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            event.id.as_str(),
            event.tenant_id.as_str(),
            event.event_type.as_str(),
            event.content_type.as_str(),
            &event.payload[..],
            event.idempotency_key.as_ref().map(|k| k.as_str()),
            event.created_at.as_millis(),
        ],
    )?;
    for delivery in &record.deliveries {
        targets.require(connection, delivery)?;
        insert_delivery(connection, delivery, record.lease_of(delivery))?;
    }
    Ok(Inserted::New)
}

/// Inserts a delivery, in flight under the intake lease when `lease` is given.
fn insert_delivery(
    connection: &Connection,
    delivery: &Delivery,
    lease: Option<Timestamp>,
) -> Result<(), StoreError> {
    let lease_token = if lease.is_some() {
        INTAKE_LEASE_TOKEN
    } else {
        0
    };
    execute(
        connection,
        "INSERT INTO deliveries (id, tenant_id, event_id, target_id, subscription_id, event_type, status, attempts, \
         next_attempt_at, window_start, last_status_code, last_error, created_at, updated_at, lease_token, \
         lease_expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            delivery.id.as_str(),
            delivery.tenant_id.as_str(),
            delivery.event_id.as_str(),
            delivery.target_id.as_str(),
            delivery.subscription_id.as_str(),
            delivery.event_type.as_str(),
            delivery.status.as_str(),
            delivery.attempts,
            delivery.next_attempt_at.as_millis(),
            delivery.window_start.as_millis(),
            delivery.last_status_code,
            delivery.last_error,
            delivery.created_at.as_millis(),
            delivery.updated_at.as_millis(),
            lease_token,
            lease.map(Timestamp::as_millis),
        ],
    )
    .map(drop)
}

pub(super) fn get_event(
    connection: &Connection,
    tenant: &TenantId,
    id: &EventId,
) -> Result<Option<Event>, StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1 AND tenant_id = ?2");
    rows::optional(
        connection,
        &sql,
        [id.as_str(), tenant.as_str()],
        rows::event,
    )
}

pub(super) fn event_deliveries(
    connection: &Connection,
    tenant: &TenantId,
    event: &EventId,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 AND tenant_id = ?2 ORDER BY id"
    );
    rows::all(
        connection,
        &sql,
        [event.as_str(), tenant.as_str()],
        rows::delivery,
    )
}

pub(super) fn get_delivery(
    connection: &Connection,
    tenant: &TenantId,
    id: &DeliveryId,
) -> Result<Option<Delivery>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1 AND tenant_id = ?2");
    rows::optional(
        connection,
        &sql,
        [id.as_str(), tenant.as_str()],
        rows::delivery,
    )
}

pub(super) fn list_attempts(
    connection: &Connection,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> Result<Vec<Attempt>, StoreError> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ?1 AND tenant_id = ?2 ORDER BY number, id"
    );
    rows::all(
        connection,
        &sql,
        [delivery.as_str(), tenant.as_str()],
        rows::attempt,
    )
}

/// The `WHERE` conditions and parameters selecting a tenant's deliveries by `query`.
fn selection(tenant: &TenantId, query: &DeliveryQuery) -> (String, Vec<Value>) {
    let mut conditions = vec!["tenant_id = ?".to_owned()];
    let mut values = vec![Value::Text(tenant.to_string())];
    if let Some(status) = query.status {
        // Written out, not bound (a status is one of four fixed words): the planner can
        // then use the partial index of dead letters.
        conditions.push(format!("status = '{}'", status.as_str()));
    }
    let mut add = |condition: &str, value: Value| {
        conditions.push(condition.to_owned());
        values.push(value);
    };
    if let Some(target) = &query.target_id {
        add("target_id = ?", Value::Text(target.to_string()));
    }
    if let Some(event_type) = &query.event_type {
        add("event_type = ?", Value::Text(event_type.to_string()));
    }
    if let Some(from) = query.created_from {
        add("created_at >= ?", Value::Integer(from.as_millis()));
    }
    if let Some(until) = query.created_until {
        add("created_at < ?", Value::Integer(until.as_millis()));
    }
    (conditions.join(" AND "), values)
}

pub(super) fn list_deliveries(
    connection: &Connection,
    tenant: &TenantId,
    query: &DeliveryQuery,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let (conditions, mut values) = selection(tenant, query);
    values.push(Value::Text(page.after.clone().unwrap_or_default()));
    values.push(Value::Integer(i64::from(page.limit) + 1));
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {conditions} AND id > ? ORDER BY id LIMIT ?"
    );
    rows::page(
        connection,
        &sql,
        params_from_iter(values),
        page.limit,
        rows::delivery,
        |d| d.id.to_string(),
    )
}

pub(super) fn requeue(
    connection: &Connection,
    tenant: &TenantId,
    which: &Requeue,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let set = "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, window_start = ?, updated_at = ?, \
               lease_expires_at = NULL WHERE ";
    let mut values = vec![Value::Integer(now.as_millis()); 3];
    let sql = match which {
        Requeue::One(id) => {
            values.extend([Value::Text(tenant.to_string()), Value::Text(id.to_string())]);
            // A deleted target's succeeded deliveries stay as history, with nowhere to
            // be sent again. (Its dead ones were deleted with it, so a redrive never
            // meets one.)
            format!(
                "{set} tenant_id = ? AND id = ? AND status != 'delivering' \
                 AND EXISTS (SELECT 1 FROM targets t WHERE t.id = deliveries.target_id)"
            )
        }
        Requeue::Dead {
            query,
            dead_before,
            at_most,
        } => {
            let (conditions, selected) = selection(tenant, query);
            values.extend(selected);
            values.push(Value::Integer(dead_before.as_millis()));
            values.push(Value::Integer(i64::try_from(*at_most).unwrap_or(i64::MAX)));
            format!(
                "{set} rowid IN (SELECT rowid FROM deliveries INDEXED BY deliveries_dead \
                 WHERE {conditions} AND status = 'dead' AND updated_at < ? LIMIT ?)"
            )
        }
    };
    let changed = execute(connection, &sql, params_from_iter(values))?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

/// What a deleted target is still owed, each lane through its own partial index: the
/// cost of a deletion follows what the target has waiting, in flight or dead, not
/// every delivery it ever received. (The order is PostgreSQL's, where it matters; the
/// single writer runs nothing between these statements.)
const OWED_TO_TARGET: [&str; 4] = [
    "DELETE FROM deliveries INDEXED BY deliveries_in_flight \
     WHERE target_id = ?1 AND tenant_id = ?2 AND status = 'delivering'",
    "DELETE FROM deliveries INDEXED BY deliveries_first_due \
     WHERE target_id = ?1 AND tenant_id = ?2 AND status = 'pending' AND attempts = 0",
    "DELETE FROM deliveries INDEXED BY deliveries_retry_due \
     WHERE target_id = ?1 AND tenant_id = ?2 AND status = 'pending' AND attempts > 0",
    "DELETE FROM deliveries INDEXED BY deliveries_dead \
     WHERE tenant_id = ?2 AND status = 'dead' AND target_id = ?1",
];

/// Deletes one of the tenant's targets (its subscriptions, circuit and token bucket go
/// by reference) and the deliveries it is still owed or that died; those it received
/// stay as history until retention removes their events. Answers whether it existed.
pub(super) fn delete_target(
    connection: &Connection,
    tenant: &TenantId,
    id: &TargetId,
) -> Result<bool, StoreError> {
    let ids = params![id.as_str(), tenant.as_str()];
    if execute(
        connection,
        "DELETE FROM targets WHERE id = ?1 AND tenant_id = ?2",
        ids,
    )? == 0
    {
        return Ok(false);
    }
    for sql in OWED_TO_TARGET {
        execute(connection, sql, ids)?;
    }
    Ok(true)
}

pub(super) fn waiting_targets(connection: &Connection) -> Result<Vec<WaitingTarget>, StoreError> {
    let mut statement = connection
        .prepare_cached(&lanes::waiting_targets_sql())
        .map_err(translate)?;
    // Each row is decoded on its own: one target that no longer decodes (a bug, a
    // manual edit) must not stop delivery to every other target.
    let decoded = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, lanes::waiting_target(row)))
        })
        .map_err(translate)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(translate)?;
    Ok(decoded
        .into_iter()
        .filter_map(|(id, waiting)| {
            waiting
                .inspect_err(|error| {
                    tracing::error!(target = id, %error, "skipping a target that no longer decodes");
                })
                .ok()
        })
        .collect())
}

pub(super) fn claim(
    connection: &Connection,
    requests: &[ClaimRequest],
    now: Timestamp,
    lease: Duration,
) -> Result<Claimed, StoreError> {
    let mut claimed = Vec::new();
    let mut held_back = Vec::new();
    for request in requests {
        if !target_is_active(connection, &request.target_id)? {
            continue;
        }
        let in_flight = in_flight(connection, &request.target_id)?;
        let saved = saved_bucket(connection, request)?;
        let mut bucket = limits::bucket(&request.limits, saved, now);
        let tokens = bucket.as_mut().map(|b| b.available(now));
        let granted = request.granted(in_flight, tokens);
        let (first_attempts, retries) = granted;
        let before = claimed.len();
        let lanes = [
            ((FIRST_LANE, FIRST_LANE_INDEX), first_attempts),
            ((RETRY_LANE, RETRY_LANE_INDEX), retries),
        ];
        for (lane, limit) in lanes {
            if limit > 0 {
                claim_lane(
                    connection,
                    &request.target_id,
                    lane,
                    limit,
                    now,
                    lease,
                    &mut claimed,
                )?;
            }
        }
        if let Some(spent) = bucket
            .as_mut()
            .and_then(|bucket| limits::spend(bucket, saved, claimed.len() - before, now))
        {
            save_bucket(connection, &request.target_id, spent)?;
        }
        held_back.extend(limits::held_back(request, granted, bucket.as_mut(), now));
    }
    Ok(Claimed {
        claims: attach_events_and_targets(connection, claimed, now)?,
        held_back,
    })
}

/// How many of the target's deliveries are claimed and not yet finished.
fn in_flight(connection: &Connection, target: &TargetId) -> Result<u64, StoreError> {
    let count: i64 = connection
        .prepare_cached(
            "SELECT COUNT(*) FROM deliveries WHERE target_id = ?1 AND status = 'delivering'",
        )
        .and_then(|mut s| s.query_row([target.as_str()], |row| row.get(0)))
        .map_err(translate)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// The target's saved token bucket (only read for a rate-limited target).
fn saved_bucket(
    connection: &Connection,
    request: &ClaimRequest,
) -> Result<SavedBucket, StoreError> {
    if request.limits.rate.is_none() {
        return Ok(SavedBucket::default());
    }
    Ok(rows::optional(
        connection,
        "SELECT tokens, tokens_at FROM target_flow WHERE target_id = ?1",
        [request.target_id.as_str()],
        |row| {
            Ok(SavedBucket {
                tokens: row.get(0)?,
                at: row.get(1)?,
            })
        },
    )?
    .unwrap_or_default())
}

fn save_bucket(
    connection: &Connection,
    target: &TargetId,
    saved: SavedBucket,
) -> Result<(), StoreError> {
    execute(
        connection,
        "INSERT INTO target_flow (target_id, tokens, tokens_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (target_id) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at",
        params![target.as_str(), saved.tokens, saved.at],
    )
    .map(drop)
}

fn target_is_active(connection: &Connection, target: &TargetId) -> Result<bool, StoreError> {
    Ok(rows::optional(
        connection,
        "SELECT active FROM targets WHERE id = ?1",
        [target.as_str()],
        |row| row.get::<_, bool>(0),
    )?
    .unwrap_or(false))
}

/// Claims up to `limit` due deliveries of one lane of one target into `claimed`; the
/// lane is its condition and its partial index.
fn claim_lane(
    connection: &Connection,
    target: &TargetId,
    (lane, index): (&str, &str),
    limit: u32,
    now: Timestamp,
    lease: Duration,
    claimed: &mut Vec<(Delivery, i64)>,
) -> Result<(), StoreError> {
    // The due rows in the lane's index order, `(target_id, next_attempt_at)`: earliest
    // due first. No `ORDER BY` or `LIMIT`, which would do the same, because either
    // makes SQLite expire the statement whenever its bindings are cleared, as the
    // statement cache does after every use: every claim was re-prepared (measured at
    // 40 % of a claim's time). Reading stops after `limit` rows.
    let due = format!(
        "SELECT {DELIVERY_COLUMNS}, lease_token, rowid FROM deliveries INDEXED BY {index} \
         WHERE status = 'pending' AND {lane} AND target_id = ?1 AND next_attempt_at <= ?2"
    );
    let mut statement = connection.prepare_cached(&due).map_err(translate)?;
    // Each row is decoded on its own: a row that no longer decodes (a bug, a manual
    // edit) is set aside as dead instead of failing every claim after it.
    let due = statement
        .query_map(params![target.as_str(), now.as_millis()], |row| {
            let decoded = rows::delivery(row).and_then(|d| Ok((d, row.get::<_, i64>(14)?)));
            Ok((row.get::<_, i64>(15)?, row.get::<_, String>(0)?, decoded))
        })
        .map_err(translate)?
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect::<Result<Vec<_>, _>>()
        .map_err(translate)?;
    drop(statement);
    // Taken one row at a time, after the read: one statement over the whole set
    // (`rowid IN (…) … RETURNING`) made SQLite build two temporary B-trees per claim
    // (the rowids, the rows returned) and journal the statement, which cost more than
    // a cached single-row update each.
    let lease_expires_at = now.plus(lease).as_millis();
    for (rowid, id, decoded) in due {
        match decoded {
            Ok((mut delivery, lease_token)) => {
                let lease_token = lease_token.saturating_add(1);
                let taken = execute(
                    connection,
                    "UPDATE deliveries SET status = 'delivering', lease_token = ?1, lease_expires_at = ?2, \
                     updated_at = ?3 WHERE rowid = ?4 AND status = 'pending'",
                    params![lease_token, lease_expires_at, now.as_millis(), rowid],
                )? == 1;
                if taken {
                    delivery.status = DeliveryStatus::Delivering;
                    delivery.updated_at = now;
                    claimed.push((delivery, lease_token));
                }
            }
            Err(error) => set_aside(
                connection,
                &id,
                &format!("stored delivery is corrupt: {error}"),
                now,
            )?,
        }
    }
    Ok(())
}

/// Completes claimed deliveries with their events and targets, each read once.
fn attach_events_and_targets(
    connection: &Connection,
    claimed: Vec<(Delivery, i64)>,
    now: Timestamp,
) -> Result<Vec<Claim>, StoreError> {
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let events = load_by_id(
        connection,
        "events",
        EVENT_COLUMNS,
        claimed.iter().map(|(d, _)| d.event_id.as_str()),
        rows::event,
    )?;
    let targets = load_by_id(
        connection,
        "targets",
        TARGET_COLUMNS,
        claimed.iter().map(|(d, _)| d.target_id.as_str()),
        rows::target,
    )?;
    let mut claims = Vec::with_capacity(claimed.len());
    for (delivery, lease_token) in claimed {
        let event = events.get(delivery.event_id.as_str()).cloned();
        let target = targets.get(delivery.target_id.as_str()).cloned();
        match (event, target) {
            (Some(event), Some(target)) => claims.push(Claim {
                delivery,
                lease_token,
                event,
                target,
            }),
            _ => set_aside(
                connection,
                delivery.id.as_str(),
                "its stored event or target is corrupt",
                now,
            )?,
        }
    }
    Ok(claims)
}

/// Makes an unreadable delivery dead, with the reason, so it stays visible (and
/// redrivable once repaired) without blocking the queue.
fn set_aside(
    connection: &Connection,
    id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    tracing::error!(
        delivery = id,
        reason,
        "setting aside an unreadable delivery as dead"
    );
    execute(
        connection,
        "UPDATE deliveries SET status = 'dead', last_error = ?1, lease_expires_at = NULL, updated_at = ?2 \
         WHERE id = ?3",
        params![reason, now.as_millis(), id],
    )
    .map(drop)
}

/// Reads the rows of `table` with the given ids, once each, keyed by id.
fn load_by_id<'a, T>(
    connection: &Connection,
    table: &str,
    columns: &str,
    ids: impl Iterator<Item = &'a str>,
    map: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<HashMap<String, Arc<T>>, StoreError> {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    // One cached lookup per id: a claim needs a few, and a statement over a set of
    // ids (`IN (SELECT value FROM json_each(?))`) builds a temporary B-tree each time.
    let sql = format!("SELECT {columns} FROM {table} WHERE id = ?1");
    let mut statement = connection.prepare_cached(&sql).map_err(translate)?;
    let mut by_id = HashMap::with_capacity(ids.len());
    for id in ids {
        match statement.query_row([id], map) {
            Ok(item) => {
                by_id.insert(id.to_owned(), Arc::new(item));
            }
            // A row missing, or one that does not decode, is left out; the claims
            // that need it are set aside.
            Err(rusqlite::Error::QueryReturnedNoRows) => {}
            Err(error) if is_undecodable(&error) => {
                tracing::error!(table, %error, "unreadable row");
            }
            // Anything else (I/O, a transaction SQLite rolled back) fails the claim: the
            // deliveries must not be set aside for it.
            Err(error) => return Err(translate(error)),
        }
    }
    Ok(by_id)
}

/// Whether a row read failed because its stored values do not decode.
fn is_undecodable(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
    )
}

pub(super) fn record_outcomes(
    connection: &Connection,
    outcomes: &[OutcomeRecord],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    outcomes
        .iter()
        .map(|outcome| record_outcome(connection, outcome, now))
        .collect()
}

fn record_outcome(
    connection: &Connection,
    outcome: &OutcomeRecord,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let verdict = &outcome.verdict;
    let applied = execute(
        connection,
        "UPDATE deliveries SET status = ?1, attempts = ?2, next_attempt_at = ?3, last_status_code = ?4, \
         last_error = ?5, updated_at = ?6, lease_expires_at = NULL \
         WHERE id = ?7 AND lease_token = ?8 AND status = 'delivering'",
        params![
            verdict.status.as_str(),
            verdict.attempts,
            verdict.next_attempt_at.as_millis(),
            verdict.last_status_code,
            verdict.last_error,
            now.as_millis(),
            outcome.delivery_id.as_str(),
            outcome.lease_token,
        ],
    )? == 1;
    if applied {
        insert_attempt(connection, &outcome.attempt)?;
    }
    Ok(applied)
}

fn insert_attempt(connection: &Connection, attempt: &Attempt) -> Result<(), StoreError> {
    let headers = serde_json::to_string(&attempt.response_headers).map_err(StoreError::backend)?;
    execute(
        connection,
        "INSERT INTO attempts (id, delivery_id, tenant_id, number, started_at, duration_ms, status_code, error, \
         response_headers, response_body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            attempt.id.as_str(),
            attempt.delivery_id.as_str(),
            attempt.tenant_id.as_str(),
            attempt.number,
            attempt.started_at.as_millis(),
            attempt.duration_ms,
            attempt.status_code,
            attempt.error,
            headers,
            attempt.response_body,
        ],
    )
    .map(drop)
}

pub(super) fn queue_stats(
    connection: &Connection,
    now: Timestamp,
) -> Result<QueueStats, StoreError> {
    let mut stats = QueueStats::default();
    // One count per lane, so each reads only its own partial index (grouped by target
    // as it is sorted); switched-off targets' deliveries cannot go, so they are left out.
    for lane in [FIRST_LANE, RETRY_LANE] {
        let sql = format!(
            "SELECT COALESCE(SUM(l.pending), 0), COALESCE(SUM(l.due), 0) FROM ( \
               SELECT target_id, COUNT(*) AS pending, SUM(next_attempt_at <= ?1) AS due \
               FROM deliveries WHERE status = 'pending' AND {lane} GROUP BY target_id) l \
             JOIN targets t ON t.id = l.target_id WHERE t.active = 1"
        );
        let (all, due): (i64, i64) = connection
            .prepare_cached(&sql)
            .and_then(|mut s| s.query_row([now.as_millis()], |row| Ok((row.get(0)?, row.get(1)?))))
            .map_err(translate)?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        stats.due += count(due);
        stats.waiting += count(all - due);
    }
    let open: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM circuits WHERE state != 'closed'")
        .and_then(|mut s| s.query_row([], |row| row.get(0)))
        .map_err(translate)?;
    stats.open_circuits = u64::try_from(open).unwrap_or(0);
    Ok(stats)
}

/// Puts leased deliveries back in their lanes, due now at the latest: every lease
/// (`only_expired` false) or those that expired by `now`.
pub(super) fn release_leases(
    connection: &Connection,
    now: Timestamp,
    only_expired: bool,
) -> Result<u64, StoreError> {
    let sql = if only_expired {
        "UPDATE deliveries SET status = 'pending', lease_expires_at = NULL, \
         next_attempt_at = MIN(next_attempt_at, ?1), updated_at = ?1 \
         WHERE status = 'delivering' AND lease_expires_at <= ?1"
    } else {
        "UPDATE deliveries SET status = 'pending', lease_expires_at = NULL, \
         next_attempt_at = MIN(next_attempt_at, ?1), updated_at = ?1 WHERE status = 'delivering'"
    };
    let changed = execute(connection, sql, [now.as_millis()])?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

pub(super) fn disable_target(
    connection: &Connection,
    target: &TargetId,
    reason: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let changed = execute(
        connection,
        "UPDATE targets SET active = 0, disabled_reason = ?2, updated_at = ?3 WHERE id = ?1 AND active = 1",
        params![target.as_str(), reason, now.as_millis()],
    )?;
    Ok(changed > 0)
}

pub(super) fn target_circuit(
    connection: &Connection,
    tenant: &TenantId,
    target: &TargetId,
) -> Result<Option<Circuit>, StoreError> {
    let sql = format!(
        "SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target_id = ?1 \
         AND EXISTS (SELECT 1 FROM targets WHERE id = ?1 AND tenant_id = ?2)"
    );
    Ok(rows::optional(
        connection,
        &sql,
        [target.as_str(), tenant.as_str()],
        |row| rows::circuit(row, 0),
    )?
    .flatten())
}

pub(super) fn save_circuits(
    connection: &Connection,
    circuits: &[(TargetId, Circuit)],
) -> Result<(), StoreError> {
    for (target, circuit) in circuits {
        // A target deleted meanwhile has no circuit to keep.
        execute(
            connection,
            "INSERT INTO circuits (target_id, state, since, consecutive_failures, next_probe_at, opens) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM targets WHERE id = ?1) \
             ON CONFLICT (target_id) DO UPDATE SET state = excluded.state, since = excluded.since, \
             consecutive_failures = excluded.consecutive_failures, next_probe_at = excluded.next_probe_at, \
             opens = excluded.opens WHERE circuits.since <= excluded.since",
            params![
                target.as_str(),
                circuit.state.as_str(),
                circuit.since.as_millis(),
                circuit.consecutive_failures,
                circuit.next_probe_at.map(Timestamp::as_millis),
                circuit.opens,
            ],
        )?;
    }
    Ok(())
}
