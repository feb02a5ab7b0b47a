//! The single writer: every write goes through one thread that commits in groups.
//!
//! SQLite allows one writer at a time, and each commit costs an fsync. So instead of
//! many connections contending for the write lock, callers queue a closure; the writer
//! thread runs queued closures in one transaction, commits once, and only then answers
//! every caller. A closure that fails keeps nothing and fails no other: an answer
//! always means "committed" (or "failed, nothing kept").
//!
//! **Savepoints only when needed.** A savepoint per closure would isolate a failure,
//! but SQLite then copies every page a closure touches into a sub-journal, and under
//! load that copying was 6–8 % of Herald's CPU. Closures fail rarely (a constraint
//! broken by a concurrent change, a full disk), so a group first runs without
//! savepoints. If a closure fails, the whole transaction is rolled back and the
//! group's closures are run again, each in its own savepoint; only that second run is
//! committed and answered. Closures are therefore `Fn`: running one twice must give the
//! same writes, which holds because they only read their captured input and the
//! database (a line one logs, such as a claim setting a corrupt delivery aside, is
//! logged again by the second run). After a failure the writer keeps a savepoint per
//! closure for [`ISOLATED_AFTER_FAILURE`], so a client that keeps making writes fail
//! (the same duplicate, again and again) costs what savepoints cost, not a replay of
//! every group its writes land in.
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

/// How long every write keeps a savepoint of its own after a write failed.
const ISOLATED_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Whose write it is, for round-robin fairness between writers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Lane {
    /// The delivery engine and the management API.
    Engine,
    /// One tenant's event intake.
    Intake(TenantId),
}

/// How a write ran in the group's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It succeeded.
    Done,
    /// It failed. Run bare, what it wrote before failing is still in the transaction;
    /// run in a savepoint, it was undone.
    Failed,
    /// The transaction can no longer be trusted (SQLite rolled it back, or a savepoint
    /// could not be undone).
    Broken,
}

/// How a write is run in the group's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Straight in the transaction.
    Bare,
    /// In a savepoint of its own, undone if it fails.
    Savepoint,
}

/// Whether groups run bare or with a savepoint per write: bare, except for a while
/// after a write failed.
#[derive(Debug, Default)]
struct IsolationPolicy {
    isolated_until: Option<Instant>,
}

impl IsolationPolicy {
    fn isolation(&self, now: Instant) -> Isolation {
        match self.isolated_until {
            Some(until) if now < until => Isolation::Savepoint,
            _ => Isolation::Bare,
        }
    }

    fn write_failed(&mut self, now: Instant) {
        self.isolated_until = Some(now + ISOLATED_AFTER_FAILURE);
    }
}

