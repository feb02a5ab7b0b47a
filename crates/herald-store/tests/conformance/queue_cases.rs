//! Conformance cases of the delivery queue: intake, claims, leases, fencing,
//! outcomes, requeues.

use std::time::Duration;

use herald_core::filter::EventType;
use herald_core::flow::{Circuit, CircuitPolicy};
use herald_core::id::AttemptId;
use herald_core::model::{Attempt, DeliveryStatus, Target};
use herald_core::outcome::Verdict;
use herald_core::store::{
    Claim, ClaimRequest, DeliveryQuery, HeldBack, Inserted, OutcomeRecord, PageRequest, Requeue,
    SharedLimits, Store,
};
use herald_core::time::Timestamp;

use crate::backends::Backend;
use crate::fixtures::{event_record, stored_filter, stored_target, subscription, tenant};

const NOW: i64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(90);

/// Limits that never bind.
const UNLIMITED: SharedLimits = SharedLimits {
    max_in_flight: u32::MAX,
    rate: None,
};

pub fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(NOW + offset_ms)
}

/// A tenant with `count` targets, each subscribed to one catch-all filter.
pub async fn setup(
    store: &Store,
    count: usize,
) -> (
    herald_core::id::TenantId,
    Vec<(Target, herald_core::id::SubscriptionId)>,
) {
    let (acme, _) = tenant(store, "Acme").await;
    let filter = stored_filter(store, &acme.id).await;
    let mut routes = Vec::new();
    for _ in 0..count {
        let target = stored_target(store, &acme.id).await;
        let sub = subscription(&acme.id, &target.id, &filter.id);
        store.insert_subscription(&sub).await.unwrap();
        routes.push((target, sub.id));
    }
    (acme.id, routes)
}

/// Claims up to `limit` per lane from each of the routes' targets.
pub async fn claim_due(
    store: &Store,
    routes: &[(Target, herald_core::id::SubscriptionId)],
    now: Timestamp,
    limit: u32,
    lease: Duration,
) -> Result<Vec<Claim>, herald_core::store::StoreError> {
    let requests = routes
        .iter()
        .map(|(target, _)| ClaimRequest {
            target_id: target.id.clone(),
            first_attempts: limit,
            retries: limit,
            limits: UNLIMITED,
        })
        .collect();
    store.claim(requests, now, lease).await.map(|c| c.claims)
}

pub fn outcome(
    claim: &herald_core::store::Claim,
    status: DeliveryStatus,
    next: Timestamp,
    code: u16,
) -> OutcomeRecord {
    let delivery = &claim.delivery;
    OutcomeRecord {
        delivery_id: delivery.id.clone(),
        target_id: delivery.target_id.clone(),
        lease_token: claim.lease_token,
        attempt: Attempt {
            id: AttemptId::generate(),
            delivery_id: delivery.id.clone(),
            tenant_id: delivery.tenant_id.clone(),
            number: delivery.attempts + 1,
            started_at: at(1),
            duration_ms: 12,
            status_code: Some(code),
            error: (code >= 300).then(|| format!("HTTP {code}")),
            response_headers: vec![("content-type".into(), "text/plain".into())],
            response_body: Some("nope".into()),
        },
        verdict: Verdict {
            status,
            attempts: delivery.attempts + 1,
            next_attempt_at: next,
            last_status_code: Some(code),
            last_error: (code >= 300).then(|| format!("HTTP {code}")),
        },
    }
}

/// The ids of the targets with deliveries waiting.
async fn waiting_target_ids(store: &Store) -> Vec<herald_core::id::TargetId> {
    store
        .waiting_targets()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.target.id)
        .collect()
}

