//! The events the writer stored or read lately, so that a claim finds an event without
//! reading its row again.
//!
//! At fan-out N every event is read by N claims, one per target lane, each in a job of
//! its own; reading and decoding the row (its payload included) was a fifth of a
//! claim's work at fan-out 10. Intake puts each event it stores here, and a claim
//! reads only the events it does not find.
//!
//! **Why nothing is ever invalidated.** An event's row is never updated, only deleted
//! (retention, a tenant's deletion), and its deliveries go with it in the same
//! transaction (the foreign key cascades). A claim asks only for the events of the
//! deliveries it just read, so it never asks for a deleted event. An event kept from a
//! transaction that was rolled back is never asked for either: its deliveries were
//! rolled back with it, and a new event gets a new id. The budget bounds what such
//! entries cost: the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use herald_core::id::EventId;
use herald_core::model::Event;

/// Most payload bytes kept (plus a fixed allowance per event, [`PER_EVENT`]): a few
/// seconds of intake at the brief's rates.
const BUDGET: usize = 8 << 20;

/// What an event costs beyond its payload (its ids, type and the map's entry).
const PER_EVENT: usize = 256;

/// Recently stored or read events, oldest first out. Shared by the writer's jobs (only
/// the writer thread uses it; the lock is never contended).
#[derive(Default)]
pub(super) struct RecentEvents {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_id: HashMap<EventId, Arc<Event>>,
    oldest_first: VecDeque<Arc<Event>>,
    bytes: usize,
}

impl RecentEvents {
    /// The event with this id, if kept.
    pub(super) fn get(&self, id: &EventId) -> Option<Arc<Event>> {
        self.kept()?.by_id.get(id).cloned()
    }

    /// Keeps `event` (unless one with its id is kept already), letting the oldest go
    /// while over budget.
    pub(super) fn keep(&self, event: Arc<Event>) {
        let Some(mut kept) = self.kept() else {
            return;
        };
        if kept.by_id.contains_key(&event.id) {
            return;
        }
        kept.bytes += cost(&event);
        kept.by_id.insert(event.id.clone(), Arc::clone(&event));
        kept.oldest_first.push_back(event);
        while kept.bytes > BUDGET {
            let Some(oldest) = kept.oldest_first.pop_front() else {
                break;
            };
            kept.bytes = kept.bytes.saturating_sub(cost(&oldest));
            kept.by_id.remove(&oldest.id);
        }
    }

    /// The kept events; none if a panic poisoned the lock (reading rows instead is
    /// always correct).
    fn kept(&self) -> Option<MutexGuard<'_, Kept>> {
        self.inner.lock().ok()
    }
}

fn cost(event: &Event) -> usize {
    event.payload.len() + PER_EVENT
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_core::filter::EventType;
    use herald_core::id::TenantId;
    use herald_core::model::ContentType;
    use herald_core::time::Timestamp;

    use super::*;

    fn event(payload_bytes: usize) -> Arc<Event> {
        Arc::new(Event {
            id: EventId::generate(),
            tenant_id: TenantId::generate(),
            event_type: EventType::parse("order.created", "type").expect("event type"),
            payload: Bytes::from(vec![b'x'; payload_bytes]),
            content_type: ContentType::json(),
            idempotency_key: None,
            created_at: Timestamp::now(),
        })
    }

    #[test]
    fn kept_events_are_found_by_id_and_the_oldest_go_first_once_over_budget() {
        let recent = RecentEvents::default();
        // Four fill the budget exactly.
        let size = BUDGET / 4 - PER_EVENT;
        let events: Vec<_> = (0..5).map(|_| event(size)).collect();
        for event in &events {
            recent.keep(Arc::clone(event));
        }
        // The fifth is over budget: the first had to go, the last four stay.
        assert!(recent.get(&events[0].id).is_none());
        for event in &events[1..] {
            let found = recent.get(&event.id).expect("kept");
            assert!(Arc::ptr_eq(&found, event));
        }
    }

    #[test]
    fn keeping_an_event_twice_keeps_the_first_and_counts_it_once() {
        let recent = RecentEvents::default();
        let first = event(BUDGET / 2);
        recent.keep(Arc::clone(&first));
        let mut again = (*first).clone();
        again.payload = Bytes::from_static(b"{}");
        recent.keep(Arc::new(again));
        assert!(Arc::ptr_eq(&recent.get(&first.id).expect("kept"), &first));
        // Counted once: another half of the budget still fits beside it.
        let second = event(BUDGET / 2 - 2 * PER_EVENT);
        recent.keep(Arc::clone(&second));
        assert!(recent.get(&first.id).is_some());
        assert!(recent.get(&second.id).is_some());
    }
}
