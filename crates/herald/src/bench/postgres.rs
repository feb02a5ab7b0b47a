//! What PostgreSQL itself does during a run: its CPU time (the postmaster and every
//! backend, from /proc), and what its active backends wait on (`pg_stat_activity`,
//! sampled), so a run on one machine can tell whether more machines would scale.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio_postgres::NoTls;

use super::process;

/// How often `pg_stat_activity` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A connection to the database under test, watching its server.
pub struct PgProbe {
    client: tokio_postgres::Client,
    postmaster: u32,
}

/// Samples taken so far.
#[derive(Debug, Default)]
struct Samples {
    taken: u64,
    active: u64,
    waits: BTreeMap<String, u64>,
}

/// Sampling under way; [`Sampling::finish`] ends it and reports.
pub struct Sampling {
    samples: Arc<Mutex<Samples>>,
    task: tokio::task::JoinHandle<()>,
}

/// Creates a fresh database for a run on the server `server_url` points at; returns
/// its URL.
pub async fn fresh_database(server_url: &str) -> anyhow::Result<String> {
    let (client, connection) = tokio_postgres::connect(server_url, NoTls)
        .await
        .context("cannot connect to the PostgreSQL server given by --database-url")?;
    tokio::spawn(connection);
    let name = format!("herald_bench_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("cannot create the benchmark database {name}"))?;
    Ok(herald_store::postgres::url_with_database(server_url, &name))
}

impl PgProbe {
    /// Connects to `url` (a database on a server of this machine).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .context("cannot connect to the benchmark database")?;
        tokio::spawn(connection);
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let status = std::fs::read_to_string(format!("/proc/{backend}/status"))
            .context("PostgreSQL must run on this machine to measure its CPU time")?;
        let postmaster = status
            .lines()
            .find_map(|line| line.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no parent process of the PostgreSQL backend")?;
        Ok(Self { client, postmaster })
    }

    /// The whole server's CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process::tree_cpu_seconds(self.postmaster)
    }

    /// Starts sampling what the database's active backends wait on.
    pub fn sample(self: &Arc<Self>) -> Sampling {
        let samples = Arc::new(Mutex::new(Samples::default()));
        let (probe, into) = (Arc::clone(self), Arc::clone(&samples));
        let task = tokio::spawn(async move {
            loop {
                if let Ok(rows) = probe
                    .client
                    .query(
                        "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
                        &[],
                    )
                    .await
                {
                    let mut samples = into.lock().unwrap_or_else(PoisonError::into_inner);
                    samples.taken += 1;
                    samples.active += rows.len() as u64;
                    for row in rows {
                        let wait: String = row.get(0);
                        *samples.waits.entry(wait).or_default() += 1;
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Sampling { samples, task }
    }
}

impl Sampling {
    /// Stops sampling. The report: samples taken, active backends on average, what
    /// they were doing (`CPU` when not waiting) as shares of all backend samples, and
    /// three sums of them: waits on heavyweight locks (rows, transactions, relations:
    /// what contention between instances would show as), on the WAL reaching the disk
    /// (commits queueing for the flush), and on other internal locks.
    pub fn finish(self) -> Value {
        self.task.abort();
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let share_of = |matches: &dyn Fn(&str) -> bool| {
            let n: u64 = samples
                .waits
                .iter()
                .filter(|(wait, _)| matches(wait))
                .map(|(_, n)| n)
                .sum();
            n as f64 / samples.active.max(1) as f64
        };
        let wal = |wait: &str| matches!(wait, "LWLock:WALWrite" | "IO:WALSync" | "IO:WALWrite");
        json!({
            "samples": samples.taken,
            "activeBackendsAvg": samples.active as f64 / samples.taken.max(1) as f64,
            "waits": samples.waits.iter().map(|(wait, n)| {
                (wait.clone(), json!(*n as f64 / samples.active.max(1) as f64))
            }).collect::<serde_json::Map<_, _>>(),
            "lockWaitShare": share_of(&|wait| wait.starts_with("Lock:")),
            "walFlushWaitShare": share_of(&wal),
            "internalLockWaitShare": share_of(&|wait| wait.starts_with("LWLock:") && !wal(wait)),
        })
    }
}
