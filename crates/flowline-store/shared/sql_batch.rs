//! Many step ends in a few statements, for group commits: SQLite's writer task, and
//! PostgreSQL's finisher (per workspace, under row-level security).
//!
//! Each statement is a round trip, and round trips, not SQL, bound a step's end: a batch costs
//! about ten statements here instead of seven per step. The effects are those of
//! `sql_execution::finish_step` for each report. The backend reads the held steps (its
//! `held_steps`) and runs the planned writes, each in the trips that suit it: SQLite's writer
//! sends its `BEGIN` with the read and its `COMMIT` with the writes. Compiled into each backend
//! like `sql_store.rs`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use flowline_core::id::StepId;
use flowline_core::status::{ErrorCategory, ExecutionStatus, StepStatus};
use flowline_store::StoreResult;
use flowline_store::execution::{
    FinishOutcome, FinishStep, HandedOn, NewStep, Next, StepResult, Variable,
};
use sqlx::types::Json;
use uuid::Uuid;

use crate::sql_execution::{
    AttemptEnd, QueuedStep, StepEvent, StepLease, Writes, attempt_ends, error_json, padded_rows,
    push_ids, queue_steps, rows_at, step_events,
};
use crate::sql_store::corrupt;

/// A running step a batch of ends reports on, with its run's status and flow, read (and on
/// PostgreSQL locked) by the backend's `held_steps` before anything is written.
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct Held {
    pub(crate) id: Uuid,
    pub(crate) lease_token: Option<Uuid>,
    pub(crate) attempt: i32,
    pub(crate) workspace_id: Uuid,
    pub(crate) flow_execution_id: Uuid,
    pub(crate) action_type: String,
    pub(crate) run_status: String,
    pub(crate) flow_id: Uuid,
}

/// How one report of a batch turns out, before anything is written.
enum Planned<'a> {
    Lost,
    Cancelled {
        report: &'a FinishStep,
        attempt: i32,
    },
    Applied {
        report: &'a FinishStep,
        attempt: i32,
    },
}

/// The steps `reports` are about, for the backend's `held_steps`.
pub(crate) fn reported_ids(reports: &[&FinishStep]) -> Vec<Uuid> {
    reports.iter().map(|r| r.step_id.0).collect()
}

