//! Retention: finished runs past their workspace's retention are pruned with everything they
//! hold; big step outputs are cut with a marker.

use chrono::{Duration, Utc};
use flowline_core::role::Role;
use serde_json::{Value, json};

use flowline_core::id::ExecutionId;
use flowline_store::stats::{EventCursor, RunEvent};

use crate::api_test;
use crate::support::{SqlValue, TestApp};

async fn runs_of(app: &TestApp, token: &str, count: usize, value: Value) -> (String, Vec<String>) {
    let flow = app
        .post("/api/flows", token, json!({"name": "r", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/actions/flows/{flow}"), token,
        json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": "v", "type": "string", "value": value}}))
        .await
        .expect(201);
    app.post(&format!("/api/flows/{flow}/publish"), token, json!({}))
        .await
        .expect(200);
    let mut ids = Vec::new();
    for _ in 0..count {
        let run = app
            .post(&format!("/api/flows/{flow}/executions"), token, json!({}))
            .await
            .expect(202);
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    app.engine.drain().await.unwrap();
    (flow, ids)
}

async fn finished_days_ago(app: &TestApp, run: &str, days: i64) {
    let at = Utc::now() - Duration::days(days);
    app.execute(
        "UPDATE flow_executions SET finished_at = $1, created_at = $1 WHERE id = $2",
        vec![SqlValue::Time(at), SqlValue::Id(run.parse().unwrap())],
    )
    .await;
}

api_test! {
    async fn finished_runs_past_retention_are_pruned_per_workspace(app: TestApp) {
        let workspace = app.get("/api/workspace", &app.owner).await.expect(200);
        assert_eq!(workspace["retentionDays"], 30);
        let (_, ours) = runs_of(&app, &app.owner, 4, json!("x")).await;
        let (other_ws, other) = app.other_workspace().await;
        let (_, theirs) = runs_of(&app, &other, 2, json!("y")).await;
        // Ours: 40 and 31 days old (past 30), 20 days old, and new. Theirs keeps 10 days: a
        // 20-day-old run is past it.
        finished_days_ago(&app, &ours[0], 40).await;
        finished_days_ago(&app, &ours[1], 31).await;
        finished_days_ago(&app, &ours[2], 20).await;
        finished_days_ago(&app, &theirs[0], 20).await;
        let editor = app.token(Role::Editor).await;
        app.put("/api/workspace", &editor, json!({"retentionDays": 10})).await.problem(403, "forbidden");
        app.put("/api/workspace", &other, json!({"retentionDays": 0})).await.problem(422, "validation_failed");
        let updated = app.put("/api/workspace", &other, json!({"retentionDays": 10})).await.expect(200);
        assert_eq!(updated["retentionDays"], 10);
        let _ = other_ws;
        // A run still going is never pruned, however old.
        let (_, pending) = {
            let flow = app.post("/api/flows", &app.owner, json!({"name": "p", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}})).await.expect(201);
            let flow = flow["id"].as_str().unwrap().to_owned();
            app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
                json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": "v", "type": "string", "value": "z"}})).await.expect(201);
            app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
            let run = app.post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({})).await.expect(202);
            (flow, run["id"].as_str().unwrap().to_owned())
        };
        app.execute("UPDATE flow_executions SET created_at = $1 WHERE id = $2",
            vec![SqlValue::Time(Utc::now() - Duration::days(90)), SqlValue::Id(pending.parse().unwrap())]).await;

        assert_eq!(app.engine.prune().await.unwrap(), 3);
        for gone in [&ours[0], &ours[1]] {
            app.get(&format!("/api/executions/{gone}"), &app.owner).await.problem(404, "not_found");
        }
        app.get(&format!("/api/executions/{}", theirs[0]), &other).await.problem(404, "not_found");
        for kept in [&ours[2], &ours[3], &pending] {
            app.get(&format!("/api/executions/{kept}"), &app.owner).await.expect(200);
        }
        app.get(&format!("/api/executions/{}", theirs[1]), &other).await.expect(200);
        assert_eq!(app.engine.prune().await.unwrap(), 0, "nothing more to prune");
        let audit = app.get("/api/audit?entityType=workspace", &other).await.expect(200);
        assert_eq!(audit["items"][0]["action"], "workspace.update");
    }
}

/// A run's events, once every transaction that wrote them has settled (on PostgreSQL a read of
/// events waits for transactions that began earlier, and other tests share the cluster).
async fn settled_events(app: &TestApp, run: &str, at_least: usize) -> Vec<RunEvent> {
    let run = ExecutionId(run.parse().unwrap());
    let started = std::time::Instant::now();
    loop {
        let events = app
            .store
            .events_after(app.workspace, EventCursor::default(), None, Some(run), 100)
            .await
            .unwrap();
        if events.len() >= at_least || started.elapsed() > std::time::Duration::from_secs(30) {
            return events;
        }
        tokio::task::yield_now().await;
    }
}

api_test! {
    async fn events_older_than_a_day_are_pruned_oldest_first(app: TestApp) {
        let (_, runs) = runs_of(&app, &app.owner, 3, json!("x")).await;
        // Each run: queued, running, its step queued, running, completed, the run completed.
        for run in &runs {
            assert_eq!(settled_events(&app, run, 6).await.len(), 6, "{run}");
        }
        // The first run's events are two days old, the second's 23 hours: only the first's go.
        for (run, age) in [(&runs[0], Duration::days(2)), (&runs[1], Duration::hours(23))] {
            app.execute(
                "UPDATE events SET created_at = $1 WHERE execution_id = $2",
                vec![SqlValue::Time(Utc::now() - age), SqlValue::Id(run.parse().unwrap())],
            )
            .await;
        }
        assert_eq!(app.engine.prune().await.unwrap(), 0, "no run is past its retention");
        assert!(settled_events(&app, &runs[0], 0).await.is_empty());
        for run in &runs[1..] {
            assert_eq!(settled_events(&app, run, 6).await.len(), 6, "{run}");
        }
        // The runs themselves stay.
        app.get(&format!("/api/executions/{}", runs[0]), &app.owner).await.expect(200);
    }
}

api_test! {
    async fn a_step_output_over_the_cap_is_cut_with_a_marker(app: TestApp) {
        let big = "x".repeat(100 * 1024);
        let (_, runs) = runs_of(&app, &app.owner, 1, json!(big)).await;
        let run = app.get(&format!("/api/executions/{}", runs[0]), &app.owner).await.expect(200);
        assert_eq!(run["status"], "completed");
        let output = &run["steps"][0]["output"];
        assert_eq!(output["truncated"], true, "{}", output.to_string().len());
        assert!(output["bytes"].as_u64().unwrap() > 100 * 1024);
        assert!(output["preview"].as_str().unwrap().len() <= 1024);
        // The variable itself is kept whole.
        assert_eq!(run["variables"][0]["value"].as_str().unwrap().len(), 100 * 1024);
    }
}
