//! Publishing events: idempotency, fan-out, and one durable write.

use crate::id::{EventId, TargetId, TenantId};
use crate::model::{Delivery, Event, NewEvent};
use crate::routing::fan_out;
use crate::store::{EventRecord, Inserted};
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
        let records: Vec<EventRecord> = events
            .into_iter()
            .map(|new| {
                let event = Event {
                    id: EventId::generate(),
                    tenant_id: tenant.clone(),
                    event_type: new.event_type,
                    payload: new.payload,
                    content_type: new.content_type,
                    idempotency_key: new.idempotency_key,
                    created_at: now,
                };
                let deliveries = fan_out(&event.event_type, &routes)
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
            })
            .collect();
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