/// Plans many step ends as a few statements, added to `writes`: the same effects as
/// [`finish_step`](crate::sql_execution::finish_step) for each report, in report order, given
/// the steps as `held_steps` read them in the same transaction.
/// Returns each report's outcome once the writes ran. Reports must concern different runs, as
/// the reports of one claim cycle do (a run has one step in flight).
pub(crate) fn plan_finish(
    held: Vec<Held>,
    reports: &[&FinishStep],
    at: DateTime<Utc>,
    writes: &mut Writes,
) -> StoreResult<Vec<FinishOutcome>> {
    let held: HashMap<Uuid, Held> = held.into_iter().map(|h| (h.id, h)).collect();
    let mut seen = std::collections::HashSet::new();
    let plans: Vec<Planned> = reports
        .iter()
        .map(|report| match held.get(&report.step_id.0) {
            Some(h)
                if h.lease_token == Some(report.lease_token)
                    && h.workspace_id == report.workspace_id.0
                    && h.flow_execution_id == report.execution_id.0
                    && seen.insert(report.step_id) =>
            {
                if h.run_status == ExecutionStatus::Cancelled.as_str() {
                    Planned::Cancelled {
                        report,
                        attempt: h.attempt,
                    }
                } else {
                    Planned::Applied {
                        report,
                        attempt: h.attempt,
                    }
                }
            }
            _ => Planned::Lost,
        })
        .collect();

    // The steps' own rows.
    struct StepEnd<'a> {
        id: Uuid,
        status: &'static str,
        input: Option<&'a serde_json::Value>,
        output: Option<&'a serde_json::Value>,
        error: Option<Json<serde_json::Value>>,
        category: Option<&'static str>,
        finished_at: Option<DateTime<Utc>>,
        run_at: Option<DateTime<Utc>>,
        keeps_error: bool,
    }
    let mut ends = Vec::new();
    let mut attempts = Vec::new();
    let mut variables: Vec<(&FinishStep, &Variable)> = Vec::new();
    let mut nexts: Vec<(&FinishStep, &Next)> = Vec::new();
    for plan in &plans {
        match plan {
            Planned::Lost => {}
            Planned::Cancelled { report, attempt } => {
                ends.push(StepEnd {
                    id: report.step_id.0,
                    status: "cancelled",
                    input: report.input.as_ref(),
                    output: None,
                    error: None,
                    category: None,
                    finished_at: Some(at),
                    run_at: None,
                    keeps_error: true,
                });
                attempts.push(AttemptEnd {
                    step: report.step_id.0,
                    attempt: *attempt,
                    outcome: "cancelled",
                    error: None,
                });
            }
            Planned::Applied { report, attempt } => match &report.result {
                StepResult::Completed {
                    output,
                    variables: written,
                    next,
                } => {
                    ends.push(StepEnd {
                        id: report.step_id.0,
                        status: "completed",
                        input: report.input.as_ref(),
                        output: Some(output),
                        error: None,
                        category: None,
                        finished_at: Some(at),
                        run_at: None,
                        keeps_error: false,
                    });
                    variables.extend(written.iter().map(|v| (*report, v)));
                    nexts.push((report, next));
                }
                StepResult::Failed {
                    status,
                    error,
                    next,
                } => {
                    let status = if *status == StepStatus::Timeout {
                        "timeout"
                    } else {
                        "failed"
                    };
                    ends.push(StepEnd {
                        id: report.step_id.0,
                        status,
                        input: report.input.as_ref(),
                        output: None,
                        error: Some(error_json(error)),
                        category: Some(error.category.as_str()),
                        finished_at: Some(at),
                        run_at: None,
                        keeps_error: false,
                    });
                    nexts.push((report, next));
                }
                StepResult::RetryLater { error, run_at } => {
                    ends.push(StepEnd {
                        id: report.step_id.0,
                        status: "pending",
                        input: report.input.as_ref(),
                        output: None,
                        error: Some(error_json(error)),
                        category: Some(error.category.as_str()),
                        finished_at: None,
                        run_at: Some(*run_at),
                        keeps_error: false,
                    });
                    let outcome = if error.category == ErrorCategory::Timeout {
                        "timeout"
                    } else {
                        "failed"
                    };
                    attempts.push(AttemptEnd {
                        step: report.step_id.0,
                        attempt: *attempt,
                        outcome,
                        error: Some(error_json(error)),
                    });
                }
            },
        }
    }
    // The steps' events: their ends, then the steps queued next.
    let mut events: Vec<StepEvent> = ends
        .iter()
        .filter_map(|end| {
            let h = held.get(&end.id)?;
            Some(StepEvent {
                workspace: h.workspace_id,
                flow: h.flow_id,
                run: h.flow_execution_id,
                step: end.id,
                status: end.status,
                action_type: &h.action_type,
                attempt: h.attempt,
                then: None,
            })
        })
        .collect();
    // Everything from here returns nothing: one trip to the connection where the backend can.
    if !ends.is_empty() {
        let query = writes.statement(
            "WITH v(id, status, input, output, error, category, finished_at, run_at, keeps_error) AS (",
        );
        query.push_values(padded_rows(ends.iter()), |mut row, end| {
            row.push_bind(end.map(|e| e.id))
                .push_bind(end.map(|e| e.status))
                .push_bind(end.and_then(|e| e.input.map(Json)))
                .push_bind(end.and_then(|e| e.output.map(Json)))
                .push_bind(end.and_then(|e| e.error.clone()))
                .push_bind(end.and_then(|e| e.category))
                .push_bind(end.and_then(|e| e.finished_at))
                .push_bind(end.and_then(|e| e.run_at))
                .push_bind(end.map(|e| e.keeps_error));
        });
        query.push(
            ") UPDATE action_executions SET status = v.status, input = COALESCE(v.input, action_executions.input), \
             output = COALESCE(v.output, action_executions.output), \
             error = CASE WHEN v.keeps_error THEN action_executions.error ELSE v.error END, \
             error_category = CASE WHEN v.keeps_error THEN action_executions.error_category ELSE v.category END, \
             finished_at = v.finished_at, run_at = COALESCE(v.run_at, action_executions.run_at), \
             lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL \
             FROM v WHERE action_executions.id = v.id",
        );
        attempt_ends(writes, &attempts, at);
    }
    if !variables.is_empty() {
        let query = writes.statement(
            "INSERT INTO action_variables (id, workspace_id, flow_execution_id, name, type, value, \
             set_by_action_execution_id, created_at, updated_at) \
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, t.at, t.at FROM (",
        );
        query.push_values(padded_rows(variables.iter()), |mut row, written| {
            row.push_bind(written.map(|_| Uuid::now_v7()))
                .push_bind(written.map(|(report, _)| report.workspace_id.0))
                .push_bind(written.map(|(report, _)| report.execution_id.0))
                .push_bind(written.map(|(_, variable)| &variable.name))
                .push_bind(written.map(|(_, variable)| variable.variable_type.as_str()))
                .push_bind(written.map(|(_, variable)| Json(&variable.value)))
                .push_bind(written.map(|(report, _)| report.step_id.0));
        });
        rows_at(query, at);
        query.push(
            " ON CONFLICT (flow_execution_id, name) DO UPDATE SET type = excluded.type, value = excluded.value, \
             set_by_action_execution_id = excluded.set_by_action_execution_id, updated_at = excluded.updated_at",
        );
    }
    // What the runs do next.
    let mut handed_on: HashMap<StepId, HandedOn> = HashMap::new();
    let queued: Vec<(&FinishStep, &NewStep)> = nexts
        .iter()
        .filter_map(|(report, next)| match next {
            Next::Step(step) => Some((*report, step)),
            _ => None,
        })
        .collect();
    if !queued.is_empty() {
        // A next step of the reporting worker's own queue is handed to it claimed, when it asks:
        // one lease token for all of them, as a claim has.
        let token = Uuid::now_v7();
        let leases: Vec<Option<StepLease>> = queued
            .iter()
            .map(|(report, step)| {
                let offer = report.hand_on.as_ref()?;
                (offer.queue == step.action_type.category().queue()).then(|| StepLease {
                    owner: &offer.owner,
                    token,
                    expires: at
                        + chrono::Duration::from_std(offer.lease)
                            .unwrap_or(chrono::Duration::seconds(30)),
                })
            })
            .collect();
        let steps: Vec<QueuedStep> = queued
            .iter()
            .zip(&leases)
            .map(|((report, step), lease)| {
                // Only an applied report queues a step, and it was read with its run's flow.
                let flow = held
                    .get(&report.step_id.0)
                    .ok_or_else(|| corrupt("step", "a queued step's report was not held"))?
                    .flow_id;
                Ok(QueuedStep {
                    workspace: report.workspace_id.0,
                    flow,
                    run: report.execution_id.0,
                    step,
                    lease: lease.as_ref(),
                })
            })
            .collect::<StoreResult<_>>()?;
        let ids = queue_steps(writes, &steps, at, &mut events);
        for ((report, _), (id, lease)) in queued.iter().zip(ids.into_iter().zip(&leases)) {
            if lease.is_some() {
                handed_on.insert(
                    report.step_id,
                    HandedOn {
                        step_id: id,
                        lease_token: token,
                    },
                );
            }
        }
    }
    // Before the runs' own ends, as their steps' ends happened first.
    step_events(writes, &events);
    let completed: Vec<Uuid> = nexts
        .iter()
        .filter(|(_, next)| matches!(next, Next::Complete))
        .map(|(r, _)| r.execution_id.0)
        .collect();
    if !completed.is_empty() {
        let query =
            writes.statement("UPDATE flow_executions SET status = 'completed', finished_at = ");
        query
            .push_bind(at)
            .push(" WHERE status = 'running' AND id IN (");
        push_ids(query, &completed);
    }
    let failed: Vec<(Uuid, Json<serde_json::Value>)> = nexts
        .iter()
        .filter_map(|(r, next)| match next {
            Next::Fail(error) => Some((r.execution_id.0, error_json(error))),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let query = writes.statement("WITH v(id, error) AS (");
        query.push_values(padded_rows(failed.iter()), |mut row, run| {
            row.push_bind(run.map(|(id, _)| *id))
                .push_bind(run.map(|(_, error)| error.clone()));
        });
        query.push(
            ") UPDATE flow_executions SET status = 'failed', error = v.error, finished_at = ",
        );
        query.push_bind(at);
        query
            .push(" FROM v WHERE flow_executions.id = v.id AND flow_executions.status = 'running'");
    }
    Ok(plans
        .iter()
        .map(|plan| match plan {
            Planned::Lost => FinishOutcome::LeaseLost,
            Planned::Cancelled { .. } => FinishOutcome::Cancelled,
            Planned::Applied { report, .. } => handed_on
                .get(&report.step_id)
                .map_or(FinishOutcome::Applied, |next| {
                    FinishOutcome::HandedOn(*next)
                }),
        })
        .collect())
}
