//! Flowline's execution engine: the durable queue over the step rows (claim, lease, heartbeat,
//! finish, retry, cancel, rescue), the flow walker and one executor per action type. It reaches
//! the database only through `flowline-store` and knows nothing of HTTP.
//!
//! Work is driven two ways: [`Engine::spawn_workers`] runs one claiming loop per queue in the
//! background (woken by the store's work signal, with a slow poll as a safety net), and
//! [`Engine::drain`] runs every due step to quiescence in the caller's task, which is how tests
//! drive the engine step by step.

pub mod backoff;
pub mod executor;
pub mod failure;
pub mod metrics;
pub mod outbound;
mod scheduler;
pub mod scope;
pub mod secrets;
pub mod template;
pub mod walker;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowline_core::id::{ContactId, ExecutionId, FlowId, WorkspaceId};
use flowline_core::status::{Queue, TriggerKind};
use flowline_store::execution::{FlowVersion, NewExecution, NewStep, Started};
use flowline_store::{Store, StoreError};
use serde_json::{Value, json};

pub use backoff::RetryDefaults;
use executor::Executors;
use failure::Failure;
use template::Renderer;
use walker::Walk;

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Names this process in leases.
    pub worker_id: String,
    /// Steps of each queue running at once in this process.
    pub concurrency: HashMap<Queue, usize>,
    /// Steps claimed per claim.
    pub claim_batch: u32,
    /// A workspace's smallest share of a claim when several have due steps; claims take the
    /// workspaces' oldest steps round-robin, so a busy workspace cannot starve the others.
    pub per_workspace_batch: u32,
    /// How many steps of one run a worker goes on with in place, each handed to it claimed as
    /// the step before ends, before the run's next step goes back through its queue and the fair
    /// claim. 0: every step goes through the queue.
    pub hand_on_steps: u32,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// The safety-net poll when no wake-up comes.
    pub poll_interval: Duration,
    /// How often expired leases are looked for.
    pub rescue_interval: Duration,
    /// Retry defaults for actions that name none.
    pub retry: RetryDefaults,
    /// Timeout of actions that name none.
    pub default_timeout: Duration,
    /// A script's deadline when its action names none (`timeoutMs` in its config).
    pub javascript_timeout: Duration,
    /// The longest deadline any script may have, whatever its config says.
    pub javascript_timeout_cap: Duration,
    /// The most memory any script may have, in MiB, whatever its config says.
    pub javascript_memory_cap_mb: u32,
    /// The program whose `sandbox` subcommand runs scripts (default: this executable).
    pub sandbox_program: Option<std::path::PathBuf>,
    /// Sandbox processes at most, each running one script at a time.
    pub sandbox_pool_size: usize,
    /// The key secrets are sealed with; without one, steps that name a secret fail.
    pub secret_key: Option<secrets::SecretKey>,
    /// What outbound requests may reach.
    pub outbound: outbound::OutboundPolicy,
    /// Retry defaults of `send_webhook`, longer than other actions': from seconds to hours.
    pub webhook_retry: RetryDefaults,
    /// Where the email providers are, and the default SMTP server.
    pub email: executor::EmailSettings,
    /// HubSpot's API.
    pub hubspot_url: String,
    /// How often finished runs past their retention are pruned.
    pub retention_interval: Duration,
    /// A bearer token `/metrics` asks for; open when unset.
    pub metrics_token: Option<String>,
    /// The most steps one run may queue.
    pub step_limit: i32,
}

