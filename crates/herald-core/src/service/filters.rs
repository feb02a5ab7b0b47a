//! A tenant's filters.

use crate::id::{FilterId, TenantId};
use crate::model::{Filter, FilterPatch, NewFilter};
use crate::store::{Page, PageRequest};
use crate::time::Timestamp;

use super::{Management, ResourceKind, ServiceError, found};

impl Management {
    /// Creates a filter.
    pub async fn create_filter(
        &self,
        tenant: &TenantId,
        input: NewFilter,
    ) -> Result<Filter, ServiceError> {
        let now = Timestamp::now();
        let filter = Filter {
            id: FilterId::generate(),
            tenant_id: tenant.clone(),
            description: input.description,
            patterns: input.patterns,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_filter(&filter).await?;
        Ok(filter)
    }

    /// One of the tenant's filters.
    pub async fn filter(&self, tenant: &TenantId, id: &FilterId) -> Result<Filter, ServiceError> {
        self.store
            .get_filter(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Filter, id))
    }

    /// A page of the tenant's filters.
    pub async fn filters(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Filter>, ServiceError> {
        Ok(self.store.list_filters(tenant, page).await?)
    }

    /// Changes one of the tenant's filters.
    pub async fn update_filter(
        &self,
        tenant: &TenantId,
        id: &FilterId,
        patch: FilterPatch,
    ) -> Result<Filter, ServiceError> {
        let mut filter = self.filter(tenant, id).await?;
        patch.apply(&mut filter, Timestamp::now());
        let existed = self.store.update_filter(&filter).await?;
        self.routes_changed(tenant);
        found(ResourceKind::Filter, id, existed)?;
        Ok(filter)
    }

    /// Deletes one of the tenant's filters and the subscriptions that use it.
    pub async fn delete_filter(
        &self,
        tenant: &TenantId,
        id: &FilterId,
    ) -> Result<(), ServiceError> {
        let existed = self.store.delete_filter(tenant, id).await?;
        self.routes_changed(tenant);
        found(ResourceKind::Filter, id, existed)
    }
}
