//! Tenants: accounts whose data no other tenant can see.

use crate::id::TenantId;
use crate::model::RateLimit;
use crate::time::Timestamp;
use crate::validation::ValidationError;

use super::text::bounded_text;

/// Longest tenant name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// A tenant's display name: 1 to 200 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantName(String);

impl TenantName {
    /// Validates a name sent in `field`.
    pub fn parse(text: &str, field: &str) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        bounded_text(text, field, MAX_NAME_CHARS).map(Self)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An account. Every target, filter, subscription and event belongs to exactly one.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name, chosen by the admin.
    pub name: TenantName,
    /// Events per second the tenant may publish; `None` takes the configured default.
    pub ingest_rate_limit: Option<RateLimit>,
    /// When the tenant was created.
    pub created_at: Timestamp,
    /// When the tenant last changed.
    pub updated_at: Timestamp,
}

/// What the admin gives to create a tenant.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Display name.
    pub name: TenantName,
    /// Its own ingest limit, overriding the configured default.
    pub ingest_rate_limit: Option<RateLimit>,
}

/// A change to a tenant; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<TenantName>,
    /// `Some(None)` returns the tenant to the configured default ingest limit.
    pub ingest_rate_limit: Option<Option<RateLimit>>,
}

impl TenantPatch {
    /// Applies the change to `tenant`, stamping it with `now`.
    pub fn apply(self, tenant: &mut Tenant, now: Timestamp) {
        if let Some(name) = self.name {
            tenant.name = name;
        }
        if let Some(limit) = self.ingest_rate_limit {
            tenant.ingest_rate_limit = limit;
        }
        tenant.updated_at = now;
    }
}
