//! Tenants and their API keys (admin operations), and key authentication.

use crate::auth::{ApiKey, KeyHash};
use crate::id::{ApiKeyId, TenantId};
use crate::model::{NewTenant, Tenant, TenantPatch};
use crate::store::{Page, PageRequest};
use crate::time::Timestamp;

use super::{Management, ResourceKind, ServiceError, found};

impl Management {
    /// Creates a tenant and its first API key; the plaintext key is returned once and
    /// never stored.
    pub async fn create_tenant(&self, input: NewTenant) -> Result<(Tenant, String), ServiceError> {
        let now = Timestamp::now();
        let tenant = Tenant {
            id: TenantId::generate(),
            name: input.name,
            ingest_rate_limit: input.ingest_rate_limit,
            created_at: now,
            updated_at: now,
        };
        let (key, plaintext) = ApiKey::generate(tenant.id.clone(), now);
        self.store.insert_tenant(&tenant, &key).await?;
        Ok((tenant, plaintext))
    }

    /// One tenant.
    pub async fn tenant(&self, id: &TenantId) -> Result<Tenant, ServiceError> {
        self.store
            .get_tenant(id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Tenant, id))
    }

    /// A page of tenants.
    pub async fn tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, ServiceError> {
        Ok(self.store.list_tenants(page).await?)
    }

    /// The Herald instances sharing the store, from their heartbeats.
    pub async fn instances(&self) -> Result<Vec<crate::store::Instance>, ServiceError> {
        Ok(self.store.instances().await?)
    }

    /// The Kafka records the Kafka source refused, oldest first.
    pub async fn parked_records(
        &self,
        page: &PageRequest,
    ) -> Result<Page<crate::store::ParkedRecord>, ServiceError> {
        Ok(self.store.list_parked(page).await?)
    }

    /// Changes a tenant.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        patch: TenantPatch,
    ) -> Result<Tenant, ServiceError> {
        let mut tenant = self.tenant(id).await?;
        patch.apply(&mut tenant, Timestamp::now());
        let existed = self.store.update_tenant(&tenant).await?;
        found(ResourceKind::Tenant, id, existed)?;
        Ok(tenant)
    }

    /// Deletes a tenant and everything it owns.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<(), ServiceError> {
        let existed = self.store.delete_tenant(id).await?;
        self.routes_changed(id);
        self.keys.clear();
        found(ResourceKind::Tenant, id, existed)
    }

    /// Adds an API key to a tenant; the plaintext is returned once.
    pub async fn create_api_key(
        &self,
        tenant: &TenantId,
    ) -> Result<(ApiKey, String), ServiceError> {
        self.tenant(tenant).await?;
        let (key, plaintext) = ApiKey::generate(tenant.clone(), Timestamp::now());
        self.store.insert_api_key(&key).await?;
        Ok((key, plaintext))
    }

    /// A tenant's API keys (hashes and prefixes only).
    pub async fn api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>, ServiceError> {
        self.tenant(tenant).await?;
        Ok(self.store.list_api_keys(tenant).await?)
    }

    /// Revokes one of a tenant's API keys.
    pub async fn delete_api_key(
        &self,
        tenant: &TenantId,
        id: &ApiKeyId,
    ) -> Result<(), ServiceError> {
        let existed = self.store.delete_api_key(tenant, id).await?;
        // The cache is keyed by hash, which the id does not give: forget them all.
        self.keys.clear();
        found(ResourceKind::ApiKey, id, existed)
    }

    /// The tenant a presented API key acts as, or `None` for an unknown key.
    pub async fn authenticate(
        &self,
        presented_key: &str,
    ) -> Result<Option<TenantId>, ServiceError> {
        let hash = KeyHash::of(presented_key);
        if let Some(tenant) = self.keys.get(&hash) {
            return Ok(Some(tenant));
        }
        let generation = self.keys.generation();
        let tenant = self.store.tenant_for_key(&hash).await?;
        if let Some(tenant) = &tenant {
            self.keys.put(generation, hash, tenant.clone());
        }
        Ok(tenant)
    }
}