impl EngineConfig {
    /// The retry defaults of an action type.
    pub fn retry_for(&self, action_type: flowline_core::action::ActionType) -> &RetryDefaults {
        if action_type == flowline_core::action::ActionType::SendWebhook {
            &self.webhook_retry
        } else {
            &self.retry
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("{}-{}", hostname(), std::process::id()),
            concurrency: HashMap::from([
                (Queue::Basic, 128),
                (Queue::Advanced, 32),
                (Queue::Integration, 128),
            ]),
            claim_batch: 50,
            per_workspace_batch: 10,
            hand_on_steps: 16,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            rescue_interval: Duration::from_secs(5),
            retry: RetryDefaults::default(),
            default_timeout: Duration::from_secs(30),
            javascript_timeout: Duration::from_secs(1),
            javascript_timeout_cap: Duration::from_secs(10),
            javascript_memory_cap_mb: 128,
            sandbox_program: None,
            sandbox_pool_size: 2,
            secret_key: None,
            outbound: outbound::OutboundPolicy::default(),
            webhook_retry: RetryDefaults {
                max_attempts: 8,
                initial_delay: Duration::from_secs(5),
                factor: 5.0,
                max_delay: Duration::from_secs(10 * 3600),
                jitter: true,
            },
            email: executor::EmailSettings::default(),
            hubspot_url: "https://api.hubapi.com".into(),
            retention_interval: Duration::from_secs(600),
            metrics_token: None,
            step_limit: 1_000,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "flowline".to_owned())
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store refused (not found, not active, unknown contact) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run to start.
#[derive(Clone, Debug)]
pub struct StartRun {
    /// The flow.
    pub flow_id: FlowId,
    /// The contact it runs for.
    pub contact_id: Option<ContactId>,
    /// What started it.
    pub trigger_kind: TriggerKind,
    /// The trigger's payload, `{{ trigger.… }}`.
    pub trigger: Value,
    /// Input given at start, `{{ execution.input.… }}`.
    pub input: Value,
    /// A webhook delivery's id or a schedule slot: the same key starts one run only.
    pub dedupe_key: Option<String>,
}

/// What a dry run found.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Whether the config rendered and checked out.
    pub ok: bool,
    /// The config as rendered, secrets masked.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// The requests (or SMTP session) that would be sent, secrets masked.
    #[schema(value_type = Vec<Object>)]
    pub requests: Vec<Value>,
    /// Variables it would set (set_variable).
    pub variables: Vec<flowline_store::execution::Variable>,
    /// What set_variable would output.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Why it would fail.
    pub error: Option<flowline_store::execution::StepError>,
}

/// The engine of one process.
pub struct Engine {
    store: Arc<dyn Store>,
    config: EngineConfig,
    executors: Executors,
    versions: Mutex<HashMap<(FlowId, i32), Arc<FlowVersion>>>,
    /// Wakes a queue's claiming loop when a step this process put off comes due.
    due: [Arc<tokio::sync::Notify>; 3],
}

impl Engine {
    /// An engine over `store` with the standard executors.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Arc<Self> {
        let executors = Executors::standard_for(&config);
        Self::with_executors(store, config, executors)
    }

