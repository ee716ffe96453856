//! Execution statistics, computed from the stored runs, steps and attempts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::action::ActionType;
use flowline_core::id::{FlowId, WorkspaceId};
use flowline_core::status::{ErrorCategory, Severity};
use serde::Serialize;

use crate::StoreResult;

/// Percentiles of a duration, in milliseconds (`null` with no samples).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// One action type's steps created in the window.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStats {
    /// The type.
    pub action_type: ActionType,
    /// Steps whose first attempt started.
    pub started: i64,
    /// Steps that completed.
    pub completed: i64,
    /// Steps that failed.
    pub failed: i64,
    /// Steps that timed out.
    pub timeout: i64,
    /// Steps cancelled.
    pub cancelled: i64,
    /// completed / (completed + failed + timeout); `null` when none of those.
    pub success_rate: Option<f64>,
    /// Attempt durations (start to end of each finished attempt), nearest-rank percentiles.
    pub duration_ms: Percentiles,
    /// Attempts beyond each step's first.
    pub retries: i64,
}

/// Failed attempts of one category and severity.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorStats {
    /// The category.
    pub category: ErrorCategory,
    /// The severity.
    pub severity: Severity,
    /// Attempts that failed so.
    pub count: i64,
}

/// One flow's runs created in the window.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowStats {
    /// The flow.
    pub flow_id: FlowId,
    /// Its name.
    pub name: String,
    /// Runs.
    pub executions: i64,
    /// Runs completed.
    pub completed: i64,
    /// Runs failed.
    pub failed: i64,
    /// Runs cancelled.
    pub cancelled: i64,
    /// completed / (completed + failed); `null` when none finished so.
    pub success_rate: Option<f64>,
}

/// Statistics of a workspace (or one flow) since a moment.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The window's start.
    pub from: DateTime<Utc>,
    /// The window's end (now).
    pub to: DateTime<Utc>,
    /// By action type.
    pub actions: Vec<ActionStats>,
    /// Failed attempts by category and severity.
    pub errors: Vec<ErrorStats>,
    /// By flow.
    pub flows: Vec<FlowStats>,
}

/// A share, or `None` of nothing.
pub fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// One queue's backlog.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueDepth {
    /// The queue.
    pub queue: flowline_core::status::Queue,
    /// Steps waiting (due or not).
    pub pending: i64,
    /// The oldest due step's `run_at`.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// The statistics part of the store.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Statistics of the steps, attempts and runs created since `from`, optionally of one flow.
    async fn stats(
        &self,
        workspace: WorkspaceId,
        from: DateTime<Utc>,
        flow: Option<FlowId>,
    ) -> StoreResult<Stats>;

    /// Every queue's backlog, across workspaces.
    async fn queue_depths(&self) -> StoreResult<Vec<QueueDepth>>;
}
