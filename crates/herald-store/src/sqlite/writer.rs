//! The single writer: every write goes through one thread that commits in groups.
//!
//! SQLite allows one writer at a time, and each commit costs an fsync. So instead of
//! many connections contending for the write lock, callers queue a closure; the writer
//! thread runs queued closures, each inside its own savepoint within one transaction,
//! commits once, and only then answers every caller. A closure that fails rolls back
//! its own savepoint and nothing else. An answer therefore always means "committed"
//! (or "failed, nothing kept").
//!
//! **Fairness.** Each write names a [`Lane`]: a tenant's intake, or the engine
//! (claims, outcomes, configuration). Queued writes are taken round robin across
//! lanes, and a group stops taking more once it has run for [`GROUP_BUDGET`], so a
//! tenant flooding large batches delays another tenant's single event by about one
//! group, not by its whole queue.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use herald_core::id::TenantId;

use herald_core::store::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::CommitObserver;
use super::error::translate;

/// Most writes committed together.
const MAX_GROUP: usize = 512;
/// How long a group keeps taking writes before it commits; bounds the latency one
/// group adds to the writes queued behind it.
const GROUP_BUDGET: Duration = Duration::from_millis(5);

/// Whose write it is, for round-robin fairness between writers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Lane {
    /// The delivery engine and the management API.
    Engine,
    /// One tenant's event intake.
    Intake(TenantId),
}

/// A queued write, run on the writer thread, answered after its group commits.
trait WriteJob: Send {
    /// Runs the write inside the group's open transaction.
    /// Returns `false` if the group's transaction can no longer be trusted (SQLite
    /// rolled it back, or a savepoint could not be undone).
    fn run(&mut self, connection: &Connection) -> bool;
    /// Answers the caller once the group's commit has succeeded or failed.
    fn finish(self: Box<Self>, commit: Result<(), CommitError>);
}

/// The group's transaction failed; every write in it is reported failed.
#[derive(Debug, Clone)]
enum CommitError {
    /// `BEGIN` or `COMMIT` failed.
    Failed(Arc<rusqlite::Error>),
    /// A write left the transaction unusable, so the whole group was rolled back.
    Aborted,
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "the group commit failed: {error}"),
            Self::Aborted => f.write_str("the group's transaction was rolled back"),
        }
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
    fn run(&mut self, connection: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return true;
        };
        let (outcome, sound) = run_in_savepoint(connection, work);
        self.outcome = Some(outcome);
        sound
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

/// Runs `work` in a savepoint of the open transaction, undoing it if it fails; also
/// says whether the transaction is still sound afterwards.
fn run_in_savepoint<T>(
    connection: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(translate)
    };
    if let Err(error) = run("SAVEPOINT job") {
        return (Err(error), !connection.is_autocommit());
    }
    let outcome = work(connection);
    let undone = outcome.is_ok() || run("ROLLBACK TO job").is_ok();
    let released = run("RELEASE job").is_ok();
    // Some errors (disk full, I/O) make SQLite roll back the whole transaction: then
    // nothing of the group may be reported committed.
    let sound = undone && released && !connection.is_autocommit();
    (outcome, sound)
}

/// The writer thread has stopped, so the write was not made.
#[derive(Debug, thiserror::Error)]
#[error("the SQLite writer thread has stopped")]
struct WriterStopped;

/// Handle to the writer thread; dropping the last handle stops the thread once the
/// queued writes are committed.
pub(super) struct Writer {
    queue: mpsc::Sender<(Lane, Box<dyn WriteJob>)>,
}

impl Writer {
    /// Starts the writer thread on `connection`.
    pub(super) fn start(
        connection: Connection,
        observer: CommitObserver,
    ) -> Result<Self, StoreError> {
        let (queue, jobs) = mpsc::channel();
        thread::Builder::new()
            .name("herald-sqlite-writer".into())
            .spawn(move || write_loop(&connection, &jobs, &observer))
            .map_err(StoreError::backend)?;
        Ok(Self { queue })
    }

    /// Runs `work` in the engine's lane; see [`Self::write_in`].
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_in(Lane::Engine, work).await
    }

    /// Runs `work` in a coming group commit, taking turns with the other lanes, and
    /// returns its result once committed.
    pub(super) async fn write_in<T, F>(&self, lane: Lane, work: F) -> Result<T, StoreError>
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
            .send((lane, Box::new(job)))
            .map_err(|_| StoreError::backend(WriterStopped))?;
        answer
            .await
            .map_err(|_| StoreError::backend(WriterStopped))?
    }
}

