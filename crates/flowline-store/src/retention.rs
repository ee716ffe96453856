//! Workspace settings and the pruning of old runs.

use async_trait::async_trait;
use flowline_core::id::WorkspaceId;

use crate::StoreResult;
use crate::tenancy::{Actor, Workspace};

/// The retention part of the store.
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Renames a workspace or changes its retention (1 to 3,650 days).
    async fn update_workspace(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: Option<String>,
        retention_days: Option<i32>,
    ) -> StoreResult<Workspace>;

    /// Deletes up to `limit` finished runs (with their steps, attempts and variables) older
    /// than their workspace's retention, oldest first, across workspaces; returns how many.
    async fn prune_finished(&self, limit: u32) -> StoreResult<u64>;

    /// Deletes the run events older than a day among the `limit` oldest; returns how many.
    async fn prune_events(&self, limit: u32) -> StoreResult<u64>;
}
