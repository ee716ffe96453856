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

/// A position in a workspace's event stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventCursor {
    /// The writing transaction (0 on SQLite).
    pub xact: i64,
    /// The event's sequence number.
    pub seq: i64,
}

impl EventCursor {
    /// `<xact>-<seq>`, as events carry it.
    pub fn parse(text: &str) -> Option<Self> {
        let (xact, seq) = text.trim().split_once('-')?;
        Some(Self {
            xact: xact.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.xact, self.seq)
    }
}

/// A status change of a run or one of its steps.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEvent {
    /// Its position in the workspace's stream (`<transaction>-<sequence>`): resume after it
    /// with `Last-Event-ID`.
    pub id: String,
    /// `execution.status` or `step.status`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The flow.
    pub flow_id: FlowId,
    /// The run.
    pub execution_id: flowline_core::id::ExecutionId,
    /// The step, for step events.
    pub step_id: Option<flowline_core::id::StepId>,
    /// The step's action type.
    pub action_type: Option<String>,
    /// The step's attempt.
    pub attempt: Option<i32>,
    /// The new status.
    pub status: String,
    /// When.
    pub at: DateTime<Utc>,
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

    /// The workspace's run events after `after`, in order, optionally of one flow or run; only
    /// events whose transactions (and every earlier one) have committed, so none is skipped.
    async fn events_after(
        &self,
        workspace: WorkspaceId,
        after: EventCursor,
        flow: Option<FlowId>,
        execution: Option<flowline_core::id::ExecutionId>,
        limit: u32,
    ) -> StoreResult<Vec<RunEvent>>;

    /// The position after the workspace's newest settled event (where "from now on" starts).
    async fn latest_event(&self, workspace: WorkspaceId) -> StoreResult<EventCursor>;
}
