//! One scheduling pass's plan: how many deliveries to claim from which target's
//! which lane, shared fairly when capacity is short.
//!
//! Free workers are split max-min fairly across tenants, then each tenant's share
//! across its targets (see [`herald_core::flow::fair`]); within a target, when both
//! lanes have work, first attempts and retries split its share. Retries may hold at
//! most `retry_capacity` workers, so fresh deliveries always find some free.

use std::collections::BTreeMap;

use herald_core::flow::fair_shares;
use herald_core::id::{TargetId, TenantId};
use herald_core::store::{ClaimRequest, SharedLimits};

/// What one target could take now.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The target.
    pub target_id: TargetId,
    /// Most deliveries it may be sent now.
    pub count: u32,
    /// Its first-attempt lane has work due.
    pub first_due: bool,
    /// Its retry lane has work due.
    pub retry_due: bool,
    /// Retries go first if only one delivery may go and both lanes wait.
    pub retry_turn: bool,
    /// Its limits across every instance, passed on to the store.
    pub limits: SharedLimits,
}

/// The claims of one pass: at most `capacity` deliveries, at most `retry_capacity` of
/// them retries. `rotation` changes who gets leftover units; vary it per pass.
pub fn plan(
    demands: &[Demand],
    capacity: u32,
    retry_capacity: u32,
    rotation: usize,
) -> Vec<ClaimRequest> {
    // A target with only retries due cannot use more than the retry capacity; capping
    // its demand first lets the fair share hand the rest to others.
    let capped: Vec<Demand> = demands
        .iter()
        .map(|d| Demand {
            count: if d.first_due {
                d.count
            } else {
                d.count.min(retry_capacity)
            },
            ..d.clone()
        })
        .collect();
    let mut by_tenant: BTreeMap<&TenantId, Vec<&Demand>> = BTreeMap::new();
    for demand in capped.iter().filter(|d| d.count > 0) {
        by_tenant.entry(&demand.tenant_id).or_default().push(demand);
    }
    let tenant_demands: Vec<u32> = by_tenant
        .values()
        .map(|targets| targets.iter().map(|d| d.count).fold(0, u32::saturating_add))
        .collect();
    let tenant_shares = fair_shares(capacity, &tenant_demands, rotation);
    // Retry capacity is handed out as tenants are walked, so the walk starts at a
    // different tenant every pass: in id order, the oldest tenant would take it first
    // every time.
    let mut walk: Vec<(&Vec<&Demand>, u32)> = by_tenant.values().zip(tenant_shares).collect();
    if !walk.is_empty() {
        let start = rotation % walk.len();
        walk.rotate_left(start);
    }
    let mut retries_left = retry_capacity;
    let mut requests = Vec::new();
    for (targets, share) in walk {
        let counts: Vec<u32> = targets.iter().map(|d| d.count).collect();
        for (demand, share) in targets.iter().zip(fair_shares(share, &counts, rotation)) {
            if share == 0 {
                continue;
            }
            let (first_attempts, retries) = split_lanes(demand, share, retries_left);
            retries_left -= retries;
            if first_attempts + retries > 0 {
                requests.push(ClaimRequest {
                    target_id: demand.target_id.clone(),
                    first_attempts,
                    retries,
                    limits: demand.limits,
                });
            }
        }
    }
    requests
}

