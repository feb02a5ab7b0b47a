//! [`StoreBackend`] for SQLite: every write through the group-committing writer,
//! every read on the reader pool, every tenant-owned query scoped by `tenant_id`.

use async_trait::async_trait;
use herald_core::auth::{ApiKey, KeyHash};
use herald_core::flow::Circuit;
use std::time::Duration;

use herald_core::id::{
    ApiKeyId, DeliveryId, EventId, FilterId, SubscriptionId, TargetId, TenantId,
};
use herald_core::model::{Attempt, Delivery, Event, Filter, Subscription, Target, Tenant};
use herald_core::routing::Route;
use herald_core::store::{
    ClaimRequest, Claimed, DeliveryQuery, EventRecord, Inserted, Instance, OutcomeRecord, Page,
    PageRequest, ParkedRecord, QueueStats, Requeue, StoreBackend, StoreError, WaitingTarget,
};
use herald_core::time::Timestamp;
use rusqlite::{Connection, params};

use super::SqliteStore;
use super::rows::{
    self, API_KEY_COLUMNS, FILTER_COLUMNS, SUBSCRIPTION_COLUMNS, TARGET_COLUMNS, TENANT_COLUMNS,
    execute,
};
use super::writer::Lane;
use super::{housekeeping, parked, queue, schema};

/// The value `after` takes on the first page: every id sorts after the empty string.
fn after(page: &PageRequest) -> String {
    page.after.clone().unwrap_or_default()
}

/// One more row than asked for, so the page knows whether another follows.
fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

fn insert_api_key(connection: &Connection, key: &ApiKey) -> Result<(), StoreError> {
    execute(
        connection,
        "INSERT INTO api_keys (id, tenant_id, key_hash, visible_prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            key.id.as_str(),
            key.tenant_id.as_str(),
            &key.hash.0[..],
            key.visible_prefix,
            key.created_at.as_millis()
        ],
    )
    .map(drop)
}

fn write_target(
    connection: &Connection,
    target: &Target,
    insert: bool,
) -> Result<usize, StoreError> {
    let sql = if insert {
        "INSERT INTO targets (url, description, secret, headers, rate_limit_per_second, max_in_flight, \
         timeout_ms, active, created_at, updated_at, id, tenant_id, previous_secret, previous_secret_expires_at, \
         disabled_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    } else {
        "UPDATE targets SET url = ?1, description = ?2, secret = ?3, headers = ?4, rate_limit_per_second = ?5, \
         max_in_flight = ?6, timeout_ms = ?7, active = ?8, created_at = ?9, updated_at = ?10, \
         previous_secret = ?13, previous_secret_expires_at = ?14, disabled_reason = ?15 \
         WHERE id = ?11 AND tenant_id = ?12"
    };
    execute(
        connection,
        sql,
        params![
            target.url.as_str(),
            target.description.as_ref().map(|d| d.as_str()),
            target.secret.expose(),
            rows::headers_json(&target.headers),
            target.rate_limit.map(|r| r.per_second()),
            target.max_in_flight.get(),
            i64::try_from(target.timeout.as_millis()).unwrap_or(i64::MAX),
            target.active,
            target.created_at.as_millis(),
            target.updated_at.as_millis(),
            target.id.as_str(),
            target.tenant_id.as_str(),
            target.previous_secret.as_ref().map(|p| p.secret.expose()),
            target
                .previous_secret
                .as_ref()
                .map(|p| p.expires_at.as_millis()),
            target.disabled_reason,
        ],
    )
}

fn write_filter(
    connection: &Connection,
    filter: &Filter,
    insert: bool,
) -> Result<usize, StoreError> {
    let sql = if insert {
        "INSERT INTO filters (description, patterns, created_at, updated_at, id, tenant_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    } else {
        "UPDATE filters SET description = ?1, patterns = ?2, created_at = ?3, updated_at = ?4 \
         WHERE id = ?5 AND tenant_id = ?6"
    };
    execute(
        connection,
        sql,
        params![
            filter.description.as_ref().map(|d| d.as_str()),
            rows::patterns_json(&filter.patterns),
            filter.created_at.as_millis(),
            filter.updated_at.as_millis(),
            filter.id.as_str(),
            filter.tenant_id.as_str(),
        ],
    )
}

