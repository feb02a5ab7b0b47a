//! Max-min fair sharing of a capacity among demands ("water filling").
//!
//! Everyone gets an equal share; what the smaller demands leave over is shared again
//! among the larger ones, until the capacity or the demands run out. Applied twice —
//! across tenants, then across each tenant's targets — it gives a tenant with one
//! delivery waiting the same claim on the next free worker as a tenant with a million.

/// Shares `capacity` among `demands`, max-min fairly. When the capacity does not
/// divide evenly, the single leftover units go to demands in turn starting at
/// `start` (rotate it between calls so no one is always last).
pub fn fair_shares(capacity: u32, demands: &[u32], start: usize) -> Vec<u32> {
    let mut shares = vec![0_u32; demands.len()];
    let mut remaining = capacity;
    loop {
        let unmet: Vec<usize> = (0..demands.len())
            .map(|i| (i + start) % demands.len().max(1))
            .filter(|&i| shares[i] < demands[i])
            .collect();
        if unmet.is_empty() || remaining == 0 {
            return shares;
        }
        let each = remaining / u32::try_from(unmet.len()).unwrap_or(u32::MAX);
        if each == 0 {
            for &i in unmet.iter().take(remaining as usize) {
                shares[i] += 1;
            }
            return shares;
        }
        for &i in &unmet {
            let grant = each.min(demands[i] - shares[i]);
            shares[i] += grant;
            remaining -= grant;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_demands_are_met_in_full_and_the_rest_is_split() {
        assert_eq!(fair_shares(100, &[1_000_000, 1], 0), vec![99, 1]);
        assert_eq!(fair_shares(10, &[10, 10], 0), vec![5, 5]);
        assert_eq!(fair_shares(10, &[3, 100, 100], 0), vec![3, 4, 3]);
    }

    #[test]
    fn spare_capacity_is_not_handed_out_beyond_demand() {
        assert_eq!(fair_shares(100, &[3, 4], 0), vec![3, 4]);
        assert_eq!(fair_shares(5, &[], 0), Vec::<u32>::new());
        assert_eq!(fair_shares(0, &[3], 0), vec![0]);
    }

    #[test]
    fn leftover_units_rotate_with_the_start() {
        assert_eq!(fair_shares(1, &[5, 5, 5], 0), vec![1, 0, 0]);
        assert_eq!(fair_shares(1, &[5, 5, 5], 1), vec![0, 1, 0]);
        assert_eq!(fair_shares(2, &[5, 5, 5], 2), vec![1, 0, 1]);
    }

    #[test]
    fn shares_never_exceed_capacity_or_demand() {
        for capacity in 0..40 {
            let demands = [0, 7, 1, 30, 2];
            let shares = fair_shares(capacity, &demands, capacity as usize);
            assert!(shares.iter().sum::<u32>() <= capacity);
            assert!(shares.iter().zip(demands).all(|(s, d)| *s <= d));
            let total: u32 = demands.iter().sum();
            assert_eq!(shares.iter().sum::<u32>(), capacity.min(total));
        }
    }
}
