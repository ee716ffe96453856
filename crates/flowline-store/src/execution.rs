//! Runs of flows and their steps: the records, and the parameters of the queue's state changes.
//!
//! A step row is also its queue entry. Its life: `pending → running` (claimed with a lease and
//! a lease token) `→ completed | failed | timeout | cancelled`, or `running → pending` when a
//! retry is scheduled. Every change a worker makes after claiming is guarded by the lease token.

use chrono::{DateTime, Utc};
use flowline_core::action::ActionType;
use flowline_core::graph::FlowGraph;
use flowline_core::id::{ActionId, ContactId, ExecutionId, FlowId, StepId, WorkspaceId};
use flowline_core::retry::RetryPolicy;
use flowline_core::status::{
    ErrorCategory, ExecutionStatus, Queue, Severity, StepStatus, TriggerKind, VariableType,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An immutable snapshot of a flow, written when it is published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowVersion {
    /// The flow.
    pub flow_id: FlowId,
    /// 1, 2, ...
    pub version: i32,
    /// The graph as published.
    pub graph: FlowGraph,
    /// The enabled actions as published, by node and position.
    pub actions: Vec<VersionAction>,
}

/// An action as a published version holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionAction {
    /// The action.
    pub id: ActionId,
    /// Its node.
    pub node_id: String,
    /// Its type.
    pub action_type: ActionType,
    /// Its config.
    pub action_config: serde_json::Value,
    /// Its name.
    pub name: Option<String>,
    /// Its place in the node.
    pub position: i32,
    /// Its retry policy.
    pub retry: Option<RetryPolicy>,
    /// Its timeout.
    pub timeout_ms: Option<i64>,
}

impl FlowVersion {
    /// The actions of `node`, in the order they run.
    pub fn node_actions<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = &'a VersionAction> + use<'a> {
        let node = node.to_owned();
        self.actions.iter().filter(move |a| a.node_id == node)
    }

    /// One action.
    pub fn action(&self, id: ActionId) -> Option<&VersionAction> {
        self.actions.iter().find(|a| a.id == id)
    }
}

/// What went wrong in a step, as stored and shown (DESIGN.md §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepError {
    /// The kind of failure.
    pub category: ErrorCategory,
    /// How bad it is.
    pub severity: Severity,
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// What happened.
    pub message: String,
    /// What a person should do.
    pub suggestion: String,
}

/// One run of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// Its id.
    pub id: ExecutionId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The flow.
    pub flow_id: FlowId,
    /// The version it runs.
    pub flow_version: i32,
    /// The contact it runs for.
    pub contact_id: Option<ContactId>,
    /// What started it.
    pub trigger_kind: TriggerKind,
    /// The trigger's payload, `{{ trigger.… }}`.
    pub trigger: serde_json::Value,
    /// The input given at start.
    pub input: serde_json::Value,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Steps enqueued so far.
    pub step_count: i32,
    /// How deep in a chain of event-started runs it is (0: not started by an event).
    pub depth: i32,
    /// Why it failed.
    pub error: Option<StepError>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first step started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Its id, also the idempotency key sent to outside services.
    pub id: StepId,
    /// The run.
    pub execution_id: ExecutionId,
    /// The action.
    pub action_id: ActionId,
    /// The action's type.
    pub action_type: ActionType,
    /// The action's node.
    pub node_id: String,
    /// How many times this action ran before in this run.
    pub occurrence: i32,
    /// Where it stands.
    pub status: StepStatus,
    /// Its queue.
    pub queue: Queue,
    /// Attempts started.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// The config as rendered, secrets masked, by its latest attempt (failed ones too).
    pub input: Option<serde_json::Value>,
    /// What it produced.
    pub output: Option<serde_json::Value>,
    /// Why its last attempt failed.
    pub error: Option<StepError>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its attempts, first first.
    pub attempts: Vec<Attempt>,
}

/// One attempt of a step.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1, 2, ...
    pub attempt: i32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// completed, failed, timeout, cancelled or worker_lost.
    pub outcome: Option<String>,
    /// Its error.
    pub error: Option<StepError>,
}

/// A typed run variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Variable {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub variable_type: VariableType,
    /// Its value, of that type.
    pub value: serde_json::Value,
}

/// A run with its steps and variables.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetail {
    /// The run.
    #[serde(flatten)]
    pub execution: Execution,
    /// Its steps, in the order they were queued.
    pub steps: Vec<Step>,
    /// Its variables, by name.
    pub variables: Vec<Variable>,
}