/// A queued write, run on the writer thread, answered after its group commits.
trait WriteJob: Send {
    /// Runs the write inside the group's open transaction, replacing the outcome of
    /// any earlier run (whose transaction was rolled back).
    fn run(&mut self, connection: &Connection, isolation: Isolation) -> Ran;
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
    work: F,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job<T, F>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    /// `work` as a write to queue, and where its answer will arrive.
    fn queued(work: F) -> (Box<dyn WriteJob>, oneshot::Receiver<Result<T, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let job = Self {
            work,
            outcome: None,
            reply,
        };
        (Box::new(job), answer)
    }
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, connection: &Connection, isolation: Isolation) -> Ran {
        let (outcome, ran) = match isolation {
            Isolation::Bare => run_bare(connection, &self.work),
            Isolation::Savepoint => run_in_savepoint(connection, &self.work),
        };
        self.outcome = Some(outcome);
        ran
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

/// Runs `work` straight in the open transaction.
fn run_bare<T>(
    connection: &Connection,
    work: impl Fn(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, Ran) {
    let outcome = work(connection);
    let ran = ran(outcome.is_ok(), !connection.is_autocommit());
    (outcome, ran)
}

/// How a write ran, from whether it succeeded and whether the group's transaction is
/// still sound: some errors (disk full, I/O) make SQLite roll back the whole
/// transaction, and then nothing of the group may be reported committed.
fn ran(succeeded: bool, sound: bool) -> Ran {
    match (sound, succeeded) {
        (false, _) => Ran::Broken,
        (true, true) => Ran::Done,
        (true, false) => Ran::Failed,
    }
}

/// Runs `work` in a savepoint of the open transaction, undoing it if it fails.
fn run_in_savepoint<T>(
    connection: &Connection,
    work: impl Fn(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, Ran) {
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map_err(translate)
    };
    if let Err(error) = run("SAVEPOINT job") {
        return (Err(error), ran(false, !connection.is_autocommit()));
    }
    let outcome = work(connection);
    let undone = outcome.is_ok() || run("ROLLBACK TO job").is_ok();
    let released = run("RELEASE job").is_ok();
    let sound = undone && released && !connection.is_autocommit();
    let ran = ran(outcome.is_ok(), sound);
    (outcome, ran)
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
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_in(Lane::Engine, work).await
    }

    /// Runs `work` in a coming group commit, taking turns with the other lanes, and
    /// returns its result once committed.
    pub(super) async fn write_in<T, F>(&self, lane: Lane, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = Job::queued(work);
        self.queue
            .send((lane, job))
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
    let mut policy = IsolationPolicy::default();
    loop {
        if lanes.is_empty() {
            match jobs.recv() {
                Ok((lane, job)) => lanes.push(lane, job),
                Err(_) => return,
            }
        }
        let started = Instant::now();
        let run = run_group(connection, &mut lanes, jobs, policy.isolation(started));
        if run.a_write_failed {
            policy.write_failed(Instant::now());
        }
        if run.commit.is_ok() {
            observer(started.elapsed());
        }
        for job in run.group {
            job.finish(run.commit.clone());
        }
    }
}

/// What one group did.
struct GroupRun {
    group: Vec<Box<dyn WriteJob>>,
    commit: Result<(), CommitError>,
    a_write_failed: bool,
}

/// Runs writes in one transaction, round robin across lanes, until the budget or the
/// queue is used up, then commits. Run bare, a failing write rolls the transaction back
/// and the same writes are run again, each in a savepoint ([`replay_isolated`]).
fn run_group(
    connection: &Connection,
    lanes: &mut Lanes,
    jobs: &mpsc::Receiver<(Lane, Box<dyn WriteJob>)>,
    isolation: Isolation,
) -> GroupRun {
    let mut group = Vec::new();
    let ended = |group, commit, a_write_failed| GroupRun {
        group,
        commit,
        a_write_failed,
    };
    if let Err(error) = connection.execute_batch("BEGIN IMMEDIATE") {
        // Nothing ran: fail one write so the error reaches a caller, not a loop.
        if let Some(job) = lanes.next() {
            group.push(job);
        }
        return ended(group, Err(shared(error)), false);
    }
    let mut a_write_failed = false;
    let started = Instant::now();
    while group.is_empty() || (group.len() < MAX_GROUP && started.elapsed() < GROUP_BUDGET) {
        lanes.take_arrivals(jobs);
        let Some(mut job) = lanes.next() else {
            break;
        };
        let ran = job.run(connection, isolation);
        group.push(job);
        match (ran, isolation) {
            (Ran::Done, _) => {}
            // Undone by its savepoint; the others stand.
            (Ran::Failed, Isolation::Savepoint) => a_write_failed = true,
            (Ran::Failed | Ran::Broken, Isolation::Bare) => {
                roll_back(connection);
                let commit = replay_isolated(connection, &mut group);
                return ended(group, commit, true);
            }
            (Ran::Broken, Isolation::Savepoint) => {
                return ended(group, Err(abort(connection)), true);
            }
        }
    }
    ended(group, commit(connection), a_write_failed)
}

/// Runs `group` again in a new transaction, each write in its own savepoint so that a
/// failing one keeps nothing, and commits what succeeded.
fn replay_isolated(
    connection: &Connection,
    group: &mut [Box<dyn WriteJob>],
) -> Result<(), CommitError> {
    connection
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|error| {
            tracing::error!(%error, "could not begin the replay of a group; failing its writes");
            shared(error)
        })?;
    for job in group.iter_mut() {
        if job.run(connection, Isolation::Savepoint) == Ran::Broken {
            return Err(abort(connection));
        }
    }
    commit(connection)
}

fn commit(connection: &Connection) -> Result<(), CommitError> {
    connection.execute_batch("COMMIT").map_err(|error| {
        tracing::error!(%error, "SQLite group commit failed; rolling back");
        roll_back(connection);
        shared(error)
    })
}

/// Gives up the group after a write left its transaction unusable.
fn abort(connection: &Connection) -> CommitError {
    tracing::error!("a write left the SQLite transaction unusable; failing its group");
    roll_back(connection);
    CommitError::Aborted
}

/// Ends the open transaction, if SQLite has not already.
fn roll_back(connection: &Connection) {
    if !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
}

fn shared(error: rusqlite::Error) -> CommitError {
    CommitError::Failed(Arc::new(error))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A write that only notes that it ran.
    struct Noted(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl WriteJob for Noted {
        fn run(&mut self, _: &Connection, _: Isolation) -> Ran {
            self.1.lock().expect("log").push(self.0);
            Ran::Done
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
            job.run(&connection, Isolation::Bare);
        }
        assert_eq!(*ran.lock().expect("log"), ["a1", "b1", "claim", "a2", "a3"]);
        assert!(lanes.is_empty());
    }

    /// Inserts `key` into the test table.
    fn insert(connection: &Connection, key: i64) -> Result<(), StoreError> {
        connection
            .execute("INSERT INTO kept (key) VALUES (?1)", [key])
            .map(drop)
            .map_err(translate)
    }

    /// Queues `work` in the engine's lane; its answer arrives once its group ends.
    fn queue<T, F>(lanes: &mut Lanes, work: F) -> oneshot::Receiver<Result<T, StoreError>>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = Job::queued(work);
        lanes.push(Lane::Engine, job);
        answer
    }

    /// Runs what is queued, in as many groups as it takes (a group that fails bare
    /// ends at the failing write), and answers it; says whether a write failed.
    fn run_queued(connection: &Connection, lanes: &mut Lanes, isolation: Isolation) -> bool {
        let (_arrivals, jobs) = mpsc::channel();
        let mut a_write_failed = false;
        while !lanes.is_empty() {
            let run = run_group(connection, lanes, &jobs, isolation);
            for job in run.group {
                job.finish(run.commit.clone());
            }
            a_write_failed |= run.a_write_failed;
        }
        a_write_failed
    }

    /// The keys committed to the test table.
    fn kept(connection: &Connection) -> Vec<i64> {
        connection
            .prepare("SELECT key FROM kept ORDER BY key")
            .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
            .expect("keys")
    }

    /// Queues three writes, the middle one writing a row and then breaking a
    /// constraint; returns how often the first one ran and the three answers.
    fn three_writes_one_failing(
        connection: &Connection,
        keys: [i64; 3],
        isolation: Isolation,
    ) -> (usize, [bool; 3]) {
        let mut lanes = Lanes::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let [first_key, failing_key, last_key] = keys;
        let mut first = queue(&mut lanes, move |c| {
            counted.fetch_add(1, Ordering::SeqCst);
            insert(c, first_key)
        });
        let mut failing = queue(&mut lanes, move |c| {
            insert(c, failing_key).and_then(|()| insert(c, failing_key))
        });
        let mut last = queue(&mut lanes, move |c| insert(c, last_key));
        assert!(
            run_queued(connection, &mut lanes, isolation),
            "a write failed"
        );
        let answered_ok = |answer: &mut oneshot::Receiver<Result<(), StoreError>>| {
            answer.try_recv().expect("answered").is_ok()
        };
        let answers = [
            answered_ok(&mut first),
            answered_ok(&mut failing),
            answered_ok(&mut last),
        ];
        (runs.load(Ordering::SeqCst), answers)
    }

    #[test]
    fn a_failing_write_keeps_nothing_and_fails_no_other_write_of_its_group() {
        let connection = Connection::open_in_memory().expect("database");
        connection
            .execute_batch("CREATE TABLE kept (key INTEGER PRIMARY KEY)")
            .expect("table");

        // Bare: the failure rolls the group back, and it runs again with savepoints.
        let (runs, answers) = three_writes_one_failing(&connection, [1, 2, 3], Isolation::Bare);
        assert_eq!(answers, [true, false, true]);
        assert_eq!(runs, 2, "run bare, then again in a savepoint");
        assert_eq!(kept(&connection), [1, 3]);

        // With a savepoint per write (as for a while after a failure), a failing write
        // costs no second run of its group.
        let (runs, answers) =
            three_writes_one_failing(&connection, [4, 5, 6], Isolation::Savepoint);
        assert_eq!(answers, [true, false, true]);
        assert_eq!(runs, 1);
        assert_eq!(kept(&connection), [1, 3, 4, 6]);
    }

    #[test]
    fn groups_keep_a_savepoint_per_write_for_a_while_after_a_failure() {
        let mut policy = IsolationPolicy::default();
        let now = Instant::now();
        assert_eq!(policy.isolation(now), Isolation::Bare);
        policy.write_failed(now);
        assert_eq!(
            policy.isolation(now + ISOLATED_AFTER_FAILURE / 2),
            Isolation::Savepoint
        );
        assert_eq!(
            policy.isolation(now + ISOLATED_AFTER_FAILURE),
            Isolation::Bare
        );
    }
}
