//! The scheduler: decides which due deliveries go out now, claims them, and starts
//! their attempts; every flow-control limit is applied here.
//!
//! A pass looks at every target with work due, asks each [`TargetFlow`] how much it
//! may be sent under its limits (active, `Retry-After` pause, circuit breaker,
//! adaptive concurrency within `maxInFlight`, rate limit), shares the free workers
//! fairly ([`plan`]) and claims exactly that from the store in one transaction. A
//! delivery over a limit is simply not claimed: it stays pending, spends no attempt,
//! and holds no worker. When attempts finish, their feedback (success, failure,
//! overload, `410 Gone`) updates the target's limits before the outcome is recorded.
//!
//! The scheduler learns what is due from [`Hints`] (intake, recorded retries) and
//! from a rescan of the store every second, so work added any other way (another
//! instance, a restart) is found within a second. No transaction is open while a
//! request is in flight.

mod admission;
pub mod hints;
mod plan;
mod target_flow;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use herald_core::flow::{CircuitPolicy, Health, feedback};
use herald_core::id::{DeliveryId, TargetId};
use herald_core::model::{Delivery, DeliveryStatus};
use herald_core::outcome::{AttemptResult, Progress, Verdict, judge};
use herald_core::retry::RetryPolicy;
use herald_core::store::{
    Claim, ClaimRequest, Claimed, INTAKE_LEASE_TOKEN, OutcomeRecord, Store, StoreError,
};
use herald_core::time::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Level;

use crate::dispatcher::Dispatcher;
use crate::metrics::{DeliveryResult, Metrics};
use crate::outcome::Record;

pub use admission::IntakeAdmission;
use admission::Spent;
pub use hints::Hints;
use plan::{Demand, plan};
use target_flow::TargetFlow;

/// How often the store is rescanned for due work no hint announced.
const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// When to ask again for a target held back by its in-flight limit across instances
/// (attempts finishing on other instances are not announced).
const HELD_BACK_RECHECK: Duration = Duration::from_millis(25);
/// The lease tokens of the deliveries this instance holds.
type Held = Arc<Mutex<HashMap<DeliveryId, i64>>>;

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, i64>> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops renewing `delivery`'s lease if it is still the claim `token` names. The same
/// delivery can be claimed again while an older attempt of it is still settling (its
/// lease ran out under a stall, or its retry was due at once); the newer claim keeps
/// its renewals.
fn release(held: &mut HashMap<DeliveryId, i64>, delivery: &DeliveryId, token: i64) {
    if held.get(delivery) == Some(&token) {
        held.remove(delivery);
    }
}

/// Renews, every third of a lease, the leases of the deliveries this instance holds
/// (claimed and not yet settled), on its own task so a slow scheduler pass cannot
/// delay it. A dead instance renews nothing, and its leases run out within one lease.
/// Runs until `stop` turns true.
async fn renew_leases(store: Store, held: Held, lease: Duration, mut stop: watch::Receiver<bool>) {
    let period = lease / RENEWALS_PER_LEASE;
    while !*stop.borrow() {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            changed = stop.changed() => if changed.is_err() { break } else { continue },
        }
        let leases: Vec<(DeliveryId, i64)> = lock(&held)
            .iter()
            .map(|(delivery, token)| (delivery.clone(), *token))
            .collect();
        if leases.is_empty() {
            continue;
        }
        let count = leases.len();
        let until = Timestamp::now().plus(lease);
        match tokio::time::timeout(period, store.extend_leases(leases, until)).await {
            Ok(Ok(extended)) if extended < u64::try_from(count).unwrap_or(u64::MAX) => {
                tracing::debug!(
                    extended,
                    count,
                    "some leases were settled or taken over meanwhile"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::error!(%error, count, "renewing leases failed"),
            Err(_) => tracing::error!(count, "renewing leases timed out"),
        }
    }
}

/// How many times per lease the leases of attempts under way are renewed: a lease
/// survives two renewals missed in a row.
const RENEWALS_PER_LEASE: u32 = 3;
/// The share of workers kept for first attempts: retries may hold the rest.
const FIRST_ATTEMPT_RESERVE: f64 = 0.25;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// The retry schedule outcomes are judged by.
    pub policy: RetryPolicy,
    /// When circuits open.
    pub circuit: CircuitPolicy,
    /// How long a claim holds a delivery.
    pub lease: Duration,
    /// Most attempts in flight at once.
    pub concurrency: u32,
    /// Whether free workers are granted to intake, which then stores new deliveries
    /// already in flight ([`IntakeAdmission`]). Only where this instance alone claims
    /// from the store: on a shared store, claims enforce limits across instances.
    pub start_at_intake: bool,
}

