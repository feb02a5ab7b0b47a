//! [`StoreBackend`] for PostgreSQL: configuration reads and writes here, the queue in
//! [`super::queue`]. Every tenant-owned query is scoped by `tenant_id`, and every
//! configuration write tells the other instances, so their caches follow within the
//! time a notification takes.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use herald_core::auth::{ApiKey, KeyHash};
use herald_core::flow::Circuit;
use herald_core::id::{
    ApiKeyId, DeliveryId, EventId, FilterId, SubscriptionId, TargetId, TenantId,
};
use herald_core::model::{Attempt, Delivery, Event, Filter, Subscription, Target, Tenant};
use herald_core::routing::Route;
use herald_core::store::{
    Change, ChangeListener, ClaimRequest, Claimed, DeliveryQuery, EventRecord, Inserted, Instance,
    OutcomeRecord, Page, PageRequest, ParkedRecord, QueueStats, Requeue, StoreBackend, StoreError,
    WaitingTarget,
};
use herald_core::time::Timestamp;

use super::error::translate;
use super::rows::{self, big};
use super::{Database, PostgresStore, housekeeping, parked, queue, schema};
use crate::decode::{
    self, API_KEY_COLUMNS, FILTER_COLUMNS, SUBSCRIPTION_COLUMNS, TARGET_COLUMNS, TENANT_COLUMNS,
};

/// The value `after` takes on the first page: every id sorts after the empty string.
fn after(page: &PageRequest) -> String {
    page.after.clone().unwrap_or_default()
}

