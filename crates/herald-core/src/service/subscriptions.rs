//! A tenant's subscriptions, which must bind the tenant's own target and filter.

use crate::id::{SubscriptionId, TenantId};
use crate::model::{NewSubscription, Subscription, SubscriptionPatch};
use crate::store::{Conflict, Page, PageRequest, StoreError};
use crate::time::Timestamp;
use crate::validation::ValidationError;

use super::{Management, ResourceKind, ServiceError, found};

impl Management {
    /// Creates a subscription after checking that its target and filter are the
    /// tenant's own.
    pub async fn create_subscription(
        &self,
        tenant: &TenantId,
        input: NewSubscription,
    ) -> Result<Subscription, ServiceError> {
        let now = Timestamp::now();
        let subscription = Subscription {
            id: SubscriptionId::generate(),
            tenant_id: tenant.clone(),
            target_id: input.target_id,
            filter_id: input.filter_id,
            active: input.active.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        self.check_references(&subscription).await?;
        self.store
            .insert_subscription(&subscription)
            .await
            .map_err(|error| explain_conflict(error, &subscription))?;
        self.routes_changed(tenant);
        Ok(subscription)
    }

    /// One of the tenant's subscriptions.
    pub async fn subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Subscription, ServiceError> {
        self.store
            .get_subscription(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Subscription, id))
    }

    /// A page of the tenant's subscriptions.
    pub async fn subscriptions(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, ServiceError> {
        Ok(self.store.list_subscriptions(tenant, page).await?)
    }

    /// Changes one of the tenant's subscriptions; a new target or filter must be the
    /// tenant's own too.
    pub async fn update_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
        patch: SubscriptionPatch,
    ) -> Result<Subscription, ServiceError> {
        let mut subscription = self.subscription(tenant, id).await?;
        patch.apply(&mut subscription, Timestamp::now());
        self.check_references(&subscription).await?;
        let existed = self
            .store
            .update_subscription(&subscription)
            .await
            .map_err(|error| explain_conflict(error, &subscription))?;
        self.routes_changed(tenant);
        found(ResourceKind::Subscription, id, existed)?;
        Ok(subscription)
    }

    /// Deletes one of the tenant's subscriptions.
    pub async fn delete_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<(), ServiceError> {
        let existed = self.store.delete_subscription(tenant, id).await?;
        self.routes_changed(tenant);
        found(ResourceKind::Subscription, id, existed)
    }

    /// Refuses a target or filter that is missing or another tenant's, naming the field.
    async fn check_references(&self, subscription: &Subscription) -> Result<(), ServiceError> {
        let tenant = &subscription.tenant_id;
        if self
            .store
            .get_target(tenant, &subscription.target_id)
            .await?
            .is_none()
        {
            let message = format!("target {} does not exist", subscription.target_id);
            return Err(ValidationError::new("targetId", message).into());
        }
        if self
            .store
            .get_filter(tenant, &subscription.filter_id)
            .await?
            .is_none()
        {
            let message = format!("filter {} does not exist", subscription.filter_id);
            return Err(ValidationError::new("filterId", message).into());
        }
        Ok(())
    }
}

fn explain_conflict(error: StoreError, subscription: &Subscription) -> ServiceError {
    match error {
        StoreError::Conflict(Conflict::Duplicate) => ServiceError::Conflict(format!(
            "target {} is already subscribed to filter {}",
            subscription.target_id, subscription.filter_id
        )),
        StoreError::Conflict(Conflict::MissingReference) => ServiceError::Conflict(format!(
            "target {} or filter {} was deleted while this request ran",
            subscription.target_id, subscription.filter_id
        )),
        other => other.into(),
    }
}
