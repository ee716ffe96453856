//! The queue's cases: leases, guards, rescue, fairness, heartbeats, cancellation.

use std::time::Duration;

use flowline_core::action::ActionType;
use flowline_core::id::WorkspaceId;
use flowline_core::status::{
    ErrorCategory, Queue, Severity, StepStatus, TriggerKind, VariableType,
};
use flowline_store::Store;
use flowline_store::execution::{
    ClaimParams, ClaimedStep, FinishOutcome, FinishStep, HandOn, HandedOn, NewExecution, NewStep,
    Next, StepError, StepResult, Variable,
};
use flowline_store::flow::{Flow, NewAction};
use flowline_store::page::PageRequest;
use flowline_store::tenancy::Actor;
use serde_json::json;
use uuid::Uuid;

use crate::fixtures::workspace_with_flow;

fn actor() -> Actor {
    Actor::system("test")
}

/// A published flow whose `start` node sets a variable and whose `next` node sets another.
/// A run's events once at least `steps` of them are step events. On PostgreSQL an event is read
/// once every transaction that began before its own has ended (the stream's order), and other
/// tests' transactions share the cluster: the read is repeated until they have.
async fn settled_events(
    store: &dyn Store,
    w: WorkspaceId,
    run: flowline_core::id::ExecutionId,
    steps: usize,
) -> Vec<flowline_store::stats::RunEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = store
            .events_after(w, Default::default(), None, Some(run), 100)
            .await
            .unwrap();
        let settled = events.iter().filter(|e| e.kind == "step.status").count() >= steps;
        if settled || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::task::yield_now().await;
    }
}

/// A step's attempts as (attempt, outcome).
fn outcomes(attempts: &[flowline_store::execution::Attempt]) -> Vec<(i32, Option<&str>)> {
    attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_deref()))
        .collect()
}

/// Asserts a one-step run's step events, in order, as (status, attempt).
async fn assert_story(
    store: &dyn Store,
    w: WorkspaceId,
    run: flowline_core::id::ExecutionId,
    expected: &[(&str, i32)],
) {
    let events = settled_events(store, w, run, expected.len()).await;
    let steps: Vec<_> = events.iter().filter(|e| e.kind == "step.status").collect();
    assert!(
        steps
            .windows(2)
            .all(|pair| pair[0].step_id == pair[1].step_id)
    );
    let story: Vec<(&str, i32)> = steps
        .iter()
        .map(|e| (e.status.as_str(), e.attempt.unwrap()))
        .collect();
    assert_eq!(story, expected);
}

async fn published(store: &dyn Store, name: &str) -> (WorkspaceId, Flow) {
    let (created, flow) = workspace_with_flow(store, name).await;
    let w = created.workspace.id;
    for node in ["start", "next"] {
        store
            .create_action(
                w,
                &actor(),
                NewAction {
                    flow_id: flow.id,
                    node_id: node.into(),
                    action_type: ActionType::SetVariable,
                    action_config: json!({"name": node, "type": "string", "value": node}),
                    name: None,
                    position: None,
                    enabled: true,
                    retry: None,
                    timeout_ms: None,
                },
            )
            .await
            .unwrap();
    }
    let flow = store.publish_flow(w, &actor(), flow.id).await.unwrap();
    assert_eq!(flow.version, 1);
    (w, flow)
}

/// A run of `flow` from its `start` node, as the engine would plan it.
async fn new_run(
    store: &dyn Store,
    w: WorkspaceId,
    flow: &Flow,
    trigger: serde_json::Value,
) -> NewExecution {
    let version = store
        .get_flow_version(w, flow.id, flow.version)
        .await
        .unwrap();
    let first = version
        .actions
        .iter()
        .find(|a| a.node_id == "start")
        .unwrap();
    NewExecution {
        flow_id: flow.id,
        flow_version: flow.version,
        contact_id: None,
        trigger_kind: TriggerKind::Manual,
        trigger,
        input: json!({}),
        first_step: Some(NewStep {
            action_id: first.id,
            action_type: first.action_type,
            node_id: first.node_id.clone(),
            max_attempts: 3,
        }),
        dedupe_key: None,
        depth: 0,
    }
}