impl SchedulerSettings {
    /// Most retries in flight at once: the rest of the workers stay free for first
    /// attempts, so a mountain of retries never starves fresh deliveries.
    fn retry_concurrency(&self) -> u32 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let reserved = (f64::from(self.concurrency) * FIRST_ATTEMPT_RESERVE).floor() as u32;
        self.concurrency.saturating_sub(reserved).max(1)
    }
}

/// An attempt that finished, on its way back to the scheduler.
struct Finished {
    delivery_id: DeliveryId,
    /// The lease token of the claim the attempt ran under.
    lease_token: i64,
    target_id: TargetId,
    retry: bool,
    /// `None` when the attempt's task ended without an outcome (a bug): its lease
    /// expires and the delivery is attempted again.
    outcome: Option<Attempted>,
}

/// What an attempt did.
struct Attempted {
    sent_at: Timestamp,
    /// How long the request took, precisely (the attempt log keeps milliseconds).
    took: Duration,
    result: AttemptResult,
    record: OutcomeRecord,
}

/// Tells the scheduler about an attempt it started, even if the attempt's task ends
/// early (a panic), so the target's in-flight count can never stay stuck.
struct Reporter {
    finished: mpsc::UnboundedSender<Finished>,
    delivery_id: DeliveryId,
    lease_token: i64,
    target_id: TargetId,
    retry: bool,
    reported: bool,
}

impl Reporter {
    fn report(mut self, attempted: Attempted) {
        self.reported = true;
        // A stopped scheduler drops it: the lease expires and the delivery is retried.
        let _ = self.finished.send(Finished {
            delivery_id: self.delivery_id.clone(),
            lease_token: self.lease_token,
            target_id: self.target_id.clone(),
            retry: self.retry,
            outcome: Some(attempted),
        });
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.reported {
            let _ = self.finished.send(Finished {
                delivery_id: self.delivery_id.clone(),
                lease_token: self.lease_token,
                target_id: self.target_id.clone(),
                retry: self.retry,
                outcome: None,
            });
        }
    }
}

/// Claims due deliveries and starts their attempts.
pub struct Scheduler {
    store: Store,
    dispatcher: Dispatcher,
    settings: Arc<SchedulerSettings>,
    hints: Arc<Hints>,
    recorder: mpsc::UnboundedSender<Record>,
    finished_tx: mpsc::UnboundedSender<Finished>,
    finished_rx: mpsc::UnboundedReceiver<Finished>,
    metrics: Arc<Metrics>,
    targets: HashMap<TargetId, TargetFlow>,
    in_flight: u32,
    retries_in_flight: u32,
    /// The lease token of each delivery claimed and not yet settled, for renewals
    /// (shared with the renewing task).
    held: Held,
    rotation: usize,
    /// The grants of free workers to intake, and its reports of spending them.
    admission: Arc<IntakeAdmission>,
    spent: mpsc::UnboundedReceiver<Spent>,
    /// The attempt tasks. Dropping the scheduler, once its drain is over, cancels the
    /// ones still running: their deliveries keep their leases and go again later.
    attempts: JoinSet<()>,
}

impl Scheduler {
    /// A scheduler sending outcomes to `recorder`, woken by `hints`, counting in
    /// `metrics`.
    pub fn new(
        store: Store,
        dispatcher: Dispatcher,
        settings: SchedulerSettings,
        hints: Arc<Hints>,
        recorder: mpsc::UnboundedSender<Record>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        let (admission, spent) = IntakeAdmission::new(settings.lease);
        Self {
            admission,
            spent,
            metrics,
            store,
            dispatcher,
            settings: Arc::new(settings),
            hints,
            recorder,
            finished_tx,
            finished_rx,
            targets: HashMap::new(),
            in_flight: 0,
            retries_in_flight: 0,
            held: Held::default(),
            rotation: 0,
            attempts: JoinSet::new(),
        }
    }

