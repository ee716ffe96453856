//! The SQL of runs and steps both backends share: publishing, starting, reading, cancelling and
//! resuming runs, and recording how claimed steps end. Compiled into each backend like
//! `sql_store.rs`; claims differ per backend (row locks, clocks) and live in `backend.rs`.

use chrono::{DateTime, Utc};
use flowline_core::id::{ExecutionId, FlowId, StepId, WorkspaceId};
use flowline_core::status::{ErrorCategory, ExecutionStatus, Severity, StepStatus};
use flowline_core::validation::ValidationErrors;
use flowline_store::execution::{
    Attempt, DueSchedule, Execution, ExecutionDetail, FinishOutcome, FinishStep, FlowVersion,
    NewExecution, NewStep, Next, Started, Step, StepError, StepResult, Variable, VersionAction,
};
use flowline_store::flow::Flow;
use flowline_store::page::{Page, PageRequest};
use flowline_store::tenancy::Actor;
use flowline_store::{StoreError, StoreResult};
use std::collections::HashMap;

use sqlx::types::Json;
use sqlx::{AssertSqlSafe, QueryBuilder};
use uuid::Uuid;

use crate::backend::{Db, FOR_UPDATE, LOCK_STEPS, MANY_STATEMENTS_PER_TEXT, db_now};
use crate::sql_store::{
    Conn, Tx, audit, corrupt, db_error, entry, fetch_flow, now, page_of, snapshot, sort_actions,
};

