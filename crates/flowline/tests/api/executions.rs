//! Runs end to end: publish, start, walk, variables, retries, timeouts, error edges, limits,
//! cancellation and resumption — the engine driven step by step with `drain`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use flowline_core::action::ActionType;
use flowline_core::status::ErrorCategory;
use flowline_engine::executor::{Executor, Executors, StepContext, StepOutput};
use flowline_engine::failure::Failure;
use flowline_engine::{Engine, EngineConfig};
use serde_json::{Value, json};

use crate::api_test;
use crate::support::TestApp;

/// An outside service that fails with a 5xx `failures` times, then answers.
struct Flaky {
    failures: AtomicU32,
    calls: AtomicU32,
}

#[async_trait]
impl Executor for Flaky {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(Failure::new(
                ErrorCategory::Upstream,
                "the peer answered 503",
                "wait for the peer to recover",
            ));
        }
        Ok(StepOutput {
            output: json!({"key": step.idempotency_key()}),
            ..Default::default()
        })
    }
}

/// An outside service that never answers.
struct Hangs;

#[async_trait]
impl Executor for Hangs {
    async fn execute(&self, _step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        std::future::pending().await
    }
}

/// An engine over the app's store whose `add_tag` is `flaky` and `send_webhook` hangs.
fn engine_with(app: &TestApp, flaky: Arc<Flaky>, config: EngineConfig) -> Arc<Engine> {
    let mut executors = Executors::standard();
    executors.register(ActionType::AddTag, flaky);
    executors.register(ActionType::SendWebhook, Arc::new(Hangs));
    Engine::with_executors(app.store.clone(), config, executors)
}

fn flaky(failures: u32) -> Arc<Flaky> {
    Arc::new(Flaky {
        failures: AtomicU32::new(failures),
        calls: AtomicU32::new(0),
    })
}

fn node(id: &str) -> Value {
    json!({"id": id, "position": {"x": 0, "y": 0}})
}