pub async fn events_and_deliveries_round_trip(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let (other, _) = tenant(store, "Other").await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let record = event_record(&acme, "core.orders.created", None, &targets, at(0));
    assert_eq!(
        store.insert_events(vec![record.clone()]).await.unwrap(),
        vec![Inserted::New]
    );

    let event = store
        .get_event(&acme, &record.event.id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        event, record.event,
        "payload bytes and all fields kept exactly"
    );
    assert_eq!(
        store.event_deliveries(&acme, &event.id).await.unwrap(),
        record.deliveries
    );
    let first = &record.deliveries[0];
    assert_eq!(
        store.get_delivery(&acme, &first.id).await.unwrap().as_ref(),
        Some(first)
    );
    assert_eq!(store.get_event(&other.id, &event.id).await.unwrap(), None);
    assert_eq!(
        store.get_delivery(&other.id, &first.id).await.unwrap(),
        None
    );
    assert!(
        store
            .event_deliveries(&other.id, &event.id)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn idempotency_keys_deduplicate_per_tenant(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let (other, _) = tenant(store, "Other").await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let first = event_record(&acme, "a.b", Some("order-1"), &targets, at(0));
    let again = event_record(&acme, "a.b", Some("order-1"), &targets, at(5));
    let same_batch = event_record(&acme, "a.b", Some("order-2"), &targets, at(0));
    let same_batch_again = event_record(&acme, "a.b", Some("order-2"), &targets, at(0));
    let elsewhere = event_record(&other.id, "a.b", Some("order-1"), &[], at(0));

    let results = store
        .insert_events(vec![
            first.clone(),
            same_batch.clone(),
            same_batch_again,
            elsewhere,
        ])
        .await
        .unwrap();
    assert_eq!(results[0], Inserted::New);
    assert_eq!(results[1], Inserted::New);
    assert_eq!(
        results[2],
        Inserted::Duplicate {
            original: same_batch.event.id.clone(),
            deliveries: 2
        }
    );
    assert_eq!(results[3], Inserted::New, "keys are per tenant");
    let results = store.insert_events(vec![again.clone()]).await.unwrap();
    assert_eq!(
        results,
        vec![Inserted::Duplicate {
            original: first.event.id.clone(),
            deliveries: 2
        }]
    );
    assert_eq!(
        store.get_event(&acme, &again.event.id).await.unwrap(),
        None,
        "the duplicate stored nothing"
    );
}

pub async fn routes_are_active_subscriptions_of_active_targets(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 3).await;
    let mut inactive_target = routes[1].0.clone();
    inactive_target.active = false;
    store.update_target(&inactive_target).await.unwrap();
    let mut paused = store
        .get_subscription(&acme, &routes[2].1)
        .await
        .unwrap()
        .expect("exists");
    paused.active = false;
    store.update_subscription(&paused).await.unwrap();

    let found = store.routes(&acme).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].target_id, routes[0].0.id);
    assert_eq!(found[0].subscription_id, routes[0].1);
    assert!(
        found[0]
            .patterns
            .matches(&EventType::parse("core.orders.x", "t").unwrap())
    );
}

pub async fn claims_take_due_deliveries_once(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 3).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let due = event_record(&acme, "a.b", None, &targets, at(0));
    let mut later = event_record(&acme, "a.b", None, &targets[..1], at(0));
    later.deliveries[0].next_attempt_at = at(60_000);
    store.insert_events(vec![due.clone(), later]).await.unwrap();

    let claims = claim_due(store, &routes, at(10), 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 3);
    for claim in &claims {
        assert_eq!(claim.delivery.status, DeliveryStatus::Delivering);
        assert_eq!(*claim.event, due.event);
        assert_eq!(claim.target.id, claim.delivery.target_id);
        assert!(
            routes.iter().any(|(t, _)| *t == *claim.target),
            "the full target comes with the claim"
        );
    }
    assert!(
        claim_due(store, &routes, at(20), 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased deliveries are not claimed twice"
    );
    let waiting = store.waiting_targets().await.unwrap();
    let first_target = waiting
        .iter()
        .find(|w| w.target.id == routes[0].0.id)
        .expect("still has a delivery waiting");
    assert_eq!(first_target.first_due, Some(at(60_000)));
    let limited = claim_due(store, &routes, at(60_000), 1, LEASE)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
}

