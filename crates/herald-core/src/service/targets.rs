//! A tenant's targets.

use crate::flow::Circuit;
use crate::id::{TargetId, TenantId};
use crate::model::{NewTarget, Target, TargetPatch};
use crate::store::{Page, PageRequest};
use crate::time::Timestamp;

use super::{Management, ResourceKind, ServiceError, found};

impl Management {
    /// Creates a target, generating its secret when none was given.
    pub async fn create_target(
        &self,
        tenant: &TenantId,
        input: NewTarget,
    ) -> Result<Target, ServiceError> {
        let target = input.into_target(tenant.clone(), Timestamp::now());
        self.store.insert_target(&target).await?;
        Ok(target)
    }

    /// One of the tenant's targets.
    pub async fn target(&self, tenant: &TenantId, id: &TargetId) -> Result<Target, ServiceError> {
        self.store
            .get_target(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Target, id))
    }

    /// A target's circuit breaker as last saved (closed if it never opened).
    pub async fn target_circuit(
        &self,
        tenant: &TenantId,
        target: &Target,
    ) -> Result<Circuit, ServiceError> {
        Ok(self
            .store
            .target_circuit(tenant, &target.id)
            .await?
            .unwrap_or_else(|| Circuit::closed(target.created_at)))
    }

    /// A page of the tenant's targets.
    pub async fn targets(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Target>, ServiceError> {
        Ok(self.store.list_targets(tenant, page).await?)
    }

    /// Changes one of the tenant's targets.
    pub async fn update_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        patch: TargetPatch,
    ) -> Result<Target, ServiceError> {
        let mut target = self.target(tenant, id).await?;
        patch.apply(&mut target, Timestamp::now());
        let existed = self.store.update_target(&target).await?;
        self.routes_changed(tenant);
        found(ResourceKind::Target, id, existed)?;
        Ok(target)
    }

    /// Deletes one of the tenant's targets, the subscriptions that use it and the
    /// deliveries it is still owed or saw die (see [`crate::store::StoreBackend`]).
    pub async fn delete_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<(), ServiceError> {
        let existed = self.store.delete_target(tenant, id).await?;
        self.routes_changed(tenant);
        found(ResourceKind::Target, id, existed)
    }
}

/// How long a rotated-out secret keeps signing beside the new one.
pub const SECRET_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Management {
    /// Gives a target a new secret (`new`, or a generated one); the old one keeps
    /// signing beside it for [`SECRET_GRACE_PERIOD`].
    pub async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        new: Option<crate::secret::TargetSecret>,
    ) -> Result<Target, ServiceError> {
        let mut target = self.target(tenant, id).await?;
        let new = new.unwrap_or_else(crate::secret::TargetSecret::generate);
        target.rotate_secret(new, SECRET_GRACE_PERIOD, Timestamp::now());
        let existed = self.store.update_target(&target).await?;
        self.targets_changed();
        found(ResourceKind::Target, id, existed)?;
        Ok(target)
    }
}