/// Queued writes per lane, taken round robin.
#[derive(Default)]
struct Lanes {
    queued: HashMap<Lane, VecDeque<Box<dyn WriteJob>>>,
    turns: VecDeque<Lane>,
}

impl Lanes {
    fn push(&mut self, lane: Lane, job: Box<dyn WriteJob>) {
        let queue = self.queued.entry(lane.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(lane);
        }
        queue.push_back(job);
    }

    /// The next lane's oldest write; the lane goes to the back of the turns.
    fn next(&mut self) -> Option<Box<dyn WriteJob>> {
        let lane = self.turns.pop_front()?;
        let queue = self.queued.get_mut(&lane)?;
        let job = queue.pop_front();
        if queue.is_empty() {
            self.queued.remove(&lane);
        } else {
            self.turns.push_back(lane);
        }
        job
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    /// Moves everything waiting in the channel into the lanes.
    fn take_arrivals(&mut self, jobs: &mpsc::Receiver<(Lane, Box<dyn WriteJob>)>) {
        while let Ok((lane, job)) = jobs.try_recv() {
            self.push(lane, job);
        }
    }
}

fn write_loop(
    connection: &Connection,
    jobs: &mpsc::Receiver<(Lane, Box<dyn WriteJob>)>,
    observer: &CommitObserver,
) {
    let mut lanes = Lanes::default();
    loop {
        if lanes.is_empty() {
            match jobs.recv() {
                Ok((lane, job)) => lanes.push(lane, job),
                Err(_) => return,
            }
        }
        let started = Instant::now();
        let (group, commit) = run_group(connection, &mut lanes, jobs);
        if commit.is_ok() {
            observer(started.elapsed());
        }
        for job in group {
            job.finish(commit.clone());
        }
    }
}

/// Runs writes in one transaction, round robin across lanes, until the budget or the
/// queue is used up, then commits.
fn run_group(
    connection: &Connection,
    lanes: &mut Lanes,
    jobs: &mpsc::Receiver<(Lane, Box<dyn WriteJob>)>,
) -> (Vec<Box<dyn WriteJob>>, Result<(), CommitError>) {
    let shared = |error| CommitError::Failed(Arc::new(error));
    let mut group = Vec::new();
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        // Nothing ran: fail one write so the error reaches a caller, not a loop.
        if let Some(job) = lanes.next() {
            group.push(job);
        }
        return (group, Err(shared(error)));
    }
    let started = Instant::now();
    while group.is_empty() || (group.len() < MAX_GROUP && started.elapsed() < GROUP_BUDGET) {
        lanes.take_arrivals(jobs);
        let Some(mut job) = lanes.next() else {
            break;
        };
        let sound = job.run(connection);
        group.push(job);
        if !sound {
            tracing::error!("a write left the SQLite transaction unusable; failing its group");
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            return (group, Err(CommitError::Aborted));
        }
    }
    if let Err(error) = connection.execute_batch("COMMIT") {
        tracing::error!(%error, "SQLite group commit failed; rolling back");
        let _ = connection.execute_batch("ROLLBACK");
        return (group, Err(shared(error)));
    }
    (group, Ok(()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A write that only notes that it ran.
    struct Noted(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl WriteJob for Noted {
        fn run(&mut self, _: &Connection) -> bool {
            self.1.lock().expect("log").push(self.0);
            true
        }
        fn finish(self: Box<Self>, _: Result<(), CommitError>) {}
    }

    #[test]
    fn lanes_take_turns_so_a_flood_waits_behind_a_single_write() {
        let connection = Connection::open_in_memory().expect("in-memory database");
        let ran = Arc::new(Mutex::new(Vec::new()));
        let flood = Lane::Intake(TenantId::generate());
        let quiet = Lane::Intake(TenantId::generate());
        let mut lanes = Lanes::default();
        for name in ["a1", "a2", "a3"] {
            lanes.push(flood.clone(), Box::new(Noted(name, Arc::clone(&ran))));
        }
        lanes.push(quiet, Box::new(Noted("b1", Arc::clone(&ran))));
        lanes.push(Lane::Engine, Box::new(Noted("claim", Arc::clone(&ran))));
        while let Some(mut job) = lanes.next() {
            job.run(&connection);
        }
        assert_eq!(*ran.lock().expect("log"), ["a1", "b1", "claim", "a2", "a3"]);
        assert!(lanes.is_empty());
    }
}
