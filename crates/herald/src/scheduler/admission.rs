//! Deliveries started at intake: the scheduler grants free workers to targets with
//! nothing queued, and intake spends those grants to store new deliveries already in
//! flight, handing them back to the scheduler once committed (no claim needed).
//!
//! A grant is counted as in flight from the moment it is made, so the scheduler's
//! limits (worker count, a target's window) hold whether or not intake uses it; at
//! every pass the scheduler takes back what was not spent and grants afresh. Grants
//! come only from workers that queued work does not need, so they never delay it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use herald_core::id::TargetId;
use herald_core::model::{Delivery, Event, Target};
use herald_core::service::Admission;
use tokio::sync::mpsc;

/// What intake tells the scheduler about the grants it spent.
pub(super) enum Spent {
    /// This delivery of this event was committed in flight: attempt it to this target.
    Started(Box<Delivery>, Arc<Event>, Arc<Target>),
    /// A delivery admitted for this target was not stored.
    Released(TargetId),
}

/// The grants of free workers per target, shared by the scheduler and intake.
pub struct IntakeAdmission {
    grants: Mutex<HashMap<TargetId, u32>>,
    spent: mpsc::UnboundedSender<Spent>,
    lease: Duration,
}

impl IntakeAdmission {
    /// Grants reported on `spent`; deliveries started at intake hold leases of `lease`.
    pub(super) fn new(lease: Duration) -> (Arc<Self>, mpsc::UnboundedReceiver<Spent>) {
        let (spent, reports) = mpsc::unbounded_channel();
        let admission = Self {
            grants: Mutex::new(HashMap::new()),
            spent,
            lease,
        };
        (Arc::new(admission), reports)
    }

    /// The grants left per target, locked: the scheduler takes back and offers
    /// grants under one lock, so intake never sees none between the two.
    pub(super) fn grants(&self) -> MutexGuard<'_, HashMap<TargetId, u32>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Admission for IntakeAdmission {
    fn admit(&self, target: &TargetId) -> bool {
        match self.grants().get_mut(target) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn started(&self, delivery: Delivery, event: Arc<Event>, target: Arc<Target>) {
        // A stopped scheduler drops it: the lease expires and the delivery is claimed.
        let _ = self
            .spent
            .send(Spent::Started(Box::new(delivery), event, target));
    }

    fn released(&self, target: &TargetId) {
        let _ = self.spent.send(Spent::Released(target.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_spent_once() {
        let (admission, _reports) = IntakeAdmission::new(Duration::from_secs(15));
        let (a, b) = (TargetId::generate(), TargetId::generate());
        *admission.grants() = HashMap::from([(a.clone(), 2)]);
        assert!(admission.admit(&a));
        assert!(admission.admit(&a));
        assert!(!admission.admit(&a), "only two were granted");
        assert!(!admission.admit(&b), "nothing was granted to b");
        *admission.grants() = HashMap::from([(a.clone(), 3)]);
        assert!(admission.admit(&a));
        assert_eq!(*admission.grants(), HashMap::from([(a.clone(), 2)]));
    }
}
