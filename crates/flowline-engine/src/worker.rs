//! Claiming loops, step runs, heartbeats and the rescuer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowline_core::id::{ExecutionId, StepId, WorkspaceId};
use flowline_core::status::{ErrorCategory, Queue, StepStatus};
use flowline_store::StoreError;
use flowline_store::crm::RunPlanner;
use flowline_store::execution::{
    ClaimParams, ClaimedStep, FinishOutcome, FinishStep, FlowVersion, HandOn, HandedOn, Next,
    StepResult, Variable, VersionAction,
};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, JoinSet};
use uuid::Uuid;

use crate::executor::{Runner, StepContext, StepOutput};
use crate::failure::Failure;
use crate::scope::Scope;
use crate::template::{Deferred, Renderer, json_size};
use crate::walker::{self, Walk};
use crate::{Engine, internal};

fn claim_params(engine: &Engine, queue: Queue, limit: u32) -> ClaimParams {
    ClaimParams {
        queue,
        limit: limit.max(1),
        owner: engine.config.worker_id.clone(),
        lease: engine.config.lease,
        per_workspace_limit: engine.config.per_workspace_batch,
    }
}

pub(crate) async fn drain(engine: &Arc<Engine>) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let mut ran = 0;
        for &queue in Queue::ALL {
            let claimed = engine
                .store
                .claim_steps(&claim_params(engine, queue, engine.config.claim_batch))
                .await?;
            ran += claimed.len();
            let mut tasks = JoinSet::new();
            for step in claimed {
                let engine = engine.clone();
                tasks.spawn(async move { run_step(&engine, step, None).await });
            }
            while let Some(joined) = tasks.join_next().await {
                joined.map_err(|e| {
                    StoreError::Backend(format!("a step task failed: {e}").into())
                })??;
            }
        }
        if ran == 0 {
            return Ok(total);
        }
        total += ran;
    }
}

/// Steps running in this process: their claims (with lease tokens), and how to stop them.
type InFlight = Arc<Mutex<HashMap<StepId, (Claim, AbortHandle)>>>;

/// What the heartbeat needs of a step in flight: whose it is and the lease it holds.
#[derive(Clone, Copy)]
struct Claim {
    workspace_id: WorkspaceId,
    execution_id: ExecutionId,
    lease_token: Uuid,
}

impl From<&ClaimedStep> for Claim {
    fn from(step: &ClaimedStep) -> Self {
        Self {
            workspace_id: step.workspace_id,
            execution_id: step.execution_id,
            lease_token: step.lease_token,
        }
    }
}

/// Removes a step's entry when its task ends, even by panic, so a dead task's lease is no longer
/// renewed and the rescuer can return the step to its queue. Only the entry of this claim (same
/// lease token) is removed: a newer claim of the same step keeps its own.
struct Tracked {
    in_flight: InFlight,
    id: StepId,
    token: Uuid,
}

impl Tracked {
    /// Moves the in-flight entry (and its abort handle) from this step to the run's next one,
    /// handed on to this task, so the heartbeat renews the new lease. `false` when the entry is
    /// gone: the heartbeat has stopped this task's step and is about to abort it.
    fn hand_on(&mut self, next: &ClaimedStep) -> bool {
        let mut map = match self.in_flight.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let held = map
            .get(&self.id)
            .is_some_and(|(step, _)| step.lease_token == self.token);
        if !held {
            return false;
        }
        let Some((_, handle)) = map.remove(&self.id) else {
            return false;
        };
        map.insert(next.id, (Claim::from(next), handle));
        drop(map);
        self.id = next.id;
        self.token = next.lease_token;
        true
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Ok(mut map) = self.in_flight.lock()
            && map
                .get(&self.id)
                .is_some_and(|(step, _)| step.lease_token == self.token)
        {
            map.remove(&self.id);
        }
    }
}

/// Resolves when shutdown is asked for, or when whoever could ask is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