fn write_subscription(
    connection: &Connection,
    subscription: &Subscription,
    insert: bool,
) -> Result<usize, StoreError> {
    let sql = if insert {
        "INSERT INTO subscriptions (target_id, filter_id, active, created_at, updated_at, id, tenant_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    } else {
        "UPDATE subscriptions SET target_id = ?1, filter_id = ?2, active = ?3, created_at = ?4, updated_at = ?5 \
         WHERE id = ?6 AND tenant_id = ?7"
    };
    execute(
        connection,
        sql,
        params![
            subscription.target_id.as_str(),
            subscription.filter_id.as_str(),
            subscription.active,
            subscription.created_at.as_millis(),
            subscription.updated_at.as_millis(),
            subscription.id.as_str(),
            subscription.tenant_id.as_str(),
        ],
    )
}

impl SqliteStore {
    /// Deletes the row of `table` with this tenant and id; `table` is one of ours.
    async fn delete_owned(
        &self,
        table: &'static str,
        tenant: &TenantId,
        id: String,
    ) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.writer
            .write(move |c| {
                let sql = format!("DELETE FROM {table} WHERE id = ?1 AND tenant_id = ?2");
                execute(c, &sql, params![id, tenant.as_str()]).map(|n| n > 0)
            })
            .await
    }
}

