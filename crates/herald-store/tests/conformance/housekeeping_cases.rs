//! Conformance cases of housekeeping: lease renewal, the instance registry,
//! leadership, retention.

use std::time::Duration;

use herald_core::model::DeliveryStatus;
use herald_core::store::Instance;

use crate::backends::Backend;
use crate::fixtures::event_record;
use crate::queue_cases::{at, claim_due, outcome, setup};

pub async fn leases_are_extended_only_under_their_token(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 1).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    store
        .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(0))])
        .await
        .unwrap();
    let claim = claim_due(store, &routes, at(0), 10, Duration::from_millis(100))
        .await
        .unwrap()
        .remove(0);
    let id = claim.delivery.id.clone();
    assert_eq!(
        store
            .extend_leases(vec![(id.clone(), claim.lease_token + 1)], at(10_000))
            .await
            .unwrap(),
        0,
        "a wrong token extends nothing"
    );
    assert_eq!(
        store
            .extend_leases(vec![(id.clone(), claim.lease_token)], at(10_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.recover_expired_leases(at(5_000)).await.unwrap(),
        0,
        "the extended lease still holds"
    );
    assert_eq!(store.recover_expired_leases(at(10_000)).await.unwrap(), 1);
}

pub async fn instances_register_and_the_stale_are_forgotten(backend: Backend) {
    let store = &backend.store;
    let instance = |id: &str, heartbeat_at| Instance {
        id: id.to_owned(),
        description: format!("host-{id}"),
        started_at: at(0),
        heartbeat_at,
    };
    store.heartbeat(&instance("a", at(0))).await.unwrap();
    store.heartbeat(&instance("b", at(0))).await.unwrap();
    store.heartbeat(&instance("a", at(5_000))).await.unwrap();
    let listed = store.instances().await.unwrap();
    assert_eq!(listed, vec![instance("a", at(5_000)), instance("b", at(0))]);
    assert_eq!(store.forget_instances(at(1_000)).await.unwrap(), 1);
    assert_eq!(
        store.instances().await.unwrap(),
        vec![instance("a", at(5_000))]
    );
}

pub async fn leadership_is_held_by_one_instance_until_its_term_ends(backend: Backend) {
    let store = &backend.store;
    let term = Duration::from_secs(5);
    assert!(store.take_leadership("a", at(0), term).await.unwrap());
    assert!(!store.take_leadership("b", at(1_000), term).await.unwrap());
    assert!(
        store.take_leadership("a", at(4_000), term).await.unwrap(),
        "the leader extends its term"
    );
    assert!(
        !store.take_leadership("b", at(8_000), term).await.unwrap(),
        "the extended term runs to 9 s"
    );
    assert!(
        store.take_leadership("b", at(9_000), term).await.unwrap(),
        "a silent leader's term runs out and another takes over"
    );
    assert!(!store.take_leadership("a", at(9_500), term).await.unwrap());
}

pub async fn retention_purges_old_finished_events_only(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 1).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let old_done = event_record(&acme, "a.b", None, &targets, at(0));
    let old_pending = event_record(&acme, "a.b", None, &targets, at(1));
    let new_done = event_record(&acme, "a.b", None, &targets, at(20_000));
    let ids = [&old_done, &old_pending, &new_done].map(|r| r.event.id.clone());
    store
        .insert_events(vec![old_done, old_pending, new_done])
        .await
        .unwrap();
    let claims = claim_due(store, &routes, at(30_000), 10, Duration::from_secs(90))
        .await
        .unwrap();
    let finished = claims
        .iter()
        .filter(|c| c.delivery.event_id != ids[1])
        .map(|c| outcome(c, DeliveryStatus::Succeeded, at(30_000), 200))
        .collect();
    store.record_outcomes(finished, at(30_001)).await.unwrap();

    assert_eq!(store.purge_finished(at(10_000), 100).await.unwrap(), 1);
    assert!(store.get_event(&acme, &ids[0]).await.unwrap().is_none());
    assert!(
        store.get_event(&acme, &ids[1]).await.unwrap().is_some(),
        "an event with a delivery under way stays"
    );
    assert!(
        store.get_event(&acme, &ids[2]).await.unwrap().is_some(),
        "a recent event stays"
    );
    let delivery = &claims
        .iter()
        .find(|c| c.delivery.event_id == ids[0])
        .unwrap()
        .delivery;
    assert!(
        store
            .get_delivery(&acme, &delivery.id)
            .await
            .unwrap()
            .is_none(),
        "its deliveries go with it"
    );
    assert!(
        store
            .list_attempts(&acme, &delivery.id)
            .await
            .unwrap()
            .is_empty(),
        "and their attempts"
    );
    assert_eq!(store.purge_finished(at(10_000), 100).await.unwrap(), 0);
}

pub async fn parked_records_are_kept_once_and_listed_in_order(backend: Backend) {
    use herald_core::id::ParkedId;
    use herald_core::store::{PageRequest, ParkedRecord};
    let store = &backend.store;
    let parked = |offset: i64| ParkedRecord {
        id: ParkedId::generate(),
        topic: "orders".to_owned(),
        partition: 2,
        offset,
        reason: format!("record {offset} is not an envelope"),
        headers: vec![("herald-tenant".into(), "ten_x".into())],
        value: Some(vec![0, 159, 146, 150]),
        value_bytes: 4,
        parked_at: at(offset),
    };
    let (first, second) = (parked(7), parked(9));
    store
        .park_records(vec![first.clone(), second.clone()])
        .await
        .unwrap();
    // Read again after a crash: parked once.
    store.park_records(vec![parked(7)]).await.unwrap();
    let page = store
        .list_parked(&PageRequest {
            limit: 1,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(page.items, vec![first]);
    let rest = store
        .list_parked(&PageRequest {
            limit: 10,
            after: page.next_after.clone(),
        })
        .await
        .unwrap();
    assert_eq!(rest.items, vec![second]);
    assert!(rest.next_after.is_none());

    // Retention deletes parked records too, by when they were parked.
    assert_eq!(store.purge_finished(at(8), 100).await.unwrap(), 1);
    let left = store
        .list_parked(&PageRequest {
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(left.items.len(), 1);
    assert_eq!(left.items[0].offset, 9);
}
