//! Workspace settings and pruning, shared by both backends; the age test is each backend's.

use async_trait::async_trait;
use flowline_core::id::WorkspaceId;
use flowline_core::validation::ValidationErrors;
use flowline_store::retention::RetentionStore;
use flowline_store::tenancy::{Actor, Workspace};
use flowline_store::{StoreError, StoreResult};
use sqlx::AssertSqlSafe;

use crate::backend::{EVENTS_EXPIRED, RETENTION_EXPIRED, StoreImpl, enter_engine_scope};
use crate::sql_store::{Access, audit, commit, db_error, entry, snapshot};

#[async_trait]
impl RetentionStore for StoreImpl {
    async fn update_workspace(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: Option<String>,
        retention_days: Option<i32>,
    ) -> StoreResult<Workspace> {
        if retention_days.is_some_and(|d| !(1..=3650).contains(&d)) {
            return Err(StoreError::Invalid(ValidationErrors::single(
                "retentionDays",
                "1 to 3,650 days",
            )));
        }
        let before = flowline_store::Store::get_workspace(self, workspace).await?;
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let after = Workspace {
            name: name.unwrap_or_else(|| before.name.clone()),
            retention_days: retention_days.unwrap_or(before.retention_days),
            ..before.clone()
        };
        sqlx::query("UPDATE workspaces SET name = $1, retention_days = $2 WHERE id = $3")
            .bind(&after.name)
            .bind(after.retention_days)
            .bind(workspace.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "workspace.update",
                "workspace",
                workspace,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn prune_events(&self, limit: u32) -> StoreResult<u64> {
        let mut tx = self.begin(Access::Write).await?;
        enter_engine_scope(&mut tx).await?;
        // The expired among the `limit` oldest: events are written in id order, so this walks
        // the primary key from its start and stops at the first young events, with no index on
        // age to keep up for every event written.
        let pruned = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM events WHERE id IN (SELECT id FROM \
             (SELECT id, created_at FROM events ORDER BY id LIMIT $1) oldest WHERE {EVENTS_EXPIRED})"
        )))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        commit(tx).await?;
        Ok(pruned)
    }

    async fn prune_finished(&self, limit: u32) -> StoreResult<u64> {
        let mut tx = self.begin(Access::Write).await?;
        enter_engine_scope(&mut tx).await?;
        let pruned = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM flow_executions WHERE id IN (SELECT e.id FROM flow_executions e \
             JOIN workspaces w ON w.id = e.workspace_id \
             WHERE e.finished_at IS NOT NULL AND {RETENTION_EXPIRED} ORDER BY e.finished_at LIMIT $1)"
        )))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        commit(tx).await?;
        Ok(pruned)
    }
}