    /// Where intake asks whether a new delivery may start in flight at once.
    pub fn admission(&self) -> Arc<IntakeAdmission> {
        Arc::clone(&self.admission)
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), then waits up to
    /// `grace` for attempts under way so their outcomes are recorded.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, grace: Duration) {
        let mut next_rescan = Instant::now();
        let (renewals_stop, renewals_stopped) = watch::channel(false);
        let renewals = tokio::spawn(renew_leases(
            self.store.clone(),
            Arc::clone(&self.held),
            self.settings.lease,
            renewals_stopped,
        ));
        while !*shutdown.borrow() {
            self.take_finished();
            self.take_spent();
            if self.take_hints() {
                next_rescan = Instant::now();
            }
            if Instant::now() >= next_rescan {
                self.rescan().await;
                next_rescan = Instant::now() + RESCAN_EVERY;
            }
            let now = Timestamp::now();
            let (requests, wake_at) = self.plan_pass(now);
            if !requests.is_empty() {
                match self.claim_and_dispatch(requests, now).await {
                    Ok(()) => continue,
                    Err(error) => {
                        tracing::error!(error = %error, "claiming due deliveries failed; retrying shortly");
                        next_rescan = Instant::now() + RESCAN_EVERY;
                    }
                }
            }
            let wake = wake_at.map_or(next_rescan, |at| instant_of(at, now).min(next_rescan));
            tokio::select! {
                Some(finished) = self.finished_rx.recv() => self.finish(finished),
                Some(spent) = self.spent.recv() => self.spent_at_intake(spent),
                () = self.hints.arrived() => {}
                () = tokio::time::sleep_until(wake) => {}
                // A dropped sender (the app dropped without `stop`) means stop too.
                changed = shutdown.changed() => if changed.is_err() { break },
            }
        }
        self.drain(grace).await;
        let _ = renewals_stop.send(true);
        let _ = renewals.await;
    }

    /// Waits up to `grace` for the attempts under way and forwards their outcomes.
    async fn drain(&mut self, grace: Duration) {
        // Beyond what the clock can represent: no limit.
        let deadline = Instant::now().checked_add(grace);
        let admission = Arc::clone(&self.admission);
        self.take_back_grants(&mut admission.grants());
        while self.in_flight > 0 {
            let next = async {
                tokio::select! {
                    finished = self.finished_rx.recv() => finished.map(Ok),
                    spent = self.spent.recv() => spent.map(Err),
                }
            };
            let settled = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, next).await.ok().flatten(),
                None => next.await,
            };
            match settled {
                Some(Ok(finished)) => self.finish(finished),
                // Grants intake spent while stopping: their attempts go too.
                Some(Err(spent)) => self.spent_at_intake(spent),
                // Past the grace, the leases of the rest expire and they are retried.
                None => break,
            }
        }
    }

    fn take_finished(&mut self) {
        // Finished tasks' handles, so the set holds only attempts under way.
        while self.attempts.try_join_next().is_some() {}
        while let Ok(finished) = self.finished_rx.try_recv() {
            self.finish(finished);
        }
    }

    fn take_spent(&mut self) {
        while let Ok(spent) = self.spent.try_recv() {
            self.spent_at_intake(spent);
        }
    }

    /// Starts a delivery intake committed in flight, or frees an unused grant. Either
    /// way its grant was counted in flight when offered.
    fn spent_at_intake(&mut self, spent: Spent) {
        match spent {
            Spent::Started(delivery, event, target) => {
                let now = Timestamp::now();
                // Only a newer configuration: this one was read before its commit, and
                // a rescan or claim may have brought a later one meanwhile.
                if let Some(flow) = self.targets.get_mut(&delivery.target_id)
                    && target.updated_at > flow.target.updated_at
                {
                    flow.reconfigure(Arc::clone(&target), now);
                }
                let claim = Claim {
                    target,
                    delivery: *delivery,
                    lease_token: INTAKE_LEASE_TOKEN,
                    event,
                };
                self.begin(claim, false, true);
            }
            Spent::Released(target) => self.uncount(&target, 1),
        }
    }

    /// Takes in-flight counts back from `target` (grants not used).
    fn uncount(&mut self, target: &TargetId, count: u32) {
        self.in_flight = self.in_flight.saturating_sub(count);
        if let Some(flow) = self.targets.get_mut(target) {
            flow.in_flight = flow.in_flight.saturating_sub(count);
        }
    }

    /// Takes back the grants intake left unspent (held locked in `grants`).
    fn take_back_grants(&mut self, grants: &mut HashMap<TargetId, u32>) {
        for (target, unspent) in grants.drain() {
            self.uncount(&target, unspent);
        }
    }

    /// Grants up to `free` workers to targets with nothing queued and nothing asked
    /// of the store this pass (its claims are not counted in flight yet), shared
    /// evenly, counting them in flight until taken back.
    fn offer_grants(
        &mut self,
        grants: &mut HashMap<TargetId, u32>,
        free: u32,
        claiming: &[ClaimRequest],
        now: Timestamp,
    ) {
        if !self.settings.start_at_intake || free == 0 {
            return;
        }
        let claiming: HashSet<&TargetId> = claiming.iter().map(|r| &r.target_id).collect();
        let room = |id: &TargetId, flow: &TargetFlow| {
            if claiming.contains(id) {
                0
            } else {
                flow.intake_room(now)
            }
        };
        let eligible = self
            .targets
            .iter()
            .filter(|(id, flow)| room(id, flow) > 0)
            .count();
        if eligible == 0 {
            return;
        }
        let share = free.div_ceil(u32::try_from(eligible).unwrap_or(u32::MAX));
        let mut left = free;
        for (id, flow) in &mut self.targets {
            let grant = room(id, flow).min(share).min(left);
            if grant > 0 {
                left -= grant;
                flow.in_flight += grant;
                grants.insert(id.clone(), grant);
            }
        }
        self.in_flight += free - left;
    }

    /// Applies the hints gathered; `true` if the store should be rescanned now.
    fn take_hints(&mut self) -> bool {
        let gathered = self.hints.take();
        let mut rescan = gathered.rescan;
        {
            let mut held = lock(&self.held);
            for (delivery, token) in &gathered.settled_deliveries {
                release(&mut held, delivery, *token);
            }
        }
        for (target, settled) in gathered.settled {
            if let Some(flow) = self.targets.get_mut(&target) {
                flow.unsettled = flow.unsettled.saturating_sub(settled);
            }
        }
        for (target, hint) in gathered.targets {
            let Some(flow) = self.targets.get_mut(&target) else {
                // A target never seen: its configuration comes with the rescan.
                rescan = true;
                continue;
            };
            if let Some(due) = hint.first {
                flow.first_due = Some(flow.first_due.map_or(due, |d| d.min(due)));
            }
            if let Some(due) = hint.retry {
                flow.retry_due = Some(flow.retry_due.map_or(due, |d| d.min(due)));
            }
        }
        rescan
    }

    /// Reads which targets have work waiting, replacing what the scheduler knew
    /// about their lanes (the store is the truth; hints arriving meanwhile are
    /// applied after).
    async fn rescan(&mut self) {
        let waiting = match self.store.waiting_targets().await {
            Ok(waiting) => waiting,
            Err(error) => {
                tracing::error!(error = %error, "reading the waiting targets failed");
                return;
            }
        };
        let now = Timestamp::now();
        // Grants count as in flight: taken back (none is offered again before the next
        // pass), targets with nothing under way can be forgotten.
        let admission = Arc::clone(&self.admission);
        let mut grants = admission.grants();
        self.take_back_grants(&mut grants);
        for flow in self.targets.values_mut() {
            flow.first_due = None;
            flow.retry_due = None;
            // Absent from the scan: the disable is committed (or the target deleted).
            // Still there: the disable failed or is not committed yet, and the target is
            // tried again; another 410 tries the disable again, so a failed write never
            // leaves a target silently stopped while the store shows it active.
            flow.gone_since = None;
        }
        for found in waiting {
            let target = Arc::new(found.target);
            let flow = match self.targets.entry(target.id.clone()) {
                std::collections::hash_map::Entry::Occupied(entry) => {
                    let flow = entry.into_mut();
                    flow.reconfigure(target, now);
                    flow.adopt_circuit(found.circuit);
                    flow
                }
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(TargetFlow::new(target, found.circuit, now))
                }
            };
            flow.first_due = found.first_due;
            flow.retry_due = found.retry_due;
        }
        self.targets.retain(|_, flow| !flow.is_idle(now));
    }

    /// The claims of this pass, and when to look again if there are none. Takes back
    /// the grants to intake first and offers new ones last, from the workers the
    /// claims leave free.
    fn plan_pass(&mut self, now: Timestamp) -> (Vec<ClaimRequest>, Option<Timestamp>) {
        let admission = Arc::clone(&self.admission);
        let mut grants = admission.grants();
        self.take_back_grants(&mut grants);
        let (requests, wake_at) = self.plan_claims(now);
        let claimed: u32 = requests
            .iter()
            .map(|r| r.first_attempts.saturating_add(r.retries))
            .sum();
        let free = self
            .settings
            .concurrency
            .saturating_sub(self.in_flight)
            .saturating_sub(claimed);
        self.offer_grants(&mut grants, free, &requests, now);
        drop(grants);
        self.report_in_flight();
        (requests, wake_at)
    }

    /// The claims the limits allow now, shared fairly over the free workers.
    fn plan_claims(&mut self, now: Timestamp) -> (Vec<ClaimRequest>, Option<Timestamp>) {
        let capacity = self.settings.concurrency.saturating_sub(self.in_flight);
        let mut wake_at: Option<Timestamp> = None;
        let mut demands = Vec::new();
        for flow in self.targets.values_mut() {
            let allowance = flow.allowance(now);
            if allowance.count == 0 {
                if let Some(at) = allowance.wake_at {
                    wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
                }
                continue;
            }
            demands.push(Demand {
                tenant_id: flow.target.tenant_id.clone(),
                target_id: flow.target.id.clone(),
                count: allowance.count,
                first_due: allowance.first_due,
                retry_due: allowance.retry_due,
                retry_turn: flow.retry_turn,
                limits: allowance.limits,
            });
        }
        if capacity == 0 || demands.is_empty() {
            return (Vec::new(), wake_at);
        }
        let retry_capacity = self
            .settings
            .retry_concurrency()
            .saturating_sub(self.retries_in_flight);
        self.rotation = self.rotation.wrapping_add(1);
        (
            plan(&demands, capacity, retry_capacity, self.rotation),
            wake_at,
        )
    }

    async fn claim_and_dispatch(
        &mut self,
        requests: Vec<ClaimRequest>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let Claimed { claims, held_back } = self
            .store
            .claim(requests.clone(), now, self.settings.lease)
            .await?;
        let mut held: HashMap<TargetId, Timestamp> = HashMap::new();
        for back in held_back {
            let until = back.until.unwrap_or(now.plus(HELD_BACK_RECHECK));
            held.insert(back.target_id, until);
        }
        let mut got: HashMap<TargetId, (u32, u32)> = HashMap::new();
        for claim in &claims {
            let lanes = got.entry(claim.delivery.target_id.clone()).or_default();
            if claim.delivery.attempts == 0 {
                lanes.0 += 1;
            } else {
                lanes.1 += 1;
            }
        }
        for request in &requests {
            let Some(flow) = self.targets.get_mut(&request.target_id) else {
                continue;
            };
            if flow.first_due.is_some_and(|due| due <= now)
                && flow.retry_due.is_some_and(|due| due <= now)
            {
                // Both lanes wanted this pass: the other goes first next time (this
                // matters when only one delivery may go, e.g. under a slow rate).
                flow.retry_turn = !flow.retry_turn;
            }
            if let Some(until) = held.get(&request.target_id) {
                // Its shared limits, not its lanes, stopped it: ask again then.
                flow.held_until = Some(*until);
                continue;
            }
            let (first, retries) = got.get(&request.target_id).copied().unwrap_or_default();
            // A lane that gave less than asked has nothing more due now; what it has
            // for later comes back with a hint or the next rescan.
            if first < request.first_attempts {
                flow.first_due = None;
            }
            if retries < request.retries {
                flow.retry_due = None;
            }
        }
        for claim in claims {
            self.dispatch(claim, now);
        }
        Ok(())
    }

    fn dispatch(&mut self, claim: Claim, now: Timestamp) {
        let retry = claim.delivery.attempts > 0;
        if let Some(flow) = self.targets.get_mut(&claim.delivery.target_id) {
            flow.reconfigure(Arc::clone(&claim.target), now);
            flow.in_flight += 1;
            if retry {
                flow.retries_in_flight += 1;
            }
            if let Some(bucket) = &mut flow.bucket {
                bucket.take(1, now);
            }
            if flow.circuit.state != herald_core::flow::CircuitState::Closed {
                flow.circuit.begin_probe(now);
                self.save_circuit(&claim.delivery.target_id);
            }
        }
        self.in_flight += 1;
        if retry {
            self.retries_in_flight += 1;
        }
        self.begin(claim, retry, false);
    }

    /// Starts the attempt of a delivery already counted in flight.
    fn begin(&mut self, claim: Claim, retry: bool, at_intake: bool) {
        self.metrics.attempt_started(at_intake);
        self.report_in_flight();
        lock(&self.held).insert(claim.delivery.id.clone(), claim.lease_token);
        self.spawn_attempt(claim, retry);
    }

    /// Requests under way: what is counted in flight, less the grants intake has not
    /// spent (those spent and still committing count: their requests are imminent).
    fn report_in_flight(&self) {
        let unspent: u32 = self.admission.grants().values().sum();
        self.metrics
            .set_in_flight(self.in_flight.saturating_sub(unspent));
    }

    fn spawn_attempt(&mut self, claim: Claim, retry: bool) {
        let dispatcher = self.dispatcher.clone();
        let settings = Arc::clone(&self.settings);
        let reporter = Reporter {
            finished: self.finished_tx.clone(),
            delivery_id: claim.delivery.id.clone(),
            lease_token: claim.lease_token,
            target_id: claim.delivery.target_id.clone(),
            retry,
            reported: false,
        };
        let attempt_task = async move {
            let clock = std::time::Instant::now();
            let (result, attempt) = dispatcher.attempt(&claim).await;
            let took = clock.elapsed();
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
            log_verdict(delivery, &verdict, attempt.duration_ms);
            let sent_at = attempt.started_at;
            let record = OutcomeRecord {
                delivery_id: delivery.id.clone(),
                target_id: delivery.target_id.clone(),
                lease_token: claim.lease_token,
                attempt,
                verdict,
            };
            reporter.report(Attempted {
                sent_at,
                took,
                result,
                record,
            });
        };
        self.attempts.spawn(attempt_task);
    }

    /// Applies what an attempt says about its target, then sends its outcome on.
    fn finish(&mut self, finished: Finished) {
        let now = Timestamp::now();
        if finished.outcome.is_none() {
            // No outcome will be recorded: let the lease run out, so it is retried.
            release(
                &mut lock(&self.held),
                &finished.delivery_id,
                finished.lease_token,
            );
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        if finished.retry {
            self.retries_in_flight = self.retries_in_flight.saturating_sub(1);
        }
        if let Some(flow) = self.targets.get_mut(&finished.target_id) {
            flow.in_flight = flow.in_flight.saturating_sub(1);
            if finished.retry {
                flow.retries_in_flight = flow.retries_in_flight.saturating_sub(1);
            }
        }
        self.report_in_flight();
        let Some(attempted) = finished.outcome else {
            tracing::error!(target = %finished.target_id, "an attempt ended without an outcome; its lease will expire and it will be retried");
            return;
        };
        let result = match attempted.record.verdict.status {
            DeliveryStatus::Succeeded => DeliveryResult::Success,
            DeliveryStatus::Dead => DeliveryResult::Dead,
            _ => DeliveryResult::Failure,
        };
        self.metrics.attempt_finished(result, attempted.took);
        let signal = feedback(&attempted.result);
        let settings = Arc::clone(&self.settings);
        if let Some(flow) = self.targets.get_mut(&finished.target_id) {
            // Its outcome is on its way to the store (sent below).
            flow.unsettled += 1;
            let before = flow.circuit;
            match signal.health {
                Health::Healthy => {
                    flow.circuit.record_success(attempted.sent_at, now);
                    flow.window.record_success();
                }
                Health::Unhealthy => flow.circuit.record_failure(now, &settings.circuit),
                Health::Neutral => {}
            }
            if signal.congested {
                flow.window.record_congestion(attempted.sent_at, now);
            }
            if let Some(asked) = signal.pause {
                let floor = settings.policy.initial.min(settings.policy.max_delay);
                let until = now.plus(asked.clamp(floor, settings.policy.max_delay));
                flow.paused_until = Some(flow.paused_until.map_or(until, |u| u.max(until)));
            }
            if signal.gone && flow.gone_since.is_none() {
                let reason = "the target answered 410 Gone";
                flow.gone_since = Some(flow.target.updated_at);
                tracing::warn!(target = %finished.target_id, "target answered 410 Gone; disabling it");
                let _ = self.recorder.send(Record::Disable(
                    finished.target_id.clone(),
                    reason.to_owned(),
                ));
            }
            if flow.circuit != before {
                if flow.circuit.state != before.state {
                    tracing::info!(
                        target = %finished.target_id, from = before.state.as_str(),
                        to = flow.circuit.state.as_str(), "circuit changed state"
                    );
                }
                self.save_circuit(&finished.target_id);
            }
        }
        let _ = self.recorder.send(Record::Outcome(attempted.record));
    }

    fn save_circuit(&self, target: &TargetId) {
        if let Some(flow) = self.targets.get(target) {
            let _ = self
                .recorder
                .send(Record::Circuit(target.clone(), flow.circuit));
        }
    }
}

