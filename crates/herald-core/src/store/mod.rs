//! The storage contract: one trait every backend implements, behind one handle.
//!
//! [`StoreBackend`] is what a backend (embedded SQLite, PostgreSQL) provides; [`Store`]
//! is the cheap, cloneable handle the rest of Herald holds, so no generic parameter
//! leaks into every signature. Backends store and fetch; they make no policy
//! decisions (defaults, validation, who may see what is decided in [`crate::service`]).
//! Every read and write of tenant-owned data is scoped by tenant id in the query
//! itself, so a bug in a caller cannot leak another tenant's rows.

mod page;
mod queue;

use std::error::Error as StdError;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::auth::{ApiKey, KeyHash};
use crate::flow::Circuit;
use crate::id::{
    ApiKeyId, DeliveryId, EventId, FilterId, ParkedId, SubscriptionId, TargetId, TenantId,
};
use crate::model::{Attempt, Delivery, Event, Filter, Subscription, Target, Tenant};
use crate::routing::Route;
use crate::time::Timestamp;

pub use page::{Page, PageRequest};
pub use queue::{
    Claim, ClaimRequest, Claimed, DeliveryQuery, EventRecord, HeldBack, INTAKE_LEASE_TOKEN,
    Inserted, OutcomeRecord, QueueStats, REQUEUE_BATCH, Requeue, SharedLimits, WaitingTarget,
};

/// Why a store operation failed, in backend-neutral terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write would break a uniqueness or reference rule of the data.
    #[error("the write conflicts with stored data: {0}")]
    Conflict(Conflict),
    /// Stored data could not be read back into the model (a bug or manual edit).
    #[error("stored data is corrupt: {detail}")]
    Corrupt {
        /// What could not be read, for the operator.
        detail: String,
    },
    /// The backend failed: I/O, connection, lock timeout and the like.
    #[error("the storage backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

