//! Valid model values for the cases, with defaults a case can override.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_core::auth::ApiKey;
use herald_core::filter::EventType;
use herald_core::id::{EventId, FilterId, SubscriptionId, TargetId, TenantId};
use herald_core::model::{ContentType, Delivery, Event, IdempotencyKey};
use herald_core::model::{
    CustomHeaders, Description, Filter, FilterPatterns, MaxInFlight, RateLimit, RetiringSecret,
    Subscription, Target, TargetUrl, Tenant, TenantName, Timeout,
};
use herald_core::secret::TargetSecret;
use herald_core::store::{EventRecord, Store};
use herald_core::time::Timestamp;

/// A stored tenant with its first key's plaintext.
pub async fn tenant(store: &Store, name: &str) -> (Tenant, String) {
    let now = Timestamp::from_millis(1_700_000_000_000);
    let tenant = Tenant {
        id: TenantId::generate(),
        name: TenantName::parse(name, "name").expect("valid name"),
        ingest_rate_limit: Some(RateLimit::parse(250.0, "rate").expect("valid rate")),
        created_at: now,
        updated_at: now,
    };
    let (key, plaintext) = ApiKey::generate(tenant.id.clone(), now);
    store
        .insert_tenant(&tenant, &key)
        .await
        .expect("insert tenant");
    (tenant, plaintext)
}

/// A target of `tenant` with every optional field set.
pub fn target(tenant: &TenantId) -> Target {
    let now = Timestamp::from_millis(1_700_000_000_123);
    Target {
        id: TargetId::generate(),
        tenant_id: tenant.clone(),
        url: TargetUrl::parse("https://hooks.example.com/in?team=a", "url").expect("valid url"),
        description: Some(Description::parse("orders → billing", "description").expect("valid")),
        secret: TargetSecret::generate(),
        previous_secret: Some(RetiringSecret {
            secret: TargetSecret::generate(),
            expires_at: Timestamp::from_millis(1_700_086_400_000),
        }),
        headers: CustomHeaders::parse(
            BTreeMap::from([
                ("X-Team".to_owned(), "billing".to_owned()),
                ("X-Env".to_owned(), "prod".to_owned()),
            ]),
            "headers",
        )
        .expect("valid headers"),
        rate_limit: Some(RateLimit::parse(12.5, "rate").expect("valid rate")),
        max_in_flight: MaxInFlight::parse(7, "max").expect("valid max"),
        timeout: Timeout::parse_millis(2_500, "timeout").expect("valid timeout"),
        active: true,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// A stored target of `tenant`.
pub async fn stored_target(store: &Store, tenant: &TenantId) -> Target {
    let target = target(tenant);
    store.insert_target(&target).await.expect("insert target");
    target
}

/// A filter of `tenant` selecting order events.
pub fn filter(tenant: &TenantId) -> Filter {
    let now = Timestamp::from_millis(1_700_000_000_456);
    let patterns = [
        "core.orders.*".to_owned(),
        "core.refunds.created.v1".to_owned(),
    ];
    Filter {
        id: FilterId::generate(),
        tenant_id: tenant.clone(),
        description: None,
        patterns: FilterPatterns::parse(&patterns, "events").expect("valid patterns"),
        created_at: now,
        updated_at: now,
    }
}

/// A stored filter of `tenant`.
pub async fn stored_filter(store: &Store, tenant: &TenantId) -> Filter {
    let filter = filter(tenant);
    store.insert_filter(&filter).await.expect("insert filter");
    filter
}

/// An active subscription of `tenant` binding `target` to `filter`.
pub fn subscription(tenant: &TenantId, target: &TargetId, filter: &FilterId) -> Subscription {
    let now = Timestamp::from_millis(1_700_000_000_789);
    Subscription {
        id: SubscriptionId::generate(),
        tenant_id: tenant.clone(),
        target_id: target.clone(),
        filter_id: filter.clone(),
        active: true,
        created_at: now,
        updated_at: now,
    }
}

/// An event of `tenant` (payload bytes that are not UTF-8, to prove they are kept as
/// bytes) with one pending delivery per target, due at `now`.
pub fn event_record(
    tenant: &TenantId,
    event_type: &str,
    key: Option<&str>,
    targets: &[(&TargetId, &SubscriptionId)],
    now: Timestamp,
) -> EventRecord {
    let event = Event {
        id: EventId::generate(),
        tenant_id: tenant.clone(),
        event_type: EventType::parse(event_type, "type").expect("valid type"),
        payload: Bytes::from_static(b"{\"a\":1}\xff\x00"),
        content_type: ContentType::parse("application/octet-stream", "content_type")
            .expect("valid"),
        idempotency_key: key.map(|k| IdempotencyKey::parse(k, "key").expect("valid key")),
        created_at: now,
    };
    let deliveries = targets
        .iter()
        .map(|(target, subscription)| {
            let route = ((*target).clone(), (*subscription).clone());
            Delivery::new(
                tenant.clone(),
                event.id.clone(),
                event.event_type.clone(),
                route,
                now,
            )
        })
        .collect();
    EventRecord {
        event,
        deliveries,
        leased_until: None,
    }
}
