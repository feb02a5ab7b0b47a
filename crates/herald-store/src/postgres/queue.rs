//! SQL of the delivery queue on PostgreSQL: batched event intake, claims under
//! `FOR UPDATE SKIP LOCKED` leases, fenced outcomes, and the operations API's reads
//! and requeues.
//!
//! Batches travel as arrays (`UNNEST`), so a batch of any size is one statement and
//! one plan: intake is three statements per batch, recording outcomes two.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Transaction};
use herald_core::flow::Circuit;
use herald_core::id::{DeliveryId, EventId, TargetId, TenantId};
use herald_core::model::{Attempt, Delivery, Event, Target};
use herald_core::store::{
    Change, Claim, ClaimRequest, Claimed, Conflict, DeliveryQuery, EventRecord, HeldBack,
    INTAKE_LEASE_TOKEN, Inserted, OutcomeRecord, Page, PageRequest, QueueStats, Requeue,
    StoreError, WaitingTarget,
};
use herald_core::time::Timestamp;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::Database;
use super::rows::{self, count};
use crate::decode::{
    self, ATTEMPT_COLUMNS, CIRCUIT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, TARGET_COLUMNS,
    Undecodable, qualified,
};
use crate::lanes::{self, FIRST_LANE, RETRY_LANE};
use crate::limits::{self, SavedBucket};

pub(super) async fn insert_events(
    store: &Database,
    records: &[EventRecord],
) -> Result<Vec<Inserted>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let inserted = store
        .transact(None, async |t| {
            let new = insert_new_events(t, records).await?;
            insert_deliveries(t, records, &new).await?;
            results_in_order(t, records, &new).await
        })
        .await?;
    store.announcer.due(
        records
            .iter()
            .flat_map(|r| r.deliveries.iter().map(|d| d.target_id.clone())),
    );
    Ok(inserted)
}

/// Inserts the events whose idempotency key is unused; returns the ids inserted.
async fn insert_new_events(
    t: &Transaction<'_>,
    records: &[EventRecord],
) -> Result<HashSet<String>, StoreError> {
    let events: Vec<&Event> = records.iter().map(|r| &r.event).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let tenants: Vec<&str> = events.iter().map(|e| e.tenant_id.as_str()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let content_types: Vec<&str> = events.iter().map(|e| e.content_type.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| &e.payload[..]).collect();
    let keys: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.idempotency_key.as_ref().map(|k| k.as_str()))
        .collect();
    let created: Vec<i64> = events.iter().map(|e| e.created_at.as_millis()).collect();
    // A key used earlier, or earlier in this same batch, inserts nothing (the first
    // of a batch wins). Rows go in key order, so two transactions inserting the same
    // keys wait for each other instead of deadlocking.
    let inserted = rows::query(
        t,
        "INSERT INTO events (id, tenant_id, event_type, content_type, payload, idempotency_key, created_at) \
         SELECT id, tenant_id, event_type, content_type, payload, idempotency_key, created_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], \
         $7::bigint[]) WITH ORDINALITY \
           AS e(id, tenant_id, event_type, content_type, payload, idempotency_key, created_at, n) \
         ORDER BY tenant_id, idempotency_key, n \
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING RETURNING id",
        &[&ids, &tenants, &types, &content_types, &payloads, &keys, &created],
    )
    .await?;
    inserted
        .iter()
        .map(|row| row.try_get::<_, String>(0).map_err(super::error::translate))
        .collect()
}

/// What a deleted target is still owed, or saw die, by lane. In flight comes before
/// waiting, and waiting before dead, the order in which outcomes, lease recovery and
/// retries move deliveries: each statement sees what committed before it began, so
/// one that moved on while an earlier statement waited for it is caught by a later one.
const OWED_TO_TARGET: [&str; 3] = [
    "DELETE FROM deliveries WHERE target_id = $1 AND tenant_id = $2 AND status = 'delivering'",
    "DELETE FROM deliveries WHERE target_id = $1 AND tenant_id = $2 AND status = 'pending'",
    "DELETE FROM deliveries WHERE tenant_id = $2 AND status = 'dead' AND target_id = $1",
];