/// A step to queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewStep {
    /// The action.
    pub action_id: ActionId,
    /// Its type.
    pub action_type: ActionType,
    /// Its node.
    pub node_id: String,
    /// Attempts allowed.
    pub max_attempts: i32,
}

/// A run to start.
#[derive(Clone, Debug)]
pub struct NewExecution {
    /// The flow; it must be active and still on `flow_version`.
    pub flow_id: FlowId,
    /// The version the first step was chosen from.
    pub flow_version: i32,
    /// The contact it runs for.
    pub contact_id: Option<ContactId>,
    /// What started it.
    pub trigger_kind: TriggerKind,
    /// The trigger's payload.
    pub trigger: serde_json::Value,
    /// The input given at start.
    pub input: serde_json::Value,
    /// The first step; `None` when the flow has nothing to run (the run completes at once).
    pub first_step: Option<NewStep>,
    /// A webhook delivery or schedule slot: a second start with the same key finds the first run.
    pub dedupe_key: Option<String>,
    /// How deep in a chain of event-started runs this one is (0: not started by an event).
    pub depth: i32,
}

/// A started run, or the run an earlier start with the same key made.
#[derive(Clone, Debug, PartialEq)]
pub struct Started {
    /// The run.
    pub execution: Execution,
    /// Whether it was started before, by the same delivery or slot.
    pub duplicate: bool,
}

/// A schedule whose slot has come.
#[derive(Clone, Debug, PartialEq)]
pub struct DueSchedule {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The flow.
    pub flow_id: FlowId,
    /// Whether the flow is active (only active flows run; others just move on).
    pub active: bool,
    /// The flow's published version.
    pub version: i32,
    /// The schedule.
    pub schedule: flowline_core::schedule::Schedule,
    /// The slot that came.
    pub slot: DateTime<Utc>,
}

/// Which steps a worker claims.
#[derive(Clone, Debug)]
pub struct ClaimParams {
    /// The queue.
    pub queue: Queue,
    /// At most this many.
    pub limit: u32,
    /// Who claims (for people reading the table).
    pub owner: String,
    /// How long the lease lasts unless renewed.
    pub lease: std::time::Duration,
    /// Each workspace's smallest share of a claim: every workspace with due steps offers at
    /// least its oldest `per_workspace_limit`, and more when few workspaces share the claim
    /// (SQLite: twice `limit / workspaces`, PostgreSQL: four times, for the steps other processes
    /// hold); the claim takes them round-robin across workspaces (every workspace's oldest first,
    /// then the second …).
    pub per_workspace_limit: u32,
}

/// A claimed step and what a worker needs to run it.
#[derive(Clone, Debug)]
pub struct ClaimedStep {
    /// The step.
    pub id: StepId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The run.
    pub execution_id: ExecutionId,
    /// The flow.
    pub flow_id: FlowId,
    /// The version the run is on.
    pub flow_version: i32,
    /// The run's contact.
    pub contact_id: Option<ContactId>,
    /// The run's trigger payload.
    pub trigger: serde_json::Value,
    /// The run's input.
    pub input: serde_json::Value,
    /// The run's step count so far.
    pub step_count: i32,
    /// The action.
    pub action_id: ActionId,
    /// The node.
    pub node_id: String,
    /// This attempt's number.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The lease token guarding every later write.
    pub lease_token: Uuid,
    /// The run's variables as of the claim.
    pub variables: Vec<Variable>,
}

/// How a step ended this attempt, and what the run does next.
#[derive(Clone, Debug)]
pub enum StepResult {
    /// It succeeded: its output, the variables it set, and what comes next.
    Completed {
        /// What it produced.
        output: serde_json::Value,
        /// Variables to write with the completion.
        variables: Vec<Variable>,
        /// The next step, or the run's end.
        next: Next,
    },
    /// It failed for good (no attempts left, or not retryable).
    Failed {
        /// `failed` or `timeout`.
        status: StepStatus,
        /// Why.
        error: StepError,
        /// An `onError` step, or the run's failure.
        next: Next,
    },
    /// It failed and is tried again at `run_at`.
    RetryLater {
        /// Why this attempt failed.
        error: StepError,
        /// When to try again.
        run_at: DateTime<Utc>,
    },
}

/// What a run does after a step.
#[derive(Clone, Debug)]
pub enum Next {
    /// Queue this step.
    Step(NewStep),
    /// The run completed.
    Complete,
    /// The run failed with this error.
    Fail(StepError),
}

