//! Opening each backend on fresh, private storage.

use herald_core::store::Store;
use herald_store::SqliteStore;
use tempfile::TempDir;

/// A backend under test, and how to open it again on the same data.
pub struct Backend {
    /// The store under test.
    pub store: Store,
    reopen: Box<dyn Fn() -> Store + Send + Sync>,
    _storage: TempDir,
}

impl Backend {
    /// Drops this handle's store and opens the same data again, as a restart would.
    pub async fn reopen(mut self) -> Self {
        self.store = (self.reopen)();
        self
    }
}

/// An embedded SQLite store in a new temporary directory.
pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_owned();
    let open = move || Store::new(SqliteStore::open(&path).expect("open SQLite store"));
    Backend {
        store: open(),
        reopen: Box::new(open),
        _storage: dir,
    }
}
