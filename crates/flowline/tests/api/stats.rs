//! `GET /api/stats` over known data: runs made by the engine, their attempts' times set.

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::api_test;
use crate::support::{SqlValue, TestApp};

async fn flow_with(
    app: &TestApp,
    name: &str,
    action_type: &str,
    config: Value,
    retry: Value,
) -> String {
    let flow = app
        .post("/api/flows", &app.owner, json!({"name": name, "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let id = flow["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/actions/flows/{id}"),
        &app.owner,
        json!({"nodeId": "n", "actionType": action_type, "actionConfig": config, "retry": retry}),
    )
    .await
    .expect(201);
    app.post(&format!("/api/flows/{id}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    id
}

async fn start(app: &TestApp, flow: &str) -> String {
    let run = app
        .post(
            &format!("/api/flows/{flow}/executions"),
            &app.owner,
            json!({}),
        )
        .await
        .expect(202);
    run["id"].as_str().unwrap().to_owned()
}

async fn run(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/executions/{id}"), &app.owner)
        .await
        .expect(200)
}

fn uuid(v: &Value) -> uuid::Uuid {
    v.as_str().unwrap().parse().unwrap()
}

api_test! {
    async fn stats_count_rates_percentiles_retries_errors_and_flows_exactly(app: TestApp) {
        let good = flow_with(&app, "good", "set_variable", json!({"name": "x", "type": "number", "value": 1}), json!({"maxAttempts": 1})).await;
        let bad = flow_with(&app, "bad", "set_variable", json!({"name": "x", "type": "number", "value": "not a number"}), json!({"maxAttempts": 3})).await;
        let flaky = flow_with(&app, "flaky", "run_api_request", json!({"url": "http://127.0.0.1:9/"}), json!({"maxAttempts": 2, "initialDelayMs": 1, "jitter": false})).await;
        let stopped = flow_with(&app, "stopped", "set_variable", json!({"name": "x", "type": "number", "value": 1}), json!({})).await;

        // Cancelled before it ran: its step never starts.
        let cancelled = start(&app, &stopped).await;
        app.post(&format!("/api/executions/{cancelled}/cancel"), &app.owner, json!({})).await.expect(200);
        let mut good_runs = Vec::new();
        for _ in 0..5 {
            good_runs.push(start(&app, &good).await);
        }
        let bad_run = start(&app, &bad).await;
        let flaky_run = start(&app, &flaky).await;
        for _ in 0..1000 {
            app.engine.drain().await.unwrap();
            if run(&app, &flaky_run).await["status"] == "failed" {
                break;
            }
        }
        assert_eq!(run(&app, &flaky_run).await["steps"][0]["attempt"], 2);

        // Known durations: good 10, 20, 30, 40 ms; bad 50; flaky 100 and 200.
        let set_times = |run_id: String, attempt: i64, ms: i64| {
            let app = &app;
            async move {
                let detail = run(app, &run_id).await;
                let step = uuid(&detail["steps"][0]["id"]);
                let base = Utc::now() - Duration::minutes(10);
                // An attempt that ended before its step's last has a row; the last is the step's.
                let times = || vec![SqlValue::Time(base), SqlValue::Time(base + Duration::milliseconds(ms)), SqlValue::Id(step)];
                let sql = format!(
                    "UPDATE action_attempts SET started_at = $1, finished_at = $2 WHERE action_execution_id = $3 AND attempt = {attempt}"
                );
                app.execute(&sql, times()).await;
                let sql = format!(
                    "UPDATE action_executions SET attempt_started_at = $1, finished_at = $2 WHERE id = $3 AND attempt = {attempt}"
                );
                app.execute(&sql, times()).await;
            }
        };
        for (i, ms) in [10, 20, 30, 40].into_iter().enumerate() {
            set_times(good_runs[i].clone(), 1, ms).await;
        }
        set_times(bad_run.clone(), 1, 50).await;
        set_times(flaky_run.clone(), 1, 100).await;
        set_times(flaky_run.clone(), 2, 200).await;
        // The fifth good run happened two days ago: outside 24h, inside 7d.
        let old = Utc::now() - Duration::days(2);
        let old_run = uuid::Uuid::parse_str(&good_runs[4]).unwrap();
        let old_step = uuid(&run(&app, &good_runs[4]).await["steps"][0]["id"]);
        app.execute("UPDATE flow_executions SET created_at = $1 WHERE id = $2", vec![SqlValue::Time(old), SqlValue::Id(old_run)]).await;
        app.execute("UPDATE action_executions SET created_at = $1 WHERE id = $2", vec![SqlValue::Time(old), SqlValue::Id(old_step)]).await;
        app.execute("UPDATE action_executions SET attempt_started_at = $1, finished_at = $1 WHERE id = $2", vec![SqlValue::Time(old), SqlValue::Id(old_step)]).await;

        let stats = app.get("/api/stats", &app.owner).await.expect(200);
        let action = |kind: &str| stats["actions"].as_array().unwrap().iter().find(|a| a["actionType"] == kind).cloned().unwrap();
        assert_eq!(action("set_variable"), json!({
            "actionType": "set_variable", "started": 5, "completed": 4, "failed": 1, "timeout": 0, "cancelled": 1,
            "successRate": 0.8, "durationMs": {"p50": 30.0, "p95": 50.0, "p99": 50.0}, "retries": 0
        }));
        assert_eq!(action("run_api_request"), json!({
            "actionType": "run_api_request", "started": 1, "completed": 0, "failed": 1, "timeout": 0, "cancelled": 0,
            "successRate": 0.0, "durationMs": {"p50": 100.0, "p95": 200.0, "p99": 200.0}, "retries": 1
        }));
        assert_eq!(stats["actions"].as_array().unwrap().len(), 2);
        assert_eq!(stats["errors"], json!([
            {"category": "network", "severity": "low", "count": 2},
            {"category": "validation", "severity": "medium", "count": 1}
        ]));
        let flow = |id: &str| stats["flows"].as_array().unwrap().iter().find(|f| f["flowId"] == id).cloned().unwrap();
        assert_eq!(flow(&good), json!({"flowId": good, "name": "good", "executions": 4, "completed": 4, "failed": 0, "cancelled": 0, "successRate": 1.0}));
        assert_eq!(flow(&bad), json!({"flowId": bad, "name": "bad", "executions": 1, "completed": 0, "failed": 1, "cancelled": 0, "successRate": 0.0}));
        assert_eq!(flow(&flaky)["failed"], 1);
        assert_eq!(flow(&stopped), json!({"flowId": stopped, "name": "stopped", "executions": 1, "completed": 0, "failed": 0, "cancelled": 1, "successRate": null}));

        // A week counts the old run; one flow narrows everything to it.
        let week = app.get("/api/stats?window=7d", &app.owner).await.expect(200);
        let executions = week["flows"].as_array().unwrap().iter().find(|f| f["flowId"] == good.as_str()).unwrap()["executions"].clone();
        assert_eq!(executions, 5);
        let narrowed = app.get(&format!("/api/stats?flowId={good}"), &app.owner).await.expect(200);
        assert_eq!(narrowed["actions"].as_array().unwrap().len(), 1);
        assert_eq!(narrowed["actions"][0]["started"], 4);
        assert_eq!(narrowed["actions"][0]["durationMs"], json!({"p50": 20.0, "p95": 40.0, "p99": 40.0}));
        assert_eq!(narrowed["errors"], json!([]));
        assert_eq!(narrowed["flows"].as_array().unwrap().len(), 1);
        let hour = app.get("/api/stats?window=1h", &app.owner).await.expect(200);
        assert_eq!(hour["actions"], stats["actions"]);

        // Bad input, and another workspace sees nothing of it.
        app.get("/api/stats?window=2d", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/stats?flowId=nope", &app.owner).await.problem(400, "invalid_query");
        let (_, other) = app.other_workspace().await;
        app.get(&format!("/api/stats?flowId={good}"), &other).await.problem(404, "not_found");
        let theirs = app.get("/api/stats", &other).await.expect(200);
        assert_eq!(theirs["actions"], json!([]));
        assert_eq!(theirs["flows"], json!([]));
    }
}
