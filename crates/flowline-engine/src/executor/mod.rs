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
mod crm_sync;
mod email;
mod http;
mod javascript;
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
use crate::scope::Scope;
use crate::template::Renderer;

pub use crm_sync::SyncCrm;
pub use email::{EmailSettings, SendEmail};
pub use http::{RunApiRequest, SendWebhook, sign};
pub use javascript::RunJavascript;
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
    /// The run's context itself: `contact`, `vars`, `trigger`, `execution`, `workspace`.
    pub data: &'a Scope<'a>,
    /// Opens the secrets a config names, at the moment of use.
    pub secrets: &'a dyn SecretResolver,
    /// The config as rendered, once the executor has shown it (see [`StepContext::show`]).
    pub shown: std::sync::OnceLock<Value>,
}

impl StepContext<'_> {
    /// The idempotency key to send to outside services: the same on every attempt.
    pub fn idempotency_key(&self) -> String {
        self.step_id.to_string()
    }

    /// Keeps the config as rendered (secrets masked) for the step's record before the work
    /// that may fail, so a failed attempt shows what it was given too.
    pub fn show(&self, input: &Value) {
        let _ = self.shown.set(input.clone());
    }

    /// The action's saved config in its typed form; a config that no longer reads fails the
    /// step as `validation`.
    pub fn saved_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_value(self.config.clone()).map_err(|e| {
            Failure::new(
                flowline_core::status::ErrorCategory::Validation,
                format!("the saved config is invalid: {e}"),
                "edit and save the action again",
            )
        })
    }
}

/// Opens secrets by name for one workspace.
#[async_trait]
pub trait SecretResolver: Send + Sync {
    /// The values of `names`; a missing secret is a `validation` failure.
    async fn resolve(
        &self,
        workspace: WorkspaceId,
        names: &[String],
    ) -> Result<HashMap<String, String>, Failure>;
}

/// A step's renderers with its secrets: one with their values, for use, and one with them
/// masked, for the stored input; and the masker for everything the step leaves behind.
pub struct WithSecrets {
    /// Renders with the secrets' values.
    pub real: Renderer,
    /// Renders with the secrets masked.
    pub masked: Renderer,
    /// Masks the values.
    pub masker: crate::secrets::Masker,
}

impl StepContext<'_> {
    /// Opens the secrets the config names and builds the renderers over them.
    pub async fn with_secrets(&self) -> Result<WithSecrets, Failure> {
        let names = crate::secrets::referenced(self.config);
        let values = self.secrets.resolve(self.workspace_id, &names).await?;
        let mut real = self.data.json().clone();
        let mut masked = self.data.json().clone();
        if let (Value::Object(real), Value::Object(masked)) = (&mut real, &mut masked) {
            real.insert(
                "secrets".into(),
                Value::Object(
                    values
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
            masked.insert(
                "secrets".into(),
                Value::Object(
                    names
                        .iter()
                        .map(|k| (k.clone(), Value::String(crate::secrets::MASK.into())))
                        .collect(),
                ),
            );
        }
        Ok(WithSecrets {
            real: Renderer::new(&real),
            masked: Renderer::new(&masked),
            masker: crate::secrets::Masker::new(values.values().map(String::as_str)),
        })
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

/// The `flowline` binary whose `sandbox` subcommand runs scripts: this executable when it is
/// `flowline`, else a `flowline` beside it or one folder up (a test binary in `target/*/deps`).
fn sandbox_program() -> std::path::PathBuf {
    let here = std::env::current_exe().ok();
    let is_flowline = |p: &std::path::Path| p.file_stem().is_some_and(|s| s == "flowline");
    if let Some(exe) = here.as_deref().filter(|p| is_flowline(p)) {
        return exe.to_path_buf();
    }
    let dir = here.as_deref().and_then(std::path::Path::parent);
    [dir, dir.and_then(std::path::Path::parent)]
        .into_iter()
        .flatten()
        .map(|d| d.join("flowline"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "flowline".into())
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
    sandbox: Option<Arc<flowline_sandbox::pool::SandboxPool>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Executors {
    /// The executors Flowline ships, with a JavaScript sandbox pool as `config` says.
    pub fn standard() -> Self {
        Self::standard_for(&crate::EngineConfig::default())
    }

    /// The executors Flowline ships, with a JavaScript sandbox pool as `config` says.
    pub fn standard_for(config: &crate::EngineConfig) -> Self {
        let mut executors = Self::default();
        let program = config
            .sandbox_program
            .clone()
            .unwrap_or_else(sandbox_program);
        let pool = flowline_sandbox::pool::SandboxPool::new(program, config.sandbox_pool_size);
        let outbound = crate::outbound::Outbound::new(config.outbound.clone())
            .with_metrics(executors.metrics.clone());
        executors.register(
            ActionType::RunApiRequest,
            Arc::new(RunApiRequest::new(outbound.clone())),
        );
        executors.register(
            ActionType::SendWebhook,
            Arc::new(SendWebhook::new(outbound.clone())),
        );
        executors.register(
            ActionType::EmailIntegration,
            Arc::new(SendEmail::new(outbound.clone(), config.email.clone())),
        );
        executors.register(
            ActionType::CrmIntegration,
            Arc::new(SyncCrm::new(outbound, config.hubspot_url.clone())),
        );
        executors.sandbox = Some(pool.clone());
        executors.register(
            ActionType::RunJavascript,
            Arc::new(RunJavascript::new(
                pool,
                config.javascript_timeout,
                config.javascript_timeout_cap,
                config.javascript_memory_cap_mb,
            )),
        );
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

    /// The metrics the executors (and the engine) count into.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The JavaScript sandbox pool, when these executors have one.
    pub fn sandbox(&self) -> Option<&Arc<flowline_sandbox::pool::SandboxPool>> {
        self.sandbox.as_ref()
    }

    /// How a type runs.
    pub fn get(&self, action_type: ActionType) -> Option<&Runner> {
        self.by_type.get(&action_type)
    }
}