/// Splits a target's share between its lanes; retries never exceed `retries_left`.
fn split_lanes(demand: &Demand, share: u32, retries_left: u32) -> (u32, u32) {
    let wanted_retries = match (demand.first_due, demand.retry_due) {
        (_, false) => 0,
        (false, true) => share,
        (true, true) if share == 1 => u32::from(demand.retry_turn),
        (true, true) => share / 2,
    };
    let retries = wanted_retries.min(retries_left);
    // What retries cannot use goes to first attempts.
    let first_attempts = if demand.first_due { share - retries } else { 0 };
    (first_attempts, retries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(tenant: &TenantId, count: u32, first_due: bool, retry_due: bool) -> Demand {
        Demand {
            tenant_id: tenant.clone(),
            target_id: TargetId::generate(),
            count,
            first_due,
            retry_due,
            retry_turn: false,
            limits: SharedLimits::in_flight(count),
        }
    }

    fn total(requests: &[ClaimRequest], target: &TargetId) -> u32 {
        requests
            .iter()
            .filter(|r| r.target_id == *target)
            .map(|r| r.first_attempts + r.retries)
            .sum()
    }

    #[test]
    fn a_flooding_tenant_cannot_crowd_out_a_quiet_one() {
        let (loud, quiet) = (TenantId::generate(), TenantId::generate());
        let demands = vec![
            demand(&loud, 256, true, false),
            demand(&loud, 256, true, false),
            demand(&quiet, 1, true, false),
        ];
        let requests = plan(&demands, 10, 10, 0);
        assert_eq!(total(&requests, &demands[2].target_id), 1);
        assert_eq!(
            total(&requests, &demands[0].target_id) + total(&requests, &demands[1].target_id),
            9
        );
    }

    #[test]
    fn tenants_share_before_targets_do() {
        let (many, one) = (TenantId::generate(), TenantId::generate());
        let mut demands: Vec<Demand> = (0..9).map(|_| demand(&many, 100, true, false)).collect();
        demands.push(demand(&one, 100, true, false));
        let requests = plan(&demands, 20, 20, 0);
        assert_eq!(
            total(&requests, &demands[9].target_id),
            10,
            "half to the tenant with one target"
        );
    }

    #[test]
    fn both_lanes_share_a_target_and_retries_stay_within_their_capacity() {
        let tenant = TenantId::generate();
        let both = demand(&tenant, 10, true, true);
        let requests = plan(std::slice::from_ref(&both), 10, 10, 0);
        assert_eq!((requests[0].first_attempts, requests[0].retries), (5, 5));
        let requests = plan(std::slice::from_ref(&both), 10, 2, 0);
        assert_eq!(
            (requests[0].first_attempts, requests[0].retries),
            (8, 2),
            "what retries may not use goes to first attempts"
        );
        let only_retries = demand(&tenant, 10, false, true);
        let requests = plan(&[only_retries], 10, 0, 0);
        assert!(
            requests.is_empty(),
            "no retry capacity left: nothing to claim"
        );
    }

    #[test]
    fn capped_retries_leave_their_share_to_other_tenants() {
        let (retrying, fresh) = (TenantId::generate(), TenantId::generate());
        let demands = vec![
            demand(&retrying, 100, false, true),
            demand(&fresh, 100, true, false),
        ];
        let requests = plan(&demands, 10, 2, 0);
        assert_eq!(total(&requests, &demands[0].target_id), 2);
        assert_eq!(total(&requests, &demands[1].target_id), 8);
    }

    #[test]
    fn scarce_retry_capacity_goes_round_the_tenants() {
        let (older, newer) = (TenantId::generate(), TenantId::generate());
        let demands = vec![
            demand(&older, 10, false, true),
            demand(&newer, 10, false, true),
        ];
        let retried = |rotation| {
            let requests = plan(&demands, 10, 1, rotation);
            [
                total(&requests, &demands[0].target_id),
                total(&requests, &demands[1].target_id),
            ]
        };
        let passes = [retried(0), retried(1)];
        assert!(passes.iter().all(|pass| pass.iter().sum::<u32>() == 1));
        assert_eq!(
            passes[0][0] + passes[1][0],
            1,
            "each tenant gets the one retry slot in one of two passes: {passes:?}"
        );
    }

    #[test]
    fn a_single_slot_alternates_between_lanes() {
        let tenant = TenantId::generate();
        let mut one = demand(&tenant, 1, true, true);
        assert_eq!(
            plan(std::slice::from_ref(&one), 1, 1, 0)[0].first_attempts,
            1
        );
        one.retry_turn = true;
        assert_eq!(plan(std::slice::from_ref(&one), 1, 1, 0)[0].retries, 1);
    }
}