/// Deletes one of the tenant's targets (its subscriptions, circuit and token bucket go
/// by reference) and the deliveries it is still owed or that died; those it received
/// stay as history until retention removes their events. Answers whether it existed.
///
/// The target's row is deleted first: that waits for any claim holding its token
/// bucket, and for intake and redrives holding it shared, so each of those either
/// finished before (and its deliveries are deleted here) or finds the target gone.
pub(super) async fn delete_target(
    store: &Database,
    tenant: &TenantId,
    id: &TargetId,
) -> Result<bool, StoreError> {
    let change = Change::Config(tenant.clone());
    store
        .transact(Some(change), async |t| {
            let ids: [&(dyn ToSql + Sync); 2] = [&id.as_str(), &tenant.as_str()];
            let deleted = rows::execute(
                t,
                "DELETE FROM targets WHERE id = $1 AND tenant_id = $2",
                &ids,
            )
            .await?;
            if deleted == 0 {
                return Ok(false);
            }
            for sql in OWED_TO_TARGET {
                rows::execute(t, sql, &ids).await?;
            }
            Ok(true)
        })
        .await
}

/// Inserts the deliveries of the events that were inserted.
async fn insert_deliveries(
    t: &Transaction<'_>,
    records: &[EventRecord],
    new: &HashSet<String>,
) -> Result<(), StoreError> {
    let (deliveries, leases): (Vec<&Delivery>, Vec<Option<i64>>) = records
        .iter()
        .filter(|r| new.contains(r.event.id.as_str()))
        .flat_map(|r| {
            r.deliveries
                .iter()
                .map(|d| (d, r.lease_of(d).map(Timestamp::as_millis)))
        })
        .unzip();
    if deliveries.is_empty() {
        return Ok(());
    }
    let lease_tokens: Vec<i64> = leases
        .iter()
        .map(|lease| {
            if lease.is_some() {
                INTAKE_LEASE_TOKEN
            } else {
                0
            }
        })
        .collect();
    let text = |f: fn(&Delivery) -> &str| deliveries.iter().map(|d| f(d)).collect::<Vec<_>>();
    let millis = |f: fn(&Delivery) -> Timestamp| {
        deliveries
            .iter()
            .map(|d| f(d).as_millis())
            .collect::<Vec<_>>()
    };
    let attempts: Vec<i64> = deliveries.iter().map(|d| i64::from(d.attempts)).collect();
    let codes: Vec<Option<i64>> = deliveries
        .iter()
        .map(|d| d.last_status_code.map(i64::from))
        .collect();
    let errors: Vec<Option<&str>> = deliveries.iter().map(|d| d.last_error.as_deref()).collect();
    // Only deliveries whose target is there, each target held shared until the end,
    // as a reference's check would: a deletion of one waits for this intake (and then
    // deletes what it wrote) or is waited for (and the intake is refused below).
    let inserted = rows::execute(
        t,
        "INSERT INTO deliveries (id, tenant_id, event_id, target_id, subscription_id, event_type, status, \
         attempts, next_attempt_at, window_start, last_status_code, last_error, created_at, updated_at, \
         lease_token, lease_expires_at) \
         SELECT d.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::bigint[], \
         $14::bigint[], $15::bigint[], $16::bigint[]) AS d(id, tenant_id, event_id, target_id) \
         JOIN targets t ON t.id = d.target_id AND t.tenant_id = d.tenant_id FOR KEY SHARE OF t",
        &[
            &text(|d| d.id.as_str()),
            &text(|d| d.tenant_id.as_str()),
            &text(|d| d.event_id.as_str()),
            &text(|d| d.target_id.as_str()),
            &text(|d| d.subscription_id.as_str()),
            &text(|d| d.event_type.as_str()),
            &text(|d| d.status.as_str()),
            &attempts,
            &millis(|d| d.next_attempt_at),
            &millis(|d| d.window_start),
            &codes,
            &errors,
            &millis(|d| d.created_at),
            &millis(|d| d.updated_at),
            &lease_tokens,
            &leases,
        ],
    )
    .await?;
    if inserted < u64::try_from(deliveries.len()).unwrap_or(u64::MAX) {
        // Routes are read before the write: a target deleted in between must not be
        // left a delivery that nothing claims or removes.
        return Err(StoreError::Conflict(Conflict::MissingReference));
    }
    Ok(())
}

