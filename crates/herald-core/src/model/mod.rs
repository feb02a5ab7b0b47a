//! The configuration a tenant manages (tenants, targets, filters, subscriptions) and
//! the traffic it causes (events, deliveries, attempts).
//!
//! Fields hold validated newtypes, so a value that made it into a model is known to be
//! good; nothing past the API edge checks it again. Creation and patch inputs
//! (`New*`, `*Patch`) live beside each model and say how defaults and changes apply.

mod delivery;
mod event;
mod filter;
mod subscription;
mod target;
mod tenant;
mod text;

pub use delivery::{Attempt, Delivery, DeliveryStatus};
pub use event::{ContentType, Event, IdempotencyKey, NewEvent};
pub use filter::{Filter, FilterPatch, FilterPatterns, NewFilter};
pub use subscription::{NewSubscription, Subscription, SubscriptionPatch};
pub use target::{
    CustomHeaders, MaxInFlight, NewTarget, RateLimit, RetiringSecret, Target, TargetPatch,
    TargetUrl, Timeout,
};
pub use tenant::{NewTenant, Tenant, TenantName, TenantPatch};
pub use text::Description;