pub async fn an_expired_lease_is_taken_over_and_fences_the_old_claim(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 1).await;
    let record = event_record(
        &acme,
        "a.b",
        None,
        &[(&routes[0].0.id, &routes[0].1)],
        at(0),
    );
    store.insert_events(vec![record]).await.unwrap();

    let old = claim_due(store, &routes, at(0), 10, Duration::from_millis(100))
        .await
        .unwrap()
        .remove(0);
    assert!(
        claim_due(store, &routes, at(50), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.recover_expired_leases(at(50)).await.unwrap(),
        0,
        "not expired yet"
    );
    assert_eq!(store.recover_expired_leases(at(150)).await.unwrap(), 1);
    let new = claim_due(store, &routes, at(150), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.delivery.id, old.delivery.id);
    assert!(new.lease_token > old.lease_token);

    let stale = outcome(&old, DeliveryStatus::Succeeded, at(160), 200);
    let current = outcome(&new, DeliveryStatus::Pending, at(10_000), 500);
    assert_eq!(
        store
            .record_outcomes(vec![stale, current], at(170))
            .await
            .unwrap(),
        vec![false, true]
    );
    let delivery = store
        .get_delivery(&acme, &old.delivery.id)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(
        delivery.status,
        DeliveryStatus::Pending,
        "the stale success did not overwrite the new owner"
    );
    let attempts = store.list_attempts(&acme, &delivery.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "only the fenced-in attempt is logged");
}

/// A delivery stored `delivering` at intake is in flight under the intake lease: not
/// claimable, its outcome fenced by the intake token, recovered when the lease expires.
pub async fn deliveries_started_at_intake_are_in_flight_under_a_lease(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let both = [
        (&routes[0].0.id, &routes[0].1),
        (&routes[1].0.id, &routes[1].1),
    ];
    let mut started = event_record(&acme, "a.b", None, &both, at(0));
    started.deliveries[0].status = DeliveryStatus::Delivering;
    started.leased_until = Some(at(100));
    let mut lapsing = event_record(&acme, "a.b", None, &both[..1], at(0));
    lapsing.deliveries[0].status = DeliveryStatus::Delivering;
    lapsing.leased_until = Some(at(100));
    let (in_flight, queued, lapsed) = (
        started.deliveries[0].clone(),
        started.deliveries[1].clone(),
        lapsing.deliveries[0].clone(),
    );
    store.insert_events(vec![started, lapsing]).await.unwrap();

    let stored = store.get_delivery(&acme, &in_flight.id).await.unwrap();
    assert_eq!(stored.map(|d| d.status), Some(DeliveryStatus::Delivering));
    let claimed = claim_due(store, &routes, at(10), 10, LEASE).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id.clone()).collect();
    assert_eq!(
        ids,
        vec![queued.id.clone()],
        "only the queued delivery is claimable"
    );
    let limited = ClaimRequest {
        target_id: routes[0].0.id.clone(),
        first_attempts: 1,
        retries: 0,
        limits: SharedLimits {
            max_in_flight: 2,
            rate: None,
        },
    };
    let claimed = store.claim(vec![limited], at(10), LEASE).await.unwrap();
    assert_eq!(
        claimed.held_back.len(),
        1,
        "both deliveries started at intake count against the in-flight cap"
    );

    let intake_claim = Claim {
        delivery: in_flight.clone(),
        lease_token: herald_core::store::INTAKE_LEASE_TOKEN,
        event: std::sync::Arc::new(stored_event(store, &acme, &in_flight).await),
        target: std::sync::Arc::new(routes[0].0.clone()),
    };
    let done = outcome(&intake_claim, DeliveryStatus::Succeeded, at(20), 200);
    assert_eq!(
        store.record_outcomes(vec![done], at(20)).await.unwrap(),
        vec![true],
        "the intake token fences its outcome in"
    );
    assert_eq!(
        store.recover_expired_leases(at(50)).await.unwrap(),
        0,
        "not expired yet"
    );
    assert_eq!(store.recover_expired_leases(at(150)).await.unwrap(), 1);
    let retaken = claim_due(store, &routes, at(150), 10, LEASE).await.unwrap();
    assert_eq!(retaken.len(), 1);
    assert_eq!(
        retaken[0].delivery.id, lapsed.id,
        "the lapsed lease is due again"
    );
    assert!(retaken[0].lease_token > herald_core::store::INTAKE_LEASE_TOKEN);
}

async fn stored_event(
    store: &Store,
    tenant: &herald_core::id::TenantId,
    delivery: &herald_core::model::Delivery,
) -> herald_core::model::Event {
    store
        .get_event(tenant, &delivery.event_id)
        .await
        .unwrap()
        .expect("the event is stored")
}

