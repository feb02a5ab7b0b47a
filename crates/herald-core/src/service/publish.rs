//! Publishing events: idempotency, fan-out, and one durable write.
//!
//! A delivery either waits in its target's queue (`pending`) for the scheduler to
//! claim it, or, when the scheduler has a worker free for its target and nothing
//! queued ahead of it, starts in flight at once: it is stored `delivering` under a
//! lease in the same commit as its event, and handed to the scheduler after the
//! commit ([`Admission`]). That saves the claim's write and its round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::id::{EventId, TargetId, TenantId};
use crate::model::{Delivery, DeliveryStatus, Event, NewEvent, Target};
use crate::routing::{Route, fan_out};
use crate::store::{EventRecord, Inserted, StoreError};
use crate::time::Timestamp;

use super::{Management, ServiceError};

/// Lets new deliveries start in flight at intake (see the module documentation).
/// Implemented by the scheduler; [`NoAdmission`] queues every delivery.
pub trait Admission: Send + Sync {
    /// Whether a new delivery to `target` may start in flight now. A `true` reserves
    /// a worker until [`Self::started`] or [`Self::released`] is called for it (a
    /// publish call that ends early releases its reservations).
    fn admit(&self, target: &TargetId) -> bool;
    /// How long the lease of a delivery started at intake lasts.
    fn lease(&self) -> Duration;
    /// The admitted `delivery` of `event` is committed in flight: attempt it, with
    /// `target` as configured when the event was accepted.
    fn started(&self, delivery: Delivery, event: Arc<Event>, target: Arc<Target>);
    /// The delivery admitted for `target` was not stored (its event was a duplicate or
    /// the write failed): its reservation is free again.
    fn released(&self, target: &TargetId);
}

/// Wraps an [`Admission`] for one publish call, counting the reservations it made
/// and has not resolved yet; dropping it releases those.
struct Reservations<'a> {
    inner: &'a dyn Admission,
    outstanding: Mutex<HashMap<TargetId, u32>>,
}

impl<'a> Reservations<'a> {
    fn new(inner: &'a dyn Admission) -> Self {
        Self {
            inner,
            outstanding: Mutex::new(HashMap::new()),
        }
    }

    fn outstanding(&self) -> MutexGuard<'_, HashMap<TargetId, u32>> {
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one reservation of `target` as resolved.
    fn resolve(&self, target: &TargetId) {
        if let Some(left) = self.outstanding().get_mut(target) {
            *left = left.saturating_sub(1);
        }
    }
}

impl Admission for Reservations<'_> {
    fn admit(&self, target: &TargetId) -> bool {
        let admitted = self.inner.admit(target);
        if admitted {
            *self.outstanding().entry(target.clone()).or_default() += 1;
        }
        admitted
    }

    fn lease(&self) -> Duration {
        self.inner.lease()
    }

    fn started(&self, delivery: Delivery, event: Arc<Event>, target: Arc<Target>) {
        self.resolve(&delivery.target_id);
        self.inner.started(delivery, event, target);
    }

    fn released(&self, target: &TargetId) {
        self.resolve(target);
        self.inner.released(target);
    }
}

impl Drop for Reservations<'_> {
    fn drop(&mut self) {
        for (target, left) in self.outstanding().drain() {
            for _ in 0..left {
                self.inner.released(&target);
            }
        }
    }
}

/// Admits nothing: every delivery is queued for the scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdmission;

impl Admission for NoAdmission {
    fn admit(&self, _: &TargetId) -> bool {
        false
    }
    fn lease(&self) -> Duration {
        Duration::ZERO
    }
    fn started(&self, _: Delivery, _: Arc<Event>, _: Arc<Target>) {}
    fn released(&self, _: &TargetId) {}
}

/// What publishing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id (the original's, for a duplicate).
    pub id: EventId,
    /// How many deliveries the event has.
    pub deliveries: u32,
    /// Whether the idempotency key had been used before, so nothing new was stored.
    pub duplicate: bool,
    /// The targets of the deliveries this call queued (none for a duplicate; those
    /// started in flight at intake are not queued).
    pub targets: Vec<TargetId>,
}

