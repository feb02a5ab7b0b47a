//! The conformance cases. Each takes a fresh backend and asserts only through the
//! `Store` handle, never through backend specifics.

use herald_core::auth::{ApiKey, KeyHash};
use herald_core::model::{Description, FilterPatterns, TargetUrl, TenantName};
use herald_core::store::{Conflict, PageRequest, StoreError};
use herald_core::time::Timestamp;

use crate::backends::Backend;
use crate::fixtures::{self, stored_filter, stored_target, subscription, tenant};

fn is_conflict(result: Result<(), StoreError>, expected: Conflict) -> bool {
    matches!(result, Err(StoreError::Conflict(found)) if found == expected)
}

pub async fn tenants_round_trip(backend: Backend) {
    let store = &backend.store;
    let (mut acme, _) = tenant(store, "Acme").await;
    assert_eq!(
        store.get_tenant(&acme.id).await.unwrap(),
        Some(acme.clone())
    );

    acme.name = TenantName::parse("Acme Corp", "name").unwrap();
    acme.updated_at = Timestamp::from_millis(1_800_000_000_000);
    assert!(store.update_tenant(&acme).await.unwrap());
    assert_eq!(
        store.get_tenant(&acme.id).await.unwrap(),
        Some(acme.clone())
    );

    assert!(store.delete_tenant(&acme.id).await.unwrap());
    assert_eq!(store.get_tenant(&acme.id).await.unwrap(), None);
    assert!(!store.delete_tenant(&acme.id).await.unwrap());
    assert!(!store.update_tenant(&acme).await.unwrap());
}

pub async fn tenants_page_in_id_order(backend: Backend) {
    let store = &backend.store;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(tenant(store, &format!("tenant {n}")).await.0.id);
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    let mut sizes = Vec::new();
    loop {
        let result = store.list_tenants(&page).await.unwrap();
        sizes.push(result.items.len());
        seen.extend(result.items.into_iter().map(|t| t.id));
        match result.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(seen, created);
}

pub async fn api_keys_authenticate_until_revoked(backend: Backend) {
    let store = &backend.store;
    let (acme, first_key) = tenant(store, "Acme").await;
    let (other, _) = tenant(store, "Other").await;
    assert_eq!(
        store
            .tenant_for_key(&KeyHash::of(&first_key))
            .await
            .unwrap(),
        Some(acme.id.clone())
    );
    assert_eq!(
        store
            .tenant_for_key(&KeyHash::of("hrk_unknown"))
            .await
            .unwrap(),
        None
    );

    let (second, second_key) = ApiKey::generate(acme.id.clone(), Timestamp::now());
    store.insert_api_key(&second).await.unwrap();
    let keys = store.list_api_keys(&acme.id).await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], second);

    assert!(
        !store.delete_api_key(&other.id, &second.id).await.unwrap(),
        "another tenant cannot revoke it"
    );
    assert!(store.delete_api_key(&acme.id, &second.id).await.unwrap());
    assert_eq!(
        store
            .tenant_for_key(&KeyHash::of(&second_key))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .tenant_for_key(&KeyHash::of(&first_key))
            .await
            .unwrap(),
        Some(acme.id)
    );
}

pub async fn targets_round_trip_every_field(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let mut target = stored_target(store, &acme.id).await;
    assert_eq!(
        store.get_target(&acme.id, &target.id).await.unwrap(),
        Some(target.clone())
    );

    target.url = TargetUrl::parse("http://other.example.com:8080/x", "url").unwrap();
    target.description = None;
    target.rate_limit = None;
    target.active = false;
    target.headers = Default::default();
    target.updated_at = Timestamp::from_millis(1_800_000_000_000);
    assert!(store.update_target(&target).await.unwrap());
    assert_eq!(
        store.get_target(&acme.id, &target.id).await.unwrap(),
        Some(target.clone())
    );

    assert!(store.delete_target(&acme.id, &target.id).await.unwrap());
    assert_eq!(store.get_target(&acme.id, &target.id).await.unwrap(), None);
    assert!(!store.update_target(&target).await.unwrap());
}