pub(crate) fn spawn(
    engine: &Arc<Engine>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let in_flight: InFlight = Arc::default();
    let queues: Vec<_> = Queue::ALL
        .iter()
        .map(|&queue| {
            tokio::spawn(queue_loop(
                engine.clone(),
                queue,
                in_flight.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    // Leases are renewed until the last step in flight has finished, not merely until shutdown
    // is asked for: a step still draining must not lose its lease and run twice.
    let (drained, queues_drained) = watch::channel(false);
    let mut handles = vec![
        tokio::spawn(async move {
            for queue in queues {
                let _ = queue.await;
            }
            let _ = drained.send(true);
        }),
        tokio::spawn(heartbeat_loop(engine.clone(), in_flight, queues_drained)),
        tokio::spawn(rescue_loop(engine.clone(), shutdown.clone())),
        tokio::spawn(schedule_loop(engine.clone(), shutdown.clone())),
        tokio::spawn(retention_loop(engine.clone(), shutdown.clone())),
    ];
    let relay = engine.clone();
    handles.push(tokio::spawn(async move {
        relay.store.relay_wakeups(shutdown).await
    }));
    handles
}

async fn queue_loop(
    engine: Arc<Engine>,
    queue: Queue,
    in_flight: InFlight,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = engine
        .config
        .concurrency
        .get(&queue)
        .copied()
        .unwrap_or(8)
        .max(1);
    let permits = Arc::new(Semaphore::new(limit));
    let mut work = engine.store.subscribe_work();
    let due = engine.due(queue).clone();
    let mut tasks = JoinSet::new();
    // While busy, claim only once a quarter of the slots is free: claims of one step at a time
    // would always take the oldest step, whichever workspace it is, and undo the fair ranking.
    let refill = (limit / 4).max(1);
    // Whether the queue may hold due steps not claimed yet: after a claim that took any, a
    // signal for this queue, or the slow poll. A claim that came back empty clears it, so steps
    // ending with nothing queued, and work for other queues, do not send this loop to claim in
    // vain. A short claim does not: with many workspaces a claim takes each one's share, and a
    // busy workspace's steps beyond its share wait for the next claim, not for the poll.
    let mut more = true;
    let mut seen = work.borrow_and_update().of(queue);
    // The slow poll keeps its own time, so a busy loop's other wake-ups do not put it off: a
    // step coming due that nothing here wakes for (a retry put off by a process that has
    // stopped since) is claimed within a poll interval.
    let mut next_poll = tokio::time::Instant::now() + engine.config.poll_interval;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let free = permits.available_permits();
        if more && (free >= refill || free == limit) {
            let batch = engine.config.claim_batch.min(free as u32);
            // Read before claiming: work signalled while the claim runs is claimed next time.
            seen = work.borrow_and_update().of(queue);
            let claimed = engine
                .store
                .claim_steps(&claim_params(&engine, queue, batch))
                .await;
            more = claimed.as_ref().map_or(true, |c| !c.is_empty());
            match claimed {
                Ok(claimed) if !claimed.is_empty() => {
                    for step in claimed {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let mut tracked = Tracked {
                            in_flight: in_flight.clone(),
                            id: step.id,
                            token: step.lease_token,
                        };
                        let (entry_id, entry) = (step.id, Claim::from(&step));
                        let engine = engine.clone();
                        // Registered under the lock the task's cleanup takes, so the entry exists
                        // before the task can remove it.
                        let mut map = match in_flight.lock() {
                            Ok(map) => map,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        let shutdown = shutdown.clone();
                        let handle = tasks.spawn(async move {
                            let mut step = step;
                            let mut streak = 0;
                            loop {
                                let id = step.id;
                                // The run goes on here, in this slot, for a while: its next step
                                // comes back claimed with this one's end, with no claim and no
                                // wake-up between. Then it goes back through the fair queue.
                                let offer = (streak < engine.config.hand_on_steps
                                    && !*shutdown.borrow())
                                .then(|| HandOn {
                                    queue,
                                    owner: engine.config.worker_id.clone(),
                                    lease: engine.config.lease,
                                });
                                match run_step(&engine, step, offer).await {
                                    // Unless being stopped (lease lost, run cancelled): the
                                    // step handed on is then left to its lease, and the rescuer.
                                    Ok(Some(next)) if tracked.hand_on(&next) => {
                                        engine.metrics().inc(
                                            "flowline_steps_handed_on_total",
                                            "Steps handed, claimed, to the worker that ended their run's step before.",
                                            &[("queue", queue.as_str())],
                                        );
                                        step = next;
                                        streak += 1;
                                    }
                                    Ok(_) => break,
                                    Err(error) => {
                                        tracing::warn!(%error, step = %id, "could not record a step's end; its lease will expire and it will be retried");
                                        break;
                                    }
                                }
                            }
                            drop(tracked);
                            drop(permit);
                        });
                        map.insert(entry_id, (entry, handle));
                    }
                    continue;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, %queue, "claiming failed; retrying after the poll interval")
                }
            }
        }
        tokio::select! {
            changed = work.changed() => {
                if changed.is_err() || work.borrow_and_update().of(queue) != seen {
                    more = true;
                }
            }
            _ = tokio::time::sleep_until(next_poll) => {
                more = true;
                next_poll = tokio::time::Instant::now() + engine.config.poll_interval;
            }
            _ = due.notified() => more = true,
            _ = stopping(&mut shutdown) => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Renews the leases of steps in flight; stops those whose lease was lost or run cancelled.
async fn heartbeat_loop(
    engine: Arc<Engine>,
    in_flight: InFlight,
    mut drained: watch::Receiver<bool>,
) {
    let every = engine.config.lease / 3;
    let mut next = tokio::time::Instant::now() + every;
    // A cancelled run's running step is stopped at once: a cancel anywhere brings the next
    // round forward (other work signals do not, nor do they put the regular rounds off).
    let mut work = engine.store.subscribe_work();
    let mut cancels = work.borrow_and_update().cancels();
    let mut signalled = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => next = tokio::time::Instant::now() + every,
            changed = work.changed(), if signalled => {
                signalled = changed.is_ok();
                let now = work.borrow_and_update().cancels();
                if now == cancels {
                    continue;
                }
                cancels = now;
            }
            _ = stopping(&mut drained) => break,
        }
        let held: Vec<(StepId, Uuid)> = match in_flight.lock() {
            Ok(map) => map
                .iter()
                .map(|(id, (claim, _))| (*id, claim.lease_token))
                .collect(),
            Err(_) => continue,
        };
        if held.is_empty() {
            continue;
        }
        let lost = match engine
            .store
            .heartbeat_steps(&held, engine.config.lease)
            .await
        {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "renewing leases failed");
                continue;
            }
        };
        for id in lost {
            let Some(&(_, token)) = held.iter().find(|(held_id, _)| *held_id == id) else {
                continue;
            };
            // Only the claim the heartbeat was about: the step may have been claimed anew since.
            let stopped = in_flight.lock().ok().and_then(|mut map| {
                if map
                    .get(&id)
                    .is_some_and(|(step, _)| step.lease_token == token)
                {
                    map.remove(&id)
                } else {
                    None
                }
            });
            if let Some((claim, handle)) = stopped {
                handle.abort();
                // A cancelled run's step ends `cancelled` (the store sees the cancel and writes
                // nothing else); a lost lease fails the guard and writes nothing.
                let failure = Failure::new(
                    ErrorCategory::Conflict,
                    "the run was cancelled",
                    "nothing to do",
                );
                let _ = engine
                    .store
                    .finish_step(FinishStep {
                        workspace_id: claim.workspace_id,
                        execution_id: claim.execution_id,
                        step_id: id,
                        lease_token: claim.lease_token,
                        input: None,
                        result: StepResult::Failed {
                            status: StepStatus::Failed,
                            error: failure.error.clone(),
                            next: Next::Fail(failure.error),
                        },
                        hand_on: None,
                    })
                    .await;
            }
        }
    }
}

async fn schedule_loop(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        match engine.run_due_schedules().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(started = n, "started scheduled runs"),
            Err(error) => tracing::warn!(%error, "running due schedules failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopping(&mut shutdown) => break,
        }
    }
}

async fn rescue_loop(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(engine.config.rescue_interval) => {}
            _ = stopping(&mut shutdown) => break,
        }
        match engine.store.rescue_expired(500).await {
            Ok(0) => {}
            Ok(n) => {
                engine.metrics().add(
                    "flowline_lease_rescues_total",
                    "Steps whose lease expired and were returned to their queue (or failed).",
                    &[],
                    n,
                );
                tracing::info!(
                    rescued = n,
                    "returned steps with expired leases to their queues"
                )
            }
            Err(error) => tracing::warn!(%error, "rescuing expired leases failed"),
        }
    }
}

