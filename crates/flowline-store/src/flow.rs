//! Flows, their actions and their step executions.

use chrono::{DateTime, Utc};
use flowline_core::action::ActionType;
use flowline_core::crm::EventTrigger;
use flowline_core::graph::FlowGraph;
use flowline_core::id::{ActionId, ExecutionId, FlowId, StepId, WorkspaceId};
use flowline_core::retry::RetryPolicy;
use flowline_core::schedule::Schedule;
use flowline_core::status::{ErrorCategory, FlowStatus, StepStatus};
use serde::Serialize;

/// A flow: its editable draft graph and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    /// Its id.
    pub id: FlowId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Draft, active or archived.
    pub status: FlowStatus,
    /// The last published version (0: never published).
    pub version: i32,
    /// The editable graph.
    pub graph: FlowGraph,
    /// When it runs by itself.
    pub schedule: Option<Schedule>,
    /// The next slot of its schedule.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The contact events that start it.
    pub triggers: Vec<EventTrigger>,
    /// Whether it has an inbound webhook token (`POST /hooks/{flowId}`).
    pub webhook: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A schedule with its next slot, computed by the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedSchedule {
    /// The schedule.
    pub schedule: Schedule,
    /// Its next slot (`None`: it never fires again).
    pub next_fire_at: Option<DateTime<Utc>>,
}

/// Which flows to list.
#[derive(Clone, Debug, Default)]
pub struct FlowFilter {
    /// Only flows in this status.
    pub status: Option<FlowStatus>,
}

/// A new flow.
#[derive(Clone, Debug)]
pub struct NewFlow {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: Option<String>,
    /// Its graph, already validated.
    pub graph: FlowGraph,
    /// Its schedule, already parsed.
    pub schedule: Option<PlannedSchedule>,
    /// The contact events that start it.
    pub triggers: Vec<EventTrigger>,
}

/// Changes to a flow; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct FlowUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// New graph, already validated.
    pub graph: Option<FlowGraph>,
    /// New status: `draft` or `archived` (publishing is its own operation).
    pub status: Option<FlowStatus>,
    /// New schedule (`Some(None)` removes it).
    pub schedule: Option<Option<PlannedSchedule>>,
    /// New event triggers.
    pub triggers: Option<Vec<EventTrigger>>,
}

/// An action of a flow: one typed, validated step a node runs.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowAction {
    /// Its id.
    pub id: ActionId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The flow.
    pub flow_id: FlowId,
    /// The node of the flow's graph it belongs to.
    pub node_id: String,
    /// What it does.
    pub action_type: ActionType,
    /// Its config, valid for its type.
    pub action_config: serde_json::Value,
    /// A name for people.
    pub name: Option<String>,
    /// Its place among the node's actions (0 first).
    pub position: i32,
    /// Disabled actions are skipped.
    pub enabled: bool,
    /// Its retry policy; missing fields come from configuration.
    pub retry: Option<RetryPolicy>,
    /// Its timeout in milliseconds; default from configuration.
    pub timeout_ms: Option<i64>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new action. The config must already be valid for its type.
#[derive(Clone, Debug)]
pub struct NewAction {
    /// The flow.
    pub flow_id: FlowId,
    /// The node.
    pub node_id: String,
    /// What it does.
    pub action_type: ActionType,
    /// Its config.
    pub action_config: serde_json::Value,
    /// A name.
    pub name: Option<String>,
    /// Where among the node's actions (default: last).
    pub position: Option<i32>,
    /// Whether it runs.
    pub enabled: bool,
    /// Its retry policy.
    pub retry: Option<RetryPolicy>,
    /// Its timeout.
    pub timeout_ms: Option<i64>,
}

/// Changes to an action; `None` keeps a field. A new type comes with a config valid for it.
#[derive(Clone, Debug, Default)]
pub struct ActionUpdate {
    /// New node.
    pub node_id: Option<String>,
    /// New type.
    pub action_type: Option<ActionType>,
    /// New config.
    pub action_config: Option<serde_json::Value>,
    /// New name (`Some(None)` clears it).
    pub name: Option<Option<String>>,
    /// New position among the node's actions.
    pub position: Option<i32>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New retry policy (`Some(None)` clears it).
    pub retry: Option<Option<RetryPolicy>>,
    /// New timeout (`Some(None)` clears it).
    pub timeout_ms: Option<Option<i64>>,
    /// Refuse (conflict) if the action's type is no longer this one: the caller's permission
    /// and validation were decided against it.
    pub expected_type: Option<ActionType>,
}

/// One step execution of an action, as its history lists it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    /// The step's id (also its idempotency key).
    pub id: StepId,
    /// The run.
    pub execution_id: ExecutionId,
    /// The action.
    pub action_id: ActionId,
    /// Its type.
    pub action_type: ActionType,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The last error's category.
    pub error_category: Option<ErrorCategory>,
    /// The last error.
    pub error: Option<serde_json::Value>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}
