//! The single writer: every write goes through one thread that commits in groups.
//!
//! SQLite allows one writer at a time, and each commit costs an fsync. So instead of
//! many connections contending for the write lock, callers queue a closure; the writer
//! thread takes everything queued (up to [`MAX_GROUP`]), runs each closure inside its
//! own savepoint within one transaction, commits once, and only then answers every
//! caller. A closure that fails rolls back its own savepoint and nothing else. An
//! answer therefore always means "committed" (or "failed, nothing kept").

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use herald_core::store::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::translate;

/// Most writes committed together; bounds the latency one group adds to the next.
const MAX_GROUP: usize = 512;

/// A queued write, run on the writer thread, answered after its group commits.
trait WriteJob: Send {
    /// Runs the write inside the group's open transaction.
    fn run(&mut self, connection: &Connection);
    /// Answers the caller once the group's commit has succeeded or failed.
    fn finish(self: Box<Self>, commit: Result<(), CommitError>);
}

/// The commit of a group failed; every write in it is reported failed.
#[derive(Debug, Clone)]
struct CommitError(Arc<rusqlite::Error>);

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the group commit failed: {}", self.0)
    }
}

impl std::error::Error for CommitError {}

struct Job<T, F> {
    work: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection) {
        if let Some(work) = self.work.take() {
            self.outcome = Some(run_in_savepoint(connection, work));
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), CommitError>) {
        let answer = match (commit, self.outcome) {
            (Err(error), _) => Err(StoreError::backend(error)),
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::backend(WriterStopped)),
        };
        // The caller may have gone away (request cancelled); the write stands anyway.
        let _ = self.reply.send(answer);
    }
}

fn run_in_savepoint<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    connection
        .execute_batch("SAVEPOINT job")
        .map_err(translate)?;
    let outcome = work(connection);
    let end = if outcome.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    connection.execute_batch(end).map_err(translate)?;
    outcome
}

/// The writer thread has stopped, so the write was not made.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer thread has stopped")]
struct WriterStopped;

/// Handle to the writer thread; dropping the last handle stops the thread once the
/// queued writes are committed.
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn WriteJob>>,
}

impl Writer {
    /// Starts the writer thread on `connection`.
    pub(super) fn start(connection: Connection) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_loop(&connection, &jobs))
            .map_err(StoreError::backend)?;
        Ok(Self { queue })
    }

    /// Runs `work` in the next group commit and returns its result once committed.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work: Some(work),
            outcome: None,
            reply,
        };
        self.queue
            .send(Box::new(job))
            .map_err(|_| StoreError::backend(WriterStopped))?;
        answer
            .await
            .map_err(|_| StoreError::backend(WriterStopped))?
    }
}

fn write_loop(connection: &Connection, jobs: &mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let commit = commit_group(connection, &mut group);
        for job in group {
            job.finish(commit.clone());
        }
    }
}

fn commit_group(
    connection: &Connection,
    group: &mut [Box<dyn WriteJob>],
) -> Result<(), CommitError> {
    let shared = |error| CommitError(Arc::new(error));
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(shared)?;
    for job in group.iter_mut() {
        job.run(connection);
    }
    if let Err(error) = connection.execute_batch("COMMIT") {
        tracing::error!(%error, "SQLite group commit failed; rolling back");
        let _ = connection.execute_batch("ROLLBACK");
        return Err(shared(error));
    }
    Ok(())
}