/// One more row than asked for, so the page knows whether another follows.
fn overfetch(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

impl Database {
    /// Runs `work` in one transaction and commits it; `change`, if any, reaches the
    /// other instances when the transaction commits.
    pub(super) async fn transact<T>(
        &self,
        change: Option<Change>,
        work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(translate)?;
        let result = work(&transaction).await?;
        if let Some(change) = change {
            self.notifier.send(&transaction, &change).await?;
        }
        let started = std::time::Instant::now();
        transaction.commit().await.map_err(translate)?;
        (self.observer)(started.elapsed());
        Ok(result)
    }
}

impl PostgresStore {
    /// Runs one configuration write of `tenant` and tells the other instances.
    async fn write_config(
        &self,
        tenant: &TenantId,
        sql: &str,
        params: rows::Params<'_>,
    ) -> Result<u64, StoreError> {
        self.database
            .transact(Some(Change::Config(tenant.clone())), async |t| {
                rows::execute(t, sql, params).await
            })
            .await
    }

    async fn delete_owned(
        &self,
        table: &'static str,
        tenant: &TenantId,
        id: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {table} WHERE id = $1 AND tenant_id = $2");
        Ok(self
            .write_config(tenant, &sql, &[&id, &tenant.as_str()])
            .await?
            > 0)
    }

    async fn write_target(&self, target: &Target, insert: bool) -> Result<u64, StoreError> {
        let sql = if insert {
            // With the row its claims lock (see `queue::claim`).
            "WITH inserted AS ( \
               INSERT INTO targets (url, description, secret, headers, rate_limit_per_second, max_in_flight, \
               timeout_ms, active, created_at, updated_at, id, tenant_id, previous_secret, \
               previous_secret_expires_at, disabled_reason) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id) \
             INSERT INTO target_flow (target_id) SELECT id FROM inserted"
        } else {
            "UPDATE targets SET url = $1, description = $2, secret = $3, headers = $4, \
             rate_limit_per_second = $5, max_in_flight = $6, timeout_ms = $7, active = $8, created_at = $9, \
             updated_at = $10, previous_secret = $13, previous_secret_expires_at = $14, disabled_reason = $15 \
             WHERE id = $11 AND tenant_id = $12"
        };
        self.write_config(
            &target.tenant_id,
            sql,
            &[
                &target.url.as_str(),
                &target.description.as_ref().map(|d| d.as_str()),
                &target.secret.expose(),
                &decode::headers_json(&target.headers),
                &target.rate_limit.map(|r| r.per_second()),
                &i64::from(target.max_in_flight.get()),
                &big(target.timeout.as_millis()),
                &target.active,
                &target.created_at.as_millis(),
                &target.updated_at.as_millis(),
                &target.id.as_str(),
                &target.tenant_id.as_str(),
                &target.previous_secret.as_ref().map(|p| p.secret.expose()),
                &target
                    .previous_secret
                    .as_ref()
                    .map(|p| p.expires_at.as_millis()),
                &target.disabled_reason,
            ],
        )
        .await
    }

    async fn write_filter(&self, filter: &Filter, insert: bool) -> Result<u64, StoreError> {
        let sql = if insert {
            "INSERT INTO filters (description, patterns, created_at, updated_at, id, tenant_id) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        } else {
            "UPDATE filters SET description = $1, patterns = $2, created_at = $3, updated_at = $4 \
             WHERE id = $5 AND tenant_id = $6"
        };
        self.write_config(
            &filter.tenant_id,
            sql,
            &[
                &filter.description.as_ref().map(|d| d.as_str()),
                &decode::patterns_json(&filter.patterns),
                &filter.created_at.as_millis(),
                &filter.updated_at.as_millis(),
                &filter.id.as_str(),
                &filter.tenant_id.as_str(),
            ],
        )
        .await
    }

    async fn write_subscription(
        &self,
        subscription: &Subscription,
        insert: bool,
    ) -> Result<u64, StoreError> {
        let sql = if insert {
            "INSERT INTO subscriptions (target_id, filter_id, active, created_at, updated_at, id, tenant_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        } else {
            "UPDATE subscriptions SET target_id = $1, filter_id = $2, active = $3, created_at = $4, \
             updated_at = $5 WHERE id = $6 AND tenant_id = $7"
        };
        self.write_config(
            &subscription.tenant_id,
            sql,
            &[
                &subscription.target_id.as_str(),
                &subscription.filter_id.as_str(),
                &subscription.active,
                &subscription.created_at.as_millis(),
                &subscription.updated_at.as_millis(),
                &subscription.id.as_str(),
                &subscription.tenant_id.as_str(),
            ],
        )
        .await
    }

    /// Reads one of a tenant's rows of `table` by id.
    async fn get_owned<T>(
        &self,
        table: &str,
        columns: &str,
        tenant: &TenantId,
        id: &str,
        decode: rows::Decode<T>,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT {columns} FROM {table} WHERE id = $1 AND tenant_id = $2");
        let client = self.database.client().await?;
        rows::optional(&client, &sql, &[&id, &tenant.as_str()], decode).await
    }

    /// One page of a tenant's rows of `table`, in id order.
    async fn list_owned<T>(
        &self,
        table: &str,
        columns: &str,
        tenant: &TenantId,
        page: &PageRequest,
        decode: rows::Decode<T>,
        id_of: fn(&T) -> String,
    ) -> Result<Page<T>, StoreError> {
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let client = self.database.client().await?;
        rows::page(
            &client,
            &sql,
            &[&tenant.as_str(), &after(page), &overfetch(page)],
            page.limit,
            decode,
            id_of,
        )
        .await
    }
}

async fn insert_api_key(client: &Transaction<'_>, key: &ApiKey) -> Result<u64, StoreError> {
    rows::execute(
        client,
        "INSERT INTO api_keys (id, tenant_id, key_hash, visible_prefix, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &key.id.as_str(),
            &key.tenant_id.as_str(),
            &&key.hash.0[..],
            &key.visible_prefix,
            &key.created_at.as_millis(),
        ],
    )
    .await
}