/// Prunes finished runs past their workspace's retention now and then, in small batches, each
/// its own short transaction, so workers never wait on it.
async fn retention_loop(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(engine.config.retention_interval) => {}
            _ = stopping(&mut shutdown) => break,
        }
        match engine.prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "pruned finished runs past their retention"),
            Err(error) => tracing::warn!(%error, "pruning finished runs failed"),
        }
    }
}

/// Runs one claimed step and records how it ended. With `hand_on`, the run's next step may come
/// back claimed for this worker to run at once.
pub(crate) async fn run_step(
    engine: &Arc<Engine>,
    step: ClaimedStep,
    hand_on: Option<HandOn>,
) -> Result<Option<ClaimedStep>, StoreError> {
    use tracing::Instrument;
    // Every line logged while the step runs names its workspace, flow, run and step.
    let span = tracing::info_span!(
        "step",
        workspace = %step.workspace_id,
        flow = %step.flow_id,
        execution = %step.execution_id,
        step = %step.id,
        attempt = step.attempt,
    );
    run_step_in(engine, step, hand_on).instrument(span).await
}

async fn run_step_in(
    engine: &Arc<Engine>,
    step: ClaimedStep,
    hand_on: Option<HandOn>,
) -> Result<Option<ClaimedStep>, StoreError> {
    tracing::debug!("step started");
    let began = std::time::Instant::now();
    let version = engine
        .version(step.workspace_id, step.flow_id, step.flow_version)
        .await?;
    let mut step = step;
    let mut variables = std::mem::take(&mut step.variables);
    // The contact is read fresh at every step, so a step sees what earlier steps changed.
    let contact = match step.contact_id {
        Some(id) => engine.store.contact_context(step.workspace_id, id).await?,
        None => None,
    };
    let data = Scope::of_step(&step, &contact, &variables);
    let renderer = Renderer::new(&data);
    let Some(action) = version.action(step.action_id) else {
        let failure = internal(format!(
            "version {} of the flow has no action {}",
            step.flow_version, step.action_id
        ));
        let result = StepResult::Failed {
            status: StepStatus::Failed,
            error: failure.error.clone(),
            next: Next::Fail(failure.error),
        };
        count(engine, "unknown", &result, began);
        return finish(engine, step, None, result, None, variables).await;
    };
    engine.metrics().inc(
        "flowline_steps_started_total",
        "Step attempts started, by action type.",
        &[("action_type", action.action_type.as_str())],
    );
    // A script's own deadline is kept by the sandbox (see `RunJavascript`); the step's
    // timeout is only a backstop past the longest deadline, the wait for a sandbox and its
    // watchdog.
    let timeout = action.timeout_ms.map_or(
        if action.action_type == flowline_core::action::ActionType::RunJavascript {
            engine.config.javascript_timeout_cap + Duration::from_secs(5)
        } else {
            engine.config.default_timeout
        },
        |ms| Duration::from_millis(ms.max(1) as u64),
    );
    let (outcome, shown) = match engine.executors().get(action.action_type) {
        None => (
            Err(Failure::new(
                ErrorCategory::Validation,
                format!(
                    "this Flowline cannot run `{}` actions yet",
                    action.action_type
                ),
                "disable the action or upgrade Flowline",
            )),
            None,
        ),
        Some(runner) => {
            let context = StepContext {
                step_id: step.id,
                workspace_id: step.workspace_id,
                execution_id: step.execution_id,
                attempt: step.attempt,
                contact_id: step.contact_id,
                config: &action.action_config,
                renderer: &renderer,
                data: &data,
                secrets: &**engine,
                shown: std::sync::OnceLock::new(),
            };
            let outcome = match runner {
                Runner::Plain(executor) => {
                    tokio::time::timeout(timeout, executor.execute(&context))
                        .await
                        .unwrap_or_else(|_| Err(Failure::timeout(timeout)))
                }
                Runner::Internal(executor) => {
                    let planner: Arc<dyn RunPlanner> = engine.clone();
                    let begun = engine
                        .store
                        .begin_step(
                            step.workspace_id,
                            step.execution_id,
                            step.id,
                            step.lease_token,
                            &planner,
                        )
                        .await;
                    match begun {
                        Ok(None) => {
                            tracing::warn!(step = %step.id, "the step's lease was lost before it ran");
                            return Ok(None);
                        }
                        Err(error) => Err(internal(format!(
                            "the step's transaction could not begin: {error}"
                        ))),
                        Ok(Some(mut tx)) => {
                            let applied = tokio::time::timeout(
                                timeout,
                                executor.apply(&context, tx.as_mut()),
                            )
                            .await
                            .unwrap_or_else(|_| Err(Failure::timeout(timeout)));
                            match applied {
                                // The change and the step's end commit together.
                                Ok(output) => {
                                    let contact = match step.contact_id {
                                        Some(id) => tx.contact_context(id).await?,
                                        None => None,
                                    };
                                    let (input, result) = completed(
                                        engine,
                                        &step,
                                        &version,
                                        action,
                                        &contact,
                                        &mut variables,
                                        output,
                                    );
                                    count(engine, action.action_type.as_str(), &result, began);
                                    // The step's own transaction ends alone: its next step is
                                    // queued, not handed on.
                                    tx.finish(report(&step, input, result, None)).await?;
                                    return Ok(None);
                                }
                                // Nothing of it is written; the failure is recorded on its own.
                                Err(failure) => Err(failure),
                            }
                        }
                    }
                }
            };
            (outcome, context.shown.into_inner())
        }
    };
    // A failed attempt's record shows its input too: as the executor rendered it, else the
    // config rendered over the run's context (without secrets, which that context lacks: a
    // config that names one is not shown).
    let failed_input = || {
        shown.or_else(|| {
            renderer
                .render_value("actionConfig", &action.action_config)
                .ok()
        })
    };
    let (input, result) = match outcome {
        Ok(output) => completed(
            engine,
            &step,
            &version,
            action,
            &contact,
            &mut variables,
            output,
        ),
        Err(failure) if failure.error.retryable && step.attempt < step.max_attempts => {
            let delay = engine.config.retry_for(action.action_type).delay(
                action.retry.as_ref(),
                step.attempt,
                failure.retry_after,
            );
            let run_at = chrono::Utc::now()
                + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
            (
                failed_input(),
                StepResult::RetryLater {
                    error: failure.error,
                    run_at,
                },
            )
        }
        Err(failure) => {
            let status = if failure.error.category == ErrorCategory::Timeout {
                StepStatus::Timeout
            } else {
                StepStatus::Failed
            };
            let next = match walker::after_failure(&version, action, &renderer) {
                Some(Ok(Walk::Run(next))) => Next::Step(engine.new_step(next)),
                Some(Ok(Walk::Done)) => Next::Complete,
                Some(Err(walk_failure)) => Next::Fail(walk_failure.error),
                None => Next::Fail(failure.error.clone()),
            };
            (
                failed_input(),
                StepResult::Failed {
                    status,
                    error: failure.error,
                    next: limit(engine, &step, next),
                },
            )
        }
    };
    count(engine, action.action_type.as_str(), &result, began);
    let retry_at = match &result {
        StepResult::RetryLater { run_at, .. } => Some(*run_at),
        _ => None,
    };
    let finished = finish(engine, step, input, result, hand_on, variables).await;
    if let (Some(at), Ok(None)) = (retry_at, &finished) {
        engine.wake_at(action.action_type.category().queue(), at);
    }
    finished
}

