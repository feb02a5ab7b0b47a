//! SQLite specifics: the write-ahead log is copied into the database file by the
//! background checkpointer (commits never do it themselves).

use std::time::Duration;

use bytes::Bytes;
use herald_core::filter::EventType;
use herald_core::model::{ContentType, NewEvent, NewTenant, TenantName};
use herald_core::service::Management;
use herald_core::store::Store;
use herald_store::SqliteStore;
use herald_store::sqlite::DATABASE_FILE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_pages_reach_the_database_file_in_the_background() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(SqliteStore::open(dir.path()).expect("open"));
    let service = Management::new(store.clone());
    let (tenant, _) = service
        .create_tenant(NewTenant {
            name: TenantName::parse("Acme", "name").expect("name"),
            ingest_rate_limit: None,
        })
        .await
        .expect("tenant");
    let database = dir.path().join(DATABASE_FILE);
    let size = || std::fs::metadata(&database).map_or(0, |m| m.len());
    let before = size();
    for _ in 0..20 {
        let events = (0..100)
            .map(|_| NewEvent {
                event_type: EventType::parse("a.b", "type").expect("type"),
                payload: Bytes::from(vec![b'x'; 2048]),
                content_type: ContentType::json(),
                idempotency_key: None,
            })
            .collect();
        service.publish(&tenant.id, events).await.expect("publish");
    }
    // 2,000 events of 2 KiB: about 4 MiB, all in the WAL until a checkpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while size() < before + (3 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes: nothing was checkpointed",
            size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
