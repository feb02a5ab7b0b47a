//! Herald's storage backends.
//!
//! Each backend implements [`herald_core::store::StoreBackend`] and translates its
//! driver's errors into [`herald_core::store::StoreError`] here, so no driver type
//! escapes this crate. The conformance suite in `tests/conformance` runs the same cases
//! against every backend.
//!
//! - [`sqlite`]: the embedded default, one file in the data directory (WAL mode).
//! - [`postgres`]: a PostgreSQL database shared by any number of Herald instances.

use std::sync::Arc;
use std::time::Duration;

mod decode;
mod lanes;
mod limits;
pub mod postgres;
mod schema_version;
pub mod sqlite;

pub use postgres::PostgresStore;

pub use sqlite::SqliteStore;

/// Told how long each commit took (for a metrics histogram).
pub type CommitObserver = Arc<dyn Fn(Duration) + Send + Sync>;