/// Counts an attempt's end in the engine's metrics.
fn count(engine: &Engine, action_type: &str, result: &StepResult, began: std::time::Instant) {
    let metrics = engine.metrics();
    let status = match result {
        StepResult::Completed { .. } => "completed",
        StepResult::Failed { status, .. } => status.as_str(),
        StepResult::RetryLater { .. } => "retry",
    };
    metrics.inc(
        "flowline_steps_finished_total",
        "Step attempts ended, by action type and how (completed, failed, timeout, retry).",
        &[("action_type", action_type), ("status", status)],
    );
    if status == "retry" {
        metrics.inc(
            "flowline_step_retries_total",
            "Step attempts that failed and were scheduled again.",
            &[("action_type", action_type)],
        );
    }
    metrics.observe(
        "flowline_step_duration_seconds",
        "How long step attempts ran, by action type.",
        &[("action_type", action_type)],
        began.elapsed().as_secs_f64(),
    );
}

/// A successful attempt's report: its variables join the run's, and the next step is chosen
/// over the context as it is now.
fn completed(
    engine: &Arc<Engine>,
    step: &ClaimedStep,
    version: &FlowVersion,
    action: &VersionAction,
    contact: &Option<Value>,
    variables: &mut Vec<flowline_store::execution::Variable>,
    output: StepOutput,
) -> (Option<Value>, StepResult) {
    for written in &output.variables {
        variables.retain(|v| v.name != written.name);
        variables.push(written.clone());
    }
    let after = Deferred::new(|| Renderer::new(&Scope::of_step(step, contact, variables)));
    let next = match walker::after_success(version, action, &after) {
        Ok(Walk::Run(next)) => Next::Step(engine.new_step(next)),
        Ok(Walk::Done) => Next::Complete,
        Err(failure) => Next::Fail(failure.error),
    };
    (
        output.input,
        StepResult::Completed {
            output: capped(output.output),
            variables: output.variables,
            next: limit(engine, step, next),
        },
    )
}

