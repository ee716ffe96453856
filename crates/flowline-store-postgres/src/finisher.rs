//! Group commits of step ends on PostgreSQL.
//!
//! Workers hand their steps' ends to one finisher task per process, which writes whatever has
//! queued up meanwhile in one transaction per workspace (row-level security scopes a transaction
//! to one workspace), in a few statements (`sql_batch`). A group that fails is rolled back and its
//! reports written one by one, so one bad report cannot fail the others.

use std::collections::BTreeMap;

use flowline_core::id::WorkspaceId;
use flowline_store::StoreResult;
use flowline_store::execution::{FinishOutcome, FinishStep};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::backend::enter_workspace;
use crate::sql_batch::finish_steps;
use crate::sql_execution::finish_step;
use crate::sql_store::db_error;

/// The most reports one batch takes.
const MAX_BATCH: usize = 256;

/// A step's end, and where its outcome goes.
pub(crate) type Report = (FinishStep, oneshot::Sender<StoreResult<FinishOutcome>>);

/// Writes reports until every sender is gone.
pub(crate) async fn run(pool: PgPool, mut reports: mpsc::Receiver<Report>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = reports.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match reports.try_recv() {
                Ok(report) => batch.push(report),
                Err(_) => break,
            }
        }
        let mut groups: BTreeMap<WorkspaceId, Vec<Report>> = BTreeMap::new();
        for report in batch.drain(..) {
            groups
                .entry(report.0.workspace_id)
                .or_default()
                .push(report);
        }
        for (workspace, group) in groups {
            match together(&pool, workspace, &group).await {
                Ok(outcomes) => {
                    for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, reports = group.len(), "a group commit failed; writing its reports one by one");
                    for (report, reply) in group {
                        let _ = reply.send(alone(&pool, &report).await);
                    }
                }
            }
        }
    }
}

async fn together(
    pool: &PgPool,
    workspace: WorkspaceId,
    group: &[Report],
) -> StoreResult<Vec<FinishOutcome>> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    enter_workspace(&mut tx, workspace).await?;
    let reports: Vec<&FinishStep> = group.iter().map(|(report, _)| report).collect();
    let outcomes = finish_steps(&mut tx, &reports).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(outcomes)
}

async fn alone(pool: &PgPool, report: &FinishStep) -> StoreResult<FinishOutcome> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    enter_workspace(&mut tx, report.workspace_id).await?;
    let outcome = finish_step(&mut tx, report).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(outcome)
}
