//! Group commits of step ends on PostgreSQL.
//!
//! Workers hand their steps' ends to the finisher, whose lanes each take whatever has queued up
//! meanwhile and write it in one transaction per workspace (row-level security scopes a
//! transaction to one workspace), in a few statements (`sql_batch`). PostgreSQL commits
//! transactions side by side, so while one lane waits on its statements or its commit, another
//! gathers and writes the next batch. The reports of two lanes never touch the same step or run
//! (a run has one step in flight), and each batch locks its steps in id order, so lanes cannot
//! deadlock each other. A group that fails is rolled back and its reports written one by one, so
//! one bad report cannot fail the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use flowline_core::id::WorkspaceId;
use flowline_store::StoreResult;
use flowline_store::execution::{FinishOutcome, FinishStep};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{db_now, enter_workspace, enter_workspace_by_keys, held_steps};
use crate::sql_batch::{plan_finish, reported_ids};
use crate::sql_execution::{Writes, finish_step};
use crate::sql_store::db_error;

/// The most reports one batch takes.
const MAX_BATCH: usize = 256;

/// Batches written at once: one per core, 2 to 4 (measured on 2 cores: 2,850 steps/s with one
/// lane, 3,800 with two, 3,500 with four, 3,100 with six, the database's own processes sharing
/// the cores). Each holds a connection of the pool while it writes, so at most 4 of the pool's
/// (default 10) go to step ends.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4))
}

/// A step's end, and where its outcome goes.
pub(crate) type Report = (Arc<FinishStep>, oneshot::Sender<StoreResult<FinishOutcome>>);

/// Writes reports, [`lanes`] batches at a time, until every sender is gone.
pub(crate) fn spawn(pool: PgPool, reports: mpsc::Receiver<Report>) {
    let reports = Arc::new(tokio::sync::Mutex::new(reports));
    for _ in 0..lanes() {
        tokio::spawn(lane(pool.clone(), reports.clone()));
    }
}

/// Takes a batch (waiting for its first report), writes it, and again.
async fn lane(pool: PgPool, reports: Arc<tokio::sync::Mutex<mpsc::Receiver<Report>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut reports = reports.lock().await;
            let Some(first) = reports.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match reports.try_recv() {
                    Ok(report) => batch.push(report),
                    Err(_) => break,
                }
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
    enter_workspace_by_keys(&mut tx, workspace).await?;
    let reports: Vec<&FinishStep> = group.iter().map(|(report, _)| &**report).collect();
    let held = held_steps(&mut tx, &reported_ids(&reports)).await?;
    let at = db_now(&mut tx).await?;
    let mut writes = Writes::default();
    let outcomes = plan_finish(held, &reports, at, &mut writes)?;
    writes.run(&mut tx).await?;
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