/// What happened to each record, in input order: stored, or a duplicate of the event
/// that holds its idempotency key.
async fn results_in_order(
    t: &Transaction<'_>,
    records: &[EventRecord],
    new: &HashSet<String>,
) -> Result<Vec<Inserted>, StoreError> {
    let repeated: Vec<&Event> = records
        .iter()
        .map(|r| &r.event)
        .filter(|e| !new.contains(e.id.as_str()))
        .collect();
    let mut originals = HashMap::new();
    if !repeated.is_empty() {
        let tenants: Vec<&str> = repeated.iter().map(|e| e.tenant_id.as_str()).collect();
        let keys: Vec<Option<&str>> = repeated
            .iter()
            .map(|e| e.idempotency_key.as_ref().map(|k| k.as_str()))
            .collect();
        let found = rows::query(
            t,
            "SELECT e.tenant_id, e.idempotency_key, e.id, \
               (SELECT count(*) FROM deliveries d WHERE d.event_id = e.id) \
             FROM events e JOIN UNNEST($1::text[], $2::text[]) AS k(tenant_id, idempotency_key) \
             ON e.tenant_id = k.tenant_id AND e.idempotency_key = k.idempotency_key",
            &[&tenants, &keys],
        )
        .await?;
        for row in &found {
            let original = original(row).map_err(StoreError::from)?;
            originals.insert(original.0, (original.1, original.2));
        }
    }
    records
        .iter()
        .map(|record| {
            let event = &record.event;
            if new.contains(event.id.as_str()) {
                return Ok(Inserted::New);
            }
            let key = (
                event.tenant_id.to_string(),
                event
                    .idempotency_key
                    .as_ref()
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
            );
            let (original, deliveries) =
                originals
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt {
                        detail: format!("event {} was neither stored nor a duplicate", event.id),
                    })?;
            Ok(Inserted::Duplicate {
                original,
                deliveries,
            })
        })
        .collect()
}

/// A row of the originals query: (tenant, key) and (original id, delivery count).
#[allow(clippy::type_complexity)]
fn original(row: &Row) -> Result<((String, String), EventId, u32), Undecodable> {
    use crate::decode::Columns;
    let text = |i| {
        row.text(i)?
            .ok_or_else(|| Undecodable::new(i, "unexpected NULL"))
    };
    let id = text(2)?;
    let id = EventId::parse(&id).ok_or_else(|| Undecodable::new(2, "not an event id"))?;
    let deliveries = row.integer(3)?.unwrap_or(0);
    Ok((
        (text(0)?, text(1)?),
        id,
        u32::try_from(deliveries).unwrap_or(u32::MAX),
    ))
}

pub(super) async fn event_deliveries(
    store: &Database,
    tenant: &TenantId,
    event: &EventId,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 AND tenant_id = $2 ORDER BY id"
    );
    children(store, &sql, event.as_str(), tenant, decode::delivery).await
}

pub(super) async fn list_attempts(
    store: &Database,
    tenant: &TenantId,
    delivery: &DeliveryId,
) -> Result<Vec<Attempt>, StoreError> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 AND tenant_id = $2 ORDER BY number, id"
    );
    children(store, &sql, delivery.as_str(), tenant, decode::attempt).await
}

/// The rows `sql` selects for one parent record of a tenant (`$1` the parent's id,
/// `$2` the tenant).
async fn children<T>(
    store: &Database,
    sql: &str,
    parent: &str,
    tenant: &TenantId,
    decode: rows::Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let client = store.client().await?;
    rows::all(&client, sql, &[&parent, &tenant.as_str()], decode).await
}

/// Statement parameters built up with their conditions.
#[derive(Default)]
struct Selection {
    conditions: Vec<String>,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Selection {
    /// Adds `column <op> $n` with its value.
    fn add(&mut self, column_and_op: &str, value: impl ToSql + Sync + Send + 'static) {
        self.values.push(Box::new(value));
        self.conditions
            .push(format!("{column_and_op} ${}", self.values.len()));
    }

    /// The placeholder of a value added without a condition.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    fn condition(&self) -> String {
        self.conditions.join(" AND ")
    }
}

