//! Statistics SQL both backends share; the duration and JSON expressions are each backend's.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::action::ActionType;
use flowline_core::id::{FlowId, WorkspaceId};
use flowline_store::StoreResult;
use flowline_store::stats::{
    ActionStats, ErrorStats, EventCursor, FlowStats, Percentiles, QueueDepth, RunEvent, Stats,
    StatsStore, rate,
};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::backend::{
    ATTEMPT_MS, EVENTS_SETTLED, StoreImpl, db_now, enter_engine_scope, json_text,
};
use crate::sql_execution::all_attempts;
use crate::sql_store::{Access, Tx, commit, corrupt, db_error, now};

/// The steps in scope: the workspace's, created since `$2`, of flow `$3` when given.
const STEPS: &str = "FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
     WHERE s.workspace_id = $1 AND s.created_at >= $2 AND ($3 IS NULL OR e.flow_id = $3)";

/// Finished attempts in scope.
fn attempts() -> String {
    format!(
        "FROM {} a JOIN action_executions s ON s.id = a.action_execution_id \
         JOIN flow_executions e ON e.id = s.flow_execution_id \
         WHERE a.workspace_id = $1 AND a.started_at >= $2 AND ($3 IS NULL OR e.flow_id = $3) \
         AND a.finished_at IS NOT NULL",
        all_attempts()
    )
}

/// Nearest-rank percentiles of one action type's attempt durations.
async fn percentiles(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    from: DateTime<Utc>,
    flow: Option<FlowId>,
    action_type: &str,
) -> StoreResult<Percentiles> {
    let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) {} AND s.action_type = $4",
        attempts()
    )))
    .bind(workspace.0)
    .bind(from)
    .bind(flow.map(|f| f.0))
    .bind(action_type)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    let at = |p: f64| -> Option<i64> {
        (count > 0).then(|| ((p / 100.0 * count as f64).ceil() as i64 - 1).clamp(0, count - 1))
    };
    let ranks = [at(50.0), at(95.0), at(99.0)];
    let mut values = [None, None, None];
    for (slot, rank) in values.iter_mut().zip(ranks) {
        let Some(rank) = rank else { continue };
        let value: f64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_MS} AS d {} AND s.action_type = $4 ORDER BY d LIMIT 1 OFFSET $5",
            attempts()
        )))
        .bind(workspace.0)
        .bind(from)
        .bind(flow.map(|f| f.0))
        .bind(action_type)
        .bind(rank)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        // Microseconds are all either backend keeps.
        *slot = Some((value * 1000.0).round() / 1000.0);
    }
    Ok(Percentiles {
        p50: values[0],
        p95: values[1],
        p99: values[2],
    })
}

type ActionRow = (String, i64, i64, i64, i64, i64, i64);

