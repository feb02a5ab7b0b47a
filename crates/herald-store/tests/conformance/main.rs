//! The storage conformance suite: every case runs against every backend.
//!
//! Cases are written against [`herald_core::store::Store`] only (see `cases.rs`); the
//! backends they run on are opened in `backends.rs`. A bug found in one backend
//! becomes a case here, so all backends stay equal.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed case

mod backends;
mod cases;
mod fixtures;
mod housekeeping_cases;
mod queue_cases;

/// Runs a case from whichever module defines it.
#[macro_export]
macro_rules! run {
    ($case:ident, $backend:expr) => {{
        #[allow(unused_imports)]
        use $crate::cases::*;
        #[allow(unused_imports)]
        use $crate::housekeeping_cases::*;
        #[allow(unused_imports)]
        use $crate::queue_cases::*;
        $case($backend).await;
    }};
}

/// Instantiates each case once per backend, as `<backend>::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::run!($case, crate::backends::sqlite().await);
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::run!($case, crate::backends::postgres().await);
                }
            )*
        }
    };
}

conformance!(
    tenants_round_trip,
    tenants_page_in_id_order,
    api_keys_authenticate_until_revoked,
    targets_round_trip_every_field,
    targets_are_invisible_to_other_tenants,
    targets_page_per_tenant,
    filters_round_trip,
    subscriptions_need_same_tenant_references,
    subscriptions_are_unique_per_target_and_filter,
    deleting_a_target_or_filter_deletes_its_subscriptions,
    deleting_a_tenant_deletes_everything_it_owns,
    data_survives_reopening,
    concurrent_writes_all_commit,
    a_failing_write_does_not_undo_its_neighbours,
    events_and_deliveries_round_trip,
    idempotency_keys_deduplicate_per_tenant,
    routes_are_active_subscriptions_of_active_targets,
    claims_take_due_deliveries_once,
    an_expired_lease_is_taken_over_and_fences_the_old_claim,
    deliveries_started_at_intake_are_in_flight_under_a_lease,
    outcomes_update_the_delivery_and_log_attempts,
    deliveries_list_by_status_target_and_type,
    requeue_and_redrive,
    a_redrive_takes_at_most_what_it_is_allowed_per_write,
    releasing_leases_makes_in_flight_work_due,
    claims_take_what_each_lane_of_each_target_is_asked,
    disabled_targets_keep_their_deliveries_waiting,
    deleting_a_target_deletes_what_it_is_owed_and_keeps_what_it_received,
    circuits_are_saved_per_target,
    queue_stats_count_due_and_waiting_work_and_open_circuits,
    claims_share_each_targets_in_flight_cap_and_rate,
    leases_are_extended_only_under_their_token,
    instances_register_and_the_stale_are_forgotten,
    leadership_is_held_by_one_instance_until_its_term_ends,
    retention_purges_old_finished_events_only,
    parked_records_are_kept_once_and_listed_in_order,
);