/// The conditions selecting a tenant's deliveries by `query`.
fn selection(tenant: &TenantId, query: &DeliveryQuery) -> Selection {
    let mut selection = Selection::default();
    selection.add("tenant_id =", tenant.to_string());
    if let Some(status) = query.status {
        // Written out, not bound (a status is one of four fixed words): the planner can
        // then use the partial index of dead letters.
        selection
            .conditions
            .push(format!("status = '{}'", status.as_str()));
    }
    if let Some(target) = &query.target_id {
        selection.add("target_id =", target.to_string());
    }
    if let Some(event_type) = &query.event_type {
        selection.add("event_type =", event_type.to_string());
    }
    if let Some(from) = query.created_from {
        selection.add("created_at >=", from.as_millis());
    }
    if let Some(until) = query.created_until {
        selection.add("created_at <", until.as_millis());
    }
    selection
}

pub(super) async fn list_deliveries(
    store: &Database,
    tenant: &TenantId,
    query: &DeliveryQuery,
    page: &PageRequest,
) -> Result<Page<Delivery>, StoreError> {
    let mut selection = selection(tenant, query);
    selection.add("id >", page.after.clone().unwrap_or_default());
    let limit = selection.bind(i64::from(page.limit) + 1);
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {} ORDER BY id LIMIT {limit}",
        selection.condition()
    );
    let client = store.client().await?;
    rows::page(
        &client,
        &sql,
        &selection.params(),
        page.limit,
        decode::delivery,
        |d| d.id.to_string(),
    )
    .await
}

pub(super) async fn requeue(
    store: &Database,
    tenant: &TenantId,
    which: &Requeue,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let (mut selection, extra) = match which {
        Requeue::One(id) => {
            let mut selection = Selection::default();
            selection.add("tenant_id =", tenant.to_string());
            selection.add("id =", id.to_string());
            (selection, "status <> 'delivering'".to_owned())
        }
        Requeue::Dead {
            query,
            dead_before,
            at_most,
        } => {
            let mut selection = selection(tenant, query);
            let condition = selection.condition();
            let before = selection.bind(dead_before.as_millis());
            let limit = selection.bind(i64::try_from(*at_most).unwrap_or(i64::MAX));
            // The outer `status` check is evaluated again on a row another transaction
            // changed meanwhile; the subquery's choice is not.
            let chosen = format!(
                "id IN (SELECT id FROM deliveries WHERE {condition} AND status = 'dead' \
                 AND updated_at < {before} LIMIT {limit}) AND status = 'dead'"
            );
            (selection, chosen)
        }
    };
    let now_param = selection.bind(now.as_millis());
    // Only to a target that exists, held shared until the end: a deleted target's
    // succeeded deliveries stay as history with nowhere to be sent again, and a
    // deletion under way waits for this requeue (then deletes what it put back) or is
    // waited for (and the target is found gone).
    let target_held =
        "EXISTS (SELECT 1 FROM targets t WHERE t.id = deliveries.target_id FOR KEY SHARE)";
    let sql = match which {
        Requeue::One(_) => format!(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = {now_param}, window_start = {now_param}, \
             updated_at = {now_param}, lease_expires_at = NULL, leased_by = NULL \
             WHERE {} AND {extra} AND {target_held} RETURNING target_id",
            selection.condition()
        ),
        Requeue::Dead { .. } => format!(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = {now_param}, window_start = {now_param}, \
             updated_at = {now_param}, lease_expires_at = NULL, leased_by = NULL \
             WHERE {extra} AND {target_held} RETURNING target_id"
        ),
    };
    requeue_returning_targets(store, &sql, &selection.params()).await
}

pub(super) async fn waiting_targets(store: &Database) -> Result<Vec<WaitingTarget>, StoreError> {
    let client = store.client().await?;
    let found = rows::query(&client, &lanes::waiting_targets_sql(), &[]).await?;
    // Each row is decoded on its own: one target that no longer decodes (a bug, a
    // manual edit) must not stop delivery to every other target.
    Ok(found
        .iter()
        .filter_map(|row| {
            lanes::waiting_target(row)
                .inspect_err(|error| {
                    let id = row.try_get::<_, String>(0).unwrap_or_default();
                    tracing::error!(target = id, %error, "skipping a target that no longer decodes");
                })
                .ok()
        })
        .collect())
}

pub(super) async fn claim(
    store: &Database,
    requests: Vec<ClaimRequest>,
    now: Timestamp,
    lease: Duration,
) -> Result<Claimed, StoreError> {
    store
        .transact(None, async |t| {
            let mut claimed = Vec::new();
            let mut held_back = Vec::new();
            for request in &requests {
                let held = claim_target(t, request, &store.instance_id, now, lease, &mut claimed);
                held_back.extend(held.await?);
            }
            Ok(Claimed {
                claims: attach_events_and_targets(t, claimed, now).await?,
                held_back,
            })
        })
        .await
}

