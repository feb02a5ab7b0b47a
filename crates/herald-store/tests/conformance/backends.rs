//! Opening each backend on fresh, private storage.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use herald_core::store::Store;
use herald_store::postgres::{PostgresOptions, testing};
use herald_store::{PostgresStore, SqliteStore};
use tempfile::TempDir;

type Opener = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Store> + Send>> + Send + Sync>;

/// A backend under test, and how to open it again on the same data.
pub struct Backend {
    /// The store under test.
    pub store: Store,
    reopen: Opener,
    _storage: Option<TempDir>,
}

impl Backend {
    /// Drops this handle's store and opens the same data again, as a restart would.
    pub async fn reopen(mut self) -> Self {
        self.store = (self.reopen)().await;
        self
    }
}

/// An embedded SQLite store in a new temporary directory.
pub async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_owned();
    let open: Opener = Box::new(move || {
        let path = path.clone();
        Box::pin(async move { Store::new(SqliteStore::open(&path).expect("open SQLite store")) })
    });
    Backend {
        store: open().await,
        reopen: open,
        _storage: Some(dir),
    }
}

/// A PostgreSQL store in a new database on the test server.
pub async fn postgres() -> Backend {
    let url = testing::fresh_database(&testing::server_url()).await;
    let open: Opener = Box::new(move || {
        let options = PostgresOptions {
            url: url.clone(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            instance_id: "conformance".to_owned(),
        };
        Box::pin(async move {
            Store::new(
                PostgresStore::connect(options)
                    .await
                    .expect("open PostgreSQL store"),
            )
        })
    });
    Backend {
        store: open().await,
        reopen: open,
        _storage: None,
    }
}