/// Creates a flow with `graph`, adds `actions` (node, type, config, extra fields), publishes it.
async fn published(
    app: &TestApp,
    graph: Value,
    actions: Vec<(&str, &str, Value, Value)>,
) -> String {
    let flow = app
        .post(
            "/api/flows",
            &app.owner,
            json!({"name": "f", "graph": graph}),
        )
        .await
        .expect(201);
    let id = flow["id"].as_str().unwrap().to_owned();
    for (node, action_type, config, extra) in actions {
        let mut body = json!({"nodeId": node, "actionType": action_type, "actionConfig": config});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        app.post(&format!("/api/actions/flows/{id}"), &app.owner, body)
            .await
            .expect(201);
    }
    let flow = app
        .post(&format!("/api/flows/{id}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    assert_eq!(flow["status"], "active");
    id
}

async fn start(app: &TestApp, flow: &str, input: Value) -> String {
    let accepted = app
        .post(
            &format!("/api/flows/{flow}/executions"),
            &app.owner,
            json!({"input": input}),
        )
        .await
        .expect(202);
    accepted["id"].as_str().unwrap().to_owned()
}

async fn execution(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/executions/{id}"), &app.owner)
        .await
        .expect(200)
}

fn variable<'a>(execution: &'a Value, name: &str) -> &'a Value {
    execution["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or(&Value::Null)
}

fn set(name: &str, kind: &str, value: Value) -> Value {
    json!({"name": name, "type": kind, "value": value})
}

api_test! {
    async fn a_run_walks_the_graph_with_typed_variables_and_conditions(app: TestApp) {
        let graph = json!({"nodes": [node("start"), node("big"), node("small")], "edges": [
            {"source": "start", "target": "big", "condition": "{{ vars.count > 5 }}"},
            {"source": "start", "target": "small"}
        ]});
        let flow = published(&app, graph, vec![
            ("start", "set_variable", set("count", "number", json!("{{ trigger.n + 1 }}")), json!({})),
            ("start", "set_variable", set("label", "string", json!("n={{ vars.count }}")), json!({})),
            ("big", "set_variable", set("size", "string", json!("big")), json!({})),
            ("small", "set_variable", set("size", "string", json!("small")), json!({})),
        ])
        .await;
        let big = start(&app, &flow, json!({"n": 10})).await;
        let small = start(&app, &flow, json!({"n": 1})).await;
        assert_eq!(execution(&app, &big).await["status"], "pending");
        app.engine.drain().await.unwrap();

        let run = execution(&app, &big).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(variable(&run, "count")["value"], json!(11));
        assert_eq!(variable(&run, "count")["type"], "number");
        assert_eq!(variable(&run, "label")["value"], "n=11");
        assert_eq!(variable(&run, "size")["value"], "big");
        let steps = run["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        assert!(steps.iter().all(|s| s["status"] == "completed" && s["attempt"] == 1));
        assert_eq!(steps[1]["input"], json!({"name": "label", "type": "string", "value": "n=11"}));
        assert_eq!(steps[0]["attempts"][0]["outcome"], "completed");
        assert!(run["startedAt"].is_string() && run["finishedAt"].is_string());
        assert_eq!(variable(&execution(&app, &small).await, "size")["value"], "small");

        let runs = app.get(&format!("/api/flows/{flow}/executions"), &app.owner).await.expect(200);
        assert_eq!(runs["items"].as_array().unwrap().len(), 2);
        let action = steps[0]["actionId"].as_str().unwrap();
        let history = app.get(&format!("/api/actions/{action}/executions"), &app.owner).await.expect(200);
        assert_eq!(history["items"].as_array().unwrap().len(), 2);
        assert_eq!(history["items"][0]["status"], "completed");
    }
}

api_test! {
    async fn only_active_flows_start_and_bad_starts_are_refused(app: TestApp) {
        let draft = app.flow(&app.owner).await;
        app.post(&format!("/api/flows/{draft}/executions"), &app.owner, json!({})).await.problem(409, "conflict");
        let active = published(&app, json!({"nodes": [node("a")]}), vec![]).await;
        let contact = flowline_core::id::ContactId::new();
        app.post(&format!("/api/flows/{active}/executions"), &app.owner, json!({"contactId": contact}))
            .await
            .problem(404, "not_found");
        app.post(&format!("/api/flows/{active}/executions"), &app.owner, json!({"input": [1]})).await.invalid_fields();
        let viewer = app.token(flowline_core::role::Role::Viewer).await;
        app.post(&format!("/api/flows/{active}/executions"), &viewer, json!({})).await.problem(403, "forbidden");
        // A flow with nothing to run completes at once.
        let accepted = app.post(&format!("/api/flows/{active}/executions"), &app.owner, json!({})).await.expect(202);
        assert_eq!(accepted["status"], "completed");
        app.put(&format!("/api/flows/{active}"), &app.owner, json!({"status": "archived"})).await.expect(200);
        app.post(&format!("/api/flows/{active}/executions"), &app.owner, json!({})).await.problem(409, "conflict");
        app.post(&format!("/api/flows/{active}/publish"), &app.owner, json!({})).await.problem(409, "conflict");
        // Another workspace's token does not see the run.
        let (_, other) = app.other_workspace().await;
        app.get(&format!("/api/executions/{}", accepted["id"].as_str().unwrap()), &other).await.problem(404, "not_found");
    }
}

api_test! {
    async fn retryable_failures_back_off_and_succeed_with_one_idempotency_key(app: TestApp) {
        let service = flaky(2);
        let engine = engine_with(&app, service.clone(), EngineConfig::default());
        let flow = published(&app, json!({"nodes": [node("a")]}), vec![
            ("a", "add_tag", json!({"tagName": "x"}), json!({"retry": {"maxAttempts": 3, "initialDelayMs": 0, "jitter": false}})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "completed", "{run}");
        let step = &run["steps"][0];
        assert_eq!(step["attempt"], 3);
        let outcomes: Vec<_> = step["attempts"].as_array().unwrap().iter().map(|a| a["outcome"].clone()).collect();
        assert_eq!(outcomes, [json!("failed"), json!("failed"), json!("completed")]);
        assert_eq!(step["attempts"][0]["error"]["category"], "upstream");
        assert_eq!(step["output"]["key"], step["id"], "the idempotency key is the step id");
        assert_eq!(service.calls.load(Ordering::SeqCst), 3);
    }
}

api_test! {
    async fn a_delayed_retry_waits_for_its_time(app: TestApp) {
        let service = flaky(1);
        let engine = engine_with(&app, service.clone(), EngineConfig::default());
        let flow = published(&app, json!({"nodes": [node("a")]}), vec![
            ("a", "add_tag", json!({"tagName": "x"}), json!({"retry": {"maxAttempts": 3, "initialDelayMs": 3600000, "maxDelayMs": 7200000, "jitter": false}})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        let step = &run["steps"][0];
        assert_eq!(step["status"], "pending", "{run}");
        assert_eq!(step["error"]["category"], "upstream");
        let run_at = chrono::DateTime::parse_from_rfc3339(step["runAt"].as_str().unwrap()).unwrap();
        let wait = run_at.signed_duration_since(chrono::Utc::now());
        assert!(wait > chrono::Duration::minutes(59), "the retry is due in an hour, not {wait}");
        assert_eq!(service.calls.load(Ordering::SeqCst), 1);
    }
}

api_test! {
    async fn exhausted_and_permanent_failures_fail_the_run_which_can_resume(app: TestApp) {
        let service = flaky(u32::MAX);
        let engine = engine_with(&app, service.clone(), EngineConfig::default());
        let flow = published(&app, json!({"nodes": [node("a"), node("b")], "edges": [{"source": "a", "target": "b"}]}), vec![
            ("a", "set_variable", set("kept", "string", json!("yes")), json!({})),
            ("b", "add_tag", json!({"tagName": "x"}), json!({"retry": {"maxAttempts": 2, "initialDelayMs": 0}})),
            ("b", "set_variable", set("after", "boolean", json!(true)), json!({})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["category"], "upstream");
        assert_eq!(run["error"]["retryable"], true);
        assert!(run["error"]["suggestion"].as_str().unwrap().contains("recover"));
        assert_eq!(run["steps"][1]["status"], "failed");
        assert_eq!(run["steps"][1]["attempt"], 2);
        app.post(&format!("/api/executions/{id}/cancel"), &app.owner, json!({})).await.problem(409, "conflict");

        // The peer recovers; the run resumes from the failed step with the variables it had.
        service.failures.store(0, Ordering::SeqCst);
        app.post(&format!("/api/executions/{id}/retry"), &app.owner, json!({})).await.expect(202);
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["steps"].as_array().unwrap().len(), 4);
        assert_eq!(run["steps"][2]["occurrence"], 1);
        assert_eq!(variable(&run, "kept")["value"], "yes");
        assert_eq!(variable(&run, "after")["value"], true);
        app.post(&format!("/api/executions/{id}/retry"), &app.owner, json!({})).await.problem(409, "conflict");

        // A template naming something unknown fails at once, without retries.
        let broken = published(&app, json!({"nodes": [node("a")]}), vec![
            ("a", "set_variable", set("x", "number", json!("{{ vars.nothing_here }}")), json!({})),
        ])
        .await;
        let id = start(&app, &broken, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "failed");
        assert_eq!(run["steps"][0]["attempt"], 1);
        assert_eq!(run["error"]["category"], "validation");
        assert_eq!(run["error"]["retryable"], false);
        let message = run["error"]["message"].as_str().unwrap();
        assert!(message.contains("`value`") && message.contains("nothing_here"), "{}", run["error"]);
        assert!(run["error"]["suggestion"].as_str().unwrap().contains("vars"), "{}", run["error"]);
        // A value that cannot be coerced fails the same way.
        let wrong = published(&app, json!({"nodes": [node("a")]}), vec![
            ("a", "set_variable", set("x", "number", json!("{{ trigger.word }}")), json!({})),
        ])
        .await;
        let id = start(&app, &wrong, json!({"word": "eleven"})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["error"]["category"], "validation");
        assert!(run["error"]["message"].as_str().unwrap().contains("not a number"));
    }
}

api_test! {
    async fn an_error_edge_handles_a_failed_step_and_timeouts_end_in_timeout(app: TestApp) {
        let engine = engine_with(&app, flaky(u32::MAX), EngineConfig::default());
        let graph = json!({"nodes": [node("call"), node("recover")], "edges": [
            {"source": "call", "target": "recover", "onError": true}
        ]});
        let flow = published(&app, graph, vec![
            ("call", "send_webhook", json!({"url": "https://example.com/hook"}), json!({"timeoutMs": 50, "retry": {"maxAttempts": 1}})),
            ("recover", "set_variable", set("recovered", "boolean", json!("true")), json!({})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["steps"][0]["status"], "timeout");
        assert_eq!(run["steps"][0]["error"]["category"], "timeout");
        assert_eq!(run["steps"][0]["attempts"][0]["outcome"], "timeout");
        assert_eq!(variable(&run, "recovered")["value"], true);
    }
}

api_test! {
    async fn a_runaway_loop_stops_at_the_step_limit(app: TestApp) {
        let config = EngineConfig { step_limit: 25, ..Default::default() };
        let engine = engine_with(&app, flaky(0), config);
        let graph = json!({"nodes": [node("loop")], "edges": [{"source": "loop", "target": "loop"}]});
        let flow = published(&app, graph, vec![
            ("loop", "set_variable", set("n", "number", json!("{{ (vars.n if vars.n is defined else 0) + 1 }}")), json!({})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        engine.drain().await.unwrap();
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "failed");
        assert!(run["error"]["message"].as_str().unwrap().contains("limit of 25 steps"), "{}", run["error"]);
        assert_eq!(run["stepCount"], 25);
        assert_eq!(variable(&run, "n")["value"], 25);
        // It failed between steps, not in one: there is no step to resume from.
        let refused = app.post(&format!("/api/executions/{id}/retry"), &app.owner, json!({})).await.problem(409, "conflict");
        assert!(refused["detail"].as_str().unwrap().contains("start a new run"), "{refused}");
    }
}

api_test! {
    async fn a_cancelled_run_starts_no_further_step(app: TestApp) {
        let flow = published(&app, json!({"nodes": [node("a")]}), vec![
            ("a", "set_variable", set("x", "string", json!("y")), json!({})),
        ])
        .await;
        let id = start(&app, &flow, json!({})).await;
        let cancelled = app.post(&format!("/api/executions/{id}/cancel"), &app.owner, json!({})).await.expect(200);
        assert_eq!(cancelled["status"], "cancelled");
        assert_eq!(app.engine.drain().await.unwrap(), 0);
        let run = execution(&app, &id).await;
        assert_eq!(run["status"], "cancelled");
        assert_eq!(run["steps"][0]["status"], "cancelled");
        assert_eq!(run["variables"], json!([]));
        app.post(&format!("/api/executions/{id}/cancel"), &app.owner, json!({})).await.problem(409, "conflict");
        app.post(&format!("/api/executions/{id}/retry"), &app.owner, json!({})).await.problem(409, "conflict");
        let audit = app.get(&format!("/api/audit?entityType=execution&entityId={id}"), &app.owner).await.expect(200);
        assert_eq!(audit["items"][0]["action"], "execution.cancel");
    }
}

api_test! {
    async fn actions_run_by_position_disabled_ones_are_skipped_and_runs_keep_their_version(app: TestApp) {
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "order", "graph": {"nodes": [node("start")], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        let add = |body: Value| {
            let app = &app;
            let flow = flow.clone();
            async move {
                let action = app.post(&format!("/api/actions/flows/{flow}"), &app.owner, body).await.expect(201);
                action["id"].as_str().unwrap().to_owned()
            }
        };
        // Created second, placed first: a later action reads what it set (strict templates
        // would fail the run the other way round).
        add(json!({"nodeId": "start", "actionType": "set_variable", "actionConfig": set("trail", "string", json!("{{ vars.trail }}-x"))})).await;
        add(json!({"nodeId": "start", "actionType": "set_variable", "position": 0, "actionConfig": set("trail", "string", json!("y"))})).await;
        let off = add(json!({"nodeId": "start", "actionType": "set_variable", "enabled": false,
            "actionConfig": set("trail", "string", json!("{{ vars.trail }}-z"))})).await;
        let first = app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        assert_eq!(first["version"], 1);
        let old = start(&app, &flow, json!({})).await;

        // Enabled and published again: version 2. The run started on version 1 stays on it.
        app.put(&format!("/api/actions/flows/{flow}/actions/{off}"), &app.owner, json!({"enabled": true})).await.expect(200);
        let second = app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        assert_eq!(second["version"], 2);
        assert_eq!(second["status"], "active");
        let new = start(&app, &flow, json!({})).await;
        app.engine.drain().await.unwrap();

        let old = execution(&app, &old).await;
        assert_eq!(old["status"], "completed", "{old}");
        assert_eq!(old["flowVersion"], 1);
        assert_eq!(old["steps"].as_array().unwrap().len(), 2, "{old}");
        assert_eq!(variable(&old, "trail")["value"], "y-x");
        let new = execution(&app, &new).await;
        assert_eq!(new["status"], "completed", "{new}");
        assert_eq!(new["flowVersion"], 2);
        assert_eq!(new["steps"].as_array().unwrap().len(), 3, "{new}");
        assert_eq!(variable(&new, "trail")["value"], "y-x-z");
    }
}

api_test! {
    async fn a_finished_run_cannot_be_cancelled_nor_a_completed_one_retried(app: TestApp) {
        let flow = published(&app, json!({"nodes": [node("start")]}), vec![
            ("start", "set_variable", set("n", "number", json!(1)), json!({})),
        ]).await;
        let run = start(&app, &flow, json!({})).await;
        app.engine.drain().await.unwrap();
        assert_eq!(execution(&app, &run).await["status"], "completed");
        let refused = app.post(&format!("/api/executions/{run}/cancel"), &app.owner, json!({})).await.problem(409, "conflict");
        assert!(refused["detail"].as_str().unwrap().contains("completed"), "{refused}");
        app.post(&format!("/api/executions/{run}/retry"), &app.owner, json!({})).await.problem(409, "conflict");
        let after = execution(&app, &run).await;
        assert_eq!(after["status"], "completed");
        assert_eq!(after["steps"].as_array().unwrap().len(), 1);
    }
}

/// A peer that holds every request until the test lets one go, counting those it holds.
struct Held {
    total: std::sync::atomic::AtomicUsize,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    release: tokio::sync::Semaphore,
    arrived: tokio::sync::Notify,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            total: Default::default(),
            now: Default::default(),
            most: Default::default(),
            release: tokio::sync::Semaphore::new(0),
            arrived: Default::default(),
        }
    }
}

api_test! {
    async fn a_queue_runs_no_more_steps_at_once_than_its_limit(app: TestApp) {
        use std::sync::atomic::Ordering::SeqCst;
        let held = Arc::new(Held::default());
        let peer = {
            let held = held.clone();
            axum::Router::new().fallback(move || {
                let held = held.clone();
                async move {
                    let now = held.now.fetch_add(1, SeqCst) + 1;
                    held.most.fetch_max(now, SeqCst);
                    held.total.fetch_add(1, SeqCst);
                    held.arrived.notify_one();
                    held.release.acquire().await.unwrap().forget();
                    held.now.fetch_sub(1, SeqCst);
                    "{}"
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hold", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, peer).await });
        let flow = published(&app, json!({"nodes": [node("start")]}), vec![
            ("start", "run_api_request", json!({"url": url}), json!({})),
        ]).await;
        // The advanced queue runs two steps at once in this process.
        let mut config = app.config.clone();
        config.concurrency.insert(flowline_core::status::Queue::Advanced, 2);
        let engine = Engine::new(app.store.clone(), config);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = engine.spawn_workers(stopped);
        let mut runs = Vec::new();
        for _ in 0..6 {
            runs.push(start(&app, &flow, json!({})).await);
        }
        // Each time two more have come than were let go, one is let go: a third held at once
        // would be counted.
        for released in 0..6 {
            let expected = (released + 2).min(6);
            tokio::time::timeout(std::time::Duration::from_secs(20), async {
                while held.total.load(SeqCst) < expected {
                    held.arrived.notified().await;
                }
            })
            .await
            .expect("the queue's steps reached the peer");
            held.release.add_permits(1);
        }
        stop.send(true).unwrap();
        for worker in workers {
            worker.await.unwrap();
        }
        assert_eq!(held.most.load(SeqCst), 2, "steps held at once");
        for run in &runs {
            assert_eq!(execution(&app, run).await["status"], "completed");
        }
    }
}