async fn run(
    store: &dyn Store,
    w: WorkspaceId,
    flow: &Flow,
    max_attempts: i32,
) -> flowline_store::execution::Execution {
    let mut new = new_run(store, w, flow, json!({})).await;
    if let Some(step) = &mut new.first_step {
        step.max_attempts = max_attempts;
    }
    store.start_execution(w, new).await.unwrap().execution
}

fn claim(limit: u32, lease: Duration) -> ClaimParams {
    ClaimParams {
        queue: Queue::Basic,
        limit,
        owner: "test".into(),
        lease,
        per_workspace_limit: 10,
    }
}

fn done(step: &ClaimedStep, token: Uuid, result: StepResult) -> FinishStep {
    FinishStep {
        workspace_id: step.workspace_id,
        execution_id: step.execution_id,
        step_id: step.id,
        lease_token: token,
        input: Some(json!({"rendered": true})),
        result,
        hand_on: None,
    }
}

fn completed(next: Next) -> StepResult {
    StepResult::Completed {
        output: json!({"ok": true}),
        variables: vec![Variable {
            name: "x".into(),
            variable_type: VariableType::Number,
            value: json!(1),
        }],
        next,
    }
}

/// A step is held by one claimer at a time, and only its lease token can finish it, once.
pub async fn a_claimed_step_is_leased_once_and_only_its_token_finishes_it(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    let claimed = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let step = &claimed[0];
    assert_eq!(
        (step.execution_id, step.attempt, step.max_attempts),
        (execution.id, 1, 3)
    );
    assert!(
        store
            .claim_steps(&claim(10, Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty(),
        "held once"
    );
    let stale = store
        .finish_step(done(step, Uuid::now_v7(), completed(Next::Complete)))
        .await
        .unwrap();
    assert_eq!(stale, FinishOutcome::LeaseLost);
    assert_eq!(
        store
            .finish_step(done(step, step.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Applied
    );
    assert_eq!(
        store
            .finish_step(done(step, step.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::LeaseLost
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Completed
    );
    assert_eq!(detail.steps[0].status, StepStatus::Completed);
    assert_eq!(detail.steps[0].input, Some(json!({"rendered": true})));
    assert_eq!(detail.steps[0].attempts.len(), 1);
    assert_eq!(detail.variables.len(), 1, "the variable was written once");
}

/// Completing a step writes its variables and queues the next step in the same transaction.
pub async fn completion_writes_variables_and_the_next_step_together(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    let version = store.get_flow_version(w, flow.id, 1).await.unwrap();
    let next = version
        .actions
        .iter()
        .find(|a| a.node_id == "next")
        .unwrap();
    let step = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap()
        .remove(0);
    let next_step = NewStep {
        action_id: next.id,
        action_type: next.action_type,
        node_id: "next".into(),
        max_attempts: 2,
    };
    store
        .finish_step(done(
            &step,
            step.lease_token,
            completed(Next::Step(next_step)),
        ))
        .await
        .unwrap();
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Running
    );
    assert_eq!(detail.execution.step_count, 2);
    assert_eq!(detail.steps.len(), 2);
    assert_eq!(detail.steps[1].status, StepStatus::Pending);
    assert_eq!(detail.steps[1].max_attempts, 2);
    assert_eq!(
        store.execution_variables(w, execution.id).await.unwrap()[0].value,
        json!(1)
    );
    let second = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].step_count, 2);
    let history = store
        .list_action_executions(w, next.id, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1);
}

/// An expired lease is rescued as a lost attempt; the old holder can no longer finish.
pub async fn an_expired_lease_is_rescued_and_its_old_holder_is_refused(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    let lost = store
        .claim_steps(&claim(10, Duration::ZERO))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[0].status, StepStatus::Pending);
    assert_eq!(
        detail.steps[0].error.as_ref().unwrap().category,
        ErrorCategory::WorkerLost
    );
    assert_eq!(
        detail.steps[0].attempts[0].outcome.as_deref(),
        Some("worker_lost")
    );
    let again = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempt, 2);
    assert_ne!(again.lease_token, lost.lease_token);
    // The lost attempt has its row; the second is in progress, started by this claim.
    let detail = store.get_execution(w, execution.id).await.unwrap();
    let attempts = &detail.steps[0].attempts;
    assert_eq!(
        outcomes(attempts),
        vec![(1, Some("worker_lost")), (2, None)]
    );
    assert_eq!(Some(attempts[0].started_at), detail.steps[0].started_at);
    assert!(attempts[1].started_at >= attempts[0].finished_at.unwrap());
    let second_start = attempts[1].started_at;
    assert_eq!(
        store
            .finish_step(done(&lost, lost.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::LeaseLost
    );
    assert_eq!(
        store
            .finish_step(done(&again, again.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Applied
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    let attempts = &detail.steps[0].attempts;
    assert_eq!(
        outcomes(attempts),
        vec![(1, Some("worker_lost")), (2, Some("completed"))]
    );
    assert_eq!(attempts[1].started_at, second_start);
    assert_story(
        store,
        w,
        execution.id,
        &[
            ("pending", 0),
            ("running", 1),
            ("pending", 1),
            ("running", 2),
            ("completed", 2),
        ],
    )
    .await;
}

/// A rescued step with no attempts left fails, and so does its run.
pub async fn a_lost_step_with_no_attempts_left_fails_its_run(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 1).await;
    store.claim_steps(&claim(10, Duration::ZERO)).await.unwrap();
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[0].status, StepStatus::Failed);
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Failed
    );
    assert_eq!(
        detail.execution.error.unwrap().category,
        ErrorCategory::WorkerLost
    );
    assert!(
        store
            .claim_steps(&claim(10, Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_story(
        store,
        w,
        execution.id,
        &[("pending", 0), ("running", 1), ("failed", 1)],
    )
    .await;
}

/// A workspace with 50,000 due steps does not keep another workspace's single step waiting.
pub async fn claims_are_fair_across_workspaces(store: &dyn Store) {
    let (busy, busy_flow) = published(store, "busy").await;
    let template = new_run(store, busy, &busy_flow, json!({})).await;
    for _ in 0..50 {
        let runs = (0..1_000).map(|_| template.clone()).collect();
        store.start_executions(busy, runs).await.unwrap();
    }
    let (quiet, quiet_flow) = published(store, "quiet").await;
    let single = run(store, quiet, &quiet_flow, 3).await;
    let first = store
        .claim_steps(&claim(50, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(first.len(), 50);
    assert!(
        first.iter().any(|s| s.execution_id == single.id),
        "the quiet workspace's step is in the first batch, ahead of 50,000 older ones"
    );
    assert_eq!(
        first.iter().filter(|s| s.workspace_id == busy).count(),
        49,
        "the busy workspace fills the rest of the batch"
    );
    // Ranked round-robin: each workspace's oldest step comes before any workspace's second, so
    // even a claim of two takes the quiet workspace's step.
    store
        .claim_steps(&claim(200, Duration::from_secs(30)))
        .await
        .unwrap();
    let quieter = run(store, quiet, &quiet_flow, 3).await;
    let two = store
        .claim_steps(&claim(2, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert!(two.iter().any(|s| s.execution_id == quieter.id));
}

/// A workspace that is alone with due steps fills whole batches, not only its minimum share.
pub async fn a_lone_workspace_fills_the_batch(store: &dyn Store) {
    let (w, flow) = published(store, "alone").await;
    for _ in 0..120 {
        run(store, w, &flow, 3).await;
    }
    let first = store
        .claim_steps(&claim(50, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(first.len(), 50);
    let second = store
        .claim_steps(&claim(50, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(second.len(), 50);
    let third = store
        .claim_steps(&claim(50, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(third.len(), 20);
}

/// One heartbeat over several steps renews those still held, and reports only those whose work
/// must stop: taken by another worker, or unknown; not one its own report ended.
pub async fn a_heartbeat_over_many_steps_renews_the_held_and_reports_the_taken(store: &dyn Store) {
    let (w, flow) = published(store, "beat").await;
    for _ in 0..3 {
        run(store, w, &flow, 3).await;
    }
    // Three steps claimed with leases already over.
    let claimed = store.claim_steps(&claim(10, Duration::ZERO)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let (held, ended, taken) = (&claimed[0], &claimed[1], &claimed[2]);
    let lease = Duration::from_secs(30);
    assert!(
        store
            .heartbeat_steps(&[(held.id, held.lease_token)], lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .finish_step(done(ended, ended.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Applied
    );
    // Only the step neither renewed nor ended is rescued, and another worker claims it.
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    let again = store.claim_steps(&claim(10, lease)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, taken.id);
    let unknown = flowline_core::id::StepId::new();
    let lost = store
        .heartbeat_steps(
            &[
                (held.id, held.lease_token),
                (ended.id, ended.lease_token),
                (taken.id, taken.lease_token),
                (unknown, Uuid::now_v7()),
            ],
            lease,
        )
        .await
        .unwrap();
    assert_eq!(lost, vec![taken.id, unknown]);
    // The held step's lease was renewed: nothing is left to rescue, and its holder ends it.
    assert_eq!(store.rescue_expired(100).await.unwrap(), 0);
    assert_eq!(
        store
            .finish_step(done(held, held.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Applied
    );
}

/// Heartbeats extend live leases and report the lost and the cancelled.
pub async fn heartbeats_report_lost_leases_and_cancelled_runs(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    let step = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap()
        .remove(0);
    let lease = Duration::from_secs(30);
    assert!(
        store
            .heartbeat_steps(&[(step.id, step.lease_token)], lease)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .heartbeat_steps(&[(step.id, Uuid::now_v7())], lease)
            .await
            .unwrap(),
        vec![step.id]
    );
    store
        .cancel_execution(w, &actor(), execution.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .heartbeat_steps(&[(step.id, step.lease_token)], lease)
            .await
            .unwrap(),
        vec![step.id]
    );
    // The running step's report after the cancel ends it cancelled and writes nothing else.
    let outcome = store
        .finish_step(done(&step, step.lease_token, completed(Next::Complete)))
        .await
        .unwrap();
    assert_eq!(outcome, FinishOutcome::Cancelled);
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[0].status, StepStatus::Cancelled);
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Cancelled
    );
    assert!(detail.variables.is_empty());
    assert_story(
        store,
        w,
        execution.id,
        &[("pending", 0), ("running", 1), ("cancelled", 1)],
    )
    .await;
}

/// A retry returns the step to its queue at its time, recording the failed attempt.
pub async fn a_retry_later_waits_for_its_time(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    let step = store
        .claim_steps(&claim(10, Duration::from_secs(30)))
        .await
        .unwrap()
        .remove(0);
    let error = StepError {
        category: ErrorCategory::Upstream,
        severity: Severity::Low,
        retryable: true,
        message: "503".into(),
        suggestion: "wait".into(),
    };
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    store
        .finish_step(done(
            &step,
            step.lease_token,
            StepResult::RetryLater {
                error: error.clone(),
                run_at: later,
            },
        ))
        .await
        .unwrap();
    assert!(
        store
            .claim_steps(&claim(10, Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[0].status, StepStatus::Pending);
    assert_eq!(detail.steps[0].error, Some(error));
    assert_eq!(
        detail.steps[0].attempts[0].outcome.as_deref(),
        Some("failed")
    );
    let soon = chrono::Utc::now() - chrono::Duration::seconds(1);
    assert!(detail.steps[0].run_at > soon);
    assert_story(
        store,
        w,
        execution.id,
        &[("pending", 0), ("running", 1), ("pending", 1)],
    )
    .await;
}

/// A step held when its run was cancelled, whose worker then died, ends cancelled: the rescuer
/// never returns it to the queue.
pub async fn a_lost_step_of_a_cancelled_run_is_not_requeued(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let execution = run(store, w, &flow, 3).await;
    store.claim_steps(&claim(10, Duration::ZERO)).await.unwrap();
    store
        .cancel_execution(w, &actor(), execution.id)
        .await
        .unwrap();
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    assert!(
        store
            .claim_steps(&claim(10, Duration::from_secs(30)))
            .await
            .unwrap()
            .is_empty()
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[0].status, StepStatus::Cancelled);
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Cancelled
    );
    assert_story(
        store,
        w,
        execution.id,
        &[("pending", 0), ("running", 1), ("cancelled", 1)],
    )
    .await;
    // A step still queued when its run is cancelled ends cancelled, never having started.
    let queued = run(store, w, &flow, 3).await;
    store
        .cancel_execution(w, &actor(), queued.id)
        .await
        .unwrap();
    assert_story(store, w, queued.id, &[("pending", 0), ("cancelled", 0)]).await;
}

/// Many runs start in one call, all or none: each with its first step queued, claimable and
/// readable like a run started alone.
pub async fn runs_start_in_bulk_all_or_none(store: &dyn Store) {
    let (w, flow) = published(store, "bulk").await;
    let mut runs = Vec::new();
    for i in 0..1_203 {
        runs.push(new_run(store, w, &flow, json!({"run": i})).await);
    }
    // A run without a first step completes at once.
    runs[7].first_step = None;
    let ids = store.start_executions(w, runs.clone()).await.unwrap();
    assert_eq!(ids.len(), 1_203);
    let detail = store.get_execution(w, ids[1_202]).await.unwrap();
    assert_eq!(detail.execution.status.as_str(), "pending");
    assert_eq!(detail.execution.trigger, json!({"run": 1_202}));
    assert_eq!(detail.execution.step_count, 1);
    assert_eq!(detail.steps.len(), 1);
    assert_eq!(detail.steps[0].status, StepStatus::Pending);
    let done = store.get_execution(w, ids[7]).await.unwrap();
    assert_eq!(done.execution.status.as_str(), "completed");
    assert!(done.steps.is_empty());
    let mut claimed = 0;
    loop {
        let batch = store
            .claim_steps(&claim(500, Duration::from_secs(30)))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        claimed += batch.len();
    }
    assert_eq!(claimed, 1_202);

    // One bad run refuses the whole batch.
    let mut bad = vec![new_run(store, w, &flow, json!({})).await; 3];
    bad[1].contact_id = Some(flowline_core::id::ContactId::new());
    assert!(matches!(
        store.start_executions(w, bad.clone()).await,
        Err(flowline_store::StoreError::NotFound(_))
    ));
    bad[1].contact_id = None;
    bad[2].dedupe_key = Some("once".into());
    assert!(matches!(
        store.start_executions(w, bad.clone()).await,
        Err(flowline_store::StoreError::Invalid(_))
    ));
    bad[2].dedupe_key = None;
    bad[0].flow_version = flow.version + 1;
    assert!(matches!(
        store.start_executions(w, bad.clone()).await,
        Err(flowline_store::StoreError::Invalid(_))
    ));
    for run in &mut bad {
        run.flow_version = flow.version + 1;
    }
    assert!(matches!(
        store.start_executions(w, bad).await,
        Err(flowline_store::StoreError::Conflict(_))
    ));
    let listed = store
        .list_executions(w, flow.id, PageRequest::first(100))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 100);
    let mut total = 0;
    let mut page = PageRequest::first(500);
    loop {
        let batch = store.list_executions(w, flow.id, page).await.unwrap();
        total += batch.items.len();
        match batch.next_cursor {
            Some(cursor) => {
                page = PageRequest {
                    limit: 500,
                    cursor: Some(cursor),
                }
            }
            None => break,
        }
    }
    assert_eq!(total, 1_203, "nothing of the refused batches was written");
}

/// The `next` node's step, as a step ending in `start` queues it.
async fn next_step(store: &dyn Store, w: WorkspaceId, flow: &Flow) -> NewStep {
    let version = store.get_flow_version(w, flow.id, 1).await.unwrap();
    let next = version
        .actions
        .iter()
        .find(|a| a.node_id == "next")
        .unwrap();
    NewStep {
        action_id: next.id,
        action_type: next.action_type,
        node_id: "next".into(),
        max_attempts: 2,
    }
}

/// A step's end can hand the run's next step, claimed, to the worker that reported, when it is
/// of the worker's queue: a lease like a claim's, renewed, rescued, cancelled and guarded alike.
pub async fn a_next_step_is_handed_on_claimed_within_its_queue(store: &dyn Store) {
    let (w, flow) = published(store, "acme").await;
    let next = next_step(store, w, &flow).await;
    let then = || completed(Next::Step(next.clone()));
    let offer = |queue: Queue, lease: Duration| {
        Some(HandOn {
            queue,
            owner: "test".into(),
            lease,
        })
    };
    let lease = Duration::from_secs(30);
    let handed = |outcome: FinishOutcome| match outcome {
        FinishOutcome::HandedOn(next) => next,
        other => panic!("not handed on: {other:?}"),
    };
    let as_claimed = |step: &ClaimedStep, next: HandedOn| ClaimedStep {
        id: next.step_id,
        lease_token: next.lease_token,
        ..step.clone()
    };

    // Handed on: running, its first attempt in progress, invisible to claims, renewed by
    // heartbeats, and finished with its own token.
    let execution = run(store, w, &flow, 3).await;
    let first = store
        .claim_steps(&claim(10, lease))
        .await
        .unwrap()
        .remove(0);
    let mut report = done(&first, first.lease_token, then());
    report.hand_on = offer(Queue::Basic, lease);
    let next_step = handed(store.finish_step(report).await.unwrap());
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.execution.step_count, 2);
    assert_eq!(detail.steps[0].status, StepStatus::Completed);
    assert_eq!(detail.steps[1].id, next_step.step_id);
    assert_eq!(detail.steps[1].status, StepStatus::Running);
    assert_eq!(
        (detail.steps[1].attempt, detail.steps[1].max_attempts),
        (1, 2)
    );
    assert_eq!(detail.steps[1].attempts.len(), 1);
    let in_progress = detail.steps[1].attempts[0].clone();
    assert_eq!(
        (
            in_progress.attempt,
            in_progress.finished_at,
            in_progress.outcome
        ),
        (1, None, None)
    );
    assert_eq!(Some(in_progress.started_at), detail.steps[1].started_at);
    assert_eq!(detail.variables.len(), 1);
    assert!(
        store
            .claim_steps(&claim(10, lease))
            .await
            .unwrap()
            .is_empty(),
        "already held"
    );
    assert!(
        store
            .heartbeat_steps(&[(next_step.step_id, next_step.lease_token)], lease)
            .await
            .unwrap()
            .is_empty()
    );
    // A heartbeat about the step that ended (its worker has not yet taken the handed-on step
    // into its count of steps in flight) does not stop the worker: the step ended by its own
    // report, and the worker goes on with the run.
    assert!(
        store
            .heartbeat_steps(&[(first.id, first.lease_token)], lease)
            .await
            .unwrap()
            .is_empty(),
        "a step ended by its own report is not lost"
    );
    let second = as_claimed(&first, next_step);
    assert_eq!(
        store
            .finish_step(done(&second, first.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::LeaseLost,
        "the step before's token does not finish it"
    );
    assert_eq!(
        store
            .finish_step(done(&second, second.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Applied
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(
        detail.execution.status,
        flowline_core::status::ExecutionStatus::Completed
    );
    assert_eq!(detail.steps[1].status, StepStatus::Completed);
    // The attempt's row, written as it ended, keeps the start the step had while it ran.
    assert_eq!(detail.steps[1].attempts.len(), 1);
    let ended = &detail.steps[1].attempts[0];
    assert_eq!(ended.outcome.as_deref(), Some("completed"));
    assert_eq!(ended.started_at, in_progress.started_at);
    assert!(ended.finished_at.is_some_and(|at| at >= ended.started_at));

    // A next step of another queue is queued as usual.
    let execution = run(store, w, &flow, 3).await;
    let first = store
        .claim_steps(&claim(10, lease))
        .await
        .unwrap()
        .remove(0);
    let mut report = done(&first, first.lease_token, then());
    report.hand_on = offer(Queue::Integration, lease);
    assert_eq!(
        store.finish_step(report).await.unwrap(),
        FinishOutcome::Applied
    );
    let queued = store.claim_steps(&claim(10, lease)).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (
            queued[0].execution_id,
            queued[0].attempt,
            queued[0].step_count
        ),
        (execution.id, 1, 2)
    );
    store
        .finish_step(done(
            &queued[0],
            queued[0].lease_token,
            completed(Next::Complete),
        ))
        .await
        .unwrap();

    // A handed-on step whose worker vanished is rescued like a claimed one.
    let execution = run(store, w, &flow, 3).await;
    let first = store
        .claim_steps(&claim(10, lease))
        .await
        .unwrap()
        .remove(0);
    let mut report = done(&first, first.lease_token, then());
    report.hand_on = offer(Queue::Basic, Duration::ZERO);
    let lost = handed(store.finish_step(report).await.unwrap());
    assert_eq!(store.rescue_expired(100).await.unwrap(), 1);
    let again = store
        .claim_steps(&claim(10, lease))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again.id, again.attempt), (lost.step_id, 2));
    assert_eq!(
        store
            .finish_step(done(
                &as_claimed(&first, lost),
                lost.lease_token,
                completed(Next::Complete)
            ))
            .await
            .unwrap(),
        FinishOutcome::LeaseLost
    );
    store
        .finish_step(done(&again, again.lease_token, completed(Next::Complete)))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_execution(w, execution.id)
            .await
            .unwrap()
            .execution
            .status,
        flowline_core::status::ExecutionStatus::Completed
    );

    // Cancelled while handed on: the heartbeat says so, and the report ends it cancelled.
    let execution = run(store, w, &flow, 3).await;
    let first = store
        .claim_steps(&claim(10, lease))
        .await
        .unwrap()
        .remove(0);
    let mut report = done(&first, first.lease_token, then());
    report.hand_on = offer(Queue::Basic, lease);
    let next_step = handed(store.finish_step(report).await.unwrap());
    store
        .cancel_execution(w, &actor(), execution.id)
        .await
        .unwrap();
    assert_eq!(
        store
            .heartbeat_steps(&[(next_step.step_id, next_step.lease_token)], lease)
            .await
            .unwrap(),
        vec![next_step.step_id]
    );
    let second = as_claimed(&first, next_step);
    assert_eq!(
        store
            .finish_step(done(&second, second.lease_token, completed(Next::Complete)))
            .await
            .unwrap(),
        FinishOutcome::Cancelled
    );
    let detail = store.get_execution(w, execution.id).await.unwrap();
    assert_eq!(detail.steps[1].status, StepStatus::Cancelled);
}

/// Step ends reported at once, as a busy worker's are, are written together (in one batch where
/// the backend batches) and each takes its own effect.
pub async fn step_ends_reported_at_once_each_take_effect(store: &dyn Store) {
    use flowline_core::status::ExecutionStatus;
    let (w, flow) = published(store, "acme").await;
    let next = next_step(store, w, &flow).await;
    let then = || completed(Next::Step(next.clone()));
    let error = StepError {
        category: ErrorCategory::Upstream,
        severity: Severity::Low,
        retryable: true,
        message: "503".into(),
        suggestion: "wait".into(),
    };
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(run(store, w, &flow, 3).await.id);
    }
    let lease = Duration::from_secs(30);
    let claimed = store.claim_steps(&claim(10, lease)).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let step_of = |i: usize| {
        claimed
            .iter()
            .find(|s| s.execution_id == runs[i])
            .unwrap()
            .clone()
    };
    let (s0, s1, s2, s3, s4) = (step_of(0), step_of(1), step_of(2), step_of(3), step_of(4));
    let mut handing = done(&s0, s0.lease_token, then());
    handing.hand_on = Some(HandOn {
        queue: Queue::Basic,
        owner: "test".into(),
        lease,
    });
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let (o0, o1, o2, o3, o4) = tokio::join!(
        store.finish_step(handing),
        store.finish_step(done(&s1, s1.lease_token, then())),
        store.finish_step(done(&s2, s2.lease_token, completed(Next::Complete))),
        store.finish_step(done(
            &s3,
            s3.lease_token,
            StepResult::Failed {
                status: StepStatus::Failed,
                error: error.clone(),
                next: Next::Fail(error.clone()),
            },
        )),
        store.finish_step(done(
            &s4,
            s4.lease_token,
            StepResult::RetryLater {
                error: error.clone(),
                run_at: later,
            },
        )),
    );
    let handed = match o0.unwrap() {
        FinishOutcome::HandedOn(next) => next,
        other => panic!("not handed on: {other:?}"),
    };
    for outcome in [o1, o2, o3, o4] {
        assert_eq!(outcome.unwrap(), FinishOutcome::Applied);
    }
    let detail = |i: usize| store.get_execution(w, runs[i]);
    let d = detail(0).await.unwrap();
    assert_eq!(
        (d.execution.status, d.execution.step_count),
        (ExecutionStatus::Running, 2)
    );
    assert_eq!(
        (d.steps[1].id, d.steps[1].status),
        (handed.step_id, StepStatus::Running)
    );
    let d = detail(1).await.unwrap();
    assert_eq!(d.steps[0].status, StepStatus::Completed);
    assert_eq!(
        (d.steps[1].status, d.steps[1].max_attempts),
        (StepStatus::Pending, 2)
    );
    assert_eq!(d.variables.len(), 1);
    let d = detail(2).await.unwrap();
    assert_eq!(d.execution.status, ExecutionStatus::Completed);
    assert_eq!(d.steps.len(), 1);
    let d = detail(3).await.unwrap();
    assert_eq!(d.execution.status, ExecutionStatus::Failed);
    assert_eq!(d.execution.error, Some(error.clone()));
    assert_eq!(d.steps[0].status, StepStatus::Failed);
    assert!(d.variables.is_empty());
    let d = detail(4).await.unwrap();
    assert_eq!(d.execution.status, ExecutionStatus::Running);
    assert_eq!(
        (d.steps[0].status, d.steps[0].attempt),
        (StepStatus::Pending, 1)
    );
    assert_eq!(d.steps[0].attempts[0].outcome.as_deref(), Some("failed"));
    // Only run 1's next step is due: the handed-on step is held, the retry waits.
    let due = store.claim_steps(&claim(10, lease)).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.execution_id).collect::<Vec<_>>(),
        vec![runs[1]]
    );
    // Renewing a lease changes no status and writes no event.
    store
        .heartbeat_steps(&[(handed.step_id, handed.lease_token)], lease)
        .await
        .unwrap();
    // Each step's events, in order, as statements over many rows wrote them: one per status
    // change and nothing else; a run's own events only when its status changed.
    let expected: [&[(usize, &str, i32)]; 5] = [
        &[
            (0, "pending", 0),
            (0, "running", 1),
            (0, "completed", 1),
            (1, "pending", 0),
            (1, "running", 1),
        ],
        &[
            (0, "pending", 0),
            (0, "running", 1),
            (0, "completed", 1),
            (1, "pending", 0),
            (1, "running", 1),
        ],
        &[(0, "pending", 0), (0, "running", 1), (0, "completed", 1)],
        &[(0, "pending", 0), (0, "running", 1), (0, "failed", 1)],
        &[(0, "pending", 0), (0, "running", 1), (0, "pending", 1)],
    ];
    for (i, expected) in expected.iter().enumerate() {
        let d = detail(i).await.unwrap();
        let events = settled_events(store, w, runs[i], expected.len()).await;
        let steps: Vec<(usize, &str, i32)> = events
            .iter()
            .filter(|e| e.kind == "step.status")
            .map(|e| {
                let index = d
                    .steps
                    .iter()
                    .position(|s| Some(s.id) == e.step_id)
                    .unwrap();
                (index, e.status.as_str(), e.attempt.unwrap())
            })
            .collect();
        assert_eq!(&steps, expected, "run {i}");
        let statuses: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == "execution.status")
            .map(|e| e.status.as_str())
            .collect();
        assert!(
            statuses.windows(2).all(|pair| pair[0] != pair[1]),
            "run {i}: {statuses:?}"
        );
        assert_eq!(
            statuses.last().copied(),
            Some(d.execution.status.as_str()),
            "run {i}"
        );
    }
}
