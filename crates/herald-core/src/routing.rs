//! Fan-out: which targets receive an event.

use crate::filter::EventType;
use crate::id::{SubscriptionId, TargetId};
use crate::model::FilterPatterns;

/// An active subscription of an active target, with its filter's patterns: one way an
/// event can reach a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Its target.
    pub target_id: TargetId,
    /// Its filter's patterns.
    pub patterns: FilterPatterns,
}

/// The `(target, subscription)` pairs an event of `event_type` is delivered to: every
/// route whose patterns match, each target once (a target reached by several
/// subscriptions gets the event once, credited to the first subscription in id order).
pub fn fan_out(event_type: &EventType, routes: &[Route]) -> Vec<(TargetId, SubscriptionId)> {
    let mut matched: Vec<&Route> = routes
        .iter()
        .filter(|route| route.patterns.matches(event_type))
        .collect();
    matched.sort_by(|a, b| {
        (&a.target_id, &a.subscription_id).cmp(&(&b.target_id, &b.subscription_id))
    });
    matched.dedup_by(|later, earlier| later.target_id == earlier.target_id);
    matched
        .into_iter()
        .map(|route| (route.target_id.clone(), route.subscription_id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(target: &TargetId, patterns: &[&str]) -> Route {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        Route {
            subscription_id: SubscriptionId::generate(),
            target_id: target.clone(),
            patterns: FilterPatterns::parse(&patterns, "events").expect("valid"),
        }
    }

    #[test]
    fn matching_routes_reach_each_target_once() {
        let (a, b, c) = (
            TargetId::generate(),
            TargetId::generate(),
            TargetId::generate(),
        );
        let first_for_a = route(&a, &["core.*"]);
        let routes = vec![
            first_for_a.clone(),
            route(&a, &["core.orders.created"]),
            route(&b, &["*"]),
            route(&c, &["billing.*"]),
        ];
        let event = EventType::parse("core.orders.created", "type").expect("valid");
        let delivered = fan_out(&event, &routes);
        let targets: Vec<&TargetId> = delivered.iter().map(|(t, _)| t).collect();
        assert_eq!(targets.len(), 2);
        assert!(targets.contains(&&a) && targets.contains(&&b));
        let for_a = delivered
            .iter()
            .find(|(t, _)| t == &a)
            .map(|(_, s)| s.clone());
        assert_eq!(
            for_a,
            Some(first_for_a.subscription_id),
            "credited to the earliest subscription"
        );
    }

    #[test]
    fn nothing_matches_nothing() {
        let routes = vec![route(&TargetId::generate(), &["billing.*"])];
        let event = EventType::parse("core.orders.created", "type").expect("valid");
        assert!(fan_out(&event, &routes).is_empty());
    }
}