/// Claims what `request` asks of one target, within its shared limits. The target's
/// `target_flow` row is locked first, so no other instance claims from it until this
/// transaction ends; if another instance holds it right now, the target is skipped
/// (it is being served) instead of waited for. Returns whether the target was held
/// back.
async fn claim_target(
    t: &Transaction<'_>,
    request: &ClaimRequest,
    instance: &str,
    now: Timestamp,
    lease: Duration,
    claimed: &mut Vec<(Delivery, i64)>,
) -> Result<Option<HeldBack>, StoreError> {
    let target = request.target_id.as_str();
    let locked = rows::query(
        t,
        "SELECT f.tokens, f.tokens_at FROM target_flow f JOIN targets t ON t.id = f.target_id \
         WHERE f.target_id = $1 AND t.active FOR NO KEY UPDATE OF f SKIP LOCKED",
        &[&target],
    )
    .await?;
    let Some(row) = locked.first() else {
        // Locked by another claimant (it is being served: ask again soon), or switched
        // off or deleted (nothing to claim, as on every backend).
        let active = rows::query(t, "SELECT active FROM targets WHERE id = $1", &[&target])
            .await?
            .first()
            .is_some_and(|row| row.try_get::<_, bool>(0).unwrap_or(false));
        return Ok(active.then(|| HeldBack {
            target_id: request.target_id.clone(),
            until: None,
        }));
    };
    let saved = SavedBucket {
        tokens: row.try_get(0).map_err(super::error::translate)?,
        at: row.try_get(1).map_err(super::error::translate)?,
    };
    // Counted after the lock, so every claim committed before it is seen.
    let in_flight = rows::query(
        t,
        "SELECT count(*) FROM deliveries WHERE target_id = $1 AND status = 'delivering'",
        &[&target],
    )
    .await?
    .first()
    .and_then(|row| row.try_get::<_, i64>(0).ok())
    .map_or(0, count);
    let mut bucket = limits::bucket(&request.limits, saved, now);
    let tokens = bucket.as_mut().map(|b| b.available(now));
    let granted = request.granted(in_flight, tokens);
    let (first_attempts, retries) = granted;
    let before = claimed.len();
    for (lane, limit) in [(FIRST_LANE, first_attempts), (RETRY_LANE, retries)] {
        if limit > 0 {
            let lane = LaneClaim {
                target: &request.target_id,
                lane,
                limit,
            };
            lane.claim(t, instance, now, lease, claimed).await?;
        }
    }
    if let Some(spent) = bucket
        .as_mut()
        .and_then(|bucket| limits::spend(bucket, saved, claimed.len() - before, now))
    {
        rows::execute(
            t,
            "UPDATE target_flow SET tokens = $2, tokens_at = $3 WHERE target_id = $1",
            &[&target, &spent.tokens, &spent.at],
        )
        .await?;
    }
    Ok(limits::held_back(request, granted, bucket.as_mut(), now))
}

/// Up to `limit` due deliveries of one lane of one target.
struct LaneClaim<'a> {
    target: &'a TargetId,
    lane: &'a str,
    limit: u32,
}