pub async fn outcomes_update_the_delivery_and_log_attempts(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 1).await;
    let record = event_record(
        &acme,
        "a.b",
        None,
        &[(&routes[0].0.id, &routes[0].1)],
        at(0),
    );
    store.insert_events(vec![record.clone()]).await.unwrap();

    let first = claim_due(store, &routes, at(0), 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    let failed = outcome(&first, DeliveryStatus::Pending, at(5_000), 503);
    let logged = failed.attempt.clone();
    assert_eq!(
        store.record_outcomes(vec![failed], at(20)).await.unwrap(),
        vec![true]
    );
    let delivery = store
        .get_delivery(&acme, &first.delivery.id)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(
        (delivery.status, delivery.attempts),
        (DeliveryStatus::Pending, 1)
    );
    assert_eq!(delivery.next_attempt_at, at(5_000));
    assert_eq!(delivery.last_status_code, Some(503));
    assert_eq!(delivery.last_error.as_deref(), Some("HTTP 503"));
    assert!(
        claim_due(store, &routes, at(4_999), 1, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "not due before its retry time"
    );

    let second = claim_due(store, &routes, at(5_000), 1, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.delivery.attempts, 1);
    store
        .record_outcomes(
            vec![outcome(&second, DeliveryStatus::Succeeded, at(5_010), 200)],
            at(5_010),
        )
        .await
        .unwrap();
    let attempts = store
        .list_attempts(&acme, &first.delivery.id)
        .await
        .unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0], logged);
    assert_eq!(attempts[1].number, 2);
    assert!(
        store.waiting_targets().await.unwrap().is_empty(),
        "nothing left to do"
    );
}

pub async fn deliveries_list_by_status_target_and_type(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    for n in 0..3 {
        let kind = if n == 0 {
            "billing.paid"
        } else {
            "core.created"
        };
        store
            .insert_events(vec![event_record(&acme, kind, None, &targets, at(n))])
            .await
            .unwrap();
    }
    let count = async |query: DeliveryQuery| {
        store
            .list_deliveries(&acme, &query, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .len()
    };
    assert_eq!(count(DeliveryQuery::default()).await, 6);
    let by_target = DeliveryQuery {
        target_id: Some(routes[0].0.id.clone()),
        ..Default::default()
    };
    assert_eq!(count(by_target).await, 3);
    let by_type = DeliveryQuery {
        event_type: Some(EventType::parse("billing.paid", "t").unwrap()),
        ..Default::default()
    };
    assert_eq!(count(by_type).await, 2);
    let dead = DeliveryQuery {
        status: Some(DeliveryStatus::Dead),
        ..Default::default()
    };
    assert_eq!(count(dead).await, 0);
    let first = store
        .list_deliveries(&acme, &DeliveryQuery::default(), &PageRequest::first(4))
        .await
        .unwrap();
    let rest = PageRequest {
        limit: 4,
        after: first.next_after.clone(),
    };
    let second = store
        .list_deliveries(&acme, &DeliveryQuery::default(), &rest)
        .await
        .unwrap();
    assert_eq!(
        (first.items.len(), second.items.len(), second.next_after),
        (4, 2, None)
    );
}

/// A tenant with `count` targets, and one event whose delivery to each is dead; the
/// claims that attempted them.
async fn dead_letters(
    store: &Store,
    count: usize,
) -> (
    herald_core::id::TenantId,
    Vec<(Target, herald_core::id::SubscriptionId)>,
    Vec<Claim>,
) {
    let (acme, routes) = setup(store, count).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    store
        .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(0))])
        .await
        .unwrap();
    let claims = claim_due(store, &routes, at(0), 10, LEASE).await.unwrap();
    let deaths: Vec<_> = claims
        .iter()
        .map(|c| outcome(c, DeliveryStatus::Dead, at(10), 500))
        .collect();
    store.record_outcomes(deaths, at(10)).await.unwrap();
    (acme, routes, claims)
}