/// The most bytes of a step's output kept, as JSON.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// An output over [`MAX_OUTPUT_BYTES`] is replaced by a marker with its size and a preview.
fn capped(output: Value) -> Value {
    if json_size(&output) <= MAX_OUTPUT_BYTES {
        return output;
    }
    let text = output.to_string();
    let mut end = 1024;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    json!({"truncated": true, "bytes": text.len(), "preview": &text[..end]})
}

fn report(
    step: &ClaimedStep,
    input: Option<Value>,
    result: StepResult,
    hand_on: Option<HandOn>,
) -> FinishStep {
    FinishStep {
        workspace_id: step.workspace_id,
        execution_id: step.execution_id,
        step_id: step.id,
        lease_token: step.lease_token,
        input,
        result,
        hand_on,
    }
}

/// The run's next step as handed on with `step`'s end: what a claim would have returned, from
/// what this worker already holds (the run's variables are those it ended the step with).
fn handed_on(
    step: ClaimedStep,
    result: &StepResult,
    variables: Vec<Variable>,
    next: HandedOn,
) -> Option<ClaimedStep> {
    let (StepResult::Completed {
        next: Next::Step(new),
        ..
    }
    | StepResult::Failed {
        next: Next::Step(new),
        ..
    }) = result
    else {
        return None;
    };
    Some(ClaimedStep {
        id: next.step_id,
        workspace_id: step.workspace_id,
        execution_id: step.execution_id,
        flow_id: step.flow_id,
        flow_version: step.flow_version,
        contact_id: step.contact_id,
        trigger: step.trigger,
        input: step.input,
        step_count: step.step_count + 1,
        action_id: new.action_id,
        node_id: new.node_id.clone(),
        attempt: 1,
        max_attempts: new.max_attempts.max(1),
        lease_token: next.lease_token,
        variables,
    })
}

