//! The operations the API exposes, with the rules that are not a single field's.
//!
//! Field-level rules live in the validated types of [`crate::model`]; this layer adds
//! defaults, ownership (a tenant only ever reaches its own records), references
//! between records, and the translation of store conflicts into user-facing errors.

mod cache;
mod deliveries;
mod filters;
mod publish;
mod subscriptions;
mod targets;
mod tenants;

pub use publish::{Admission, NoAdmission, Published, UnknownTenant};

use std::fmt;
use std::sync::Arc;

use crate::auth::KeyHash;
use crate::id::{TargetId, TenantId};
use crate::model::Target;
use crate::routing::Route;
use crate::store::{Store, StoreError};

use crate::validation::ValidationError;
use cache::Cached;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The record does not exist, or belongs to another tenant (the two are
    /// deliberately indistinguishable).
    #[error("{kind} {id} does not exist")]
    NotFound {
        /// What kind of record was asked for.
        kind: ResourceKind,
        /// The id as the caller gave it.
        id: String,
    },
    /// The input breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The input is valid but clashes with stored data.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] StoreError),
}

impl ServiceError {
    fn not_found(kind: ResourceKind, id: impl fmt::Display) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// The kinds of record the API manages, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// A tenant.
    Tenant,
    /// A tenant's API key.
    ApiKey,
    /// A target.
    Target,
    /// A filter.
    Filter,
    /// A subscription.
    Subscription,
    /// An event.
    Event,
    /// A delivery.
    Delivery,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tenant => "tenant",
            Self::ApiKey => "API key",
            Self::Target => "target",
            Self::Filter => "filter",
            Self::Subscription => "subscription",
            Self::Event => "event",
            Self::Delivery => "delivery",
        })
    }
}

/// Management operations on tenants and their configuration.
#[derive(Clone)]
pub struct Management {
    store: Store,
    /// Each tenant's routes, read on every publish.
    routes: Arc<Cached<TenantId, Arc<Vec<Route>>>>,
    /// The tenant of each API key seen, read on every request.
    keys: Arc<Cached<KeyHash, TenantId>>,
    /// Targets as configured, read on every publish that starts a delivery at intake.
    targets: Arc<Cached<TargetId, Arc<Target>>>,
}

impl Management {
    /// Operations backed by `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            routes: Arc::default(),
            keys: Arc::default(),
            targets: Arc::default(),
        }
    }

    /// One of the tenant's targets as configured, from the cache when fresh.
    async fn cached_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Arc<Target>>, StoreError> {
        if let Some(target) = self.targets.get(id) {
            // Ids are unique across tenants; another tenant's target answers as missing.
            return Ok((target.tenant_id == *tenant).then_some(target));
        }
        let generation = self.targets.generation();
        let target = self.store.get_target(tenant, id).await?.map(Arc::new);
        if let Some(target) = &target {
            self.targets.put(generation, id.clone(), Arc::clone(target));
        }
        Ok(target)
    }

    /// Forgets cached targets after a change to one (or to the tenant).
    fn targets_changed(&self) {
        self.targets.clear();
    }

    /// The tenant's routes, from the cache when fresh.
    async fn cached_routes(&self, tenant: &TenantId) -> Result<Arc<Vec<Route>>, StoreError> {
        if let Some(routes) = self.routes.get(tenant) {
            return Ok(routes);
        }
        let generation = self.routes.generation();
        let routes = Arc::new(self.store.routes(tenant).await?);
        self.routes
            .put(generation, tenant.clone(), Arc::clone(&routes));
        Ok(routes)
    }

    /// Forgets the tenant's routes after a change to its targets, filters or
    /// subscriptions.
    fn routes_changed(&self, tenant: &TenantId) {
        self.routes.remove(tenant);
        self.targets_changed();
    }

    /// Forgets what is cached about `tenant` (every tenant for `None`) after another
    /// instance changed its configuration. Keys are cached by hash, so all are dropped.
    pub fn forget(&self, tenant: Option<&TenantId>) {
        match tenant {
            Some(tenant) => self.routes.remove(tenant),
            None => self.routes.clear(),
        }
        self.keys.clear();
        self.targets_changed();
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Turns `Ok(false)` from an update or delete into a not-found error.
fn found(kind: ResourceKind, id: impl fmt::Display, existed: bool) -> Result<(), ServiceError> {
    if existed {
        Ok(())
    } else {
        Err(ServiceError::not_found(kind, id))
    }
}
