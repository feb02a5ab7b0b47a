//! Publishing events: idempotency, fan-out, and one durable write.

use std::collections::HashMap;

use crate::id::{EventId, TargetId, TenantId};
use crate::model::{Delivery, Event, NewEvent};
use crate::routing::{Route, fan_out};
use crate::store::{EventRecord, Inserted, StoreError};
use crate::time::Timestamp;

use super::{Management, ServiceError};

/// What publishing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id (the original's, for a duplicate).
    pub id: EventId,
    /// How many deliveries the event has.
    pub deliveries: u32,
    /// Whether the idempotency key had been used before, so nothing new was stored.
    pub duplicate: bool,
    /// The targets of the deliveries this call created (none for a duplicate).
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
        let routes = self.cached_routes(tenant).await?;
        let now = Timestamp::now();
        let records = events
            .into_iter()
            .map(|new| record(tenant, &routes, new, now))
            .collect();
        self.store_records(records).await
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
        let mut stored = self.store_records(records).await?.into_iter();
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

    /// Stores records in one commit and says what each did.
    async fn store_records(
        &self,
        records: Vec<EventRecord>,
    ) -> Result<Vec<Published>, ServiceError> {
        let summaries: Vec<(EventId, Vec<TargetId>)> = records
            .iter()
            .map(|r| {
                let targets = r.deliveries.iter().map(|d| d.target_id.clone()).collect();
                (r.event.id.clone(), targets)
            })
            .collect();
        let inserted = self.store.insert_events(records).await?;
        Ok(summaries
            .into_iter()
            .zip(inserted)
            .map(|((id, targets), inserted)| match inserted {
                Inserted::New => Published {
                    id,
                    deliveries: u32::try_from(targets.len()).unwrap_or(u32::MAX),
                    duplicate: false,
                    targets,
                },
                Inserted::Duplicate {
                    original,
                    deliveries,
                } => Published {
                    id: original,
                    deliveries,
                    duplicate: true,
                    targets: Vec::new(),
                },
            })
            .collect())
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
    EventRecord { event, deliveries }
}