impl Management {
    /// Accepts events for `tenant`: each is stored once with one delivery per target
    /// its type reaches, and all are committed before this returns. Results are in
    /// input order.
    pub async fn publish(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Published>, ServiceError> {
        self.publish_admitted(tenant, events, &NoAdmission).await
    }

    /// [`Self::publish`], starting the deliveries `admission` admits in flight.
    pub async fn publish_admitted(
        &self,
        tenant: &TenantId,
        events: Vec<NewEvent>,
        admission: &dyn Admission,
    ) -> Result<Vec<Published>, ServiceError> {
        let routes = self.cached_routes(tenant).await?;
        let now = Timestamp::now();
        // Releases what is still reserved if this call ends early (its future dropped
        // when the client goes away, or an error), so no grant stays taken.
        let reservations = Reservations::new(admission);
        let admission: &dyn Admission = &reservations;
        let mut records: Vec<EventRecord> = events
            .into_iter()
            .map(|new| {
                let mut record = record(tenant, &routes, new, now);
                admit(&mut record, admission, now);
                record
            })
            .collect();
        // On an error the reservations are released as `reservations` drops.
        let targets = self
            .admitted_targets(tenant, &mut records, admission)
            .await?;
        self.store_records(records, &targets, admission).await
    }

    /// Reads the current configuration of the targets of the admitted deliveries (the
    /// scheduler's copy may predate a change; this cache is cleared by every target
    /// write made here, and trusted for at most a second otherwise); a delivery whose
    /// target is gone or off is queued instead, and its reservation released.
    async fn admitted_targets(
        &self,
        tenant: &TenantId,
        records: &mut [EventRecord],
        admission: &dyn Admission,
    ) -> Result<HashMap<TargetId, Arc<Target>>, StoreError> {
        let mut targets: HashMap<TargetId, Option<Arc<Target>>> = HashMap::new();
        for delivery in records.iter().flat_map(|r| &r.deliveries) {
            if delivery.status == DeliveryStatus::Delivering
                && !targets.contains_key(&delivery.target_id)
            {
                let target = self.cached_target(tenant, &delivery.target_id).await?;
                let usable = target.filter(|t| t.active);
                targets.insert(delivery.target_id.clone(), usable);
            }
        }
        for record in records.iter_mut() {
            for delivery in &mut record.deliveries {
                if delivery.status == DeliveryStatus::Delivering
                    && targets.get(&delivery.target_id).is_none_or(Option::is_none)
                {
                    delivery.status = DeliveryStatus::Pending;
                    admission.released(&delivery.target_id);
                }
            }
            if !record
                .deliveries
                .iter()
                .any(|d| d.status == DeliveryStatus::Delivering)
            {
                record.leased_until = None;
            }
        }
        Ok(targets
            .into_iter()
            .filter_map(|(id, target)| Some((id, target?)))
            .collect())
    }

    /// Accepts events of several tenants, all in one commit (the Kafka source's
    /// batches), under the same rules as [`Self::publish`]. An event whose tenant does
    /// not exist is not stored: its place in the result holds [`UnknownTenant`].
    pub async fn publish_many(
        &self,
        events: Vec<(TenantId, NewEvent)>,
    ) -> Result<Vec<Result<Published, UnknownTenant>>, ServiceError> {
        let mut routes = HashMap::new();
        for (tenant, _) in &events {
            if !routes.contains_key(tenant) {
                let known = match self.store.get_tenant(tenant).await? {
                    Some(_) => Some(self.cached_routes(tenant).await?),
                    None => None,
                };
                routes.insert(tenant.clone(), known);
            }
        }
        let now = Timestamp::now();
        let mut records = Vec::new();
        let mut known = Vec::with_capacity(events.len());
        for (tenant, new) in events {
            match routes.get(&tenant).cloned().flatten() {
                Some(routes) => {
                    records.push(record(&tenant, &routes, new, now));
                    known.push(Ok(()));
                }
                None => known.push(Err(UnknownTenant(tenant))),
            }
        }
        let mut stored = self
            .store_records(records, &HashMap::new(), &NoAdmission)
            .await?
            .into_iter();
        let mut results = Vec::with_capacity(known.len());
        for known in known {
            results.push(match known {
                Ok(()) => Ok(stored.next().ok_or_else(|| StoreError::Corrupt {
                    detail: "the store answered for fewer events than it was given".to_owned(),
                })?),
                Err(unknown) => Err(unknown),
            });
        }
        Ok(results)
    }

    /// Stores records in one commit and says what each did; hands the deliveries
    /// started in flight to `admission`, or releases them if they were not stored.
    async fn store_records(
        &self,
        records: Vec<EventRecord>,
        targets: &HashMap<TargetId, Arc<Target>>,
        admission: &dyn Admission,
    ) -> Result<Vec<Published>, ServiceError> {
        let summaries: Vec<Summary> = records.iter().map(|r| Summary::of(r, targets)).collect();
        let inserted = match self.store.insert_events(records).await {
            Ok(inserted) => inserted,
            Err(error) => {
                summaries.iter().for_each(|s| s.release(admission));
                return Err(error.into());
            }
        };
        Ok(summaries
            .into_iter()
            .zip(inserted)
            .map(|(summary, inserted)| match inserted {
                Inserted::New => summary.start(admission, Timestamp::now()),
                Inserted::Duplicate {
                    original,
                    deliveries,
                } => {
                    summary.release(admission);
                    Published {
                        id: original,
                        deliveries,
                        duplicate: true,
                        targets: Vec::new(),
                    }
                }
            })
            .collect())
    }
}

/// Marks the deliveries `admission` admits to start in flight, under one lease.
fn admit(record: &mut EventRecord, admission: &dyn Admission, now: Timestamp) {
    let mut any = false;
    for delivery in &mut record.deliveries {
        if admission.admit(&delivery.target_id) {
            delivery.status = DeliveryStatus::Delivering;
            any = true;
        }
    }
    if any {
        record.leased_until = Some(now.plus(admission.lease()));
    }
}

/// What is left to do for a record once the store has answered.
struct Summary {
    id: EventId,
    deliveries: u32,
    /// The targets of the deliveries queued.
    queued: Vec<TargetId>,
    /// The deliveries started in flight with their targets, and their event (only
    /// then kept).
    started: Vec<(Delivery, Option<Arc<Target>>)>,
    event: Option<Arc<Event>>,
    /// When the lease of the deliveries started in flight expires.
    leased_until: Option<Timestamp>,
}

impl Summary {
    fn of(record: &EventRecord, targets: &HashMap<TargetId, Arc<Target>>) -> Self {
        let (started, queued): (Vec<&Delivery>, Vec<&Delivery>) = record
            .deliveries
            .iter()
            .partition(|d| d.status == DeliveryStatus::Delivering);
        Self {
            id: record.event.id.clone(),
            deliveries: u32::try_from(record.deliveries.len()).unwrap_or(u32::MAX),
            queued: queued.into_iter().map(|d| d.target_id.clone()).collect(),
            event: (!started.is_empty()).then(|| Arc::new(record.event.clone())),
            leased_until: record.leased_until,
            started: started
                .into_iter()
                .map(|d| (d.clone(), targets.get(&d.target_id).cloned()))
                .collect(),
        }
    }

