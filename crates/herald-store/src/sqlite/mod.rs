//! The embedded store: one SQLite database file in WAL mode.
//!
//! One writer thread owns the only write connection and commits queued writes in
//! groups (see [`writer`]); reads run on a small pool of read-only connections on
//! tokio's blocking threads (see [`readers`]). WAL lets the readers proceed while the
//! writer commits. `synchronous = FULL` makes every acknowledged commit survive a
//! crash of the process and of the machine.

mod backend;
mod checkpointer;
mod error;
mod housekeeping;
mod parked;
mod queue;
mod readers;
mod rows;
mod schema;
mod vfs;
mod writer;

use std::path::Path;
use std::sync::Arc;

use herald_core::store::StoreError;
use rusqlite::{Connection, OpenFlags};

pub use crate::CommitObserver;
use checkpointer::Checkpointer;
use readers::Readers;
use writer::Writer;

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "herald.db";

/// A [`StoreBackend`](herald_core::store::StoreBackend) on one SQLite file.
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    _checkpointer: Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, brings its schema up to
    /// date and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_observed(data_dir, Arc::new(|_| {}))
    }

    /// Like [`Self::open`], telling `observer` how long every group commit takes.
    pub fn open_observed(data_dir: &Path, observer: CommitObserver) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let mut connection = open_writer_connection(&path)?;
        configure_writer(&connection)?;
        vfs::require_full_sync(&connection)?;
        schema::migrate(&mut connection)?;
        Ok(Self {
            writer: Writer::start(connection, observer)?,
            _checkpointer: Checkpointer::start(path.clone())?,
            readers: Readers::new(path),
        })
    }
}

/// Prepared statements kept per connection: more than Herald has distinct statements
/// (rusqlite's default of 16 would re-parse the hot ones over and over).
pub(super) const STATEMENT_CACHE: usize = 256;

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    configure_connection(Connection::open(path).map_err(error::translate)?)
}

/// The writer's connection, on the VFS that passes each commit's log writes to the
/// kernel together (see [`vfs`]).
fn open_writer_connection(path: &Path) -> Result<Connection, StoreError> {
    let vfs = vfs::registered()?;
    configure_connection(
        Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
            .map_err(error::translate)?,
    )
}

fn configure_connection(connection: Connection) -> Result<Connection, StoreError> {
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(error::translate)?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

fn configure_writer(connection: &Connection) -> Result<(), StoreError> {
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 10000;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(error::translate)
}
