//! The storage conformance suite: every case runs against every backend.
//!
//! Cases are written against [`herald_core::store::Store`] only (see `cases.rs`); the
//! backends they run on are opened in `backends.rs`. A bug found in one backend
//! becomes a case here, so all backends stay equal.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed case

mod backends;
mod cases;
mod fixtures;

/// Instantiates each case once per backend, as `<backend>::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::cases::$case(crate::backends::sqlite()).await;
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
);
