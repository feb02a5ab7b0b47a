//! The scheduler: claims due deliveries in batches and hands each to the dispatcher,
//! never running more attempts at once than it has permits.
//!
//! It is a `run` loop around [`Scheduler::step`]: a step claims what is due (up to the
//! free permits) and spawns one attempt per claim; when nothing is due the loop sleeps
//! until the next delivery is due, a new event wakes it, or a second passes (a safety
//! net for work another instance added). Claims are short write transactions; no
//! transaction is open while a request is in flight.

use std::sync::Arc;
use std::time::Duration;

use herald_core::outcome::{Progress, judge};
use herald_core::retry::RetryPolicy;
use herald_core::store::{Claim, OutcomeRecord, Store};
use herald_core::time::Timestamp;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::dispatcher::Dispatcher;

/// Most deliveries claimed in one transaction.
const CLAIM_BATCH: usize = 256;
/// Longest idle sleep before looking for due work again.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The retry schedule outcomes are judged by.
    pub policy: RetryPolicy,
    /// How long a claim holds a delivery.
    pub lease: Duration,
    /// Most attempts in flight at once.
    pub concurrency: usize,
}

/// Claims due deliveries and starts their attempts.
pub struct Scheduler {
    store: Store,
    dispatcher: Dispatcher,
    settings: Arc<SchedulerSettings>,
    permits: Arc<Semaphore>,
    wake: Arc<Notify>,
    outcomes: mpsc::UnboundedSender<OutcomeRecord>,
}

impl Scheduler {
    /// A scheduler sending outcomes to `outcomes` and woken by `wake`.
    pub fn new(
        store: Store,
        dispatcher: Dispatcher,
        settings: SchedulerSettings,
        wake: Arc<Notify>,
        outcomes: mpsc::UnboundedSender<OutcomeRecord>,
    ) -> Self {
        Self {
            store,
            dispatcher,
            permits: Arc::new(Semaphore::new(settings.concurrency)),
            settings: Arc::new(settings),
            wake,
            outcomes,
        }
    }

    /// Runs until `shutdown` turns true, then waits up to `grace` for attempts under way.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        while !*shutdown.borrow() {
            // Waiting for a free permit (all attempts busy) must not delay a stop.
            let step = tokio::select! {
                step = self.step() => step,
                _ = shutdown.changed() => break,
            };
            match step {
                Ok(0) => {
                    if !self.idle(&mut shutdown).await {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %error, "claiming due deliveries failed; retrying shortly");
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.permits.acquire_many(all)).await;
    }

    /// Claims what is due (as many as there are free permits, waiting for one if
    /// none is free) and starts an attempt for each; returns how many were claimed.
    pub async fn step(&self) -> Result<usize, herald_core::store::StoreError> {
        let Ok(first) = Arc::clone(&self.permits).acquire_owned().await else {
            return Ok(0);
        };
        let limit = (self.permits.available_permits() + 1).min(CLAIM_BATCH);
        let claims = self
            .store
            .claim_due(
                Timestamp::now(),
                u32::try_from(limit).unwrap_or(u32::MAX),
                self.settings.lease,
            )
            .await?;
        let count = claims.len();
        let mut first = Some(first);
        for claim in claims {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match Arc::clone(&self.permits).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            self.spawn_attempt(claim, permit);
        }
        Ok(count)
    }

    fn spawn_attempt(&self, claim: Claim, permit: OwnedSemaphorePermit) {
        let dispatcher = self.dispatcher.clone();
        let settings = Arc::clone(&self.settings);
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let (result, attempt) = dispatcher.attempt(&claim).await;
            let delivery = &claim.delivery;
            let progress = Progress {
                attempts: delivery.attempts,
                window_start: delivery.window_start,
            };
            let verdict = judge(
                progress,
                &result,
                Timestamp::now(),
                &settings.policy,
                rand::random::<f64>(),
            );
            tracing::debug!(
                tenant = %delivery.tenant_id, event = %delivery.event_id, delivery = %delivery.id,
                target = %delivery.target_id, attempt = attempt.number, status = %verdict.status,
                "attempt finished"
            );
            let record = OutcomeRecord {
                delivery_id: delivery.id.clone(),
                lease_token: claim.lease_token,
                attempt,
                verdict,
            };
            // A closed recorder means shutdown: the lease expires and the delivery is retried.
            let _ = outcomes.send(record);
            drop(permit);
        });
    }

    /// Sleeps until work may be due; `false` when the app is gone and the loop must end.
    async fn idle(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        let now = Timestamp::now();
        let wait = match self.store.next_due().await {
            Ok(Some(due)) if due <= now => return true,
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due.as_millis() - now.as_millis()).unwrap_or(0))
            }
            Ok(None) | Err(_) => IDLE_POLL,
        };
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait.min(IDLE_POLL)) => {}
            // A dropped sender (the app dropped without `stop`) means stop too, not a spin.
            changed = shutdown.changed() => return changed.is_ok(),
        }
        true
    }
}