pub async fn targets_are_invisible_to_other_tenants(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let (intruder, _) = tenant(store, "Intruder").await;
    let target = stored_target(store, &acme.id).await;

    assert_eq!(
        store.get_target(&intruder.id, &target.id).await.unwrap(),
        None
    );
    let page = store
        .list_targets(&intruder.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert!(page.items.is_empty());
    let mut hijacked = target.clone();
    hijacked.tenant_id = intruder.id.clone();
    assert!(!store.update_target(&hijacked).await.unwrap());
    assert!(!store.delete_target(&intruder.id, &target.id).await.unwrap());
    assert_eq!(
        store.get_target(&acme.id, &target.id).await.unwrap(),
        Some(target)
    );
}

pub async fn targets_page_per_tenant(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let (other, _) = tenant(store, "Other").await;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(stored_target(store, &acme.id).await.id);
        stored_target(store, &other.id).await;
    }
    let first = store
        .list_targets(&acme.id, &PageRequest::first(2))
        .await
        .unwrap();
    let after = first.next_after.clone().expect("a second page");
    let second = store
        .list_targets(
            &acme.id,
            &PageRequest {
                limit: 2,
                after: Some(after),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.next_after, None);
    let listed: Vec<_> = first
        .items
        .into_iter()
        .chain(second.items)
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, mine);
}

pub async fn filters_round_trip(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let (other, _) = tenant(store, "Other").await;
    let mut filter = stored_filter(store, &acme.id).await;
    assert_eq!(
        store.get_filter(&acme.id, &filter.id).await.unwrap(),
        Some(filter.clone())
    );
    assert_eq!(store.get_filter(&other.id, &filter.id).await.unwrap(), None);

    filter.patterns = FilterPatterns::parse(&["*".to_owned()], "events").unwrap();
    filter.description = Some(Description::parse("everything", "description").unwrap());
    assert!(store.update_filter(&filter).await.unwrap());
    assert_eq!(
        store.get_filter(&acme.id, &filter.id).await.unwrap(),
        Some(filter.clone())
    );
    let page = store
        .list_filters(&acme.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(page.items, vec![filter.clone()]);

    assert!(!store.delete_filter(&other.id, &filter.id).await.unwrap());
    assert!(store.delete_filter(&acme.id, &filter.id).await.unwrap());
    assert_eq!(store.get_filter(&acme.id, &filter.id).await.unwrap(), None);
}

pub async fn subscriptions_need_same_tenant_references(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let (other, _) = tenant(store, "Other").await;
    let target = stored_target(store, &acme.id).await;
    let filter = stored_filter(store, &acme.id).await;
    let foreign_target = stored_target(store, &other.id).await;

    let sneaky = subscription(&acme.id, &foreign_target.id, &filter.id);
    assert!(is_conflict(
        store.insert_subscription(&sneaky).await,
        Conflict::MissingReference
    ));
    let dangling = subscription(&acme.id, &target.id, &fixtures::filter(&acme.id).id);
    assert!(is_conflict(
        store.insert_subscription(&dangling).await,
        Conflict::MissingReference
    ));

    let mut good = subscription(&acme.id, &target.id, &filter.id);
    store.insert_subscription(&good).await.unwrap();
    assert_eq!(
        store.get_subscription(&acme.id, &good.id).await.unwrap(),
        Some(good.clone())
    );
    assert_eq!(
        store.get_subscription(&other.id, &good.id).await.unwrap(),
        None
    );

    good.target_id = foreign_target.id.clone();
    let moved = store.update_subscription(&good).await.map(drop);
    assert!(is_conflict(moved, Conflict::MissingReference));
    good.target_id = target.id.clone();
    good.active = false;
    assert!(store.update_subscription(&good).await.unwrap());
    assert_eq!(
        store.get_subscription(&acme.id, &good.id).await.unwrap(),
        Some(good.clone())
    );
    let listed = store
        .list_subscriptions(&acme.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items, vec![good.clone()]);
    assert!(
        store
            .list_subscriptions(&other.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(store.delete_subscription(&acme.id, &good.id).await.unwrap());
    assert!(!store.delete_subscription(&acme.id, &good.id).await.unwrap());
}

pub async fn subscriptions_are_unique_per_target_and_filter(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let target = stored_target(store, &acme.id).await;
    let filter = stored_filter(store, &acme.id).await;
    store
        .insert_subscription(&subscription(&acme.id, &target.id, &filter.id))
        .await
        .unwrap();
    let again = subscription(&acme.id, &target.id, &filter.id);
    assert!(is_conflict(
        store.insert_subscription(&again).await,
        Conflict::Duplicate
    ));
}

pub async fn deleting_a_target_or_filter_deletes_its_subscriptions(backend: Backend) {
    let store = &backend.store;
    let (acme, _) = tenant(store, "Acme").await;
    let target = stored_target(store, &acme.id).await;
    let other_target = stored_target(store, &acme.id).await;
    let filter = stored_filter(store, &acme.id).await;
    let by_target = subscription(&acme.id, &target.id, &filter.id);
    let kept = subscription(&acme.id, &other_target.id, &filter.id);
    store.insert_subscription(&by_target).await.unwrap();
    store.insert_subscription(&kept).await.unwrap();

    assert!(store.delete_target(&acme.id, &target.id).await.unwrap());
    assert_eq!(
        store
            .get_subscription(&acme.id, &by_target.id)
            .await
            .unwrap(),
        None
    );
    assert!(
        store
            .get_subscription(&acme.id, &kept.id)
            .await
            .unwrap()
            .is_some()
    );

    assert!(store.delete_filter(&acme.id, &filter.id).await.unwrap());
    assert_eq!(
        store.get_subscription(&acme.id, &kept.id).await.unwrap(),
        None
    );
}

pub async fn deleting_a_tenant_deletes_everything_it_owns(backend: Backend) {
    let store = &backend.store;
    let (acme, key) = tenant(store, "Acme").await;
    let target = stored_target(store, &acme.id).await;
    let filter = stored_filter(store, &acme.id).await;
    let sub = subscription(&acme.id, &target.id, &filter.id);
    store.insert_subscription(&sub).await.unwrap();

    assert!(store.delete_tenant(&acme.id).await.unwrap());
    assert_eq!(
        store.tenant_for_key(&KeyHash::of(&key)).await.unwrap(),
        None
    );
    assert_eq!(store.get_target(&acme.id, &target.id).await.unwrap(), None);
    assert_eq!(store.get_filter(&acme.id, &filter.id).await.unwrap(), None);
    assert_eq!(
        store.get_subscription(&acme.id, &sub.id).await.unwrap(),
        None
    );
}

pub async fn data_survives_reopening(backend: Backend) {
    let (acme, key) = tenant(&backend.store, "Acme").await;
    let target = stored_target(&backend.store, &acme.id).await;
    let filter = stored_filter(&backend.store, &acme.id).await;
    let sub = subscription(&acme.id, &target.id, &filter.id);
    backend.store.insert_subscription(&sub).await.unwrap();

    let backend = backend.reopen().await;
    let store = &backend.store;
    store.ping().await.unwrap();
    assert_eq!(
        store.get_tenant(&acme.id).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.tenant_for_key(&KeyHash::of(&key)).await.unwrap(),
        Some(acme.id.clone())
    );
    assert_eq!(
        store.get_target(&acme.id, &target.id).await.unwrap(),
        Some(target)
    );
    assert_eq!(
        store.get_filter(&acme.id, &filter.id).await.unwrap(),
        Some(filter)
    );
    assert_eq!(
        store.get_subscription(&acme.id, &sub.id).await.unwrap(),
        Some(sub)
    );
}

pub async fn concurrent_writes_all_commit(backend: Backend) {
    let store = backend.store.clone();
    let (acme, _) = tenant(&store, "Acme").await;
    let writes: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            let target = fixtures::target(&acme.id);
            tokio::spawn(async move { store.insert_target(&target).await.map(|()| target.id) })
        })
        .collect();
    let mut ids = Vec::new();
    for write in writes {
        ids.push(write.await.unwrap().unwrap());
    }
    ids.sort();
    let listed: Vec<_> = store
        .list_targets(&acme.id, &PageRequest::first(500))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ids);
}

