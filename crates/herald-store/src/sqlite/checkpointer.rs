//! The WAL checkpointer: copies committed pages from the write-ahead log into the
//! database file on its own thread and connection.
//!
//! By default SQLite checkpoints inside whichever commit crosses 1,000 WAL pages, so
//! one unlucky write waits for the copy and its fsync. Herald raises that threshold on
//! the writer to 10,000 pages and checkpoints here instead, `PASSIVE`ly (never waiting
//! for or blocking the writer or the readers), so commit latency does not spike under
//! write load. The log starts over only when a checkpoint finishes between two
//! commits; under a write load that never pauses, the writer's own checkpoint at
//! 10,000 pages (cheap, as the copying is mostly done here) bounds the log, and
//! `journal_size_limit` truncates the file afterwards.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use herald_core::store::StoreError;

/// How often the log is copied into the database.
const EVERY: Duration = Duration::from_millis(250);

/// Handle to the checkpointer thread; dropping it stops the thread after a last
/// checkpoint.
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`.
    pub(super) fn start(path: PathBuf) -> Result<Self, StoreError> {
        let connection = super::open_connection(&path)?;
        // A checkpoint's copy into the database file must be on disk before the log
        // frames it copied are reused.
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(super::error::translate)?;
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("herald-sqlite-checkpoint".into())
            .spawn(move || {
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(EVERY),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    if let Err(error) =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(%error, "WAL checkpoint failed; retrying later");
                    }
                    if last {
                        return;
                    }
                }
            })
            .map_err(StoreError::backend)?;
        Ok(Self { _stop: stop })
    }
}
