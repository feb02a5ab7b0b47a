//! Subscriptions: the binding of one target to one filter.

use crate::id::{FilterId, SubscriptionId, TargetId, TenantId};
use crate::time::Timestamp;

/// Sends the events its filter matches to its target, while active.
///
/// A target and a filter are bound at most once: a second subscription for the same
/// pair would change nothing, since a target receives each event once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The tenant owning it, its target and its filter.
    pub tenant_id: TenantId,
    /// Where matched events go.
    pub target_id: TargetId,
    /// Which events match.
    pub filter_id: FilterId,
    /// Inactive subscriptions deliver nothing.
    pub active: bool,
    /// When the subscription was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a tenant gives to create a subscription.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    /// The target to deliver to; must belong to the same tenant.
    pub target_id: TargetId,
    /// The filter selecting events; must belong to the same tenant.
    pub filter_id: FilterId,
    /// Defaults to `true`.
    pub active: Option<bool>,
}

/// A change to a subscription; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPatch {
    /// A new target of the same tenant.
    pub target_id: Option<TargetId>,
    /// A new filter of the same tenant.
    pub filter_id: Option<FilterId>,
    /// Switches delivery on or off.
    pub active: Option<bool>,
}

impl SubscriptionPatch {
    /// Applies the change to `subscription`, stamping it with `now`.
    pub fn apply(self, subscription: &mut Subscription, now: Timestamp) {
        if let Some(target_id) = self.target_id {
            subscription.target_id = target_id;
        }
        if let Some(filter_id) = self.filter_id {
            subscription.filter_id = filter_id;
        }
        if let Some(active) = self.active {
            subscription.active = active;
        }
        subscription.updated_at = now;
    }
}