    /// The record was stored: its deliveries in flight go to `admission`, unless the
    /// store answered so late that less than half their lease is left at `now`.
    /// Those are not attempted here: their lease runs out and they are claimed like
    /// any other, instead of an attempt racing the claim that recovers them.
    fn start(self, admission: &dyn Admission, now: Timestamp) -> Published {
        let fresh = self
            .leased_until
            .is_some_and(|until| now.plus(admission.lease() / 2) <= until);
        if let Some(event) = &self.event {
            for (delivery, target) in self.started {
                match target {
                    Some(target) if fresh => {
                        admission.started(delivery, Arc::clone(event), target);
                    }
                    // A stale lease, or (not reached) a target that was not read.
                    _ => admission.released(&delivery.target_id),
                }
            }
        }
        Published {
            id: self.id,
            deliveries: self.deliveries,
            duplicate: false,
            targets: self.queued,
        }
    }

    /// The record was not stored: free its reservations.
    fn release(&self, admission: &dyn Admission) {
        self.started
            .iter()
            .for_each(|(d, _)| admission.released(&d.target_id));
    }
}

/// The tenant an event names does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {0} does not exist")]
pub struct UnknownTenant(pub TenantId);

/// A new event of `tenant` with one delivery per route its type matches.
fn record(tenant: &TenantId, routes: &[Route], new: NewEvent, now: Timestamp) -> EventRecord {
    let event = Event {
        id: EventId::generate(),
        tenant_id: tenant.clone(),
        event_type: new.event_type,
        payload: new.payload,
        content_type: new.content_type,
        idempotency_key: new.idempotency_key,
        created_at: now,
    };
    let deliveries = fan_out(&event.event_type, routes)
        .into_iter()
        .map(|route| {
            Delivery::new(
                tenant.clone(),
                event.id.clone(),
                event.event_type.clone(),
                route,
                now,
            )
        })
        .collect();
    EventRecord {
        event,
        deliveries,
        leased_until: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Grants everything and records what it is told.
    #[derive(Default)]
    struct Recording {
        released: Mutex<Vec<TargetId>>,
        started: Mutex<Vec<TargetId>>,
    }

    impl Admission for Recording {
        fn admit(&self, _: &TargetId) -> bool {
            true
        }
        fn lease(&self) -> Duration {
            Duration::from_secs(15)
        }
        fn started(&self, delivery: Delivery, _: Arc<Event>, _: Arc<Target>) {
            self.started
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(delivery.target_id);
        }
        fn released(&self, target: &TargetId) {
            self.released
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(target.clone());
        }
    }

    #[test]
    fn a_publish_that_ends_early_releases_what_it_reserved() {
        let inner = Recording::default();
        let (a, b) = (TargetId::generate(), TargetId::generate());
        {
            let reservations = Reservations::new(&inner);
            assert!(reservations.admit(&a));
            assert!(reservations.admit(&a));
            assert!(reservations.admit(&b));
            reservations.released(&b);
            // Dropped here with two reservations of `a` unresolved (a cancelled call).
        }
        let released = inner
            .released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(released, vec![b, a.clone(), a]);
    }

    /// A summary of one delivery started in flight, leased until `leased_until`.
    fn started_summary(leased_until: Timestamp) -> (Summary, TargetId) {
        let now = Timestamp::now();
        let tenant = TenantId::generate();
        let target = crate::model::NewTarget {
            url: crate::model::TargetUrl::parse("https://example.com/hook", "url").expect("url"),
            description: None,
            secret: None,
            headers: crate::model::CustomHeaders::default(),
            rate_limit: None,
            max_in_flight: None,
            timeout: None,
            active: None,
        }
        .into_target(tenant.clone(), now);
        let event = Event {
            id: EventId::generate(),
            tenant_id: tenant.clone(),
            event_type: crate::filter::EventType::parse("a.b", "type").expect("type"),
            content_type: crate::model::ContentType::parse("application/json", "ct")
                .expect("content type"),
            payload: bytes::Bytes::from_static(b"{}"),
            idempotency_key: None,
            created_at: now,
        };
        let route = (target.id.clone(), crate::id::SubscriptionId::generate());
        let mut delivery = Delivery::new(
            tenant,
            event.id.clone(),
            event.event_type.clone(),
            route,
            now,
        );
        delivery.status = DeliveryStatus::Delivering;
        let target_id = target.id.clone();
        let record = EventRecord {
            event,
            deliveries: vec![delivery],
            leased_until: Some(leased_until),
        };
        let targets = HashMap::from([(target_id.clone(), Arc::new(target))]);
        (Summary::of(&record, &targets), target_id)
    }

    #[test]
    fn a_delivery_committed_with_a_stale_lease_is_left_to_lease_recovery() {
        let now = Timestamp::now();
        let lease = Recording::default().lease();

        let inner = Recording::default();
        let (summary, target) = started_summary(now.plus(lease));
        summary.start(&inner, now);
        assert_eq!(*inner.started.lock().expect("log"), [target]);
        assert!(inner.released.lock().expect("log").is_empty());

        // The store answered when less than half the lease was left: no attempt here.
        let inner = Recording::default();
        let (summary, target) =
            started_summary(now.plus(lease / 2).minus(Duration::from_millis(1)));
        summary.start(&inner, now);
        assert!(inner.started.lock().expect("log").is_empty());
        assert_eq!(*inner.released.lock().expect("log"), [target]);
    }
}
