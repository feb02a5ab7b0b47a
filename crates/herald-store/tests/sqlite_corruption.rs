//! SQLite specifics: a stored row that no longer decodes is set aside as dead instead
//! of blocking every claim after it.

use std::time::Duration;

use bytes::Bytes;
use herald_core::filter::EventType;
use herald_core::id::TargetId;
use herald_core::model::{
    ContentType, CustomHeaders, FilterPatterns, NewEvent, NewFilter, NewSubscription, NewTarget,
    NewTenant, TargetUrl, TenantName,
};
use herald_core::service::Management;
use herald_core::store::{ClaimRequest, SharedLimits, Store};
use herald_core::time::Timestamp;
use herald_store::SqliteStore;
use herald_store::sqlite::DATABASE_FILE;

/// A store in `dir` with one tenant, `targets` targets subscribed to everything, and one
/// event published to them; returns the store and the target ids.
async fn one_event_to(dir: &std::path::Path, targets: usize) -> (Store, Vec<TargetId>) {
    let store = Store::new(SqliteStore::open(dir).expect("open"));
    let service = Management::new(store.clone());
    let (tenant, _) = service
        .create_tenant(NewTenant {
            name: TenantName::parse("Acme", "name").expect("name"),
            ingest_rate_limit: None,
        })
        .await
        .expect("tenant");
    let patterns = FilterPatterns::parse(&["*".to_owned()], "events").expect("patterns");
    let filter = service
        .create_filter(
            &tenant.id,
            NewFilter {
                description: None,
                patterns,
            },
        )
        .await
        .expect("filter");
    let mut ids = Vec::new();
    for _ in 0..targets {
        let new_target = NewTarget {
            url: TargetUrl::parse("https://example.com/hook", "url").expect("url"),
            description: None,
            secret: None,
            headers: CustomHeaders::default(),
            rate_limit: None,
            max_in_flight: None,
            timeout: None,
            active: None,
        };
        let target = service
            .create_target(&tenant.id, new_target)
            .await
            .expect("target");
        ids.push(target.id.clone());
        let subscription = NewSubscription {
            target_id: target.id,
            filter_id: filter.id.clone(),
            active: None,
        };
        service
            .create_subscription(&tenant.id, subscription)
            .await
            .expect("subscription");
    }
    let event = NewEvent {
        event_type: EventType::parse("a.b", "type").expect("type"),
        payload: Bytes::from_static(b"{}"),
        content_type: ContentType::json(),
        idempotency_key: None,
    };
    let published = service
        .publish(&tenant.id, vec![event])
        .await
        .expect("publish");
    assert_eq!(published[0].deliveries as usize, targets);
    (store, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_delivery_is_set_aside_and_the_rest_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, targets) = one_event_to(dir.path(), 3).await;

    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw connection");
    raw.execute("UPDATE deliveries SET event_type = 'not..valid' WHERE id = (SELECT MIN(id) FROM deliveries)", [])
        .expect("corrupt one row");
    drop(raw);

    let later = Timestamp::now().plus(Duration::from_secs(1));
    let requests: Vec<ClaimRequest> = targets
        .iter()
        .map(|id| ClaimRequest {
            target_id: id.clone(),
            first_attempts: 10,
            retries: 10,
            limits: SharedLimits::in_flight(u32::MAX),
        })
        .collect();
    let claims = store
        .claim(requests.clone(), later, Duration::from_secs(90))
        .await
        .expect("claims still work")
        .claims;
    assert_eq!(claims.len(), 2, "the two readable deliveries are claimed");
    assert!(
        store
            .claim(requests.clone(), later, Duration::from_secs(90))
            .await
            .expect("claims")
            .claims
            .is_empty()
    );
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw connection");
    let (status, error): (String, String) = raw
        .query_row(
            "SELECT status, last_error FROM deliveries WHERE event_type = 'not..valid'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the corrupt row");
    assert_eq!(status, "dead", "set aside, visible as a dead letter");
    assert!(error.contains("corrupt"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_target_is_skipped_and_the_others_keep_flowing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, targets) = one_event_to(dir.path(), 2).await;

    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw connection");
    raw.execute(
        "UPDATE targets SET url = 'not a url' WHERE id = ?1",
        [targets[0].as_str()],
    )
    .expect("corrupt one target");
    raw.execute(
        "INSERT INTO circuits (target_id, state, since, consecutive_failures, next_probe_at, opens) \
         VALUES (?1, 'ajar', 0, 0, NULL, 0)",
        [targets[1].as_str()],
    )
    .expect("an unknown circuit state");
    drop(raw);

    let waiting = store.waiting_targets().await.expect("the scan still works");
    assert_eq!(waiting.len(), 1, "the unreadable target is skipped");
    assert_eq!(waiting[0].target.id, targets[1]);
    assert_eq!(
        waiting[0].circuit, None,
        "an unreadable circuit counts as closed"
    );
}