#[async_trait]
impl StatsStore for StoreImpl {
    async fn events_after(
        &self,
        workspace: WorkspaceId,
        after: EventCursor,
        flow: Option<FlowId>,
        execution: Option<flowline_core::id::ExecutionId>,
        limit: u32,
    ) -> StoreResult<Vec<RunEvent>> {
        type Row = (
            i64,
            i64,
            String,
            Uuid,
            Uuid,
            Option<Uuid>,
            Option<String>,
            Option<i32>,
            String,
            DateTime<Utc>,
        );
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT xact, id, kind, flow_id, execution_id, step_id, action_type, attempt, status, created_at \
             FROM events WHERE workspace_id = $1 AND (xact > $2 OR (xact = $2 AND id > $3)) \
             AND ($4 IS NULL OR flow_id = $4) AND ($5 IS NULL OR execution_id = $5) {EVENTS_SETTLED} \
             ORDER BY xact, id LIMIT $6"
        )))
        .bind(workspace.0)
        .bind(after.xact)
        .bind(after.seq)
        .bind(flow.map(|f| f.0))
        .bind(execution.map(|e| e.0))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(rows
            .into_iter()
            .map(
                |(xact, seq, kind, flow, execution, step, action_type, attempt, status, at)| {
                    RunEvent {
                        id: EventCursor { xact, seq }.to_string(),
                        kind: format!("{kind}.status"),
                        flow_id: flow.into(),
                        execution_id: execution.into(),
                        step_id: step.map(Into::into),
                        action_type,
                        attempt,
                        status,
                        at,
                    }
                },
            )
            .collect())
    }

    async fn latest_event(&self, workspace: WorkspaceId) -> StoreResult<EventCursor> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let row: Option<(i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT xact, id FROM events WHERE workspace_id = $1 {EVENTS_SETTLED} \
             ORDER BY xact DESC, id DESC LIMIT 1"
        )))
        .bind(workspace.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(
            row.map_or_else(EventCursor::default, |(xact, seq)| EventCursor {
                xact,
                seq,
            }),
        )
    }

    async fn queue_depths(&self) -> StoreResult<Vec<QueueDepth>> {
        let mut tx = self.begin(Access::Read).await?;
        enter_engine_scope(&mut tx).await?;
        let at = db_now(&mut tx).await?;
        let rows: Vec<(String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT queue, count(*), min(CASE WHEN run_at <= $1 THEN run_at END) \
             FROM action_executions WHERE status = 'pending' GROUP BY queue",
        )
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        rows.into_iter()
            .map(|(queue, pending, oldest_due)| {
                Ok(QueueDepth {
                    queue: queue.parse().map_err(|e| corrupt("queue", e))?,
                    pending,
                    oldest_due,
                })
            })
            .collect()
    }

    async fn stats(
        &self,
        workspace: WorkspaceId,
        from: DateTime<Utc>,
        flow: Option<FlowId>,
    ) -> StoreResult<Stats> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let to = now();
        let rows: Vec<ActionRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT s.action_type, \
             CAST(sum(CASE WHEN s.started_at IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN s.status = 'completed' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN s.status = 'failed' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN s.status = 'timeout' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN s.status = 'cancelled' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN s.attempt > 1 THEN s.attempt - 1 ELSE 0 END) AS BIGINT) \
             {STEPS} GROUP BY s.action_type ORDER BY s.action_type"
        )))
        .bind(workspace.0)
        .bind(from)
        .bind(flow.map(|f| f.0))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut actions = Vec::with_capacity(rows.len());
        for (kind, started, completed, failed, timeout, cancelled, retries) in rows {
            let duration_ms = percentiles(&mut tx, workspace, from, flow, &kind).await?;
            actions.push(ActionStats {
                action_type: kind
                    .parse::<ActionType>()
                    .map_err(|e| corrupt("action type", e))?,
                started,
                completed,
                failed,
                timeout,
                cancelled,
                success_rate: rate(completed, completed + failed + timeout),
                duration_ms,
                retries,
            });
        }

        let category = json_text("a.error", "category");
        let severity = json_text("a.error", "severity");
        let errors: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {category}, {severity}, count(*) {} AND a.error IS NOT NULL \
             GROUP BY {category}, {severity} ORDER BY count(*) DESC, 1, 2",
            attempts()
        )))
        .bind(workspace.0)
        .bind(from)
        .bind(flow.map(|f| f.0))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let errors = errors
            .into_iter()
            .map(|(category, severity, count)| {
                Ok(ErrorStats {
                    category: category.parse().map_err(|e| corrupt("error category", e))?,
                    severity: severity.parse().map_err(|e| corrupt("severity", e))?,
                    count,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;

        let flows: Vec<(Uuid, String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT e.flow_id, f.name, count(*), \
             CAST(sum(CASE WHEN e.status = 'completed' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN e.status = 'failed' THEN 1 ELSE 0 END) AS BIGINT), \
             CAST(sum(CASE WHEN e.status = 'cancelled' THEN 1 ELSE 0 END) AS BIGINT) \
             FROM flow_executions e JOIN flows f ON f.id = e.flow_id \
             WHERE e.workspace_id = $1 AND e.created_at >= $2 AND ($3 IS NULL OR e.flow_id = $3) \
             GROUP BY e.flow_id, f.name ORDER BY count(*) DESC, f.name",
        )
        .bind(workspace.0)
        .bind(from)
        .bind(flow.map(|f| f.0))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(Stats {
            from,
            to,
            actions,
            errors,
            flows: flows
                .into_iter()
                .map(
                    |(id, name, executions, completed, failed, cancelled)| FlowStats {
                        flow_id: id.into(),
                        name,
                        executions,
                        completed,
                        failed,
                        cancelled,
                        success_rate: rate(completed, completed + failed),
                    },
                )
                .collect(),
        })
    }
}
