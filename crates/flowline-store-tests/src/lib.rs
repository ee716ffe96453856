//! The conformance suite every Flowline storage backend must pass.
//!
//! Each case is an async function over a fresh, migrated, empty [`Store`]. A backend runs the
//! whole suite with [`conformance_suite!`], giving it a function that makes such a store; the
//! same cases run on SQLite and on PostgreSQL, so behaviour cannot drift between them.

mod cases;
mod fixtures;
mod queue;

pub use cases::*;
pub use fixtures::{new_workspace, simple_graph, workspace_with_flow};
pub use queue::*;

/// A fresh store and whatever keeps its database alive (a temp dir, a scratch database).
pub struct Fresh {
    /// The store under test.
    pub store: std::sync::Arc<dyn flowline_store::Store>,
    /// Dropped after the case: removes the database.
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per conformance case, each on a store from `$fresh`
/// (an `async fn() -> Fresh`).
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::conformance_suite!(@cases $fresh;
            bootstrap_creates_the_first_workspace_once,
            created_workspace_owner_token_authenticates,
            revoked_and_unknown_tokens_do_not_authenticate,
            workspaces_never_see_each_others_rows,
            the_last_owner_cannot_be_demoted_or_removed,
            deleting_a_member_removes_its_tokens,
            flows_are_created_listed_filtered_and_paged,
            flow_updates_are_partial_and_audited,
            a_graph_that_drops_a_node_with_actions_is_a_conflict,
            deleting_a_flow_removes_its_actions,
            actions_need_a_node_of_their_flows_graph,
            actions_keep_dense_positions_through_insert_move_and_delete,
            an_action_is_reached_only_through_its_own_flow,
            action_execution_history_is_scoped_to_its_action,
            every_change_is_audited_newest_first_with_filters,
            a_claimed_step_is_leased_once_and_only_its_token_finishes_it,
            completion_writes_variables_and_the_next_step_together,
            an_expired_lease_is_rescued_and_its_old_holder_is_refused,
            a_lost_step_with_no_attempts_left_fails_its_run,
            claims_are_fair_across_workspaces,
            a_lone_workspace_fills_the_batch,
            a_next_step_is_handed_on_claimed_within_its_queue,
            step_ends_reported_at_once_each_take_effect,
            runs_start_in_bulk_all_or_none,
            heartbeats_report_lost_leases_and_cancelled_runs,
            a_heartbeat_over_many_steps_renews_the_held_and_reports_the_taken,
            a_retry_later_waits_for_its_time,
            a_lost_step_of_a_cancelled_run_is_not_requeued,
        );
    };
    (@cases $fresh:path; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fresh: $crate::Fresh = $fresh().await;
                $crate::$case(&*fresh.store).await;
                drop(fresh);
            }
        )+
    };
}
