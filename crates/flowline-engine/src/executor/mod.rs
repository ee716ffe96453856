//! Executors: one per action type, each turning a step's config into an outcome.
//!
//! An [`Executor`] never writes to the database itself: it returns what it produced (variables
//! included) in [`StepOutput`], and the engine commits that in the transaction that completes
//! the step, guarded by the lease. An [`InternalExecutor`] changes Flowline's own data (tags,
//! assignments, boards …) through the step's own [`StepTransaction`], the same transaction that
//! then records the step's end: exactly once, even when a worker dies between claim and commit.
//! An action with an outside effect gets the step id as its idempotency key, sent on every
//! attempt.

mod crm;
mod set_variable;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use flowline_core::action::ActionType;
use flowline_core::id::{ContactId, ExecutionId, StepId, WorkspaceId};
use flowline_store::crm::StepTransaction;
use flowline_store::execution::Variable;
use serde_json::Value;

use crate::failure::Failure;
use crate::template::Renderer;

pub use set_variable::SetVariable;

/// What an executor is given.
pub struct StepContext<'a> {
    /// The step; also the idempotency key for outside effects.
    pub step_id: StepId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The run.
    pub execution_id: ExecutionId,
    /// This attempt's number (1 first).
    pub attempt: i32,
    /// The run's contact, if it has one.
    pub contact_id: Option<ContactId>,
    /// The action's config as saved (templates unrendered).
    pub config: &'a Value,
    /// Renders templates over the run's context.
    pub renderer: &'a Renderer,
}

impl StepContext<'_> {
    /// The idempotency key to send to outside services: the same on every attempt.
    pub fn idempotency_key(&self) -> String {
        self.step_id.to_string()
    }
}

/// What a successful attempt produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// The step's output, shown in the run.
    pub output: Value,
    /// Variables to write with the completion.
    pub variables: Vec<Variable>,
    /// The config as rendered, with secrets masked.
    pub input: Option<Value>,
}

/// Runs steps of one action type.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs one attempt.
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure>;
}

/// Runs steps of one action type that changes Flowline's own data, inside the step's
/// transaction. Its changes commit with the step's end, or not at all.
#[async_trait]
pub trait InternalExecutor: Send + Sync {
    /// Runs one attempt in `tx`.
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure>;
}

/// How one action type runs.
#[derive(Clone)]
pub enum Runner {
    /// On its own; its output is committed with the step's end.
    Plain(Arc<dyn Executor>),
    /// In the step's own transaction.
    Internal(Arc<dyn InternalExecutor>),
}

/// The executors by action type.
#[derive(Clone, Default)]
pub struct Executors {
    by_type: HashMap<ActionType, Runner>,
}

impl Executors {
    /// The executors Flowline ships.
    pub fn standard() -> Self {
        let mut executors = Self::default();
        executors.register(ActionType::SetVariable, Arc::new(SetVariable));
        executors.register_internal(ActionType::AddTag, Arc::new(crm::AddTag));
        executors.register_internal(ActionType::AssignAgent, Arc::new(crm::AssignAgent));
        executors.register_internal(
            ActionType::SubscribeCampaign,
            Arc::new(crm::SubscribeCampaign),
        );
        executors.register_internal(ActionType::DeleteContact, Arc::new(crm::DeleteContact));
        executors.register_internal(ActionType::MoveToBoard, Arc::new(crm::MoveToBoard));
        executors
    }

    /// Adds (or replaces) the executor of a type.
    pub fn register(&mut self, action_type: ActionType, executor: Arc<dyn Executor>) {
        self.by_type.insert(action_type, Runner::Plain(executor));
    }

    /// Adds (or replaces) the executor of a type that runs in the step's transaction.
    pub fn register_internal(
        &mut self,
        action_type: ActionType,
        executor: Arc<dyn InternalExecutor>,
    ) {
        self.by_type.insert(action_type, Runner::Internal(executor));
    }

    /// How a type runs.
    pub fn get(&self, action_type: ActionType) -> Option<&Runner> {
        self.by_type.get(&action_type)
    }
}
