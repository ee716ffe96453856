//! The scheduler: starts a run for each slot of each flow's cron schedule, exactly once however
//! many processes run it. A slot is taken by moving the flow's `next_fire_at` from that slot to
//! the next one (compare-and-set) in the transaction that starts the run, and the run is keyed
//! by its slot. Slots missed while no process ran are not caught up: the latest one runs once.

use std::sync::Arc;

use chrono::Utc;
use flowline_core::schedule::CronSchedule;
use flowline_core::status::TriggerKind;
use flowline_store::StoreError;
use flowline_store::execution::DueSchedule;
use serde_json::json;

use crate::{Engine, StartRun};

pub(crate) async fn tick(engine: &Arc<Engine>) -> Result<usize, StoreError> {
    let mut started = 0;
    for due in engine.store.due_schedules(100).await? {
        // One flow's failure must not hold up the others due after it.
        match fire(engine, &due).await {
            Ok(true) => started += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, flow = %due.flow_id, "a scheduled slot could not be run")
            }
        }
    }
    Ok(started)
}

/// Takes one due slot: starts its run (active flows) and moves the schedule on.
async fn fire(engine: &Arc<Engine>, due: &DueSchedule) -> Result<bool, StoreError> {
    let from = due.slot.max(Utc::now());
    let next = CronSchedule::parse(&due.schedule)
        .ok()
        .and_then(|s| s.next_after(from));
    let run = if due.active && due.version >= 1 {
        let version = engine
            .version(due.workspace_id, due.flow_id, due.version)
            .await?;
        let start = StartRun {
            flow_id: due.flow_id,
            contact_id: None,
            trigger_kind: TriggerKind::Schedule,
            trigger: json!({
                "scheduledAt": due.slot,
                "cron": due.schedule.cron,
                "timezone": due.schedule.timezone,
            }),
            input: json!({}),
            dedupe_key: Some(format!("schedule:{}", due.slot.to_rfc3339())),
        };
        match engine.plan(due.workspace_id, &version, start) {
            Ok(run) => Some(run),
            Err(error) => {
                tracing::warn!(%error, flow = %due.flow_id, "a scheduled run could not be planned; skipping the slot");
                None
            }
        }
    } else {
        None
    };
    let fires = run.is_some();
    Ok(engine
        .store
        .advance_schedule(due.workspace_id, due.flow_id, due.slot, next, run)
        .await?
        && fires)
}
