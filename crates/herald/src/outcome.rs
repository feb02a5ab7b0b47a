//! The outcome recorder: writes what the scheduler decided to the store in batches
//! (one commit for everything that finished meanwhile), so the hot path does not
//! spend a transaction per delivery, and tells the scheduler when committed retries
//! are due.

use std::sync::Arc;
use std::time::Duration;

use herald_core::flow::Circuit;
use herald_core::id::{DeliveryId, TargetId};
use herald_core::model::DeliveryStatus;
use herald_core::store::{OutcomeRecord, Store};
use herald_core::time::Timestamp;
use tokio::sync::mpsc;

use crate::scheduler::Hints;

/// Most records written in one commit.
const MAX_BATCH: usize = 512;

/// Something to write.
// Nearly every record is an outcome: boxing it would cost an allocation each to
// shrink the rare variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Record {
    /// An attempt's outcome.
    Outcome(OutcomeRecord),
    /// A target's circuit changed.
    Circuit(TargetId, Circuit),
    /// A target answered `410 Gone`: switch it off with this reason.
    Disable(TargetId, String),
}

/// How soon circuit states whose save failed are tried again when nothing else comes
/// to be written meanwhile.
const RESAVE_AFTER: Duration = Duration::from_secs(1);

/// Records until every sender is gone.
pub async fn record(store: Store, mut records: mpsc::UnboundedReceiver<Record>, hints: Arc<Hints>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Circuit states not saved yet, kept through failed saves: other instances read a
    // target's circuit from the store, so a lost save would let them keep sending to
    // a target this one found failing.
    let mut circuits = Circuits::default();
    loop {
        let next = records.recv_many(&mut batch, MAX_BATCH);
        let received = if circuits.is_empty() {
            Some(next.await)
        } else {
            // Nothing arrived in time: the unsaved circuits are tried again alone.
            tokio::time::timeout(RESAVE_AFTER, next).await.ok()
        };
        let closed = received == Some(0);
        let mut outcomes = Vec::new();
        let mut disabled = Vec::new();
        for record in batch.drain(..) {
            match record {
                Record::Outcome(outcome) => outcomes.push(outcome),
                Record::Circuit(target, circuit) => circuits.set(target, circuit),
                Record::Disable(target, reason) => disabled.push((target, reason)),
            }
        }
        write_outcomes(&store, outcomes, &hints).await;
        circuits.save(&store).await;
        for (target, reason) in disabled {
            if let Err(error) = store
                .disable_target(&target, &reason, Timestamp::now())
                .await
            {
                // The target answers 410 again, and that tries the disable again.
                tracing::error!(error = %error, target = %target, "disabling a gone target failed");
            }
        }
        if closed {
            break;
        }
    }
}

/// The latest circuit state of each target changed since the last successful save.
#[derive(Default)]
struct Circuits(Vec<(TargetId, Circuit)>);

impl Circuits {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps `circuit` as the target's latest state (only the latest matters).
    fn set(&mut self, target: TargetId, circuit: Circuit) {
        self.0.retain(|(t, _)| *t != target);
        self.0.push((target, circuit));
    }

    /// Saves them all; on failure keeps them to be saved again.
    async fn save(&mut self, store: &Store) {
        if self.0.is_empty() {
            return;
        }
        match store.save_circuits(self.0.clone()).await {
            Ok(()) => self.0.clear(),
            Err(error) => tracing::error!(
                error = %error,
                targets = self.0.len(),
                "saving circuit states failed; trying again shortly"
            ),
        }
    }
}

async fn write_outcomes(store: &Store, outcomes: Vec<OutcomeRecord>, hints: &Hints) {
    if outcomes.is_empty() {
        return;
    }
    let retries: Vec<(TargetId, Timestamp)> = outcomes
        .iter()
        .filter(|o| o.verdict.status == DeliveryStatus::Pending)
        .map(|o| (o.target_id.clone(), o.verdict.next_attempt_at))
        .collect();
    let count = outcomes.len();
    let attempts: Vec<(TargetId, DeliveryId, i64)> = outcomes
        .iter()
        .map(|o| (o.target_id.clone(), o.delivery_id.clone(), o.lease_token))
        .collect();
    let result = store.record_outcomes(outcomes, Timestamp::now()).await;
    // Committed or not, these attempts are over: a failed write leaves its deliveries
    // to lease recovery, which the scheduler need not wait for.
    hints.settled(attempts);
    match result {
        Ok(applied) => {
            let stale = applied.iter().filter(|applied| !**applied).count();
            if stale > 0 {
                tracing::warn!(
                    stale,
                    "outcomes arrived after their lease was taken over; the new owner's stand"
                );
            }
            for (target, due) in retries {
                hints.retry(target, due);
            }
        }
        // The deliveries stay leased; when the leases expire they are attempted again.
        Err(error) => tracing::error!(error = %error, count, "recording outcomes failed"),
    }
}