#[derive(sqlx::FromRow)]
struct ExecutionRow {
    id: Uuid,
    workspace_id: Uuid,
    flow_id: Uuid,
    flow_version: i32,
    contact_id: Option<Uuid>,
    trigger_kind: String,
    trigger: Json<serde_json::Value>,
    input: Json<serde_json::Value>,
    status: String,
    step_count: i32,
    depth: i32,
    error: Option<Json<serde_json::Value>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// How many steps the run of `flow_executions` has queued, as SQL: its step rows, found through
/// the `(flow_execution_id, action_id, occurrence)` key. Counted where it is read, a few times a
/// run, instead of kept on the run's row by an update for every step.
macro_rules! step_count {
    () => {
        "(SELECT CAST(count(*) AS INTEGER) FROM action_executions c \
         WHERE c.flow_execution_id = flow_executions.id) AS step_count"
    };
}

pub(crate) const EXECUTION_COLUMNS: &str = concat!(
    "id, workspace_id, flow_id, flow_version, contact_id, trigger_kind, trigger, input, status, ",
    step_count!(),
    ", depth, error, created_at, started_at, finished_at"
);

fn step_error(value: Option<Json<serde_json::Value>>) -> StoreResult<Option<StepError>> {
    value
        .map(|j| serde_json::from_value(j.0))
        .transpose()
        .map_err(|e| corrupt("step error", e))
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = StoreError;
    fn try_from(r: ExecutionRow) -> StoreResult<Self> {
        Ok(Execution {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            flow_id: r.flow_id.into(),
            flow_version: r.flow_version,
            contact_id: r.contact_id.map(Into::into),
            trigger_kind: r
                .trigger_kind
                .parse()
                .map_err(|e| corrupt("trigger kind", e))?,
            trigger: r.trigger.0,
            input: r.input.0,
            status: r
                .status
                .parse()
                .map_err(|e| corrupt("execution status", e))?,
            step_count: r.step_count,
            depth: r.depth,
            error: step_error(r.error)?,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StepRow {
    id: Uuid,
    flow_execution_id: Uuid,
    action_id: Uuid,
    action_type: String,
    node_id: String,
    occurrence: i32,
    status: String,
    queue: String,
    attempt: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    input: Option<Json<serde_json::Value>>,
    output: Option<Json<serde_json::Value>>,
    error: Option<Json<serde_json::Value>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<StepRow> for Step {
    type Error = StoreError;
    fn try_from(r: StepRow) -> StoreResult<Self> {
        Ok(Step {
            id: r.id.into(),
            execution_id: r.flow_execution_id.into(),
            action_id: r.action_id.into(),
            action_type: r
                .action_type
                .parse()
                .map_err(|e| corrupt("action type", e))?,
            node_id: r.node_id,
            occurrence: r.occurrence,
            status: r.status.parse().map_err(|e| corrupt("step status", e))?,
            queue: r.queue.parse().map_err(|e| corrupt("queue", e))?,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            input: r.input.map(|j| j.0),
            output: r.output.map(|j| j.0),
            error: step_error(r.error)?,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            attempts: Vec::new(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    action_execution_id: Uuid,
    attempt: i32,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    outcome: Option<String>,
    error: Option<Json<serde_json::Value>>,
}

#[derive(sqlx::FromRow)]
struct VariableRow {
    name: String,
    #[sqlx(rename = "type")]
    variable_type: String,
    value: Json<serde_json::Value>,
}

impl TryFrom<VariableRow> for Variable {
    type Error = StoreError;
    fn try_from(r: VariableRow) -> StoreResult<Self> {
        Ok(Variable {
            name: r.name,
            variable_type: r
                .variable_type
                .parse()
                .map_err(|e| corrupt("variable type", e))?,
            value: r.value.0,
        })
    }
}

pub(crate) async fn fetch_execution(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ExecutionId,
    lock: bool,
) -> StoreResult<Execution> {
    let lock = if lock { FOR_UPDATE } else { "" };
    sqlx::query_as::<_, ExecutionRow>(AssertSqlSafe(format!(
        "SELECT {EXECUTION_COLUMNS} FROM flow_executions WHERE workspace_id = $1 AND id = $2 {lock}"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("execution"))?
    .try_into()
}

pub(crate) async fn publish_flow(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    actor: &Actor,
    id: FlowId,
) -> StoreResult<Flow> {
    let before = fetch_flow(tx, workspace, id, true).await?;
    if before.status == flowline_core::status::FlowStatus::Archived {
        return Err(StoreError::Conflict(
            "an archived flow cannot be published: set its status to draft first".into(),
        ));
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        node_id: String,
        action_type: String,
        action_config: Json<serde_json::Value>,
        name: Option<String>,
        position: i32,
        retry: Option<Json<serde_json::Value>>,
        timeout_ms: Option<i64>,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT id, node_id, action_type, action_config, name, position, retry, timeout_ms FROM flow_actions \
         WHERE workspace_id = $1 AND flow_id = $2 AND enabled ORDER BY node_id, position, id",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let actions = rows
        .into_iter()
        .map(|r| {
            Ok(VersionAction {
                id: r.id.into(),
                node_id: r.node_id,
                action_type: r
                    .action_type
                    .parse()
                    .map_err(|e| corrupt("action type", e))?,
                action_config: r.action_config.0,
                name: r.name,
                position: r.position,
                retry: r
                    .retry
                    .map(|j| serde_json::from_value(j.0))
                    .transpose()
                    .map_err(|e| corrupt("retry", e))?,
                timeout_ms: r.timeout_ms,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let mut actions = actions;
    sort_actions(&mut actions, |a| (&a.node_id, a.position, a.id));
    let version = FlowVersion {
        flow_id: id,
        version: before.version + 1,
        graph: before.graph.clone(),
        actions,
    };
    let at = now();
    sqlx::query(
        "INSERT INTO flow_versions (id, workspace_id, flow_id, version, graph, actions, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(workspace.0)
    .bind(id.0)
    .bind(version.version)
    .bind(Json(&version.graph))
    .bind(Json(&version.actions))
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query("UPDATE flows SET status = 'active', version = $1, updated_at = $2 WHERE workspace_id = $3 AND id = $4")
        .bind(version.version)
        .bind(at)
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let mut after = before.clone();
    after.status = flowline_core::status::FlowStatus::Active;
    after.version = version.version;
    after.updated_at = at;
    audit(
        tx,
        workspace,
        actor,
        entry(
            "flow.publish",
            "flow",
            id,
            snapshot(&before),
            snapshot(&after),
        ),
    )
    .await?;
    Ok(after)
}

pub(crate) async fn fetch_flow_version(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    version: i32,
) -> StoreResult<FlowVersion> {
    #[derive(sqlx::FromRow)]
    struct Row {
        graph: Json<serde_json::Value>,
        actions: Json<serde_json::Value>,
    }
    let row = sqlx::query_as::<_, Row>(
        "SELECT graph, actions FROM flow_versions WHERE workspace_id = $1 AND flow_id = $2 AND version = $3",
    )
    .bind(workspace.0)
    .bind(flow.0)
    .bind(version)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("flow version"))?;
    Ok(FlowVersion {
        flow_id: flow,
        version,
        graph: serde_json::from_value(row.graph.0).map_err(|e| corrupt("version graph", e))?,
        actions: serde_json::from_value(row.actions.0)
            .map_err(|e| corrupt("version actions", e))?,
    })
}

/// Queues `step` in `execution` (a run of `flow`) as the next occurrence of its action.
pub(crate) async fn insert_step(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    execution: ExecutionId,
    step: &NewStep,
    at: DateTime<Utc>,
) -> StoreResult<StepId> {
    let ids = insert_steps(
        tx,
        &[QueuedStep {
            workspace: workspace.0,
            flow: flow.0,
            run: execution.0,
            step,
            lease: None,
        }],
        at,
    )
    .await?;
    let id = ids
        .into_iter()
        .next()
        .ok_or_else(|| corrupt("step", "the insert returned no id"))?;
    Ok(id)
}

pub(crate) async fn start_execution(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    params: NewExecution,
) -> StoreResult<Started> {
    let flow = fetch_flow(tx, workspace, params.flow_id, false).await?;
    match flow.status {
        flowline_core::status::FlowStatus::Active => {}
        other => {
            return Err(StoreError::Conflict(format!(
                "the flow is {other}: only active (published) flows run"
            )));
        }
    }
    start_in(tx, workspace, params).await
}

/// A step to insert: its workspace, run, and what to run. It is the next occurrence of its action
/// in the run.
pub(crate) struct QueuedStep<'a> {
    pub(crate) workspace: Uuid,
    /// The run's flow, for the step's events.
    pub(crate) flow: Uuid,
    pub(crate) run: Uuid,
    pub(crate) step: &'a NewStep,
    /// Claimed as it is written (handed on to the worker that ended the run's last step), or
    /// `None` for pending.
    pub(crate) lease: Option<&'a StepLease<'a>>,
}

/// The lease a step handed on is written with.
pub(crate) struct StepLease<'a> {
    pub(crate) owner: &'a str,
    pub(crate) token: Uuid,
    pub(crate) expires: DateTime<Utc>,
}

/// Inserts steps, due at `at`, with one multi-row statement; returns their ids. Each is the next
/// occurrence of its action in its run (found by the statement, one index seek each; a run has
/// one step queued at a time). A step with a lease is written claimed, its first attempt open,
/// as a claim at `at` would leave it.
pub(crate) async fn insert_steps(
    tx: &mut Tx<'_>,
    steps: &[QueuedStep<'_>],
    at: DateTime<Utc>,
) -> StoreResult<Vec<StepId>> {
    let mut writes = Writes::default();
    let mut events = Vec::new();
    let ids = queue_steps(&mut writes, steps, at, &mut events);
    step_events(&mut writes, &events);
    writes.run(tx).await?;
    Ok(ids)
}

/// [`insert_steps`] as statements of `writes`; the steps' events are added to `events`, for the
/// caller to write with its own.
pub(crate) fn queue_steps(
    writes: &mut Writes,
    steps: &[QueuedStep<'_>],
    at: DateTime<Utc>,
    events: &mut Vec<StepEvent<'_>>,
) -> Vec<StepId> {
    if steps.is_empty() {
        return Vec::new();
    }
    let ids: Vec<StepId> = steps.iter().map(|_| StepId::new()).collect();
    for (queued, id) in steps.iter().zip(&ids) {
        // Queued, then (when written claimed) started: the same story as any other step's.
        events.push(StepEvent {
            workspace: queued.workspace,
            flow: queued.flow,
            run: queued.run,
            step: id.0,
            status: "pending",
            action_type: queued.step.action_type.as_str(),
            attempt: 0,
            then: queued.lease.map(|_| ("running", 1)),
        });
    }
    // A step written claimed has its lease (column 10 to 12); its status, attempt and start follow.
    let query = writes.statement(
        "INSERT INTO action_executions (id, workspace_id, flow_execution_id, action_id, action_type, node_id, \
         queue, max_attempts, idempotency_key, lease_owner, lease_token, lease_expires_at, \
         status, attempt, run_at, created_at, started_at, attempt_started_at, occurrence) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
         v.column7, v.column8, v.column9, v.column10, v.column11, v.column12, \
         CASE WHEN v.column11 IS NULL THEN 'pending' ELSE 'running' END, \
         CASE WHEN v.column11 IS NULL THEN 0 ELSE 1 END, t.at, t.at, \
         CASE WHEN v.column11 IS NULL THEN NULL ELSE t.at END, \
         CASE WHEN v.column11 IS NULL THEN NULL ELSE t.at END, \
         (SELECT COALESCE(MAX(o.occurrence) + 1, 0) FROM action_executions o \
          WHERE o.flow_execution_id = v.column3 AND o.action_id = v.column4) FROM (",
    );
    query.push_values(padded_rows(steps.iter().zip(&ids)), |mut row, step| {
        let lease = step.and_then(|(queued, _)| queued.lease);
        row.push_bind(step.map(|(_, id)| id.0))
            .push_bind(step.map(|(queued, _)| queued.workspace))
            .push_bind(step.map(|(queued, _)| queued.run))
            .push_bind(step.map(|(queued, _)| queued.step.action_id.0))
            .push_bind(step.map(|(queued, _)| queued.step.action_type.as_str()))
            .push_bind(step.map(|(queued, _)| &queued.step.node_id))
            .push_bind(step.map(|(queued, _)| queued.step.action_type.category().queue().as_str()))
            .push_bind(step.map(|(queued, _)| queued.step.max_attempts.max(1)))
            .push_bind(step.map(|(_, id)| id.to_string()))
            .push_bind(lease.map(|l| l.owner))
            .push_bind(lease.map(|l| l.token))
            .push_bind(lease.map(|l| l.expires));
    });
    rows_at(query, at);
    ids
}

/// The most runs one statement of [`start_executions`] writes: 15 bound values each stays far
/// below both databases' limits on a statement's parameters.
const RUNS_PER_STATEMENT: usize = 500;

/// Starts many runs of one flow: the runs and their first steps in a few multi-row statements.
/// Every run must be of the same active flow and version, without a dedupe key; contacts must
/// exist. All or nothing, in the caller's transaction.
pub(crate) async fn start_executions(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    runs: &[NewExecution],
) -> StoreResult<Vec<ExecutionId>> {
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    if runs
        .iter()
        .any(|r| r.flow_id != first.flow_id || r.flow_version != first.flow_version)
    {
        return Err(StoreError::Invalid(ValidationErrors::single(
            "runs",
            "the runs of a batch are of one flow and one version",
        )));
    }
    if runs.iter().any(|r| r.dedupe_key.is_some()) {
        return Err(StoreError::Invalid(ValidationErrors::single(
            "runs",
            "runs started in a batch carry no dedupe key",
        )));
    }
    let flow = fetch_flow(tx, workspace, first.flow_id, false).await?;
    if flow.status != flowline_core::status::FlowStatus::Active {
        return Err(StoreError::Conflict(format!(
            "the flow is {}: only active (published) flows run",
            flow.status
        )));
    }
    if first.flow_version < 1 || first.flow_version > flow.version {
        return Err(StoreError::Conflict(format!(
            "the flow has no version {}",
            first.flow_version
        )));
    }
    let mut contacts: Vec<Uuid> = runs
        .iter()
        .filter_map(|r| r.contact_id.map(|c| c.0))
        .collect();
    contacts.sort();
    contacts.dedup();
    for chunk in contacts.chunks(RUNS_PER_STATEMENT) {
        let mut query =
            QueryBuilder::<Db>::new("SELECT COUNT(*) FROM contacts WHERE workspace_id = ");
        query
            .push_bind(workspace.0)
            .push(" AND deleted_at IS NULL AND id IN (");
        push_ids(&mut query, chunk);
        let live: i64 = query
            .build_query_scalar()
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
        if live != chunk.len() as i64 {
            return Err(StoreError::NotFound("contact"));
        }
    }
    let at = now();
    let ids: Vec<ExecutionId> = runs.iter().map(|_| ExecutionId::new()).collect();
    for (chunk, chunk_ids) in runs
        .chunks(RUNS_PER_STATEMENT)
        .zip(ids.chunks(RUNS_PER_STATEMENT))
    {
        let mut query = QueryBuilder::<Db>::new(
            "INSERT INTO flow_executions (id, workspace_id, flow_id, flow_version, contact_id, trigger_kind, trigger, \
             input, status, created_at, started_at, finished_at, depth) ",
        );
        query.push_values(chunk.iter().zip(chunk_ids), |mut row, (run, id)| {
            let done = run.first_step.is_none();
            row.push_bind(id.0)
                .push_bind(workspace.0)
                .push_bind(run.flow_id.0)
                .push_bind(run.flow_version)
                .push_bind(run.contact_id.map(|c| c.0))
                .push_bind(run.trigger_kind.as_str())
                .push_bind(Json(&run.trigger))
                .push_bind(Json(&run.input))
                .push_bind(if done { "completed" } else { "pending" })
                .push_bind(at)
                .push_bind(done.then_some(at))
                .push_bind(done.then_some(at))
                .push_bind(run.depth);
        });
        query.build().execute(&mut **tx).await.map_err(db_error)?;
        let steps: Vec<QueuedStep> = chunk_ids
            .iter()
            .zip(chunk)
            .filter_map(|(id, run)| {
                run.first_step.as_ref().map(|step| QueuedStep {
                    workspace: workspace.0,
                    flow: run.flow_id.0,
                    run: id.0,
                    step,
                    lease: None,
                })
            })
            .collect();
        insert_steps(tx, &steps, at).await?;
    }
    Ok(ids)
}

/// Writes a run and its first step; the flow was checked by the caller.
pub(crate) async fn start_in(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    params: NewExecution,
) -> StoreResult<Started> {
    let flow = fetch_flow(tx, workspace, params.flow_id, false).await?;
    if params.flow_version < 1 || params.flow_version > flow.version {
        return Err(StoreError::Conflict(format!(
            "the flow has no version {}",
            params.flow_version
        )));
    }
    if let Some(contact) = params.contact_id {
        let live: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM contacts WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(workspace.0)
        .bind(contact.0)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
        if live.is_none() {
            return Err(StoreError::NotFound("contact"));
        }
    }
    let at = now();
    let id = ExecutionId::new();
    let done = params.first_step.is_none();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO flow_executions (id, workspace_id, flow_id, flow_version, contact_id, trigger_kind, trigger, \
         input, status, created_at, started_at, finished_at, dedupe_key, depth) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13) \
         ON CONFLICT (flow_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING RETURNING id",
    )
    .bind(id.0)
    .bind(workspace.0)
    .bind(params.flow_id.0)
    .bind(params.flow_version)
    .bind(params.contact_id.map(|c| c.0))
    .bind(params.trigger_kind.as_str())
    .bind(Json(&params.trigger))
    .bind(Json(&params.input))
    .bind(if done { "completed" } else { "pending" })
    .bind(at)
    .bind(done.then_some(at))
    .bind(&params.dedupe_key)
    .bind(params.depth)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    if inserted.is_none() {
        // The same delivery or slot started a run before: that run is the answer.
        let earlier: Uuid = sqlx::query_scalar(
            "SELECT id FROM flow_executions WHERE workspace_id = $1 AND flow_id = $2 AND dedupe_key = $3",
        )
        .bind(workspace.0)
        .bind(params.flow_id.0)
        .bind(&params.dedupe_key)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let execution = fetch_execution(tx, workspace, earlier.into(), false).await?;
        return Ok(Started {
            execution,
            duplicate: true,
        });
    }
    if let Some(step) = &params.first_step {
        insert_step(tx, workspace, params.flow_id, id, step, at).await?;
    }
    let execution = fetch_execution(tx, workspace, id, false).await?;
    Ok(Started {
        execution,
        duplicate: false,
    })
}

pub(crate) async fn set_webhook_token(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    actor: &Actor,
    id: FlowId,
    hash: Option<flowline_core::token::TokenHash>,
) -> StoreResult<Flow> {
    let before = fetch_flow(tx, workspace, id, true).await?;
    sqlx::query("UPDATE flows SET webhook_token_hash = $1, updated_at = $2 WHERE workspace_id = $3 AND id = $4")
        .bind(hash.as_ref().map(|h| h.0.to_vec()))
        .bind(now())
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let after = fetch_flow(tx, workspace, id, false).await?;
    let action = if hash.is_some() {
        "flow.webhook_rotate"
    } else {
        "flow.webhook_remove"
    };
    audit(
        tx,
        workspace,
        actor,
        entry(action, "flow", id, snapshot(&before), snapshot(&after)),
    )
    .await?;
    Ok(after)
}

pub(crate) async fn due_schedules(tx: &mut Tx<'_>, limit: u32) -> StoreResult<Vec<DueSchedule>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        workspace_id: Uuid,
        status: String,
        version: i32,
        schedule: Json<serde_json::Value>,
        next_fire_at: DateTime<Utc>,
    }
    let at = db_now(tx).await?;
    let rows = sqlx::query_as::<_, Row>(
        "SELECT id, workspace_id, status, version, schedule, next_fire_at FROM flows \
         WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 AND schedule IS NOT NULL \
         ORDER BY next_fire_at LIMIT $2",
    )
    .bind(at)
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    rows.into_iter()
        .map(|r| {
            Ok(DueSchedule {
                workspace_id: r.workspace_id.into(),
                flow_id: r.id.into(),
                active: r.status == "active",
                version: r.version,
                schedule: serde_json::from_value(r.schedule.0)
                    .map_err(|e| corrupt("flow schedule", e))?,
                slot: r.next_fire_at,
            })
        })
        .collect()
}

pub(crate) async fn advance_schedule(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    slot: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    run: Option<NewExecution>,
) -> StoreResult<bool> {
    let moved = sqlx::query(
        "UPDATE flows SET next_fire_at = $1 WHERE workspace_id = $2 AND id = $3 AND next_fire_at = $4",
    )
    .bind(next)
    .bind(workspace.0)
    .bind(flow.0)
    .bind(slot)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(run) = run {
        // The flow may have been archived since the slot was read: it then just moves on.
        let flow = fetch_flow(tx, workspace, flow, false).await?;
        if flow.status == flowline_core::status::FlowStatus::Active {
            start_in(tx, workspace, run).await?;
        }
    }
    Ok(true)
}

pub(crate) async fn execution_detail(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ExecutionId,
) -> StoreResult<ExecutionDetail> {
    let execution = fetch_execution(tx, workspace, id, false).await?;
    let rows = sqlx::query_as::<_, StepRow>(
        "SELECT id, flow_execution_id, action_id, action_type, node_id, occurrence, status, queue, attempt, \
         max_attempts, run_at, input, output, error, created_at, started_at, finished_at \
         FROM action_executions WHERE workspace_id = $1 AND flow_execution_id = $2 ORDER BY id",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let mut steps = rows
        .into_iter()
        .map(Step::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    // Attempts that ended before their step's last have rows; the last is its step's.
    let attempts = sqlx::query_as::<_, AttemptRow>(AssertSqlSafe(format!(
        "SELECT t.action_execution_id, t.attempt, t.started_at, t.finished_at, t.outcome, t.error \
         FROM action_attempts t JOIN action_executions s ON s.id = t.action_execution_id \
         WHERE s.workspace_id = $1 AND s.flow_execution_id = $2 \
         UNION ALL \
         SELECT {LAST_ATTEMPT} \
         FROM action_executions s WHERE s.workspace_id = $1 AND s.flow_execution_id = $2 \
         AND {HAS_LAST_ATTEMPT} \
         ORDER BY 1, 2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    for row in attempts {
        if let Some(step) = steps.iter_mut().find(|s| s.id.0 == row.action_execution_id) {
            step.attempts.push(Attempt {
                attempt: row.attempt,
                started_at: row.started_at,
                finished_at: row.finished_at,
                outcome: row.outcome,
                error: step_error(row.error)?,
            });
        }
    }
    let variables = fetch_variables(tx, workspace, id).await?;
    Ok(ExecutionDetail {
        execution,
        steps,
        variables,
    })
}

pub(crate) async fn fetch_variables(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ExecutionId,
) -> StoreResult<Vec<Variable>> {
    let rows = sqlx::query_as::<_, VariableRow>(
        "SELECT name, type, value FROM action_variables WHERE workspace_id = $1 AND flow_execution_id = $2 ORDER BY name",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    rows.into_iter().map(Variable::try_from).collect()
}

/// The runs for a contact, newest first.
pub(crate) async fn contact_executions(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: flowline_core::id::ContactId,
    page: PageRequest,
) -> StoreResult<Page<Execution>> {
    executions_where(tx, workspace, "contact_id", contact.0, page).await
}

pub(crate) async fn list_executions(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    page: PageRequest,
) -> StoreResult<Page<Execution>> {
    fetch_flow(tx, workspace, flow, false).await?;
    executions_where(tx, workspace, "flow_id", flow.0, page).await
}

/// A page of the workspace's runs whose `column` (`flow_id` or `contact_id`) is `id`.
async fn executions_where(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    column: &'static str,
    id: Uuid,
    page: PageRequest,
) -> StoreResult<Page<Execution>> {
    let rows = sqlx::query_as::<_, ExecutionRow>(AssertSqlSafe(format!(
        "SELECT {EXECUTION_COLUMNS} FROM flow_executions WHERE workspace_id = $1 AND {column} = $2 \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    )))
    .bind(workspace.0)
    .bind(id)
    .bind(page.cursor)
    .bind(page.fetch_limit())
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    page_of(rows, &page, |e: &Execution| e.id.0)
}

pub(crate) async fn cancel_execution(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    actor: &Actor,
    id: ExecutionId,
) -> StoreResult<Execution> {
    // Steps first, then the run: the order claims lock them in, so the two cannot deadlock.
    let _: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM action_executions WHERE workspace_id = $1 AND flow_execution_id = $2 \
         AND status IN ('pending', 'running') {FOR_UPDATE}"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let before = fetch_execution(tx, workspace, id, true).await?;
    if before.status.is_finished() {
        return Err(StoreError::Conflict(format!(
            "the execution already ended {}",
            before.status
        )));
    }
    let at = now();
    sqlx::query("UPDATE flow_executions SET status = 'cancelled', finished_at = $1 WHERE workspace_id = $2 AND id = $3")
        .bind(at)
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let mut cancelled: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "UPDATE action_executions SET status = 'cancelled', finished_at = $1 \
         WHERE workspace_id = $2 AND flow_execution_id = $3 AND status = 'pending' \
         RETURNING id, action_type, attempt",
    )
    .bind(at)
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    cancelled.sort();
    let events: Vec<StepEvent> = cancelled
        .iter()
        .map(|(step, action_type, attempt)| StepEvent {
            workspace: workspace.0,
            flow: before.flow_id.0,
            run: id.0,
            step: *step,
            status: "cancelled",
            action_type,
            attempt: *attempt,
            then: None,
        })
        .collect();
    write_step_events(tx, &events).await?;
    let after = fetch_execution(tx, workspace, id, false).await?;
    audit(
        tx,
        workspace,
        actor,
        entry(
            "execution.cancel",
            "execution",
            id,
            snapshot(&before),
            snapshot(&after),
        ),
    )
    .await?;
    Ok(after)
}

pub(crate) async fn retry_execution(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    actor: &Actor,
    id: ExecutionId,
) -> StoreResult<Execution> {
    let before = fetch_execution(tx, workspace, id, true).await?;
    if before.status != ExecutionStatus::Failed {
        return Err(StoreError::Conflict(format!(
            "only a failed execution can be retried; this one is {}",
            before.status
        )));
    }
    #[derive(sqlx::FromRow)]
    struct Last {
        action_id: Uuid,
        action_type: String,
        node_id: String,
        status: String,
        max_attempts: i32,
    }
    let last = sqlx::query_as::<_, Last>(
        "SELECT action_id, action_type, node_id, status, max_attempts FROM action_executions \
         WHERE workspace_id = $1 AND flow_execution_id = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some(last) = last.filter(|l| l.status == "failed" || l.status == "timeout") else {
        return Err(StoreError::Conflict(
            "the execution failed between steps (its step limit, or a condition that could not be judged), so it has no failed step to resume from: fix the flow and start a new run".into(),
        ));
    };
    let step = NewStep {
        action_id: last.action_id.into(),
        action_type: last
            .action_type
            .parse()
            .map_err(|e| corrupt("action type", e))?,
        node_id: last.node_id,
        max_attempts: last.max_attempts,
    };
    let at = now();
    insert_step(tx, workspace, before.flow_id, id, &step, at).await?;
    sqlx::query(
        "UPDATE flow_executions SET status = 'running', error = NULL, finished_at = NULL WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace.0)
    .bind(id.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    let after = fetch_execution(tx, workspace, id, false).await?;
    audit(
        tx,
        workspace,
        actor,
        entry(
            "execution.retry",
            "execution",
            id,
            snapshot(&before),
            snapshot(&after),
        ),
    )
    .await?;
    Ok(after)
}

/// A step `s`'s last attempt, from its own row, as `action_attempts`' columns from
/// `action_execution_id` on: the attempt in progress while it runs, then the one that ended it.
/// Only attempts that ended before their step's last (retried, rescued, cancelled) have rows of
/// their own, so a step that ends at its first attempt writes one row, not two.
pub(crate) const LAST_ATTEMPT: &str = "s.id, s.attempt, COALESCE(s.attempt_started_at, s.started_at), \
     s.finished_at, CASE WHEN s.status = 'running' THEN NULL ELSE s.status END, \
     CASE WHEN s.status = 'running' THEN NULL ELSE s.error END";

/// Whether step `s` has a last attempt not written as a row (see [`LAST_ATTEMPT`]): it is
/// running or ended, and the row, if an earlier path or version wrote one, is not there.
pub(crate) const HAS_LAST_ATTEMPT: &str = "s.status <> 'pending' AND s.attempt > 0 \
     AND NOT EXISTS (SELECT 1 FROM action_attempts t \
         WHERE t.action_execution_id = s.id AND t.attempt = s.attempt)";

/// Every attempt, as a table with `action_attempts`' columns from `workspace_id` on.
pub(crate) fn all_attempts() -> String {
    format!(
        "(SELECT t.workspace_id, t.action_execution_id, t.attempt, t.started_at, t.finished_at, \
         t.outcome, t.error FROM action_attempts t \
         UNION ALL \
         SELECT s.workspace_id, {LAST_ATTEMPT} FROM action_executions s WHERE {HAS_LAST_ATTEMPT})"
    )
}

pub(crate) fn error_json(error: &StepError) -> Json<serde_json::Value> {
    Json(serde_json::to_value(error).unwrap_or(serde_json::Value::Null))
}

/// A step's status change, for `GET /api/events`: written by the statements that make the
/// change, from what they hold, in the order the changes happen.
pub(crate) struct StepEvent<'a> {
    pub(crate) workspace: Uuid,
    pub(crate) flow: Uuid,
    pub(crate) run: Uuid,
    pub(crate) step: Uuid,
    pub(crate) status: &'a str,
    pub(crate) action_type: &'a str,
    pub(crate) attempt: i32,
    /// The step's next status and attempt, at once (a step queued already claimed: `pending`,
    /// then `running`), written from the same row.
    pub(crate) then: Option<(&'a str, i32)>,
}

/// Writes `events` in one statement of `writes`: each step's, and each run's, in their order.
/// A step's two events at once share a row of bound values, its workspace, flow, run, step and
/// action bound once for both: each bound value is a copy made, sent and freed.
pub(crate) fn step_events(writes: &mut Writes, events: &[StepEvent<'_>]) {
    if events.is_empty() {
        return;
    }
    let query = writes.statement(
        "INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt) \
         SELECT v.column1, v.column2, v.column3, v.column4, 'step', \
         CASE WHEN x.n = 1 THEN v.column5 ELSE v.column8 END, v.column6, \
         CASE WHEN x.n = 1 THEN v.column7 ELSE v.column9 END FROM (",
    );
    query.push_values(padded_rows(events.iter()), |mut row, event| {
        let then = event.and_then(|e| e.then);
        row.push_bind(event.map(|e| e.workspace))
            .push_bind(event.map(|e| e.flow))
            .push_bind(event.map(|e| e.run))
            .push_bind(event.map(|e| e.step))
            .push_bind(event.map(|e| e.status))
            .push_bind(event.map(|e| e.action_type))
            .push_bind(event.map(|e| e.attempt))
            .push_bind(then.map(|(status, _)| status))
            .push_bind(then.map(|(_, attempt)| attempt));
    });
    query.push(
        ") AS v JOIN (SELECT 1 AS n UNION ALL SELECT 2 AS n) AS x \
         ON x.n = 1 OR v.column8 IS NOT NULL WHERE v.column1 IS NOT NULL",
    );
}

/// Writes `events` now, in the caller's transaction.
async fn write_step_events(tx: &mut Tx<'_>, events: &[StepEvent<'_>]) -> StoreResult<()> {
    let mut writes = Writes::default();
    step_events(&mut writes, events);
    writes.run(tx).await
}

/// An attempt that ended: its row is written now, once, started when its step's row says.
pub(crate) struct AttemptEnd {
    pub(crate) step: Uuid,
    pub(crate) attempt: i32,
    pub(crate) outcome: &'static str,
    pub(crate) error: Option<Json<serde_json::Value>>,
}

/// Writes the rows of attempts that ended at `at`, in one statement of `writes`. An attempt's
/// start is its step's `attempt_started_at`; a row an earlier version opened is completed.
pub(crate) fn attempt_ends(writes: &mut Writes, ends: &[AttemptEnd], at: DateTime<Utc>) {
    if ends.is_empty() {
        return;
    }
    let query = writes.statement(
        "INSERT INTO action_attempts (id, workspace_id, action_execution_id, attempt, started_at, \
         finished_at, outcome, error) \
         SELECT v.column1, s.workspace_id, s.id, v.column3, COALESCE(s.attempt_started_at, s.started_at, ",
    );
    query
        .push_bind(at)
        .push("), ")
        .push_bind(at)
        .push(", v.column4, v.column5 FROM (");
    query.push_values(padded_rows(ends.iter()), |mut row, end| {
        row.push_bind(end.map(|_| Uuid::now_v7()))
            .push_bind(end.map(|e| e.step))
            .push_bind(end.map(|e| e.attempt))
            .push_bind(end.map(|e| e.outcome))
            .push_bind(end.and_then(|e| e.error.clone()));
    });
    // `WHERE true`: SQLite reads an upsert's `ON CONFLICT` right after a join as the join's `ON`.
    query.push(
        ") AS v JOIN action_executions s ON s.id = v.column2 WHERE true \
         ON CONFLICT (action_execution_id, attempt) DO UPDATE SET finished_at = excluded.finished_at, \
         outcome = excluded.outcome, error = excluded.error",
    );
}

async fn end_attempt(
    tx: &mut Tx<'_>,
    step: StepId,
    attempt: i32,
    outcome: &'static str,
    error: Option<&StepError>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut writes = Writes::default();
    attempt_ends(
        &mut writes,
        &[AttemptEnd {
            step: step.0,
            attempt,
            outcome,
            error: error.map(error_json),
        }],
        at,
    );
    writes.run(tx).await
}

async fn apply_next(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    execution: ExecutionId,
    next: &Next,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    match next {
        Next::Step(step) => {
            insert_step(tx, workspace, flow, execution, step, at).await?;
        }
        Next::Complete => {
            sqlx::query(
                "UPDATE flow_executions SET status = 'completed', finished_at = $1 WHERE id = $2 AND status = 'running'",
            )
            .bind(at)
            .bind(execution.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        Next::Fail(error) => {
            sqlx::query(
                "UPDATE flow_executions SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND status = 'running'",
            )
            .bind(error_json(error))
            .bind(at)
            .bind(execution.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
    }
    Ok(())
}

pub(crate) async fn finish_step(
    tx: &mut Tx<'_>,
    params: &FinishStep,
) -> StoreResult<FinishOutcome> {
    let workspace = params.workspace_id;
    // The guard and the run's status in one read; on PostgreSQL it locks both rows, so a
    // cancel and this report apply one after the other.
    let held: Option<(i32, String, Uuid, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT s.attempt, e.status, e.flow_id, s.action_type \
         FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
         WHERE s.id = $1 AND s.workspace_id = $2 AND s.status = 'running' AND s.lease_token = $3 \
         AND e.id = $4 {FOR_UPDATE}"
    )))
    .bind(params.step_id.0)
    .bind(workspace.0)
    .bind(params.lease_token)
    .bind(params.execution_id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some((attempt, status, flow, action_type)) = held else {
        return Ok(FinishOutcome::LeaseLost);
    };
    let flow = FlowId(flow);
    let at = db_now(tx).await?;
    let ended = |status| {
        [StepEvent {
            workspace: workspace.0,
            flow: flow.0,
            run: params.execution_id.0,
            step: params.step_id.0,
            status,
            action_type: &action_type,
            attempt,
            then: None,
        }]
    };
    let input = params.input.as_ref().map(Json);
    if status == ExecutionStatus::Cancelled.as_str() {
        sqlx::query(
            "UPDATE action_executions SET status = 'cancelled', input = COALESCE($1, input), finished_at = $2, \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = $3",
        )
        .bind(input)
        .bind(at)
        .bind(params.step_id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        write_step_events(tx, &ended("cancelled")).await?;
        end_attempt(tx, params.step_id, attempt, "cancelled", None, at).await?;
        return Ok(FinishOutcome::Cancelled);
    }
    match &params.result {
        StepResult::Completed {
            output,
            variables,
            next,
        } => {
            sqlx::query(
                "UPDATE action_executions SET status = 'completed', input = COALESCE($1, input), output = $2, \
                 error = NULL, error_category = NULL, finished_at = $3, lease_owner = NULL, lease_token = NULL, \
                 lease_expires_at = NULL WHERE id = $4",
            )
            .bind(input)
            .bind(Json(output))
            .bind(at)
            .bind(params.step_id.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended("completed")).await?;
            for variable in variables {
                sqlx::query(
                    "INSERT INTO action_variables (id, workspace_id, flow_execution_id, name, type, value, \
                     set_by_action_execution_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                     ON CONFLICT (flow_execution_id, name) DO UPDATE SET type = excluded.type, value = excluded.value, \
                     set_by_action_execution_id = excluded.set_by_action_execution_id, updated_at = excluded.updated_at",
                )
                .bind(Uuid::now_v7())
                .bind(workspace.0)
                .bind(params.execution_id.0)
                .bind(&variable.name)
                .bind(variable.variable_type.as_str())
                .bind(Json(&variable.value))
                .bind(params.step_id.0)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            }
            apply_next(tx, workspace, flow, params.execution_id, next, at).await?;
        }
        StepResult::Failed {
            status,
            error,
            next,
        } => {
            let status = if *status == StepStatus::Timeout {
                StepStatus::Timeout
            } else {
                StepStatus::Failed
            };
            sqlx::query(
                "UPDATE action_executions SET status = $1, input = COALESCE($2, input), error = $3, \
                 error_category = $4, finished_at = $5, lease_owner = NULL, lease_token = NULL, \
                 lease_expires_at = NULL WHERE id = $6",
            )
            .bind(status.as_str())
            .bind(input)
            .bind(error_json(error))
            .bind(error.category.as_str())
            .bind(at)
            .bind(params.step_id.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended(status.as_str())).await?;
            apply_next(tx, workspace, flow, params.execution_id, next, at).await?;
        }
        StepResult::RetryLater { error, run_at } => {
            sqlx::query(
                "UPDATE action_executions SET status = 'pending', run_at = $1, input = COALESCE($2, input), \
                 error = $3, error_category = $4, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
                 WHERE id = $5",
            )
            .bind(run_at)
            .bind(input)
            .bind(error_json(error))
            .bind(error.category.as_str())
            .bind(params.step_id.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended("pending")).await?;
            let outcome = if error.category == ErrorCategory::Timeout {
                "timeout"
            } else {
                "failed"
            };
            end_attempt(tx, params.step_id, attempt, outcome, Some(error), at).await?;
        }
    }
    Ok(FinishOutcome::Applied)
}

/// The error a rescued step records.
pub(crate) fn worker_lost() -> StepError {
    StepError {
        category: ErrorCategory::WorkerLost,
        severity: Severity::Medium,
        retryable: true,
        message: "the worker running this step stopped answering before its lease expired".into(),
        suggestion: "nothing to do: the step was returned to its queue; if this repeats, check the workers' health".into(),
    }
}

/// Returns expired leases to their queue, or fails steps with no attempts left (and their runs).
pub(crate) async fn rescue_expired(tx: &mut Tx<'_>, limit: u32) -> StoreResult<u64> {
    #[derive(sqlx::FromRow)]
    struct Expired {
        id: Uuid,
        workspace_id: Uuid,
        flow_execution_id: Uuid,
        action_type: String,
        attempt: i32,
        max_attempts: i32,
        run_status: String,
        flow_id: Uuid,
    }
    let at = db_now(tx).await?;
    let expired = sqlx::query_as::<_, Expired>(AssertSqlSafe(format!(
        "SELECT id, workspace_id, flow_execution_id, action_type, attempt, max_attempts, \
         (SELECT e.status FROM flow_executions e WHERE e.id = action_executions.flow_execution_id) AS run_status, \
         (SELECT e.flow_id FROM flow_executions e WHERE e.id = action_executions.flow_execution_id) AS flow_id \
         FROM action_executions WHERE status = 'running' AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2 {}",
        if FOR_UPDATE.is_empty() {
            ""
        } else {
            "FOR UPDATE SKIP LOCKED"
        }
    )))
    .bind(at)
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let error = worker_lost();
    for step in &expired {
        let ended = |status| {
            [StepEvent {
                workspace: step.workspace_id,
                flow: step.flow_id,
                run: step.flow_execution_id,
                step: step.id,
                status,
                action_type: &step.action_type,
                attempt: step.attempt,
                then: None,
            }]
        };
        if step.run_status == "cancelled" {
            // Its run was cancelled while it was held: it ends cancelled, never runs again.
            end_attempt(tx, step.id.into(), step.attempt, "cancelled", None, at).await?;
            sqlx::query(
                "UPDATE action_executions SET status = 'cancelled', finished_at = $1, lease_owner = NULL, \
                 lease_token = NULL, lease_expires_at = NULL WHERE id = $2",
            )
            .bind(at)
            .bind(step.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended("cancelled")).await?;
            continue;
        }
        end_attempt(
            tx,
            step.id.into(),
            step.attempt,
            "worker_lost",
            Some(&error),
            at,
        )
        .await?;
        if step.attempt < step.max_attempts {
            sqlx::query(
                "UPDATE action_executions SET status = 'pending', run_at = $1, error = $2, error_category = 'worker_lost', \
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = $3",
            )
            .bind(at)
            .bind(error_json(&error))
            .bind(step.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended("pending")).await?;
        } else {
            sqlx::query(
                "UPDATE action_executions SET status = 'failed', error = $1, error_category = 'worker_lost', \
                 finished_at = $2, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = $3",
            )
            .bind(error_json(&error))
            .bind(at)
            .bind(step.id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            write_step_events(tx, &ended("failed")).await?;
            sqlx::query(
                "UPDATE flow_executions SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND status = 'running'",
            )
            .bind(error_json(&error))
            .bind(at)
            .bind(step.flow_execution_id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
    }
    Ok(expired.len() as u64)
}

/// Extends held leases; returns the steps taken by another worker, returned to the queue, or of
/// a cancelled run.
pub(crate) async fn heartbeat(
    tx: &mut Tx<'_>,
    held: &[(StepId, Uuid)],
    lease: std::time::Duration,
) -> StoreResult<Vec<StepId>> {
    let at = db_now(tx).await?;
    let expires = at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30));
    // Two statements whatever the number of steps held: their rows read, then the leases still
    // held renewed together. On PostgreSQL the read locks the step rows alone, in step id order
    // (the order batched step ends lock them in) and as an update would. Not their runs: a step
    // that ended may still be listed while its run's next step ends in a batch, and locking its
    // run beside it would take the run out of that order (a deadlock with the batch).

    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        lease_token: Option<Uuid>,
        status: String,
        run_status: String,
    }
    let ids: Vec<Uuid> = held.iter().map(|(step, _)| step.0).collect();
    let mut query = QueryBuilder::<Db>::new(
        "SELECT s.id, s.lease_token, s.status, e.status AS run_status \
         FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
         WHERE s.id IN (",
    );
    push_ids(&mut query, &ids);
    query.push(" ORDER BY s.id ");
    query.push(LOCK_STEPS);
    let rows: HashMap<Uuid, Row> = query
        .build_query_as::<Row>()
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|row| (row.id, row))
        .collect();
    let mut renewed = Vec::new();
    let mut lost = Vec::new();
    for (step, token) in held {
        match rows.get(&step.0) {
            Some(row) if row.status == "running" && row.lease_token == Some(*token) => {
                renewed.push(step.0);
                if row.run_status == "cancelled" {
                    lost.push(*step);
                }
            }
            // Ended: by its own worker's report (the worker may be going on with the run's next
            // step, handed to it in that report, before its map of steps in flight says so) or
            // after a rescue; either way the worker's report, not the heartbeat, settles it.
            Some(row)
                if matches!(
                    row.status.as_str(),
                    "completed" | "failed" | "timeout" | "cancelled"
                ) => {}
            // Taken by another worker, returned to the queue, or gone: stop.
            _ => lost.push(*step),
        }
    }
    if !renewed.is_empty() {
        let mut query = QueryBuilder::<Db>::new("UPDATE action_executions SET lease_expires_at = ");
        query.push_bind(expires);
        query.push(" WHERE id IN (");
        push_ids(&mut query, &renewed);
        query.build().execute(&mut **tx).await.map_err(db_error)?;
    }
    Ok(lost)
}

/// A step row as a claim returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct ClaimedRow {
    pub(crate) id: Uuid,
    pub(crate) workspace_id: Uuid,
    pub(crate) flow_execution_id: Uuid,
    pub(crate) action_id: Uuid,
    pub(crate) action_type: String,
    pub(crate) node_id: String,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
}

/// After a backend's claim: marks the runs running and gathers what the workers need from each
/// run. The attempts a claim starts are the steps' own (`attempt`, `attempt_started_at`), and
/// stay so if they end their step ([`LAST_ATTEMPT`]); [`attempt_ends`] writes the rows of those
/// that do not.
pub(crate) async fn complete_claim(
    conn: &mut Conn,
    rows: Vec<ClaimedRow>,
    lease_token: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<Vec<flowline_store::execution::ClaimedStep>> {
    #[derive(sqlx::FromRow)]
    struct RunRow {
        id: Uuid,
        flow_id: Uuid,
        flow_version: i32,
        contact_id: Option<Uuid>,
        trigger: Json<serde_json::Value>,
        input: Json<serde_json::Value>,
        step_count: i32,
        status: String,
    }
    #[derive(sqlx::FromRow)]
    struct RunVariable {
        flow_execution_id: Uuid,
        name: String,
        #[sqlx(rename = "type")]
        variable_type: String,
        value: Json<serde_json::Value>,
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // A handful of statements for the whole batch, whatever its size: each statement is a
    // round trip, and round trips, not SQL, bound a claim's cost.
    let mut runs_ids: Vec<Uuid> = rows.iter().map(|r| r.flow_execution_id).collect();
    runs_ids.sort();
    runs_ids.dedup();
    let mut query = QueryBuilder::<Db>::new(concat!(
        "SELECT id, flow_id, flow_version, contact_id, trigger, input, status, ",
        step_count!(),
        " FROM flow_executions WHERE id IN ("
    ));
    push_ids(&mut query, &runs_ids);
    let runs: HashMap<Uuid, RunRow> = query
        .build_query_as::<RunRow>()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    // A step whose run ended meanwhile (cancelled while the step was being rescued, say) is
    // not handed out: it ends cancelled here.
    let (rows, ended): (Vec<ClaimedRow>, Vec<ClaimedRow>) = rows.into_iter().partition(|r| {
        runs.get(&r.flow_execution_id)
            .is_some_and(|run| run.status == "pending" || run.status == "running")
    });
    // Every step claimed started, and those not handed out ended.
    fn event<'a>(row: &'a ClaimedRow, flow: Uuid, status: &'a str) -> StepEvent<'a> {
        StepEvent {
            workspace: row.workspace_id,
            flow,
            run: row.flow_execution_id,
            step: row.id,
            status,
            action_type: &row.action_type,
            attempt: row.attempt,
            then: None,
        }
    }
    let flow = |row: &ClaimedRow| runs.get(&row.flow_execution_id).map(|run| run.flow_id);
    let events: Vec<StepEvent> = rows
        .iter()
        .chain(&ended)
        .filter_map(|row| Some(event(row, flow(row)?, "running")))
        .chain(
            ended
                .iter()
                .filter_map(|row| Some(event(row, flow(row)?, "cancelled"))),
        )
        .collect();
    // The claim's writes return nothing: one trip to the connection where the backend can.
    let mut writes = Writes::default();
    step_events(&mut writes, &events);
    if !ended.is_empty() {
        let ids: Vec<Uuid> = ended.iter().map(|r| r.id).collect();
        let query =
            writes.statement("UPDATE action_executions SET status = 'cancelled', finished_at = ");
        query.push_bind(at).push(
            ", lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id IN (",
        );
        push_ids(query, &ids);
    }
    if rows.is_empty() {
        writes.run(conn).await?;
        return Ok(Vec::new());
    }
    let starting: Vec<Uuid> = runs
        .values()
        .filter(|r| r.status == "pending")
        .map(|r| r.id)
        .collect();
    if !starting.is_empty() {
        let query = writes.statement(
            "UPDATE flow_executions SET status = 'running', started_at = COALESCE(started_at, ",
        );
        query
            .push_bind(at)
            .push(") WHERE status = 'pending' AND id IN (");
        push_ids(query, &starting);
    }
    writes.run(conn).await?;
    // The runs' variables come with the claim, so a worker needs no read of its own. A run
    // whose only step is this one has none yet.
    let with_variables: Vec<Uuid> = runs
        .values()
        .filter(|r| r.step_count > 1)
        .map(|r| r.id)
        .collect();
    let mut variables: HashMap<Uuid, Vec<Variable>> = HashMap::new();
    if !with_variables.is_empty() {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT flow_execution_id, name, type, value FROM action_variables WHERE flow_execution_id IN (",
        );
        push_ids(&mut query, &with_variables);
        for row in query
            .build_query_as::<RunVariable>()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error)?
        {
            variables
                .entry(row.flow_execution_id)
                .or_default()
                .push(Variable {
                    name: row.name,
                    variable_type: row
                        .variable_type
                        .parse()
                        .map_err(|e| corrupt("variable type", e))?,
                    value: row.value.0,
                });
        }
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for row in rows {
        let run = runs
            .get(&row.flow_execution_id)
            .ok_or_else(|| corrupt("step", format!("run {} is missing", row.flow_execution_id)))?;
        claimed.push(flowline_store::execution::ClaimedStep {
            id: row.id.into(),
            workspace_id: row.workspace_id.into(),
            execution_id: row.flow_execution_id.into(),
            flow_id: run.flow_id.into(),
            flow_version: run.flow_version,
            contact_id: run.contact_id.map(Into::into),
            trigger: run.trigger.0.clone(),
            input: run.input.0.clone(),
            step_count: run.step_count,
            action_id: row.action_id.into(),
            node_id: row.node_id,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            lease_token,
            variables: variables
                .get(&row.flow_execution_id)
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(claimed)
}

/// `id1, id2, …)` as bound parameters, closing an `IN (` list; padded with `NULL`s (which match
/// nothing) to [`padded`] entries, so lists of many lengths share one statement text.
pub(crate) fn push_ids(query: &mut QueryBuilder<Db>, ids: &[Uuid]) {
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    for _ in ids.len()..padded(ids.len()) {
        list.push_bind(None::<Uuid>);
    }
    query.push(")");
}

/// Statements that return nothing, sent together in the order they were added: on SQLite as
/// one text, one trip to the connection's thread for all of them instead of one each; on
/// PostgreSQL one by one, as its extended protocol takes one statement per message.
#[derive(Default)]
pub(crate) struct Writes {
    texts: Vec<QueryBuilder<Db>>,
}

impl Writes {
    /// Begins the next statement with `sql`; its builder takes the rest of it.
    pub(crate) fn statement(&mut self, sql: &str) -> &mut QueryBuilder<Db> {
        if MANY_STATEMENTS_PER_TEXT && !self.texts.is_empty() {
            let last = self.texts.len() - 1;
            self.texts[last].push("; ");
        } else {
            self.texts.push(QueryBuilder::new(""));
        }
        let last = self.texts.len() - 1;
        self.texts[last].push(sql)
    }

    /// Runs the statements.
    pub(crate) async fn run(self, conn: &mut Conn) -> StoreResult<()> {
        for mut text in self.texts {
            text.build().execute(&mut *conn).await.map_err(db_error)?;
        }
        Ok(())
    }
}

/// The rows a multi-row statement is written for: `rows` rounded up to a power of two. Batches
/// of every size then share a few statement texts, which each connection prepares (and
/// PostgreSQL plans) once and reuses, instead of parsing a new text, often thousands of
/// characters long, for every batch.
pub(crate) fn padded(rows: usize) -> usize {
    rows.max(1).next_power_of_two()
}

/// `rows`, then `None`s up to [`padded`] rows: a padding row binds a `NULL` of each column's
/// type, and statements skip rows whose first column is `NULL` (an `UPDATE … FROM` by joining
/// on it, an insert with a `WHERE` on it, as [`rows_at`] writes).
pub(crate) fn padded_rows<T>(
    rows: impl ExactSizeIterator<Item = T>,
) -> impl Iterator<Item = Option<T>> {
    let padding = padded(rows.len()) - rows.len();
    rows.map(Some)
        .chain(std::iter::repeat_with(|| None).take(padding))
}

/// Closes padded `VALUES` begun with `… FROM (` as `v`, beside `t.at`: `at`, bound once for the
/// whole statement instead of in every row's columns that take it. Each bound value is a copy
/// made, sent to the connection and freed, and a step's rows took the time of its end seven
/// times over.
pub(crate) fn rows_at(query: &mut QueryBuilder<Db>, at: DateTime<Utc>) {
    query
        .push(") AS v, (SELECT ")
        .push_bind(at)
        .push(" AS at) AS t WHERE v.column1 IS NOT NULL");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_padded_to_a_power_of_two_with_typed_nulls() {
        assert_eq!(
            (0..=9).map(padded).collect::<Vec<_>>(),
            vec![1, 1, 2, 4, 4, 8, 8, 8, 8, 16]
        );
        let rows: Vec<Option<&i32>> = padded_rows([1, 2, 3, 4, 5].iter()).collect();
        assert_eq!(
            rows,
            vec![
                Some(&1),
                Some(&2),
                Some(&3),
                Some(&4),
                Some(&5),
                None,
                None,
                None
            ]
        );
        // Lists of 5 to 8 ids are one statement text.
        let text = |n: usize| {
            let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
            let mut query = QueryBuilder::<Db>::new("SELECT 1 WHERE x IN (");
            push_ids(&mut query, &ids);
            query.sql().to_owned()
        };
        assert_eq!(text(5), text(8));
        assert_ne!(text(8), text(9));
    }
}