impl LaneClaim<'_> {
    /// Claims into `claimed`. Rows another instance is claiming at this moment are
    /// skipped, never waited for.
    async fn claim(
        &self,
        t: &Transaction<'_>,
        instance: &str,
        now: Timestamp,
        lease: Duration,
        claimed: &mut Vec<(Delivery, i64)>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE deliveries d SET status = 'delivering', lease_token = d.lease_token + 1, \
             lease_expires_at = $1, updated_at = $2, leased_by = $5 \
             FROM (SELECT id FROM deliveries WHERE status = 'pending' AND {lane} AND target_id = $3 \
                   AND next_attempt_at <= $2 \
                   ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) picked \
             WHERE d.id = picked.id RETURNING {columns}, d.lease_token",
            lane = self.lane,
            columns = qualified(DELIVERY_COLUMNS, "d"),
        );
        let found = rows::query(
            t,
            &sql,
            &[
                &now.plus(lease).as_millis(),
                &now.as_millis(),
                &self.target.as_str(),
                &i64::from(self.limit),
                &instance,
            ],
        )
        .await?;
        let token_column = decode::width(DELIVERY_COLUMNS);
        for row in &found {
            // Each row is decoded on its own: a row that no longer decodes is set
            // aside as dead instead of failing every claim after it.
            let decoded = decode::delivery(row).and_then(|delivery| {
                use crate::decode::Columns;
                let token = row
                    .integer(token_column)?
                    .ok_or_else(|| Undecodable::new(token_column, "no lease token"))?;
                Ok((delivery, token))
            });
            match decoded {
                Ok(claim) => claimed.push(claim),
                Err(error) => {
                    let id = row.try_get::<_, String>(0).unwrap_or_default();
                    set_aside(t, &id, &format!("stored delivery is corrupt: {error}"), now).await?;
                }
            }
        }
        Ok(())
    }
}

/// Completes claimed deliveries with their events and targets, each read once.
async fn attach_events_and_targets(
    t: &Transaction<'_>,
    claimed: Vec<(Delivery, i64)>,
    now: Timestamp,
) -> Result<Vec<Claim>, StoreError> {
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let events = load_by_id(
        t,
        "events",
        EVENT_COLUMNS,
        claimed.iter().map(|(d, _)| d.event_id.as_str()),
        decode::event,
        |e: &Event| e.id.to_string(),
    )
    .await?;
    let targets = load_by_id(
        t,
        "targets",
        TARGET_COLUMNS,
        claimed.iter().map(|(d, _)| d.target_id.as_str()),
        decode::target,
        |t: &Target| t.id.to_string(),
    )
    .await?;
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
            _ => {
                set_aside(
                    t,
                    delivery.id.as_str(),
                    "its stored event or target is corrupt",
                    now,
                )
                .await?;
            }
        }
    }
    Ok(claims)
}

/// Makes an unreadable delivery dead, with the reason, so it stays visible (and
/// redrivable once repaired) without blocking the queue.
async fn set_aside(
    t: &Transaction<'_>,
    id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    tracing::error!(
        delivery = id,
        reason,
        "setting aside an unreadable delivery as dead"
    );
    rows::execute(
        t,
        "UPDATE deliveries SET status = 'dead', last_error = $1, lease_expires_at = NULL, leased_by = NULL, \
         updated_at = $2 WHERE id = $3",
        &[&reason, &now.as_millis(), &id],
    )
    .await
    .map(drop)
}

/// Reads the rows of `table` with the given ids, once each, keyed by id.
async fn load_by_id<'a, T>(
    client: &impl GenericClient,
    table: &str,
    columns: &str,
    ids: impl Iterator<Item = &'a str>,
    decode: rows::Decode<T>,
    id_of: fn(&T) -> String,
) -> Result<HashMap<String, Arc<T>>, StoreError> {
    let mut ids: Vec<&str> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    let sql = format!("SELECT {columns} FROM {table} WHERE id = ANY($1)");
    let found = rows::query(client, &sql, &[&ids]).await?;
    let mut by_id = HashMap::new();
    for row in &found {
        // An unreadable row is left out; the claims that need it are set aside.
        match decode(row) {
            Ok(item) => {
                by_id.insert(id_of(&item), Arc::new(item));
            }
            Err(error) => tracing::error!(table, %error, "unreadable row"),
        }
    }
    Ok(by_id)
}

pub(super) async fn record_outcomes(
    store: &Database,
    outcomes: Vec<OutcomeRecord>,
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    store
        .transact(None, async |t| {
            let applied = apply_verdicts(t, &outcomes, now).await?;
            let was_applied =
                |o: &OutcomeRecord| applied.contains(&(o.delivery_id.to_string(), o.lease_token));
            let attempts: Vec<&Attempt> = outcomes
                .iter()
                .filter(|o| was_applied(o))
                .map(|o| &o.attempt)
                .collect();
            insert_attempts(t, &attempts).await?;
            Ok(outcomes.iter().map(was_applied).collect())
        })
        .await
}