pub async fn requeue_and_redrive(backend: Backend) {
    let store = &backend.store;
    let (acme, routes, claims) = dead_letters(store, 2).await;

    let only_first = DeliveryQuery {
        target_id: Some(routes[0].0.id.clone()),
        ..Default::default()
    };
    let dead = |query: DeliveryQuery, at_most| Requeue::Dead {
        query,
        dead_before: at(100),
        at_most,
    };
    assert_eq!(
        store
            .requeue(&acme, &dead(only_first, 10), at(100))
            .await
            .unwrap(),
        1
    );
    let redriven = claim_due(store, &routes, at(100), 10, LEASE).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].delivery.target_id, routes[0].0.id);
    assert_eq!(
        redriven[0].delivery.window_start,
        at(100),
        "a redrive opens a new retry window"
    );

    let in_flight = Requeue::One(redriven[0].delivery.id.clone());
    assert_eq!(
        store.requeue(&acme, &in_flight, at(200)).await.unwrap(),
        0,
        "never while an attempt is under way"
    );
    let (other, _) = tenant(store, "Other").await;
    let dead_one = claims
        .iter()
        .find(|c| c.delivery.target_id == routes[1].0.id)
        .expect("second")
        .delivery
        .id
        .clone();
    assert_eq!(
        store
            .requeue(&other.id, &Requeue::One(dead_one.clone()), at(200))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .requeue(&acme, &Requeue::One(dead_one), at(200))
            .await
            .unwrap(),
        1
    );
}

pub async fn a_redrive_takes_at_most_what_it_is_allowed_per_write(backend: Backend) {
    let store = &backend.store;
    let (acme, routes, _) = dead_letters(store, 5).await;

    let dead = |dead_before| Requeue::Dead {
        query: DeliveryQuery::default(),
        dead_before,
        at_most: 2,
    };
    assert_eq!(
        store.requeue(&acme, &dead(at(10)), at(100)).await.unwrap(),
        0,
        "none died before their death"
    );
    let mut batches = Vec::new();
    for _ in 0..4 {
        batches.push(store.requeue(&acme, &dead(at(50)), at(100)).await.unwrap());
    }
    assert_eq!(batches, [2, 2, 1, 0], "each write takes what is still dead");
    let redriven = claim_due(store, &routes, at(100), 10, LEASE).await.unwrap();
    assert_eq!(redriven.len(), 5);

    // Redriven and dead again since: a redrive that began before takes none of them.
    let deaths: Vec<_> = redriven
        .iter()
        .map(|c| outcome(c, DeliveryStatus::Dead, at(110), 500))
        .collect();
    store.record_outcomes(deaths, at(110)).await.unwrap();
    assert_eq!(
        store.requeue(&acme, &dead(at(100)), at(120)).await.unwrap(),
        0
    );
    assert_eq!(
        store.requeue(&acme, &dead(at(111)), at(120)).await.unwrap(),
        2
    );
}

pub async fn releasing_leases_makes_in_flight_work_due(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    store
        .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(0))])
        .await
        .unwrap();
    assert_eq!(
        claim_due(store, &routes, at(0), 10, LEASE)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.release_all_leases(at(5)).await.unwrap(), 2);
    let again = claim_due(store, &routes, at(5), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 2, "claimable at once, not after the lease");
}

pub async fn claims_take_what_each_lane_of_each_target_is_asked(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    for n in 0..5 {
        store
            .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(n))])
            .await
            .unwrap();
    }
    // Two of the first target's deliveries fail once: they move to the retry lane.
    let first_two = store
        .claim(
            vec![ClaimRequest {
                target_id: routes[0].0.id.clone(),
                first_attempts: 2,
                retries: 0,
                limits: UNLIMITED,
            }],
            at(10),
            LEASE,
        )
        .await
        .unwrap()
        .claims;
    assert_eq!(first_two.len(), 2);
    let failures = first_two
        .iter()
        .map(|c| outcome(c, DeliveryStatus::Pending, at(20), 500))
        .collect();
    store.record_outcomes(failures, at(15)).await.unwrap();

    let waiting = store.waiting_targets().await.unwrap();
    let lanes = |id: &herald_core::id::TargetId| {
        let w = waiting
            .iter()
            .find(|w| w.target.id == *id)
            .expect("waiting");
        (w.first_due, w.retry_due)
    };
    assert_eq!(lanes(&routes[0].0.id), (Some(at(2)), Some(at(20))));
    assert_eq!(lanes(&routes[1].0.id), (Some(at(0)), None));

    let request = |first_attempts, retries| ClaimRequest {
        target_id: routes[0].0.id.clone(),
        first_attempts,
        retries,
        limits: UNLIMITED,
    };
    assert!(
        store
            .claim(vec![request(0, 5)], at(19), LEASE)
            .await
            .unwrap()
            .claims
            .is_empty(),
        "retries are not due before their time"
    );
    let claimed = store
        .claim(vec![request(1, 1)], at(20), LEASE)
        .await
        .unwrap()
        .claims;
    let attempts: Vec<u32> = claimed.iter().map(|c| c.delivery.attempts).collect();
    assert_eq!(attempts, vec![0, 1], "one from each lane, as asked");
    assert!(
        claimed
            .iter()
            .all(|c| c.delivery.target_id == routes[0].0.id),
        "nothing from a target that was not asked"
    );
    assert_eq!(
        claimed[0].delivery.next_attempt_at,
        at(2),
        "earliest due first"
    );
}

