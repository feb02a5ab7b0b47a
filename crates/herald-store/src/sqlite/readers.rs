//! Read-only connections, reused across reads.
//!
//! Reads run on tokio's blocking threads. A connection is taken from the idle list
//! (or opened when none is idle) and put back afterwards, up to [`MAX_IDLE`]. In WAL
//! mode these readers never wait for the writer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use herald_core::store::StoreError;
use rusqlite::{Connection, OpenFlags};

use super::error::translate;

/// Most idle connections kept open.
const MAX_IDLE: usize = 8;

/// Opens, lends and keeps read-only connections to one database file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    /// Readers of the database at `path` (which must already exist).
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `work` on a read connection on a blocking thread.
    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        let idle = Arc::clone(&self.idle);
        tokio::task::spawn_blocking(move || {
            let connection = take_idle(&idle).map_or_else(|| open_reader(&path), Ok)?;
            let outcome = work(&connection);
            give_back(&idle, connection);
            outcome
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn take_idle(idle: &Mutex<Vec<Connection>>) -> Option<Connection> {
    idle.lock().ok()?.pop()
}

fn give_back(idle: &Mutex<Vec<Connection>>, connection: Connection) {
    if let Ok(mut idle) = idle.lock()
        && idle.len() < MAX_IDLE
    {
        idle.push(connection);
    }
}

fn open_reader(path: &PathBuf) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(path, flags).map_err(translate)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(translate)?;
    connection.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
    Ok(connection)
}