/// Updates each delivery still under the claim that made its attempt; returns the
/// (delivery, lease token) pairs applied.
async fn apply_verdicts(
    t: &Transaction<'_>,
    outcomes: &[OutcomeRecord],
    now: Timestamp,
) -> Result<HashSet<(String, i64)>, StoreError> {
    let ids: Vec<&str> = outcomes.iter().map(|o| o.delivery_id.as_str()).collect();
    let tokens: Vec<i64> = outcomes.iter().map(|o| o.lease_token).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.verdict.status.as_str()).collect();
    let attempts: Vec<i64> = outcomes
        .iter()
        .map(|o| i64::from(o.verdict.attempts))
        .collect();
    let next: Vec<i64> = outcomes
        .iter()
        .map(|o| o.verdict.next_attempt_at.as_millis())
        .collect();
    let codes: Vec<Option<i64>> = outcomes
        .iter()
        .map(|o| o.verdict.last_status_code.map(i64::from))
        .collect();
    let errors: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.verdict.last_error.as_deref())
        .collect();
    let updated = rows::query(
        t,
        "UPDATE deliveries d SET status = v.status, attempts = v.attempts, next_attempt_at = v.next_attempt_at, \
         last_status_code = v.code, last_error = v.error, updated_at = $8, lease_expires_at = NULL, \
         leased_by = NULL \
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
         $7::text[]) AS v(id, token, status, attempts, next_attempt_at, code, error) \
         WHERE d.id = v.id AND d.lease_token = v.token AND d.status = 'delivering' \
         RETURNING d.id, d.lease_token",
        &[
            &ids,
            &tokens,
            &statuses,
            &attempts,
            &next,
            &codes,
            &errors,
            &now.as_millis(),
        ],
    )
    .await?;
    updated
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(super::error::translate)
}

async fn insert_attempts(t: &Transaction<'_>, attempts: &[&Attempt]) -> Result<(), StoreError> {
    if attempts.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&Attempt) -> &str| attempts.iter().map(|a| f(a)).collect::<Vec<_>>();
    let numbers: Vec<i64> = attempts.iter().map(|a| i64::from(a.number)).collect();
    let started: Vec<i64> = attempts.iter().map(|a| a.started_at.as_millis()).collect();
    let durations: Vec<i64> = attempts.iter().map(|a| i64::from(a.duration_ms)).collect();
    let codes: Vec<Option<i64>> = attempts
        .iter()
        .map(|a| a.status_code.map(i64::from))
        .collect();
    let errors: Vec<Option<&str>> = attempts.iter().map(|a| a.error.as_deref()).collect();
    let headers = attempts
        .iter()
        .map(|a| serde_json::to_string(&a.response_headers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::backend)?;
    let bodies: Vec<Option<&str>> = attempts
        .iter()
        .map(|a| a.response_body.as_deref())
        .collect();
    rows::execute(
        t,
        "INSERT INTO attempts (id, delivery_id, tenant_id, number, started_at, duration_ms, status_code, \
         error, response_headers, response_body) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], \
         $7::bigint[], $8::text[], $9::text[], $10::text[])",
        &[
            &text(|a| a.id.as_str()),
            &text(|a| a.delivery_id.as_str()),
            &text(|a| a.tenant_id.as_str()),
            &numbers,
            &started,
            &durations,
            &codes,
            &errors,
            &headers,
            &bodies,
        ],
    )
    .await
    .map(drop)
}

pub(super) async fn queue_stats(
    store: &Database,
    now: Timestamp,
) -> Result<QueueStats, StoreError> {
    let client = store.client().await?;
    let row = rows::query(
        &client,
        "SELECT \
           (SELECT count(*) FILTER (WHERE d.next_attempt_at <= $1) FROM deliveries d \
              JOIN targets t ON t.id = d.target_id WHERE d.status = 'pending' AND t.active), \
           (SELECT count(*) FILTER (WHERE d.next_attempt_at > $1) FROM deliveries d \
              JOIN targets t ON t.id = d.target_id WHERE d.status = 'pending' AND t.active), \
           (SELECT count(*) FROM circuits WHERE state <> 'closed')",
        &[&now.as_millis()],
    )
    .await?;
    let get = |i: usize| -> u64 {
        row.first()
            .and_then(|r| r.try_get::<_, i64>(i).ok())
            .map_or(0, count)
    };
    Ok(QueueStats {
        due: get(0),
        waiting: get(1),
        open_circuits: get(2),
    })
}

