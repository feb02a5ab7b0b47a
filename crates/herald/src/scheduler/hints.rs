//! How the rest of Herald tells the scheduler that work became due, without a query:
//! intake names the targets of new deliveries, the outcome recorder names retries
//! and settled outcomes once they are committed, the operations API asks for a full
//! rescan after a requeue.
//! Hints only make the scheduler look sooner; its periodic rescan of the store finds
//! everything anyway, so a lost hint delays work by at most that period.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use herald_core::id::{DeliveryId, TargetId};
use herald_core::time::Timestamp;
use tokio::sync::Notify;

/// When each lane of a target has work due, as far as the hints say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneHint {
    /// The earliest first attempt hinted.
    pub first: Option<Timestamp>,
    /// The earliest retry hinted.
    pub retry: Option<Timestamp>,
}

/// Hints gathered since the scheduler last looked.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Per target.
    pub targets: HashMap<TargetId, LaneHint>,
    /// Something changed that only a rescan of the store finds.
    pub rescan: bool,
    /// Per target, how many finished attempts' outcomes the store has now settled
    /// (committed, or given up on): they no longer count as in flight there.
    pub settled: HashMap<TargetId, u32>,
    /// The deliveries of those outcomes, each with the lease token its attempt held:
    /// those leases need no more renewal.
    pub settled_deliveries: Vec<(DeliveryId, i64)>,
}

/// The shared mailbox of hints. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Hints {
    gathered: Mutex<Gathered>,
    notify: Notify,
}

fn earliest(current: Option<Timestamp>, new: Timestamp) -> Option<Timestamp> {
    Some(current.map_or(new, |c| c.min(new)))
}

impl Hints {
    /// New deliveries to these targets are due at `due` (committed already).
    pub fn first_attempts(&self, targets: impl IntoIterator<Item = TargetId>, due: Timestamp) {
        self.update(|gathered| {
            for target in targets {
                let hint = gathered.targets.entry(target).or_default();
                hint.first = earliest(hint.first, due);
            }
        });
    }

    /// A retry of `target` is due at `due` (committed already).
    pub fn retry(&self, target: TargetId, due: Timestamp) {
        self.update(|gathered| {
            let hint = gathered.targets.entry(target).or_default();
            hint.retry = earliest(hint.retry, due);
        });
    }

    /// The outcomes of these attempts (each a target, its delivery and the lease token
    /// it ran under) are settled.
    pub fn settled(&self, attempts: impl IntoIterator<Item = (TargetId, DeliveryId, i64)>) {
        self.update(|gathered| {
            for (target, delivery, token) in attempts {
                *gathered.settled.entry(target).or_default() += 1;
                gathered.settled_deliveries.push((delivery, token));
            }
        });
    }

    /// Deliveries were requeued or targets changed: look at the whole store.
    pub fn rescan(&self) {
        self.update(|gathered| gathered.rescan = true);
    }

    /// Takes everything hinted so far.
    pub fn take(&self) -> Gathered {
        let mut gathered = self.gathered.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *gathered)
    }

    /// Resolves when a hint arrives (at once if one arrived since the last wait).
    pub async fn arrived(&self) {
        self.notify.notified().await;
    }

    fn update(&self, change: impl FnOnce(&mut Gathered)) {
        {
            let mut gathered = self.gathered.lock().unwrap_or_else(PoisonError::into_inner);
            change(&mut gathered);
        }
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_keep_the_earliest_time_per_lane_and_empty_on_take() {
        let hints = Hints::default();
        let target = TargetId::generate();
        hints.retry(target.clone(), Timestamp::from_millis(50));
        hints.retry(target.clone(), Timestamp::from_millis(20));
        hints.first_attempts([target.clone()], Timestamp::from_millis(70));
        let gathered = hints.take();
        assert_eq!(
            gathered.targets[&target],
            LaneHint {
                first: Some(Timestamp::from_millis(70)),
                retry: Some(Timestamp::from_millis(20)),
            }
        );
        assert!(!gathered.rescan);
        hints.rescan();
        let again = hints.take();
        assert!(again.targets.is_empty() && again.rescan);
    }
}