    /// An engine with chosen executors.
    pub fn with_executors(
        store: Arc<dyn Store>,
        config: EngineConfig,
        executors: Executors,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            executors,
            versions: Mutex::new(HashMap::new()),
            due: Default::default(),
        })
    }

    /// What wakes `queue`'s claiming loop when a step put off by this process comes due.
    pub(crate) fn due(&self, queue: Queue) -> &Arc<tokio::sync::Notify> {
        &self.due[queue.index()]
    }

    /// Wakes `queue`'s claiming loop at `at`, when a step this process put off comes due: a
    /// retry runs after its backoff, not at the next slow poll. (Should this process stop
    /// meanwhile, another one's poll finds the step.)
    pub(crate) fn wake_at(&self, queue: Queue, at: chrono::DateTime<chrono::Utc>) {
        let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
        let due = self.due(queue).clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            due.notify_one();
        });
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A published version, cached: versions never change.
    pub(crate) async fn version(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        version: i32,
    ) -> Result<Arc<FlowVersion>, StoreError> {
        if let Some(found) = self
            .versions
            .lock()
            .map_err(|_| poisoned())?
            .get(&(flow, version))
        {
            return Ok(found.clone());
        }
        let loaded = Arc::new(
            self.store
                .get_flow_version(workspace, flow, version)
                .await?,
        );
        let mut cache = self.versions.lock().map_err(|_| poisoned())?;
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert((flow, version), loaded.clone());
        Ok(loaded)
    }

    /// The step that runs `action` next, with its attempts from the action's policy.
    pub(crate) fn new_step(&self, action: &flowline_store::execution::VersionAction) -> NewStep {
        NewStep {
            action_id: action.id,
            action_type: action.action_type,
            node_id: action.node_id.clone(),
            max_attempts: self
                .config
                .retry_for(action.action_type)
                .max_attempts(action.retry.as_ref()) as i32,
        }
    }

    /// Starts a run of the flow's current version: writes it and its first step together.
    pub async fn start(
        &self,
        workspace: WorkspaceId,
        run: StartRun,
    ) -> Result<Started, StartError> {
        let flow = self.store.get_flow(workspace, run.flow_id).await?;
        if flow.status != flowline_core::status::FlowStatus::Active || flow.version < 1 {
            return Err(StoreError::Conflict(format!(
                "the flow is {}: only active (published) flows run",
                flow.status
            ))
            .into());
        }
        let version = self.version(workspace, flow.id, flow.version).await?;
        let execution = self.plan(workspace, &version, run)?;
        Ok(self.store.start_execution(workspace, execution).await?)
    }

    /// Starts many runs of one flow at once, in one transaction (all or none): for backlogs and
    /// bulk starts. Runs of a batch carry no dedupe key.
    pub async fn start_many(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        runs: Vec<StartRun>,
    ) -> Result<Vec<ExecutionId>, StartError> {
        let flow = self.store.get_flow(workspace, flow).await?;
        if flow.status != flowline_core::status::FlowStatus::Active || flow.version < 1 {
            return Err(StoreError::Conflict(format!(
                "the flow is {}: only active (published) flows run",
                flow.status
            ))
            .into());
        }
        let version = self.version(workspace, flow.id, flow.version).await?;
        let planned = runs
            .into_iter()
            .map(|run| {
                if run.flow_id != flow.id {
                    return Err(StoreError::Invalid(
                        flowline_core::validation::ValidationErrors::single(
                            "flowId",
                            "the runs of a batch are of one flow",
                        ),
                    ));
                }
                self.plan(workspace, &version, run)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.start_executions(workspace, planned).await?)
    }

    /// The run to write, its first step chosen by walking from the entry node. A walk that
    /// fails before any action (a broken condition) is refused as invalid.
    pub(crate) fn plan(
        &self,
        workspace: WorkspaceId,
        version: &FlowVersion,
        run: StartRun,
    ) -> Result<NewExecution, StoreError> {
        let context = json!({
            "contact": run.contact_id.map(|c| json!({"id": c})),
            "vars": {},
            "trigger": run.trigger,
            "execution": {"flowId": version.flow_id, "flowVersion": version.version, "input": run.input},
            "workspace": {"id": workspace},
        });
        let first_step = match walker::start(version, &Renderer::new(&context)) {
            Ok(Walk::Run(action)) => Some(self.new_step(action)),
            Ok(Walk::Done) => None,
            Err(failure) => {
                return Err(StoreError::Invalid(
                    flowline_core::validation::ValidationErrors::single(
                        "graph",
                        failure.error.message,
                    ),
                ));
            }
        };
        Ok(NewExecution {
            flow_id: version.flow_id,
            flow_version: version.version,
            contact_id: run.contact_id,
            trigger_kind: run.trigger_kind,
            trigger: run.trigger,
            input: run.input,
            first_step,
            dedupe_key: run.dedupe_key,
            depth: 0,
        })
    }

    /// Starts the runs of schedules whose slot has come (each slot once, across processes);
    /// returns how many started.
    pub async fn run_due_schedules(self: &Arc<Self>) -> Result<usize, StoreError> {
        scheduler::tick(self).await
    }

    /// Runs every due step, claim after claim, until none is due; returns how many ran.
    pub async fn drain(self: &Arc<Self>) -> Result<usize, StoreError> {
        worker::drain(self).await
    }

    /// Runs the claiming loops (one per queue) and the rescuer until `shutdown` resolves, then
    /// lets the steps in flight finish.
    pub fn spawn_workers(
        self: &Arc<Self>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        worker::spawn(self, shutdown)
    }

    /// Renders and checks `action`'s config for `contact` and `vars`, and says what its step
    /// would do, sending and changing nothing: for the outbound actions, the exact requests
    /// (secrets masked); for set_variable, the variable; for the others, the config as rendered.
    pub async fn dry_run(
        self: &Arc<Self>,
        action: &flowline_store::flow::FlowAction,
        contact: Option<flowline_core::id::ContactId>,
        vars: serde_json::Map<String, Value>,
    ) -> Result<DryRun, StoreError> {
        use flowline_core::action::ActionType;
        use std::sync::Arc as StdArc;
        let contact_value = match contact {
            Some(id) => Some(
                self.store
                    .contact_context(action.workspace_id, id)
                    .await?
                    .ok_or(StoreError::NotFound("contact"))?,
            ),
            None => None,
        };
        let data = scope::Scope::from_json(json!({
            "contact": contact_value,
            "vars": vars,
            "trigger": {},
            "execution": {"id": null, "flowId": action.flow_id, "flowVersion": null, "input": {}, "attempt": 1},
            "workspace": {"id": action.workspace_id},
        }));
        let renderer = Renderer::new(&data);
        let (outbound, notebook) = outbound::Outbound::recording(self.config.outbound.clone());
        let executor: Option<StdArc<dyn executor::Executor>> = match action.action_type {
            ActionType::RunApiRequest => Some(StdArc::new(executor::RunApiRequest::new(outbound))),
            ActionType::SendWebhook => Some(StdArc::new(executor::SendWebhook::new(outbound))),
            ActionType::EmailIntegration => Some(StdArc::new(executor::SendEmail::new(
                outbound,
                self.config.email.clone(),
            ))),
            ActionType::CrmIntegration => Some(StdArc::new(executor::SyncCrm::new(
                outbound,
                self.config.hubspot_url.clone(),
            ))),
            ActionType::SetVariable => Some(StdArc::new(executor::SetVariable)),
            _ => None,
        };
        let step = executor::StepContext {
            step_id: flowline_core::id::StepId::new(),
            workspace_id: action.workspace_id,
            execution_id: flowline_core::id::ExecutionId::new(),
            attempt: 1,
            contact_id: contact,
            config: &action.action_config,
            renderer: &renderer,
            data: &data,
            secrets: &**self,
            shown: std::sync::OnceLock::new(),
        };
        let outcome = match &executor {
            Some(executor) => executor
                .execute(&step)
                .await
                .map(|o| (o.input, Some(o.output), o.variables)),
            None => renderer
                .render_value("actionConfig", &action.action_config)
                .map(|rendered| (Some(rendered), None, Vec::new()))
                .map_err(failure::Failure::template),
        };
        let requests = notebook.lock().map(|n| n.clone()).unwrap_or_default();
        Ok(match outcome {
            Ok((input, output, variables)) => DryRun {
                ok: true,
                input,
                requests,
                variables,
                output: output.filter(|_| action.action_type == ActionType::SetVariable),
                error: None,
            },
            Err(failure) => DryRun {
                ok: false,
                input: step.shown.into_inner(),
                requests,
                variables: Vec::new(),
                output: None,
                error: Some(failure.error),
            },
        })
    }

    /// Prunes finished runs past their workspace's retention, 500 at a time, until none is
    /// left or 20 batches ran; returns how many.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let mut pruned = 0;
        for _ in 0..20 {
            if self.store.prune_events(5_000).await? < 5_000 {
                break;
            }
        }
        for _ in 0..20 {
            let n = self.store.prune_finished(500).await?;
            pruned += n;
            if n < 500 {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(pruned)
    }

    /// The key secrets are sealed with, when one is configured.
    pub fn secret_key(&self) -> Option<&secrets::SecretKey> {
        self.config.secret_key.as_ref()
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        self.executors.metrics()
    }

    /// The metrics text: counters and histograms, with the queues' backlogs and the sandbox
    /// pool's health read now.
    pub async fn render_metrics(&self) -> Result<String, StoreError> {
        use metrics::Gauge;
        let now = chrono::Utc::now();
        let depths = self.store.queue_depths().await?;
        let mut gauges = Vec::new();
        for queue in flowline_core::status::Queue::ALL {
            let found = depths.iter().find(|d| d.queue == *queue);
            gauges.push(Gauge {
                kind: "gauge",
                name: "flowline_queue_depth",
                help: "Steps waiting in the queue, due or not.",
                labels: vec![("queue", queue.to_string())],
                value: found.map_or(0.0, |d| d.pending as f64),
            });
        }
        for queue in flowline_core::status::Queue::ALL {
            let found = depths.iter().find(|d| d.queue == *queue);
            gauges.push(Gauge {
                kind: "gauge",
                name: "flowline_queue_oldest_due_age_seconds",
                help: "How long the oldest due step of the queue has waited.",
                labels: vec![("queue", queue.to_string())],
                value: found.and_then(|d| d.oldest_due).map_or(0.0, |at| {
                    ((now - at).num_milliseconds().max(0) as f64) / 1000.0
                }),
            });
        }
        if let Some(pool) = self.sandbox() {
            let stats = pool.stats();
            for (event, value) in [
                ("started", stats.started),
                ("killed", stats.killed),
                ("died", stats.died),
            ] {
                gauges.push(Gauge {
                    kind: "counter",
                    name: "flowline_sandbox_processes_total",
                    help: "Sandbox processes started, killed by the watchdog, or died on their own.",
                    labels: vec![("event", event.to_owned())],
                    value: value as f64,
                });
            }
            gauges.push(Gauge {
                kind: "gauge",
                name: "flowline_sandbox_idle_processes",
                help: "Sandbox processes ready for a script.",
                labels: Vec::new(),
                value: stats.idle as f64,
            });
            gauges.push(Gauge {
                kind: "gauge",
                name: "flowline_sandbox_busy_processes",
                help: "Sandbox processes running a script.",
                labels: Vec::new(),
                value: pool.busy_pids().len() as f64,
            });
            gauges.push(Gauge {
                kind: "gauge",
                name: "flowline_sandbox_seccomp",
                help: "1 when sandbox processes run under the seccomp filter.",
                labels: Vec::new(),
                value: if pool.seccomp() { 1.0 } else { 0.0 },
            });
        }
        Ok(self.metrics().render(&gauges))
    }

    /// The JavaScript sandbox pool.
    pub fn sandbox(&self) -> Option<&Arc<flowline_sandbox::pool::SandboxPool>> {
        self.executors.sandbox()
    }

    pub(crate) fn executors(&self) -> &Executors {
        &self.executors
    }
}

#[async_trait::async_trait]
impl executor::SecretResolver for Engine {
    async fn resolve(
        &self,
        workspace: WorkspaceId,
        names: &[String],
    ) -> Result<HashMap<String, String>, failure::Failure> {
        use flowline_core::status::ErrorCategory;
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let Some(key) = &self.config.secret_key else {
            return Err(failure::Failure::new(
                ErrorCategory::Validation,
                "this step names a secret, but no secret key is configured",
                "set FLOWLINE_SECRET_KEY on every Flowline process",
            ));
        };
        let sealed = self
            .store
            .sealed_secrets(workspace, names)
            .await
            .map_err(|e| internal(format!("reading secrets failed: {e}")))?;
        let mut values = HashMap::new();
        for name in names {
            let Some(found) = sealed.iter().find(|s| &s.name == name) else {
                return Err(failure::Failure::new(
                    ErrorCategory::Validation,
                    format!("secret `{name}` does not exist in this workspace"),
                    format!("create it with PUT /api/secrets/{name}, or fix the template"),
                ));
            };
            let value = key
                .open(workspace, name, &found.nonce, &found.ciphertext)
                .map_err(|e| internal(e.to_string()))?;
            values.insert(name.clone(), value);
        }
        Ok(values)
    }
}

impl flowline_store::crm::RunPlanner for Engine {
    fn plan_event_run(
        &self,
        workspace: WorkspaceId,
        version: &FlowVersion,
        event: &flowline_core::crm::ContactEvent,
        trigger: Value,
    ) -> Result<NewExecution, StoreError> {
        self.plan(
            workspace,
            version,
            StartRun {
                flow_id: version.flow_id,
                contact_id: Some(event.contact_id),
                trigger_kind: flowline_core::status::TriggerKind::Event,
                trigger,
                input: json!({}),
                dedupe_key: None,
            },
        )
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("the flow version cache lock was poisoned".into())
}

/// A failure that is Flowline's own fault.
pub(crate) fn internal(message: impl Into<String>) -> Failure {
    Failure::new(
        flowline_core::status::ErrorCategory::Internal,
        message,
        "this is a fault in Flowline; the step will be retried per its policy",
    )
}