/// Puts leased deliveries back in their lanes, due now at the latest: every lease
/// (`only_expired` false) or those that expired by `now`.
pub(super) async fn release_leases(
    store: &Database,
    now: Timestamp,
    only_expired: bool,
) -> Result<u64, StoreError> {
    let sql = if only_expired {
        "UPDATE deliveries SET status = 'pending', lease_expires_at = NULL, leased_by = NULL, \
         next_attempt_at = LEAST(next_attempt_at, $1), updated_at = $1 \
         WHERE status = 'delivering' AND lease_expires_at <= $1 RETURNING target_id"
    } else {
        "UPDATE deliveries SET status = 'pending', lease_expires_at = NULL, leased_by = NULL, \
         next_attempt_at = LEAST(next_attempt_at, $1), updated_at = $1 \
         WHERE status = 'delivering' RETURNING target_id"
    };
    requeue_returning_targets(store, sql, &[&now.as_millis()]).await
}

/// Runs an update that makes deliveries due and returns their target ids, telling
/// the other instances those targets have work.
async fn requeue_returning_targets(
    store: &Database,
    sql: &str,
    params: rows::Params<'_>,
) -> Result<u64, StoreError> {
    store
        .transact(None, async |t| {
            let released = rows::query(t, sql, params).await?;
            let mut targets: Vec<TargetId> = released
                .iter()
                .filter_map(|row| row.try_get::<_, String>(0).ok())
                .filter_map(|id| TargetId::parse(&id))
                .collect();
            targets.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            targets.dedup();
            if !targets.is_empty() {
                store.notifier.send(t, &Change::Due(targets)).await?;
            }
            Ok(u64::try_from(released.len()).unwrap_or(u64::MAX))
        })
        .await
}

pub(super) async fn disable_target(
    store: &Database,
    target: &TargetId,
    reason: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    store
        .transact(None, async |t| {
            let changed = rows::query(
                t,
                "UPDATE targets SET active = false, disabled_reason = $2, updated_at = $3 \
                 WHERE id = $1 AND active RETURNING tenant_id",
                &[&target.as_str(), &reason, &now.as_millis()],
            )
            .await?;
            let tenant = changed
                .first()
                .and_then(|row| row.try_get::<_, String>(0).ok())
                .and_then(|id| TenantId::parse(&id));
            if let Some(tenant) = &tenant {
                store
                    .notifier
                    .send(t, &Change::Config(tenant.clone()))
                    .await?;
            }
            Ok(tenant.is_some())
        })
        .await
}

pub(super) async fn target_circuit(
    store: &Database,
    tenant: &TenantId,
    target: &TargetId,
) -> Result<Option<Circuit>, StoreError> {
    let sql = format!(
        "SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target_id = $1 \
         AND EXISTS (SELECT 1 FROM targets WHERE id = $1 AND tenant_id = $2)"
    );
    let client = store.client().await?;
    Ok(rows::optional(
        &client,
        &sql,
        &[&target.as_str(), &tenant.as_str()],
        |row| decode::circuit(row, 0),
    )
    .await?
    .flatten())
}

pub(super) async fn save_circuits(
    store: &Database,
    circuits: Vec<(TargetId, Circuit)>,
) -> Result<(), StoreError> {
    if circuits.is_empty() {
        return Ok(());
    }
    store
        .transact(None, async |t| {
            for (target, circuit) in &circuits {
                // A target deleted meanwhile has no circuit to keep.
                rows::execute(
                    t,
                    "INSERT INTO circuits (target_id, state, since, consecutive_failures, next_probe_at, opens) \
                     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM targets WHERE id = $1) \
                     ON CONFLICT (target_id) DO UPDATE SET state = excluded.state, since = excluded.since, \
                     consecutive_failures = excluded.consecutive_failures, \
                     next_probe_at = excluded.next_probe_at, opens = excluded.opens \
             WHERE circuits.since <= excluded.since",
                    &[
                        &target.as_str(),
                        &circuit.state.as_str(),
                        &circuit.since.as_millis(),
                        &i64::from(circuit.consecutive_failures),
                        &circuit.next_probe_at.map(Timestamp::as_millis),
                        &i64::from(circuit.opens),
                    ],
                )
                .await?;
                store
                    .notifier
                    .send(t, &Change::Circuit(target.clone()))
                    .await?;
            }
            Ok(())
        })
        .await
}
