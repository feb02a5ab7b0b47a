//! The outcome recorder: writes attempt outcomes to the store in batches (one commit
//! for everything that finished meanwhile), so the hot path does not spend a
//! transaction per delivery.

use std::sync::Arc;

use herald_core::model::DeliveryStatus;
use herald_core::store::{OutcomeRecord, Store};
use herald_core::time::Timestamp;
use tokio::sync::{Notify, mpsc};

/// Most outcomes written in one commit.
const MAX_BATCH: usize = 512;

/// Records outcomes until every sender is gone.
pub async fn record(
    store: Store,
    mut outcomes: mpsc::UnboundedReceiver<OutcomeRecord>,
    wake: Arc<Notify>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while outcomes.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let retries = batch
            .iter()
            .any(|o| o.verdict.status == DeliveryStatus::Pending);
        let count = batch.len();
        match store
            .record_outcomes(std::mem::take(&mut batch), Timestamp::now())
            .await
        {
            Ok(applied) => {
                let stale = applied.iter().filter(|applied| !**applied).count();
                if stale > 0 {
                    tracing::warn!(
                        stale,
                        "outcomes arrived after their lease was taken over; the new owner's stand"
                    );
                }
            }
            // The deliveries stay leased; when the leases expire they are attempted again.
            Err(error) => tracing::error!(error = %error, count, "recording outcomes failed"),
        }
        if retries {
            wake.notify_one();
        }
    }
}