/// A run that would queue more steps than its limit fails instead.
fn limit(engine: &Engine, step: &ClaimedStep, next: Next) -> Next {
    match next {
        Next::Step(_) if step.step_count >= engine.config.step_limit => Next::Fail(
            Failure::new(
                ErrorCategory::Validation,
                format!("the run reached its limit of {} steps", engine.config.step_limit),
                "check the flow for a loop that never ends: give its edge a condition that turns false",
            )
            .error,
        ),
        other => other,
    }
}

async fn finish(
    engine: &Arc<Engine>,
    step: ClaimedStep,
    input: Option<Value>,
    result: StepResult,
    hand_on: Option<HandOn>,
    variables: Vec<Variable>,
) -> Result<Option<ClaimedStep>, StoreError> {
    let report = Arc::new(report(&step, input, result, hand_on));
    // A passing database fault must not throw away a finished step's result: the report is
    // retried (it is guarded by the lease token, so a report that did commit cannot apply twice)
    // while the heartbeat keeps the lease.
    let mut wait = Duration::from_millis(100);
    let mut tries = 0;
    let outcome = loop {
        match engine.store.finish_shared(report.clone()).await {
            Ok(outcome) => break outcome,
            Err(error) if tries < 6 => {
                tracing::warn!(%error, step = %step.id, "recording a step's end failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
                tries += 1;
            }
            Err(error) => return Err(error),
        }
    };
    match outcome {
        FinishOutcome::LeaseLost => {
            tracing::warn!(step = %step.id, "the step's lease was lost before it finished; its result was discarded");
            Ok(None)
        }
        FinishOutcome::HandedOn(next) => Ok(handed_on(step, &report.result, variables, next)),
        FinishOutcome::Applied | FinishOutcome::Cancelled => Ok(None),
    }
}