#[async_trait]
impl StoreBackend for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let version = self.readers.read(schema::version).await?;
        crate::schema_version::require_current(version, schema::latest_version())
    }

    async fn insert_tenant(&self, tenant: &Tenant, first_key: &ApiKey) -> Result<(), StoreError> {
        let (tenant, key) = (tenant.clone(), first_key.clone());
        self.writer
            .write(move |c| {
                execute(
                    c,
                    "INSERT INTO tenants (id, name, created_at, updated_at, ingest_rate_limit) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        tenant.id.as_str(),
                        tenant.name.as_str(),
                        tenant.created_at.as_millis(),
                        tenant.updated_at.as_millis(),
                        tenant.ingest_rate_limit.map(|r| r.per_second()),
                    ],
                )?;
                insert_api_key(c, &key)
            })
            .await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let id = id.clone();
        self.readers
            .read(move |c| {
                let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1");
                rows::optional(c, &sql, [id.as_str()], rows::tenant)
            })
            .await
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError> {
        let page = page.clone();
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"
                );
                let params = params![after(&page), overfetch(&page)];
                rows::page(c, &sql, params, page.limit, rows::tenant, |t| {
                    t.id.to_string()
                })
            })
            .await
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<bool, StoreError> {
        let tenant = tenant.clone();
        self.writer
            .write(move |c| {
                execute(
                    c,
                    "UPDATE tenants SET name = ?1, updated_at = ?2, ingest_rate_limit = ?4 WHERE id = ?3",
                    params![
                        tenant.name.as_str(),
                        tenant.updated_at.as_millis(),
                        tenant.id.as_str(),
                        tenant.ingest_rate_limit.map(|r| r.per_second()),
                    ],
                )
                .map(|n| n > 0)
            })
            .await
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.writer
            .write(move |c| {
                execute(c, "DELETE FROM tenants WHERE id = ?1", [id.as_str()]).map(|n| n > 0)
            })
            .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.writer.write(move |c| insert_api_key(c, &key)).await
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let tenant = tenant.clone();
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY id"
                );
                rows::all(c, &sql, [tenant.as_str()], rows::api_key)
            })
            .await
    }

    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<bool, StoreError> {
        self.delete_owned("api_keys", tenant, id.to_string()).await
    }

    async fn tenant_for_key(&self, hash: &KeyHash) -> Result<Option<TenantId>, StoreError> {
        let hash = *hash;
        self.readers
            .read(move |c| {
                let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1");
                Ok(rows::optional(c, &sql, [&hash.0[..]], rows::api_key)?.map(|key| key.tenant_id))
            })
            .await
    }

    async fn insert_target(&self, target: &Target) -> Result<(), StoreError> {
        let target = target.clone();
        self.writer
            .write(move |c| write_target(c, &target, true).map(drop))
            .await
    }

    async fn get_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Target>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {TARGET_COLUMNS} FROM targets WHERE id = ?1 AND tenant_id = ?2"
                );
                rows::optional(c, &sql, [id.as_str(), tenant.as_str()], rows::target)
            })
            .await
    }

    async fn list_targets(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Target>, StoreError> {
        let (tenant, page) = (tenant.clone(), page.clone());
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {TARGET_COLUMNS} FROM targets WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                );
                let params = params![tenant.as_str(), after(&page), overfetch(&page)];
                rows::page(c, &sql, params, page.limit, rows::target, |t| t.id.to_string())
            })
            .await
    }

    async fn update_target(&self, target: &Target) -> Result<bool, StoreError> {
        let target = target.clone();
        self.writer
            .write(move |c| write_target(c, &target, false).map(|n| n > 0))
            .await
    }

    async fn delete_target(&self, tenant: &TenantId, id: &TargetId) -> Result<bool, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.writer
            .write(move |c| queue::delete_target(c, &tenant, &id))
            .await
    }

    async fn disable_target(
        &self,
        id: &TargetId,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (id, reason) = (id.clone(), reason.to_owned());
        self.writer
            .write(move |c| queue::disable_target(c, &id, &reason, now))
            .await
    }

    async fn target_circuit(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Circuit>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| queue::target_circuit(c, &tenant, &id))
            .await
    }

    async fn save_circuits(&self, circuits: Vec<(TargetId, Circuit)>) -> Result<(), StoreError> {
        self.writer
            .write(move |c| queue::save_circuits(c, &circuits))
            .await
    }

    async fn insert_filter(&self, filter: &Filter) -> Result<(), StoreError> {
        let filter = filter.clone();
        self.writer
            .write(move |c| write_filter(c, &filter, true).map(drop))
            .await
    }

    async fn get_filter(
        &self,
        tenant: &TenantId,
        id: &FilterId,
    ) -> Result<Option<Filter>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {FILTER_COLUMNS} FROM filters WHERE id = ?1 AND tenant_id = ?2"
                );
                rows::optional(c, &sql, [id.as_str(), tenant.as_str()], rows::filter)
            })
            .await
    }

    async fn list_filters(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Filter>, StoreError> {
        let (tenant, page) = (tenant.clone(), page.clone());
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {FILTER_COLUMNS} FROM filters WHERE tenant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                );
                let params = params![tenant.as_str(), after(&page), overfetch(&page)];
                rows::page(c, &sql, params, page.limit, rows::filter, |f| f.id.to_string())
            })
            .await
    }

    async fn update_filter(&self, filter: &Filter) -> Result<bool, StoreError> {
        let filter = filter.clone();
        self.writer
            .write(move |c| write_filter(c, &filter, false).map(|n| n > 0))
            .await
    }

    async fn delete_filter(&self, tenant: &TenantId, id: &FilterId) -> Result<bool, StoreError> {
        self.delete_owned("filters", tenant, id.to_string()).await
    }

    async fn insert_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let subscription = subscription.clone();
        self.writer
            .write(move |c| write_subscription(c, &subscription, true).map(drop))
            .await
    }

    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| {
                let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1 AND tenant_id = ?2");
                rows::optional(c, &sql, [id.as_str(), tenant.as_str()], rows::subscription)
            })
            .await
    }

    async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        let (tenant, page) = (tenant.clone(), page.clone());
        self.readers
            .read(move |c| {
                let sql = format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = ?1 AND id > ?2 \
                     ORDER BY id LIMIT ?3"
                );
                let params = params![tenant.as_str(), after(&page), overfetch(&page)];
                rows::page(c, &sql, params, page.limit, rows::subscription, |s| s.id.to_string())
            })
            .await
    }

    async fn update_subscription(&self, subscription: &Subscription) -> Result<bool, StoreError> {
        let subscription = subscription.clone();
        self.writer
            .write(move |c| write_subscription(c, &subscription, false).map(|n| n > 0))
            .await
    }

    async fn delete_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<bool, StoreError> {
        self.delete_owned("subscriptions", tenant, id.to_string())
            .await
    }

    async fn routes(&self, tenant: &TenantId) -> Result<Vec<Route>, StoreError> {
        let tenant = tenant.clone();
        self.readers.read(move |c| queue::routes(c, &tenant)).await
    }

    async fn insert_events(&self, records: Vec<EventRecord>) -> Result<Vec<Inserted>, StoreError> {
        let lane = records
            .first()
            .map_or(Lane::Engine, |r| Lane::Intake(r.event.tenant_id.clone()));
        self.writer
            .write_in(lane, move |c| queue::insert_events(c, &records))
            .await
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<Event>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| queue::get_event(c, &tenant, &id))
            .await
    }

    async fn event_deliveries(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (tenant, event) = (tenant.clone(), event.clone());
        self.readers
            .read(move |c| queue::event_deliveries(c, &tenant, &event))
            .await
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        let (tenant, query, page) = (tenant.clone(), query.clone(), page.clone());
        self.readers
            .read(move |c| queue::list_deliveries(c, &tenant, &query, &page))
            .await
    }

    async fn get_delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, StoreError> {
        let (tenant, id) = (tenant.clone(), id.clone());
        self.readers
            .read(move |c| queue::get_delivery(c, &tenant, &id))
            .await
    }

    async fn list_attempts(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Vec<Attempt>, StoreError> {
        let (tenant, delivery) = (tenant.clone(), delivery.clone());
        self.readers
            .read(move |c| queue::list_attempts(c, &tenant, &delivery))
            .await
    }

    async fn requeue(
        &self,
        tenant: &TenantId,
        which: &Requeue,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let (tenant, which) = (tenant.clone(), which.clone());
        self.writer
            .write(move |c| queue::requeue(c, &tenant, &which, now))
            .await
    }

    async fn waiting_targets(&self) -> Result<Vec<WaitingTarget>, StoreError> {
        self.readers.read(queue::waiting_targets).await
    }

    async fn claim(
        &self,
        requests: Vec<ClaimRequest>,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        self.writer
            .write(move |c| queue::claim(c, &requests, now, lease))
            .await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<OutcomeRecord>,
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError> {
        self.writer
            .write(move |c| queue::record_outcomes(c, &outcomes, now))
            .await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<QueueStats, StoreError> {
        self.readers.read(move |c| queue::queue_stats(c, now)).await
    }

    async fn recover_expired_leases(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| queue::release_leases(c, now, true))
            .await
    }

    async fn release_all_leases(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| queue::release_leases(c, now, false))
            .await
    }

    async fn extend_leases(
        &self,
        leases: Vec<(DeliveryId, i64)>,
        until: Timestamp,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| housekeeping::extend_leases(c, &leases, until))
            .await
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<(), StoreError> {
        let instance = instance.clone();
        self.writer
            .write(move |c| housekeeping::heartbeat(c, &instance))
            .await
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.readers.read(housekeeping::instances).await
    }

    async fn forget_instances(&self, stale_before: Timestamp) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| housekeeping::forget_instances(c, stale_before))
            .await
    }

    async fn take_leadership(
        &self,
        instance: &str,
        now: Timestamp,
        term: Duration,
    ) -> Result<bool, StoreError> {
        let instance = instance.to_owned();
        self.writer
            .write(move |c| housekeeping::take_leadership(c, &instance, now, now.plus(term)))
            .await
    }

    async fn purge_finished(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        self.writer
            .write(move |c| housekeeping::purge_finished(c, created_before, limit))
            .await
    }

    async fn park_records(&self, records: Vec<ParkedRecord>) -> Result<(), StoreError> {
        self.writer.write(move |c| parked::park(c, &records)).await
    }

    async fn list_parked(&self, page: &PageRequest) -> Result<Page<ParkedRecord>, StoreError> {
        let page = page.clone();
        self.readers.read(move |c| parked::list(c, &page)).await
    }
}
