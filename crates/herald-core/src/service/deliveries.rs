//! Reading events, deliveries and attempts; retrying and redriving deliveries.

use crate::id::{DeliveryId, EventId, TenantId};
use crate::model::{Attempt, Delivery, DeliveryStatus, Event};
use crate::store::{DeliveryQuery, Page, PageRequest, REQUEUE_BATCH, Requeue};
use crate::time::Timestamp;

use super::{Management, ResourceKind, ServiceError};

impl Management {
    /// One of the tenant's events with its deliveries.
    pub async fn event(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<(Event, Vec<Delivery>), ServiceError> {
        let event = self
            .store
            .get_event(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Event, id))?;
        let deliveries = self.store.event_deliveries(tenant, id).await?;
        Ok((event, deliveries))
    }

    /// A page of the tenant's deliveries selected by `query`.
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        query: &DeliveryQuery,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, ServiceError> {
        Ok(self.store.list_deliveries(tenant, query, page).await?)
    }

    /// One of the tenant's deliveries.
    pub async fn delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Delivery, ServiceError> {
        self.store
            .get_delivery(tenant, id)
            .await?
            .ok_or_else(|| ServiceError::not_found(ResourceKind::Delivery, id))
    }

    /// A delivery's attempts, oldest first.
    pub async fn attempts(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Vec<Attempt>, ServiceError> {
        self.delivery(tenant, id).await?;
        Ok(self.store.list_attempts(tenant, id).await?)
    }

    /// Puts one delivery back in the queue, due now with a fresh retry window, whatever
    /// its status (a dead one is redriven, a succeeded one re-sent) unless an attempt
    /// is under way or its target was deleted.
    pub async fn retry_delivery(
        &self,
        tenant: &TenantId,
        id: &DeliveryId,
    ) -> Result<Delivery, ServiceError> {
        let delivery = self.delivery(tenant, id).await?;
        if delivery.status == DeliveryStatus::Delivering {
            return Err(in_flight(id));
        }
        let requeued = self
            .store
            .requeue(tenant, &Requeue::One(id.clone()), Timestamp::now())
            .await?;
        if requeued == 0 {
            return Err(self.why_not_requeued(tenant, &delivery).await);
        }
        self.delivery(tenant, id).await
    }

    /// Why a requeue of `delivery` changed nothing: its target is gone, or (found
    /// idle a moment before) an attempt has started since.
    async fn why_not_requeued(&self, tenant: &TenantId, delivery: &Delivery) -> ServiceError {
        match self.store.get_target(tenant, &delivery.target_id).await {
            Ok(Some(_)) => in_flight(&delivery.id),
            Ok(None) => ServiceError::Conflict(format!(
                "target {} of delivery {} was deleted; the delivery is kept as history \
                 and cannot be sent again",
                delivery.target_id, delivery.id
            )),
            Err(error) => error.into(),
        }
    }

    /// Puts every dead delivery selected by `query` back in the queue; returns how many.
    pub async fn redrive(
        &self,
        tenant: &TenantId,
        mut query: DeliveryQuery,
    ) -> Result<u64, ServiceError> {
        query.status = Some(DeliveryStatus::Dead);
        let which = Requeue::Dead {
            query,
            dead_before: Timestamp::now(),
            at_most: REQUEUE_BATCH,
        };
        let mut requeued = 0;
        // In writes of at most `REQUEUE_BATCH`, so that other writes go between them;
        // each batch leaves the dead letters it took, so the next finds the rest.
        loop {
            let batch = self.store.requeue(tenant, &which, Timestamp::now()).await?;
            requeued += batch;
            if batch < REQUEUE_BATCH {
                return Ok(requeued);
            }
        }
    }
}

fn in_flight(id: &DeliveryId) -> ServiceError {
    ServiceError::Conflict(format!(
        "delivery {id} has an attempt under way; retry it once the attempt ends"
    ))
}