pub async fn disabled_targets_keep_their_deliveries_waiting(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    store
        .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(0))])
        .await
        .unwrap();
    let gone = &routes[0].0.id;
    assert!(
        store
            .disable_target(gone, "HTTP 410 Gone", at(5))
            .await
            .unwrap()
    );
    assert!(
        !store.disable_target(gone, "again", at(6)).await.unwrap(),
        "already disabled"
    );
    let stored = store.get_target(&acme, gone).await.unwrap().expect("kept");
    assert!(!stored.active);
    assert_eq!(stored.disabled_reason.as_deref(), Some("HTTP 410 Gone"));
    let waiting = waiting_target_ids(store).await;
    assert_eq!(waiting, vec![routes[1].0.id.clone()]);
    assert_eq!(
        claim_due(store, &routes, at(10), 10, LEASE)
            .await
            .unwrap()
            .len(),
        1,
        "nothing is claimed for a disabled target"
    );

    let mut enabled = stored.clone();
    enabled.active = true;
    enabled.disabled_reason = None;
    assert!(store.update_target(&enabled).await.unwrap());
    let resumed = claim_due(store, &routes, at(20), 10, LEASE).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].delivery.target_id, *gone);
}

pub async fn deleting_a_target_deletes_what_it_is_owed_and_keeps_what_it_received(
    backend: Backend,
) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let (doomed, kept) = (&routes[0].0.id, &routes[1].0.id);
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let records: Vec<_> = (0..5)
        .map(|_| event_record(&acme, "a.b", None, &targets, at(0)))
        .collect();
    store.insert_events(records).await.unwrap();
    // The doomed target's five deliveries, one in each state: succeeded, dead,
    // waiting for a retry, in flight, waiting for a first attempt.
    let first = claim_due(store, &routes[..1], at(0), 3, LEASE)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let outcomes = vec![
        outcome(&first[0], DeliveryStatus::Succeeded, at(10), 200),
        outcome(&first[1], DeliveryStatus::Dead, at(10), 500),
        outcome(&first[2], DeliveryStatus::Pending, at(60_000), 503),
    ];
    store.record_outcomes(outcomes, at(10)).await.unwrap();
    let in_flight = claim_due(store, &routes[..1], at(20), 1, LEASE)
        .await
        .unwrap();
    assert_eq!(in_flight.len(), 1);
    let all_of = |target: &herald_core::id::TargetId| DeliveryQuery {
        target_id: Some(target.clone()),
        ..Default::default()
    };
    let doomed_before = store
        .list_deliveries(&acme, &all_of(doomed), &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(doomed_before.len(), 5);

    assert!(store.delete_target(&acme, doomed).await.unwrap());

    let received = &first[0].delivery.id;
    let left = store
        .list_deliveries(&acme, &all_of(doomed), &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(
        left.iter().map(|d| (&d.id, d.status)).collect::<Vec<_>>(),
        vec![(received, DeliveryStatus::Succeeded)],
        "only what the target received stays"
    );
    assert_eq!(
        store.list_attempts(&acme, received).await.unwrap().len(),
        1,
        "with its attempt"
    );
    for gone in doomed_before.iter().filter(|d| d.id != *received) {
        assert_eq!(store.get_delivery(&acme, &gone.id).await.unwrap(), None);
    }
    assert_eq!(
        store
            .list_deliveries(&acme, &all_of(kept), &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        5,
        "another target's deliveries are untouched"
    );
    let late = outcome(&in_flight[0], DeliveryStatus::Succeeded, at(30), 200);
    assert_eq!(
        store.record_outcomes(vec![late], at(30)).await.unwrap(),
        vec![false],
        "the outcome of an attempt under way when the target went is dropped"
    );
    assert_eq!(
        store
            .get_delivery(&acme, &in_flight[0].delivery.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .requeue(&acme, &Requeue::One(received.clone()), at(40))
            .await
            .unwrap(),
        0,
        "what a deleted target received is never sent again"
    );
    let waiting = waiting_target_ids(store).await;
    assert_eq!(waiting, vec![kept.clone()]);
    assert!(
        claim_due(store, &routes[..1], at(100_000), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );

    // Intake routed before the deletion and written after it is refused whole, as a
    // reference to the target would be: nothing is left that no one would deliver.
    let late_record = event_record(&acme, "a.b", None, &targets, at(50));
    let late_event = late_record.event.id.clone();
    assert!(matches!(
        store.insert_events(vec![late_record]).await,
        Err(herald_core::store::StoreError::Conflict(
            herald_core::store::Conflict::MissingReference
        ))
    ));
    assert_eq!(store.get_event(&acme, &late_event).await.unwrap(), None);
    assert!(
        !store.delete_target(&acme, doomed).await.unwrap(),
        "already gone"
    );
}

pub async fn circuits_are_saved_per_target(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let (other, _) = tenant(store, "Other").await;
    let target = &routes[0].0.id;
    assert_eq!(store.target_circuit(&acme, target).await.unwrap(), None);
    let mut circuit = Circuit::closed(at(0));
    let policy = CircuitPolicy {
        failures: 1,
        cooldown: Duration::from_secs(30),
        max_cooldown: Duration::from_secs(60),
    };
    circuit.record_failure(at(10), &policy);
    let doomed = stored_target(store, &acme).await;
    store
        .save_circuits(vec![
            (target.clone(), circuit),
            (doomed.id.clone(), circuit),
        ])
        .await
        .unwrap();
    assert_eq!(
        store.target_circuit(&acme, target).await.unwrap(),
        Some(circuit)
    );
    assert_eq!(
        store.target_circuit(&other.id, target).await.unwrap(),
        None,
        "another tenant's target"
    );
    assert!(store.delete_target(&acme, &doomed.id).await.unwrap());
    circuit.record_success(at(40), at(40));
    store
        .save_circuits(vec![
            (target.clone(), circuit),
            (doomed.id.clone(), circuit),
        ])
        .await
        .expect("a deleted target's circuit is skipped, not an error");
    assert_eq!(
        store.target_circuit(&acme, target).await.unwrap(),
        Some(circuit)
    );
    // Another instance's older view (still closed since 0, a failure counted) does not
    // replace the state entered later.
    let mut stale = Circuit::closed(at(0));
    stale.record_failure(
        at(50),
        &CircuitPolicy {
            failures: 5,
            ..policy
        },
    );
    store
        .save_circuits(vec![(target.clone(), stale)])
        .await
        .unwrap();
    assert_eq!(
        store.target_circuit(&acme, target).await.unwrap(),
        Some(circuit),
        "a circuit never goes back in time"
    );

    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    store
        .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(0))])
        .await
        .unwrap();
    let waiting = store.waiting_targets().await.unwrap();
    let circuit_of = |id: &herald_core::id::TargetId| {
        waiting
            .iter()
            .find(|w| w.target.id == *id)
            .expect("waiting")
            .circuit
    };
    assert_eq!(circuit_of(target), Some(circuit));
    assert_eq!(circuit_of(&routes[1].0.id), None, "never saved");
}

pub async fn queue_stats_count_due_and_waiting_work_and_open_circuits(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    let mut later = event_record(&acme, "a.b", None, &targets, at(0));
    for delivery in &mut later.deliveries {
        delivery.next_attempt_at = at(60_000);
    }
    store
        .insert_events(vec![
            event_record(&acme, "a.b", None, &targets, at(0)),
            later,
        ])
        .await
        .unwrap();
    let stats = store.queue_stats(at(10)).await.unwrap();
    assert_eq!((stats.due, stats.waiting, stats.open_circuits), (2, 2, 0));

    // A retry due later counts as waiting; claimed work counts as neither.
    let claimed = claim_due(store, &routes, at(10), 1, LEASE).await.unwrap();
    let retry = outcome(&claimed[0], DeliveryStatus::Pending, at(30_000), 500);
    store.record_outcomes(vec![retry], at(20)).await.unwrap();
    let mut open = Circuit::closed(at(0));
    open.record_failure(
        at(20),
        &CircuitPolicy {
            failures: 1,
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(30),
        },
    );
    store
        .save_circuits(vec![(routes[0].0.id.clone(), open)])
        .await
        .unwrap();
    let stats = store.queue_stats(at(20)).await.unwrap();
    assert_eq!(claimed.len(), 2, "one due from each target");
    assert_eq!(
        (stats.due, stats.waiting, stats.open_circuits),
        (0, 3, 1),
        "one claimed delivery still in flight, one retry and two later ones waiting"
    );
    store
        .disable_target(&routes[1].0.id, "gone", at(30))
        .await
        .unwrap();
    let stats = store.queue_stats(at(30)).await.unwrap();
    assert_eq!(
        stats.waiting, 2,
        "a switched-off target's deliveries cannot go, so they are not counted"
    );
}

/// Two claimants (two instances, or one instance twice) share a target's limits: what
/// is in flight from either counts against `max_in_flight`, and the rate's tokens
/// spent by one are gone for the other.
pub async fn claims_share_each_targets_in_flight_cap_and_rate(backend: Backend) {
    let store = &backend.store;
    let (acme, routes) = setup(store, 2).await;
    let (capped, limited) = (&routes[0].0, &routes[1].0);
    let targets: Vec<_> = routes.iter().map(|(t, s)| (&t.id, s)).collect();
    for n in 0..10 {
        store
            .insert_events(vec![event_record(&acme, "a.b", None, &targets, at(n))])
            .await
            .unwrap();
    }
    let capped_request = |first_attempts| ClaimRequest {
        target_id: capped.id.clone(),
        first_attempts,
        retries: 0,
        limits: SharedLimits::in_flight(4),
    };
    let first = store
        .claim(vec![capped_request(3)], at(100), LEASE)
        .await
        .unwrap()
        .claims;
    assert_eq!(first.len(), 3);
    let second = store
        .claim(vec![capped_request(3)], at(100), LEASE)
        .await
        .unwrap()
        .claims;
    assert_eq!(second.len(), 1, "3 of the cap of 4 are in flight already");
    let held = store
        .claim(vec![capped_request(3)], at(100), LEASE)
        .await
        .unwrap();
    assert!(held.claims.is_empty());
    assert_eq!(
        held.held_back,
        vec![HeldBack {
            target_id: capped.id.clone(),
            until: None
        }],
        "the cap, not an empty lane, stopped it"
    );
    let finished = outcome(&first[0], DeliveryStatus::Succeeded, at(110), 200);
    store
        .record_outcomes(vec![finished], at(110))
        .await
        .unwrap();
    let third = store
        .claim(vec![capped_request(3)], at(120), LEASE)
        .await
        .unwrap()
        .claims;
    assert_eq!(third.len(), 1, "one finished, so one more may go");

    // 20/s with a burst of 2: the second claimant finds the bucket spent.
    let limited_request = || ClaimRequest {
        target_id: limited.id.clone(),
        first_attempts: 10,
        retries: 0,
        limits: SharedLimits {
            max_in_flight: 100,
            rate: Some(herald_core::model::RateLimit::parse(20.0, "rate").unwrap()),
        },
    };
    let burst = store
        .claim(vec![limited_request()], at(200), LEASE)
        .await
        .unwrap()
        .claims;
    assert_eq!(
        burst.len(),
        2,
        "a full bucket holds a tenth of a second's tokens"
    );
    let spent = store
        .claim(vec![limited_request()], at(200), LEASE)
        .await
        .unwrap()
        .claims;
    assert!(spent.is_empty(), "the tokens are shared, not per claimant");
    let held = store
        .claim(vec![limited_request()], at(250), LEASE)
        .await
        .unwrap();
    assert_eq!(held.claims.len(), 1, "50 ms bring one token");
    assert_eq!(
        held.held_back,
        vec![HeldBack {
            target_id: limited.id.clone(),
            until: Some(at(300))
        }],
        "the rate held it back until the next token"
    );
    let refilled = store
        .claim(vec![limited_request()], at(350), LEASE)
        .await
        .unwrap()
        .claims;
    assert_eq!(refilled.len(), 2, "100 ms later, 2 more tokens");
}