/// Logs how an attempt ended, inside a `delivery` span carrying the tenant, event,
/// delivery and target ids and the attempt number. Never the payload or the response
/// body.
///
/// The span is made only for a line that will be written: a span per attempt cost
/// about 2 % of Herald's CPU at full load, though at the default level a success
/// logs nothing.
fn log_verdict(delivery: &Delivery, verdict: &Verdict, duration_ms: u32) {
    // At ERROR level so the span (and its ids) is kept whatever `RUST_LOG` lets through.
    let span = || {
        tracing::span!(
            Level::ERROR,
            "delivery",
            tenant = %delivery.tenant_id, event = %delivery.event_id, delivery = %delivery.id,
            target = %delivery.target_id, attempt = delivery.attempts + 1,
        )
    };
    // The span is made only if the most verbose level anything lets through reaches the
    // line's: cheap (an atomic load), and true whenever a directive could take the
    // line, including one keyed on this very span (`[delivery{tenant=…}]=debug`), which
    // a check outside the span would miss. The line itself is filtered inside the span.
    macro_rules! log_at {
        ($level:expr, $($line:tt)+) => {
            if tracing::level_enabled!($level) {
                span().in_scope(|| tracing::event!($level, $($line)+));
            }
        };
    }
    let code = verdict.last_status_code;
    let error = verdict.last_error.as_deref().unwrap_or_default();
    match verdict.status {
        DeliveryStatus::Succeeded => {
            log_at!(Level::DEBUG, status_code = code, duration_ms, "delivered");
        }
        DeliveryStatus::Dead => log_at!(
            Level::WARN,
            status_code = code,
            error,
            duration_ms,
            "attempt failed; the delivery is dead (see the dead letters)"
        ),
        _ => log_at!(
            Level::INFO,
            status_code = code,
            error,
            duration_ms,
            next_attempt_at = verdict.next_attempt_at.as_millis(),
            "attempt failed; retry scheduled"
        ),
    }
}

/// The monotonic instant of wall-clock time `at`, seen from `now`.
fn instant_of(at: Timestamp, now: Timestamp) -> Instant {
    let ahead = u64::try_from(at.as_millis().saturating_sub(now.as_millis())).unwrap_or(0);
    Instant::now() + Duration::from_millis(ahead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_attempt_settling_leaves_a_newer_claim_renewed() {
        let delivery = DeliveryId::generate();
        let mut held = HashMap::from([(delivery.clone(), 2)]);
        release(&mut held, &delivery, 1);
        assert_eq!(held.get(&delivery), Some(&2), "claim 2 is still renewed");
        release(&mut held, &delivery, 2);
        assert!(held.is_empty());
    }
}
