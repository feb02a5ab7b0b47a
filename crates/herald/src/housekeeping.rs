//! Housekeeping: every instance announces itself in the store's registry with a
//! heartbeat; the one leader (whoever holds the unexpired leadership term) also puts
//! the deliveries of expired leases back in their lanes, forgets instances that
//! stopped heartbeating, and deletes finished events (and parked Kafka records) past
//! the retention period.
//!
//! Leadership is a term renewed with every heartbeat. A leader that dies stops
//! renewing, its term runs out, and the next instance to heartbeat takes over, so
//! housekeeping pauses for at most one term. With the embedded store the one instance
//! is always the leader.

use std::sync::Arc;
use std::time::Duration;

use herald_core::store::{Instance, Store};
use herald_core::time::Timestamp;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often an instance heartbeats (and the leader does its rounds).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a leadership term lasts without renewal.
const LEADER_TERM: Duration = Duration::from_secs(5);
/// An instance silent this long is forgotten by the registry.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Events deleted per retention statement, so no statement holds locks for long.
const PURGE_BATCH: u32 = 1_000;
/// How often the leader applies retention.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// What housekeeping needs to know.
#[derive(Debug, Clone)]
pub struct HousekeepingSettings {
    /// This instance's id.
    pub instance_id: String,
    /// How long finished events are kept (`None`: forever).
    pub retention: Option<Duration>,
}

/// Runs until `shutdown` turns true (or its sender is dropped).
pub async fn run(
    store: Store,
    settings: HousekeepingSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let started_at = Timestamp::now();
    let description = format!(
        "pid {} herald {}",
        std::process::id(),
        env!("CARGO_PKG_VERSION")
    );
    let mut next_purge = tokio::time::Instant::now();
    let mut leading = false;
    while !*shutdown.borrow() {
        let now = Timestamp::now();
        let instance = Instance {
            id: settings.instance_id.clone(),
            description: description.clone(),
            started_at,
            heartbeat_at: now,
        };
        if let Err(error) = store.heartbeat(&instance).await {
            tracing::error!(%error, "heartbeat failed");
        }
        let leads = match store
            .take_leadership(&settings.instance_id, now, LEADER_TERM)
            .await
        {
            Ok(leads) => leads,
            Err(error) => {
                tracing::error!(%error, "taking the housekeeping leadership failed");
                false
            }
        };
        if leads != leading {
            tracing::info!(
                instance = settings.instance_id,
                leads,
                "housekeeping leadership changed"
            );
            leading = leads;
            metrics.set_leader(leads);
        }
        if leads {
            lead_round(&store, now).await;
            if tokio::time::Instant::now() >= next_purge {
                if let Some(retention) = settings.retention {
                    purge(&store, now, retention).await;
                }
                next_purge = tokio::time::Instant::now() + PURGE_EVERY;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            changed = shutdown.changed() => if changed.is_err() { break },
        }
    }
}

/// The leader's round: expired leases back to their lanes, silent instances forgotten.
async fn lead_round(store: &Store, now: Timestamp) {
    match store.recover_expired_leases(now).await {
        Ok(0) => {}
        Ok(recovered) => tracing::warn!(
            recovered,
            "deliveries whose lease expired (their instance stopped renewing it) are due again"
        ),
        Err(error) => tracing::error!(%error, "recovering expired leases failed"),
    }
    let stale_before = Timestamp::from_millis(now.as_millis() - millis(FORGET_AFTER));
    match store.forget_instances(stale_before).await {
        Ok(0) => {}
        Ok(forgotten) => tracing::info!(forgotten, "forgot instances that stopped heartbeating"),
        Err(error) => tracing::error!(%error, "forgetting silent instances failed"),
    }
}

/// Deletes finished events older than `retention`, a batch at a time.
async fn purge(store: &Store, now: Timestamp, retention: Duration) {
    let before = Timestamp::from_millis(now.as_millis().saturating_sub(millis(retention)));
    let mut purged = 0;
    loop {
        match store.purge_finished(before, PURGE_BATCH).await {
            Ok(count) => {
                purged += count;
                if count < u64::from(PURGE_BATCH) {
                    break;
                }
            }
            Err(error) => {
                tracing::error!(%error, "deleting events past the retention period failed");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(
            purged,
            "deleted finished events and parked Kafka records past the retention period"
        );
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
