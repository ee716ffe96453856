//! Executors: one per action type, each turning a step's config into an outcome.
//!
//! An executor never writes to the database itself. An action that changes only Flowline's own
//! data returns its changes (variables today) in [`StepOutput`], and the engine commits them in
//! the transaction that completes the step, guarded by the lease: exactly once, even when a
//! worker dies. An action with an outside effect gets the step id as its idempotency key, sent on
//! every attempt.

mod set_variable;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use flowline_core::action::ActionType;
use flowline_core::id::{ExecutionId, StepId, WorkspaceId};
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

/// The executors by action type.
#[derive(Clone, Default)]
pub struct Executors {
    by_type: HashMap<ActionType, Arc<dyn Executor>>,
}

impl Executors {
    /// The executors Flowline ships.
    pub fn standard() -> Self {
        let mut executors = Self::default();
        executors.register(ActionType::SetVariable, Arc::new(SetVariable));
        executors
    }

    /// Adds (or replaces) the executor of a type.
    pub fn register(&mut self, action_type: ActionType, executor: Arc<dyn Executor>) {
        self.by_type.insert(action_type, executor);
    }

    /// The executor of a type.
    pub fn get(&self, action_type: ActionType) -> Option<&Arc<dyn Executor>> {
        self.by_type.get(&action_type)
    }
}