#[async_trait]
impl StoreBackend for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.database.client().await?;
        let version = schema::version(&client).await?;
        crate::schema_version::require_current(version, schema::latest_version())
    }

    async fn insert_tenant(&self, tenant: &Tenant, first_key: &ApiKey) -> Result<(), StoreError> {
        self.database
            .transact(None, async |t| {
                rows::execute(
                    t,
                    "INSERT INTO tenants (id, name, created_at, updated_at, ingest_rate_limit) \
                 VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &tenant.id.as_str(),
                        &tenant.name.as_str(),
                        &tenant.created_at.as_millis(),
                        &tenant.updated_at.as_millis(),
                        &tenant.ingest_rate_limit.map(|r| r.per_second()),
                    ],
                )
                .await?;
                insert_api_key(t, first_key).await.map(drop)
            })
            .await
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError> {
        let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
        let client = self.database.client().await?;
        rows::optional(&client, &sql, &[&id.as_str()], decode::tenant).await
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError> {
        let sql =
            format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 ORDER BY id LIMIT $2");
        let client = self.database.client().await?;
        rows::page(
            &client,
            &sql,
            &[&after(page), &overfetch(page)],
            page.limit,
            decode::tenant,
            |t| t.id.to_string(),
        )
        .await
    }

    async fn update_tenant(&self, tenant: &Tenant) -> Result<bool, StoreError> {
        let changed = self
            .write_config(
                &tenant.id,
                "UPDATE tenants SET name = $1, updated_at = $2, ingest_rate_limit = $4 WHERE id = $3",
                &[
                    &tenant.name.as_str(),
                    &tenant.updated_at.as_millis(),
                    &tenant.id.as_str(),
                    &tenant.ingest_rate_limit.map(|r| r.per_second()),
                ],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
        let changed = self
            .write_config(id, "DELETE FROM tenants WHERE id = $1", &[&id.as_str()])
            .await?;
        Ok(changed > 0)
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.database
            .transact(Some(Change::Config(key.tenant_id.clone())), async |t| {
                insert_api_key(t, key).await.map(drop)
            })
            .await
    }

    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let sql =
            format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id");
        let client = self.database.client().await?;
        rows::all(&client, &sql, &[&tenant.as_str()], decode::api_key).await
    }

    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<bool, StoreError> {
        self.delete_owned("api_keys", tenant, id.as_str()).await
    }

    async fn tenant_for_key(&self, hash: &KeyHash) -> Result<Option<TenantId>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1");
        let client = self.database.client().await?;
        Ok(
            rows::optional(&client, &sql, &[&&hash.0[..]], decode::api_key)
                .await?
                .map(|key| key.tenant_id),
        )
    }

    async fn insert_target(&self, target: &Target) -> Result<(), StoreError> {
        self.write_target(target, true).await.map(drop)
    }

    async fn get_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Target>, StoreError> {
        self.get_owned(
            "targets",
            TARGET_COLUMNS,
            tenant,
            id.as_str(),
            decode::target,
        )
        .await
    }

    async fn list_targets(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Target>, StoreError> {
        self.list_owned(
            "targets",
            TARGET_COLUMNS,
            tenant,
            page,
            decode::target,
            |t| t.id.to_string(),
        )
        .await
    }

    async fn update_target(&self, target: &Target) -> Result<bool, StoreError> {
        Ok(self.write_target(target, false).await? > 0)
    }

    async fn delete_target(&self, tenant: &TenantId, id: &TargetId) -> Result<bool, StoreError> {
        queue::delete_target(&self.database, tenant, id).await
    }

    async fn disable_target(
        &self,
        id: &TargetId,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        queue::disable_target(&self.database, id, reason, now).await
    }

    async fn target_circuit(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Circuit>, StoreError> {
        queue::target_circuit(&self.database, tenant, id).await
    }

    async fn save_circuits(&self, circuits: Vec<(TargetId, Circuit)>) -> Result<(), StoreError> {
        queue::save_circuits(&self.database, circuits).await
    }

    async fn insert_filter(&self, filter: &Filter) -> Result<(), StoreError> {
        self.write_filter(filter, true).await.map(drop)
    }

    async fn get_filter(
        &self,
        tenant: &TenantId,
        id: &FilterId,
    ) -> Result<Option<Filter>, StoreError> {
        self.get_owned(
            "filters",
            FILTER_COLUMNS,
            tenant,
            id.as_str(),
            decode::filter,
        )
        .await
    }

    async fn list_filters(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Filter>, StoreError> {
        self.list_owned(
            "filters",
            FILTER_COLUMNS,
            tenant,
            page,
            decode::filter,
            |f| f.id.to_string(),
        )
        .await
    }

    async fn update_filter(&self, filter: &Filter) -> Result<bool, StoreError> {
        Ok(self.write_filter(filter, false).await? > 0)
    }

    async fn delete_filter(&self, tenant: &TenantId, id: &FilterId) -> Result<bool, StoreError> {
        self.delete_owned("filters", tenant, id.as_str()).await
    }

    async fn insert_subscription(&self, subscription: &Subscription) -> Result<(), StoreError> {
        self.write_subscription(subscription, true).await.map(drop)
    }

    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        self.get_owned(
            "subscriptions",
            SUBSCRIPTION_COLUMNS,
            tenant,
            id.as_str(),
            decode::subscription,
        )
        .await
    }

    async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        self.list_owned(
            "subscriptions",
            SUBSCRIPTION_COLUMNS,
            tenant,
            page,
            decode::subscription,
            |s| s.id.to_string(),
        )
        .await
    }

    async fn update_subscription(&self, subscription: &Subscription) -> Result<bool, StoreError> {
        Ok(self.write_subscription(subscription, false).await? > 0)
    }

    async fn delete_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<bool, StoreError> {
        self.delete_owned("subscriptions", tenant, id.as_str())
            .await
    }

    async fn routes(&self, tenant: &TenantId) -> Result<Vec<Route>, StoreError> {
        let client = self.database.client().await?;
        rows::all(
            &client,
            "SELECT s.id, s.target_id, f.patterns FROM subscriptions s \
             JOIN targets t ON t.id = s.target_id JOIN filters f ON f.id = s.filter_id \
             WHERE s.tenant_id = $1 AND s.active AND t.active ORDER BY s.id",
            &[&tenant.as_str()],
            decode::route,
        )
        .await
    }

    async fn insert_events(&self, records: Vec<EventRecord>) -> Result<Vec<Inserted>, StoreError> {
        self.intake.insert(records).await
    }

    async fn get_event(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<Event>, StoreError> {
        self.get_owned(
            "events",
            decode::EVENT_COLUMNS,
            tenant,
            id.as_str(),
            decode::event,
        )
        .await
    }

    async fn event_deliveries(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> Result<Vec<Delivery>, StoreError> {
        queue::event_deliveries(&self.database, tenant, event).await
    }

    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError> {
        queue::list_deliveries(&self.database, tenant, query, page).await
    }

    async fn get_delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, StoreError> {
        self.get_owned(
            "deliveries",
            decode::DELIVERY_COLUMNS,
            tenant,
            id.as_str(),
            decode::delivery,
        )
        .await
    }

    async fn list_attempts(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Vec<Attempt>, StoreError> {
        queue::list_attempts(&self.database, tenant, delivery).await
    }

    async fn requeue(
        &self,
        tenant: &TenantId,
        which: &Requeue,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        queue::requeue(&self.database, tenant, which, now).await
    }

    async fn waiting_targets(&self) -> Result<Vec<WaitingTarget>, StoreError> {
        queue::waiting_targets(&self.database).await
    }

    async fn claim(
        &self,
        requests: Vec<ClaimRequest>,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        queue::claim(&self.database, requests, now, lease).await
    }

    async fn record_outcomes(
        &self,
        outcomes: Vec<OutcomeRecord>,
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError> {
        queue::record_outcomes(&self.database, outcomes, now).await
    }

    async fn queue_stats(&self, now: Timestamp) -> Result<QueueStats, StoreError> {
        queue::queue_stats(&self.database, now).await
    }

    async fn recover_expired_leases(&self, now: Timestamp) -> Result<u64, StoreError> {
        queue::release_leases(&self.database, now, true).await
    }

    async fn release_all_leases(&self, now: Timestamp) -> Result<u64, StoreError> {
        queue::release_leases(&self.database, now, false).await
    }

    async fn extend_leases(
        &self,
        leases: Vec<(DeliveryId, i64)>,
        until: Timestamp,
    ) -> Result<u64, StoreError> {
        housekeeping::extend_leases(&self.database, leases, until).await
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<(), StoreError> {
        housekeeping::heartbeat(&self.database, instance).await
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        housekeeping::instances(&self.database).await
    }

    async fn forget_instances(&self, stale_before: Timestamp) -> Result<u64, StoreError> {
        housekeeping::forget_instances(&self.database, stale_before).await
    }

    async fn take_leadership(
        &self,
        instance: &str,
        now: Timestamp,
        term: Duration,
    ) -> Result<bool, StoreError> {
        housekeeping::take_leadership(&self.database, instance, now, now.plus(term)).await
    }

    async fn purge_finished(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError> {
        housekeeping::purge_finished(&self.database, created_before, limit).await
    }

    async fn park_records(&self, records: Vec<ParkedRecord>) -> Result<(), StoreError> {
        parked::park(&self.database, records).await
    }

    async fn list_parked(&self, page: &PageRequest) -> Result<Page<ParkedRecord>, StoreError> {
        parked::list(&self.database, page).await
    }

    fn watch(&self, listener: ChangeListener) {
        self.listener.set(listener);
    }
}