/// A worker's report on a claimed step.
#[derive(Clone, Debug)]
pub struct FinishStep {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The run.
    pub execution_id: ExecutionId,
    /// The step.
    pub step_id: StepId,
    /// The lease token it was claimed with.
    pub lease_token: Uuid,
    /// The config as rendered, secrets masked.
    pub input: Option<serde_json::Value>,
    /// How it ended.
    pub result: StepResult,
    /// Asks for the run's next step to be handed to this worker at once, already claimed, when it
    /// is of this queue: the worker goes on with the run without a claim of its own. The store
    /// may decline (the step is then queued as usual); a step alone in its transaction is never
    /// handed on.
    pub hand_on: Option<HandOn>,
}

/// A worker's offer to go on with a run in place: see [`FinishStep::hand_on`].
#[derive(Clone, Debug)]
pub struct HandOn {
    /// The queue whose slot the worker keeps: only a next step of this queue is handed on.
    pub queue: flowline_core::status::Queue,
    /// Who holds the next step (as a claim would record it).
    pub owner: String,
    /// How long its lease lasts unless renewed.
    pub lease: std::time::Duration,
}

/// The run's next step, claimed for the worker that asked for it with [`FinishStep::hand_on`]:
/// its first attempt is open and its lease is held under this token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandedOn {
    /// The next step.
    pub step_id: StepId,
    /// The lease token guarding every later write of it.
    pub lease_token: Uuid,
}

/// What became of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Written.
    Applied,
    /// Written, and the run's next step handed to the worker that reported (see
    /// [`FinishStep::hand_on`]).
    HandedOn(HandedOn),
    /// The lease was lost (rescued, or taken by another worker): nothing was written.
    LeaseLost,
    /// The run was cancelled meanwhile: the step ends `cancelled`, nothing else is written.
    Cancelled,
}

/// Which queues were given work: a counter per queue that moves whenever a step is queued or
/// returned to it. A worker compares its queue's counter before and after a wake-up, so work for
/// another queue does not send it to claim in vain. A fourth counter moves when a run is
/// cancelled, so workers stop its running step at once rather than at their next heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkSignal([u64; 4]);

impl WorkSignal {
    /// The counter of `queue`.
    pub fn of(&self, queue: flowline_core::status::Queue) -> u64 {
        self.0[queue.index()]
    }

    /// Records work for `queue`, or for every queue when which one is not known.
    pub fn bump(&mut self, queue: Option<flowline_core::status::Queue>) {
        match queue {
            Some(queue) => {
                let lane = queue.index();
                self.0[lane] = self.0[lane].wrapping_add(1);
            }
            None => {
                for counter in &mut self.0[..3] {
                    *counter = counter.wrapping_add(1);
                }
            }
        }
    }

    /// Records that anything may have happened (wake-ups were missed): work for every queue,
    /// and a cancel.
    pub fn bump_all(&mut self) {
        self.bump(None);
        self.bump_cancels();
    }

    /// The queues whose counters differ from `earlier`'s.
    pub fn changed_since(&self, earlier: &WorkSignal) -> Vec<flowline_core::status::Queue> {
        flowline_core::status::Queue::ALL
            .iter()
            .copied()
            .filter(|&queue| self.of(queue) != earlier.of(queue))
            .collect()
    }

    /// The counter of cancelled runs.
    pub fn cancels(&self) -> u64 {
        self.0[3]
    }

    /// Records that a run was cancelled.
    pub fn bump_cancels(&mut self) {
        self.0[3] = self.0[3].wrapping_add(1);
    }
}

impl StepResult {
    /// Whether this end gives a queue work: a next step, or this step again later.
    pub fn queues_work(&self) -> bool {
        matches!(
            self,
            StepResult::Completed {
                next: Next::Step(_),
                ..
            } | StepResult::Failed {
                next: Next::Step(_),
                ..
            } | StepResult::RetryLater { .. }
        )
    }

    /// The queue of the next step, when this end queues one (a retry goes back to the step's own
    /// queue, which the report does not name).
    pub fn next_queue(&self) -> Option<flowline_core::status::Queue> {
        match self {
            StepResult::Completed {
                next: Next::Step(step),
                ..
            }
            | StepResult::Failed {
                next: Next::Step(step),
                ..
            } => Some(step.action_type.category().queue()),
            _ => None,
        }
    }
}