/// Which data rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A row with the same unique values exists (e.g. a second subscription for the
    /// same target and filter).
    #[error("a record with the same unique values exists")]
    Duplicate,
    /// A referenced row does not exist (e.g. a target deleted meanwhile).
    #[error("a referenced record does not exist")]
    MissingReference,
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl StdError + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// Everything Herald keeps, as a backend provides it.
///
/// Methods on tenant-owned records take the tenant id and must only ever see that
/// tenant's rows. `update_*` and `delete_*` answer `false` when no such row exists.
/// Deleting a tenant deletes everything it owns; deleting a target or a filter deletes
/// the subscriptions that use it. Deleting a target also deletes its deliveries still
/// owed (waiting or in flight) and its dead ones, and keeps those it received as
/// history: they are listed and read as before, but never sent again.
#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    /// Succeeds when the store answers queries and its schema is current.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a tenant together with its first API key, atomically.
    async fn insert_tenant(&self, tenant: &Tenant, first_key: &ApiKey) -> Result<(), StoreError>;
    /// One tenant.
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;
    /// Tenants in id order.
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>, StoreError>;
    /// Replaces a tenant's fields.
    async fn update_tenant(&self, tenant: &Tenant) -> Result<bool, StoreError>;
    /// Deletes a tenant and everything it owns.
    async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError>;

    /// Adds an API key to its tenant.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// A tenant's keys, oldest first.
    async fn list_api_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKey>, StoreError>;
    /// Revokes one key.
    async fn delete_api_key(&self, tenant: &TenantId, id: &ApiKeyId) -> Result<bool, StoreError>;
    /// The tenant a key belongs to, found by the key's hash.
    async fn tenant_for_key(&self, hash: &KeyHash) -> Result<Option<TenantId>, StoreError>;

    /// Stores a new target.
    async fn insert_target(&self, target: &Target) -> Result<(), StoreError>;
    /// One of a tenant's targets.
    async fn get_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Target>, StoreError>;
    /// A tenant's targets in id order.
    async fn list_targets(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Target>, StoreError>;
    /// Replaces a target's fields (matched by tenant and id).
    async fn update_target(&self, target: &Target) -> Result<bool, StoreError>;
    /// Deletes a target, its subscriptions, and its deliveries waiting, in flight or
    /// dead; its succeeded deliveries stay. Deliveries for a target deleted before
    /// they are written are refused with [`Conflict::MissingReference`].
    async fn delete_target(&self, tenant: &TenantId, id: &TargetId) -> Result<bool, StoreError>;
    /// Switches a target off with the reason (whatever tenant owns it); its waiting
    /// deliveries stay until it is switched on again.
    async fn disable_target(
        &self,
        id: &TargetId,
        reason: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;
    /// One of a tenant's targets' circuit, as last saved.
    async fn target_circuit(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Circuit>, StoreError>;
    /// Saves circuits, all in one commit (targets deleted meanwhile are skipped). A
    /// saved circuit is replaced only by one that entered its state at the same time
    /// or later (`since`), so an instance's stale view cannot undo another's change.
    async fn save_circuits(&self, circuits: Vec<(TargetId, Circuit)>) -> Result<(), StoreError>;

    /// Stores a new filter.
    async fn insert_filter(&self, filter: &Filter) -> Result<(), StoreError>;
    /// One of a tenant's filters.
    async fn get_filter(
        &self,
        tenant: &TenantId,
        id: &FilterId,
    ) -> Result<Option<Filter>, StoreError>;
    /// A tenant's filters in id order.
    async fn list_filters(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Filter>, StoreError>;
    /// Replaces a filter's fields (matched by tenant and id).
    async fn update_filter(&self, filter: &Filter) -> Result<bool, StoreError>;
    /// Deletes a filter and its subscriptions.
    async fn delete_filter(&self, tenant: &TenantId, id: &FilterId) -> Result<bool, StoreError>;

    /// Stores a new subscription. Its target and filter must exist and belong to the
    /// same tenant ([`Conflict::MissingReference`] otherwise), and the pair must not be
    /// subscribed already ([`Conflict::Duplicate`]).
    async fn insert_subscription(&self, subscription: &Subscription) -> Result<(), StoreError>;
    /// One of a tenant's subscriptions.
    async fn get_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError>;
    /// A tenant's subscriptions in id order.
    async fn list_subscriptions(
        &self,
        tenant: &TenantId,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError>;
    /// Replaces a subscription's fields, under the same rules as insertion.
    async fn update_subscription(&self, subscription: &Subscription) -> Result<bool, StoreError>;
    /// Deletes a subscription.
    async fn delete_subscription(
        &self,
        tenant: &TenantId,
        id: &SubscriptionId,
    ) -> Result<bool, StoreError>;

    /// The tenant's routes: its active subscriptions whose targets are active.
    async fn routes(&self, tenant: &TenantId) -> Result<Vec<Route>, StoreError>;
    /// Stores events with their deliveries, each atomically and all in one commit. An
    /// event whose idempotency key the tenant already used is not stored; its result
    /// names the original instead. Results are in input order.
    async fn insert_events(&self, records: Vec<EventRecord>) -> Result<Vec<Inserted>, StoreError>;
    /// One of a tenant's events.
    async fn get_event(&self, tenant: &TenantId, id: &EventId)
    -> Result<Option<Event>, StoreError>;
    /// An event's deliveries, in id order.
    async fn event_deliveries(
        &self,
        tenant: &TenantId,
        event: &EventId,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// A tenant's deliveries selected by `query`, in id order.
    async fn list_deliveries(
        &self,
        tenant: &TenantId,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, StoreError>;
    /// One of a tenant's deliveries.
    async fn get_delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Option<Delivery>, StoreError>;
    /// A delivery's attempts, oldest first.
    async fn list_attempts(
        &self,
        tenant: &TenantId,
        delivery: &DeliveryId,
    ) -> Result<Vec<Attempt>, StoreError>;
    /// Makes the selected deliveries pending and due at `now`, opening a new retry
    /// window; never touches a delivery with an attempt under way. Returns how many
    /// were requeued.
    async fn requeue(
        &self,
        tenant: &TenantId,
        which: &Requeue,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Every active target with pending deliveries, with when each lane is next due
    /// and its saved circuit.
    async fn waiting_targets(&self) -> Result<Vec<WaitingTarget>, StoreError>;
    /// Claims, for each request, up to its numbers of due first attempts and due
    /// retries of its target (earliest due first), each under a lease of `lease` and a
    /// new fencing token; all in one commit. Inactive targets yield nothing. Each
    /// request's [`SharedLimits`] hold over everything claimed from the store: no more
    /// of the target's deliveries in flight (unfinished claims of any instance) than
    /// its `max_in_flight`, and no faster than its rate, whose token bucket the store
    /// keeps. A target another instance is claiming at this very moment may be skipped
    /// rather than waited for. Targets given less than asked by their limits (or
    /// skipped) are named in [`Claimed::held_back`].
    async fn claim(
        &self,
        requests: Vec<ClaimRequest>,
        now: Timestamp,
        lease: Duration,
    ) -> Result<Claimed, StoreError>;
    /// Records outcomes, all in one commit. Each is applied only if its delivery is
    /// still under the claim that made the attempt; the result says which were.
    async fn record_outcomes(
        &self,
        outcomes: Vec<OutcomeRecord>,
        now: Timestamp,
    ) -> Result<Vec<bool>, StoreError>;
    /// How many pending deliveries of active targets are due at `now` and later (due
    /// ones held back by a pause or an open circuit included), and how many circuits
    /// are not closed.
    async fn queue_stats(&self, now: Timestamp) -> Result<QueueStats, StoreError>;
    /// Puts deliveries whose lease expired by `now` back in their lanes, due at once
    /// (their worker is presumed dead). Returns how many.
    async fn recover_expired_leases(&self, now: Timestamp) -> Result<u64, StoreError>;
    /// Ends every lease at once, making in-flight deliveries claimable now. Only for a
    /// store no other instance is using (the embedded store at start-up, after a crash).
    async fn release_all_leases(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Extends to `until` the leases still held under these (delivery, fencing token)
    /// pairs: the holder is alive and its attempts are under way. Returns how many
    /// were extended (a lease taken over meanwhile is not).
    async fn extend_leases(
        &self,
        leases: Vec<(DeliveryId, i64)>,
        until: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Records that an instance is alive (registering it the first time).
    async fn heartbeat(&self, instance: &Instance) -> Result<(), StoreError>;
    /// The registered instances, in id order.
    async fn instances(&self) -> Result<Vec<Instance>, StoreError>;
    /// Forgets instances whose last heartbeat is older than `stale_before`. Returns
    /// how many.
    async fn forget_instances(&self, stale_before: Timestamp) -> Result<u64, StoreError>;
    /// Makes `instance` the leader until `now + term`, if no other instance's term is
    /// running; a leader calling again extends its term. Answers whether `instance`
    /// leads now.
    async fn take_leadership(
        &self,
        instance: &str,
        now: Timestamp,
        term: Duration,
    ) -> Result<bool, StoreError>;
    /// Deletes up to `limit` events created before `created_before` whose deliveries
    /// are all finished (succeeded or dead), with their deliveries and attempts, and up
    /// to `limit` records parked before then. Returns how many events and parked
    /// records it deleted.
    async fn purge_finished(
        &self,
        created_before: Timestamp,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Keeps records the Kafka source refused; one already kept (same topic,
    /// partition and offset, read again after a crash) is left as it is.
    async fn park_records(&self, records: Vec<ParkedRecord>) -> Result<(), StoreError>;
    /// The parked records, oldest first.
    async fn list_parked(&self, page: &PageRequest) -> Result<Page<ParkedRecord>, StoreError>;

    /// Starts telling `listener` about changes other instances make. A store only one
    /// instance can use (the embedded one) has none to tell.
    fn watch(&self, listener: ChangeListener) {
        drop(listener);
    }
}

/// A Kafka record that carried no event Herald could accept, kept so an operator can
/// see it (and fix its producer); the consumer moved on past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRecord {
    /// Its id.
    pub id: ParkedId,
    /// Where it was read: topic, partition, offset (a record is parked once).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// Why it was refused.
    pub reason: String,
    /// Its headers (values read as UTF-8, invalid bytes replaced).
    pub headers: Vec<(String, String)>,
    /// The start of its value (at most [`PARKED_VALUE_LIMIT`] bytes).
    pub value: Option<Vec<u8>>,
    /// Its value's full size in bytes.
    pub value_bytes: u64,
    /// When it was parked.
    pub parked_at: Timestamp,
}

/// How much of a parked record's value is kept.
pub const PARKED_VALUE_LIMIT: usize = 64 * 1024;

/// A running Herald instance, as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Its id, new at every start.
    pub id: String,
    /// Where it runs, for operators (host name, process id, version).
    pub description: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub heartbeat_at: Timestamp,
}

/// A change made through another Herald instance sharing the store, which this one
/// must react to (its own changes it already knows about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New or requeued deliveries of these targets are due.
    Due(Vec<TargetId>),
    /// A tenant's configuration (targets, filters, subscriptions, keys) changed.
    Config(TenantId),
    /// A target's circuit changed state.
    Circuit(TargetId),
    /// Changes may have been missed (the connection that carries them was lost):
    /// forget every cache and look at the whole store again.
    Everything,
}

/// Told about [`Change`]s, on whatever thread the backend learns of them.
pub type ChangeListener = Arc<dyn Fn(Change) + Send + Sync>;

/// The handle to whichever backend this process runs on. Cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<dyn StoreBackend>);

impl Store {
    /// Wraps a backend.
    pub fn new(backend: impl StoreBackend) -> Self {
        Self(Arc::new(backend))
    }
}

impl Deref for Store {
    type Target = dyn StoreBackend;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}