pub async fn a_failing_write_does_not_undo_its_neighbours(backend: Backend) {
    let store = backend.store.clone();
    let (acme, _) = tenant(&store, "Acme").await;
    let target = stored_target(&store, &acme.id).await;
    let filter = stored_filter(&store, &acme.id).await;
    store
        .insert_subscription(&subscription(&acme.id, &target.id, &filter.id))
        .await
        .unwrap();

    // Interleave writes that must fail (duplicates) with writes that must succeed, so
    // they land in the same commit groups.
    let writes: Vec<_> = (0..100)
        .map(|n| {
            let store = store.clone();
            let (acme, target, filter) = (acme.id.clone(), target.id.clone(), filter.id.clone());
            tokio::spawn(async move {
                if n % 2 == 0 {
                    let duplicate = subscription(&acme, &target, &filter);
                    (false, store.insert_subscription(&duplicate).await.is_ok())
                } else {
                    (
                        true,
                        store.insert_target(&fixtures::target(&acme)).await.is_ok(),
                    )
                }
            })
        })
        .collect();
    for write in writes {
        let (should_succeed, succeeded) = write.await.unwrap();
        assert_eq!(should_succeed, succeeded);
    }
    let targets = store
        .list_targets(&acme.id, &PageRequest::first(500))
        .await
        .unwrap();
    assert_eq!(targets.items.len(), 51);
    let subscriptions = store
        .list_subscriptions(&acme.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(subscriptions.items.len(), 1);
}
