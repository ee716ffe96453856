//! `GET /api/events`: status changes as Server-Sent Events, resumable without gaps, filtered,
//! workspace-scoped, and fed by every process sharing the database.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::api_test;
use crate::support::TestApp;

/// One SSE frame: a data event, or a comment (heartbeat).
#[derive(Debug)]
enum Frame {
    Event {
        id: String,
        kind: String,
        data: Value,
    },
    Comment(String),
}

struct Stream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Stream {
    async fn open(
        app: &TestApp,
        token: &str,
        query: &str,
        last: Option<&str>,
    ) -> Result<Self, u16> {
        let mut request = reqwest::Client::new()
            .get(format!("{}/api/events?heartbeatMs=300{query}", app.base))
            .bearer_auth(token);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last);
        }
        let response = request.send().await.unwrap();
        if response.status() != 200 {
            return Err(response.status().as_u16());
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Ok(Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data, mut comment) =
                    (String::new(), String::new(), String::new(), None);
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    } else if let Some(v) = line.strip_prefix(':') {
                        comment = Some(v.trim().to_owned());
                    }
                }
                if data.is_empty() {
                    return Frame::Comment(comment.unwrap_or_default());
                }
                return Frame::Event {
                    id,
                    kind,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .expect("a frame within 30 s")
                .expect("the stream is open")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until (and with) `run`'s `execution.status` event `completed`.
    async fn until_completed(&mut self, run: &str) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        loop {
            if let Frame::Event { id, kind, data } = self.frame().await {
                assert_eq!(data["type"], kind);
                assert_eq!(data["id"], id);
                let done = kind == "execution.status"
                    && data["executionId"] == run
                    && data["status"] == "completed";
                events.push((id, data));
                if done {
                    return events;
                }
            }
        }
    }
}

async fn two_step_flow(app: &TestApp) -> String {
    let flow = app
        .post("/api/flows", &app.owner, json!({"name": "e", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    for name in ["a", "b"] {
        app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
            json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": name, "type": "number", "value": 1}}))
            .await
            .expect(201);
    }
    app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    flow
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

fn key(id: &str) -> (i64, i64) {
    let (a, b) = id.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

api_test! {
    async fn status_changes_stream_in_order_resume_without_gaps_and_stay_in_their_workspace(app: TestApp) {
        let flow = two_step_flow(&app).await;
        let mut all = Stream::open(&app, &app.owner, "", None).await.unwrap();
        let run = start(&app, &flow).await;
        app.engine.drain().await.unwrap();
        let events = all.until_completed(&run).await;
        let ids: Vec<(i64, i64)> = events.iter().map(|(id, _)| key(id)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order: {ids:?}");
        let steps: Vec<(String, String)> = events
            .iter()
            .filter(|(_, e)| e["type"] == "step.status")
            .map(|(_, e)| (e["stepId"].as_str().unwrap().to_owned(), e["status"].as_str().unwrap().to_owned()))
            .collect();
        let detail = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        for step in detail["steps"].as_array().unwrap() {
            let seen: Vec<&str> = steps.iter().filter(|(id, _)| id == step["id"].as_str().unwrap()).map(|(_, s)| s.as_str()).collect();
            assert_eq!(seen, vec!["pending", "running", "completed"], "{step}");
        }
        let runs: Vec<&str> = events.iter().filter(|(_, e)| e["type"] == "execution.status").map(|(_, e)| e["status"].as_str().unwrap()).collect();
        assert_eq!(runs.first(), Some(&"pending"));
        assert_eq!(runs.last(), Some(&"completed"));
        assert_eq!(events[0].1["flowId"], flow.as_str());

        // Resumed after the third event: exactly the rest, nothing missed.
        let mut resumed = Stream::open(&app, &app.owner, "", Some(&events[2].0)).await.unwrap();
        let rest = resumed.until_completed(&run).await;
        assert_eq!(rest.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
                   events[3..].iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
        // The same through the query string.
        let mut again = Stream::open(&app, &app.owner, &format!("&lastEventId={}", events[2].0), None).await.unwrap();
        assert_eq!(again.until_completed(&run).await.len(), rest.len());

        // Filtered to one run: another run's events never show.
        let other_flow = two_step_flow(&app).await;
        let other_run = start(&app, &other_flow).await;
        let mut one = Stream::open(&app, &app.owner, &format!("&executionId={run}"), Some("0-0")).await.unwrap();
        app.engine.drain().await.unwrap();
        let only = one.until_completed(&run).await;
        assert_eq!(only.len(), events.len());
        assert!(only.iter().all(|(_, e)| e["executionId"] == run.as_str()));
        let mut by_flow = Stream::open(&app, &app.owner, &format!("&flowId={other_flow}"), Some("0-0")).await.unwrap();
        let theirs = by_flow.until_completed(&other_run).await;
        assert!(theirs.iter().all(|(_, e)| e["flowId"] == other_flow.as_str()));

        // Another workspace, reading from the very start, sees heartbeats and nothing else.
        let (_, other) = app.other_workspace().await;
        let mut foreign = Stream::open(&app, &other, "", Some("0-0")).await.unwrap();
        match foreign.frame().await {
            Frame::Comment(text) => assert_eq!(text, "heartbeat"),
            Frame::Event { data, .. } => panic!("another workspace saw {data}"),
        }
        match foreign.frame().await {
            Frame::Comment(_) => {}
            Frame::Event { data, .. } => panic!("another workspace saw {data}"),
        }

        // Bad input.
        assert_eq!(Stream::open(&app, &app.owner, "", Some("garbage")).await.err(), Some(400));
        assert_eq!(Stream::open(&app, &app.owner, "&heartbeatMs=5", None).await.err(), Some(400));
        assert_eq!(Stream::open(&app, &app.owner, &format!("&executionId={flow}"), None).await.err(), Some(404));
        assert_eq!(Stream::open(&app, &other, &format!("&flowId={flow}"), None).await.err(), Some(404));

        // On PostgreSQL, a run executed by another engine with its own connections (as another
        // process would) streams here too.
        if let Some(url) = &app.pg_url {
            let store = flowline_store_postgres::PgStore::connect(&flowline_store_postgres::PgSettings::new(url.clone())).await.unwrap();
            let elsewhere = flowline_engine::Engine::new(std::sync::Arc::new(store), flowline_engine::EngineConfig::default());
            let mut live = Stream::open(&app, &app.owner, "", None).await.unwrap();
            let third = start(&app, &flow).await;
            elsewhere.drain().await.unwrap();
            let seen = live.until_completed(&third).await;
            assert!(seen.iter().any(|(_, e)| e["type"] == "step.status" && e["status"] == "completed"));
        }
    }
}

api_test! {
    async fn steps_handed_on_in_place_are_queued_started_and_ended_like_any_other(app: TestApp) {
        // Five steps in a row, run by real claiming loops that go on with a run in place for at
        // most two steps before sending it back through the queue.
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "chain", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        for i in 0..5 {
            app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
                json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": format!("v{i}"), "type": "number", "value": format!("{{{{ {i} + 1 }}}}")}}))
                .await
                .expect(201);
        }
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        let engine = flowline_engine::Engine::new(
            app.store.clone(),
            flowline_engine::EngineConfig { hand_on_steps: 2, ..app.config.clone() },
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = engine.spawn_workers(stopped);
        let mut all = Stream::open(&app, &app.owner, "", None).await.unwrap();
        let run = start(&app, &flow).await;
        let events = all.until_completed(&run).await;
        stop.send(true).unwrap();
        for worker in workers {
            worker.await.unwrap();
        }

        let detail = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        let steps = detail["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 5);
        for step in steps {
            assert_eq!(step["status"], "completed", "{step}");
            assert_eq!(step["attempt"], 1, "{step}");
            assert_eq!(step["attempts"].as_array().unwrap().len(), 1, "{step}");
            let seen: Vec<(&str, i64)> = events
                .iter()
                .filter(|(_, e)| e["type"] == "step.status" && e["stepId"] == step["id"])
                .map(|(_, e)| (e["status"].as_str().unwrap(), e["attempt"].as_i64().unwrap()))
                .collect();
            assert_eq!(seen, vec![("pending", 0), ("running", 1), ("completed", 1)], "{step}");
        }
        let vars = &detail["variables"];
        let values: Vec<i64> = (0..5)
            .map(|i| {
                vars.as_array().unwrap().iter().find(|v| v["name"] == format!("v{i}")).unwrap()["value"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(values, vec![1, 2, 3, 4, 5]);
        // Steps 2 and 3 were handed on; step 4 went back through the queue, and 5 was handed on.
        let metrics = engine.metrics().render(&[]);
        assert!(
            metrics.lines().any(|l| l == r#"flowline_steps_handed_on_total{queue="basic"} 3"#),
            "{metrics}"
        );
    }
}

/// A published flow of `steps` set_variable steps in a row, in the workspace `token` belongs to.
async fn chain(app: &TestApp, token: &str, steps: usize) -> String {
    let flow = app
        .post("/api/flows", token, json!({"name": "chain", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    for i in 0..steps {
        app.post(&format!("/api/actions/flows/{flow}"), token,
            json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": format!("v{i}"), "type": "number", "value": i}}))
            .await
            .expect(201);
    }
    app.post(&format!("/api/flows/{flow}/publish"), token, json!({}))
        .await
        .expect(200);
    flow
}

/// With two slots held by a busy workspace's two long runs, how many of their steps end between
/// a quiet workspace's one step being queued and its start, when runs go on in place for at most
/// `hand_on_steps` steps.
async fn steps_before_the_quiet_one(
    app: &TestApp,
    hand_on_steps: u32,
    long: &str,
    quiet: (&str, &str),
) -> usize {
    use flowline_core::id::{ExecutionId, WorkspaceId};
    let mut config = flowline_engine::EngineConfig {
        hand_on_steps,
        ..app.config.clone()
    };
    config
        .concurrency
        .insert(flowline_core::status::Queue::Basic, 2);
    let engine = flowline_engine::Engine::new(app.store.clone(), config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = engine.spawn_workers(stopped);
    let mut busy = Stream::open(app, &app.owner, "", None).await.unwrap();
    let runs = [start(app, long).await, start(app, long).await];
    // Both runs hold a slot once one of their steps has ended.
    loop {
        if let Frame::Event { data, .. } = busy.frame().await
            && data["type"] == "step.status"
            && data["status"] == "completed"
        {
            break;
        }
    }
    let (quiet_flow, quiet_token) = quiet;
    let quiet_run = start_as(app, quiet_flow, quiet_token).await;
    let mut theirs = Stream::open(app, quiet_token, "", Some("0-0"))
        .await
        .unwrap();
    theirs.until_completed(&quiet_run).await;
    stop.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let id = |run: &str| -> ExecutionId { run.parse().unwrap() };
    let quiet_workspace: WorkspaceId = app
        .get(&format!("/api/executions/{quiet_run}"), quiet_token)
        .await
        .expect(200)["workspaceId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let step = app
        .store
        .get_execution(quiet_workspace, id(&quiet_run))
        .await
        .unwrap()
        .steps
        .remove(0);
    let (queued, started) = (step.created_at, step.started_at.unwrap());
    let mut between = 0;
    for run in &runs {
        for step in app
            .store
            .get_execution(app.workspace, id(run))
            .await
            .unwrap()
            .steps
        {
            if step.finished_at.is_some_and(|t| t > queued && t <= started) {
                between += 1;
            }
        }
    }
    between
}

async fn start_as(app: &TestApp, flow: &str, token: &str) -> String {
    let run = app
        .post(&format!("/api/flows/{flow}/executions"), token, json!({}))
        .await
        .expect(202);
    run["id"].as_str().unwrap().to_owned()
}

api_test! {
    async fn a_run_goes_back_through_the_fair_queue_after_its_steps_in_place(app: TestApp) {
        let (_, other) = app.other_workspace().await;
        let long = chain(&app, &app.owner, 100).await;
        let quiet = chain(&app, &other, 1).await;
        // Runs go on in place for three steps at most: the quiet workspace's step is claimed as
        // soon as one of the long runs returns to the queue, after at most four of its steps and
        // as many of the other's, running beside it. (On PostgreSQL a step queued by a finisher
        // transaction that began before the quiet step was queued counts as older: each of the
        // two lanes may win the long runs one more turn. Seen: 2 to 10.)
        let capped = steps_before_the_quiet_one(&app, 3, &long, (&quiet, &other)).await;
        assert!(capped <= 24, "{capped} steps of the busy workspace ended first");
        // Without the cap, it waits for a whole long run (100 steps, the other's beside them;
        // seen: about 200).
        let uncapped = steps_before_the_quiet_one(&app, 1_000, &long, (&quiet, &other)).await;
        assert!(uncapped >= 50, "only {uncapped} steps of the busy workspace ended first");
    }
}

/// A store for workers as another process would have it: on PostgreSQL a pool of its own, told
/// of this process's work and cancels by NOTIFY through this process's relay (until `stopped`);
/// on SQLite, where one process owns the file, the app's own store and signal.
async fn as_another_process(
    app: &TestApp,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> std::sync::Arc<dyn flowline_store::Store> {
    match &app.pg_url {
        Some(url) => {
            let relay = app.store.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move { relay.relay_wakeups(stopped).await });
            let settings = flowline_store_postgres::PgSettings::new(url.clone());
            std::sync::Arc::new(
                flowline_store_postgres::PgStore::connect(&settings)
                    .await
                    .unwrap(),
            )
        }
        None => app.store.clone(),
    }
}

api_test! {
    async fn wake_ups_start_new_steps_and_due_retries_without_the_slow_poll(app: TestApp) {
        // Workers whose safety-net poll is an hour away: only wake-ups can start their steps.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let store = as_another_process(&app, &stopped).await;
        let engine = flowline_engine::Engine::new(
            store,
            flowline_engine::EngineConfig { poll_interval: Duration::from_secs(3600), ..app.config.clone() },
        );
        let workers = engine.spawn_workers(stopped);
        let mut all = Stream::open(&app, &app.owner, "", None).await.unwrap();

        // A new run's steps.
        let flow = two_step_flow(&app).await;
        let run = start(&app, &flow).await;
        tokio::time::timeout(Duration::from_secs(20), all.until_completed(&run))
            .await
            .expect("the run's steps were woken for, not left to the hourly poll");

        // A retry put off for 300 ms runs when it comes due.
        let peer = crate::fake::FakeHttp::start().await;
        peer.answer([
            crate::fake::json_answer(500, json!({"error": "busy"})),
            crate::fake::json_answer(200, json!({"ok": true})),
        ]);
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "retry", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
            json!({"nodeId": "n", "actionType": "run_api_request", "actionConfig": {"url": format!("{}/price", peer.url)},
                "retry": {"maxAttempts": 2, "initialDelayMs": 300, "jitter": false}}))
            .await
            .expect(201);
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        let run = start(&app, &flow).await;
        tokio::time::timeout(Duration::from_secs(20), all.until_completed(&run))
            .await
            .expect("the retry was woken for when it came due, not left to the hourly poll");
        stop.send(true).unwrap();
        for worker in workers {
            worker.await.unwrap();
        }

        let detail = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        let attempts = detail["steps"][0]["attempts"].as_array().unwrap().clone();
        assert_eq!(attempts.len(), 2, "{detail}");
        assert_eq!(attempts[0]["outcome"], "failed", "{detail}");
        assert_eq!(attempts[1]["outcome"], "completed", "{detail}");
        let time = |v: &Value| v.as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
        let waited = time(&attempts[1]["startedAt"]) - time(&attempts[0]["finishedAt"]);
        assert!(waited >= chrono::Duration::milliseconds(200), "the retry waited {waited}");
        assert_eq!(peer.received().len(), 2);
    }
}

api_test! {
    async fn a_busy_workspace_beside_nine_quiet_ones_is_claimed_past_its_share(app: TestApp) {
        // 300 single-step runs in this workspace and one in each of nine others, all queued
        // before the workers start. With ten workspaces due, a claim of 50 offers each its share
        // and comes back short; the busy workspace's other steps must be claimed next, not at the
        // slow poll, an hour away here.
        let busy = chain(&app, &app.owner, 1).await;
        let mut quiet = Vec::new();
        for _ in 0..9 {
            let (_, token) = app.other_workspace().await;
            let flow = chain(&app, &token, 1).await;
            quiet.push((flow, token));
        }
        for _ in 0..300 {
            start(&app, &busy).await;
        }
        for (flow, token) in &quiet {
            start_as(&app, flow, token).await;
        }
        let mut all = Stream::open(&app, &app.owner, "", None).await.unwrap();
        let mut config = flowline_engine::EngineConfig {
            poll_interval: Duration::from_secs(3600),
            ..app.config.clone()
        };
        config.concurrency.insert(flowline_core::status::Queue::Basic, 50);
        let engine = flowline_engine::Engine::new(app.store.clone(), config);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = engine.spawn_workers(stopped);
        let mut completed = 0;
        tokio::time::timeout(Duration::from_secs(60), async {
            while completed < 300 {
                if let Frame::Event { data, .. } = all.frame().await
                    && data["type"] == "execution.status"
                    && data["status"] == "completed"
                {
                    completed += 1;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("only {completed} of the busy workspace's 300 runs completed"));
        stop.send(true).unwrap();
        for worker in workers {
            worker.await.unwrap();
        }
    }
}

api_test! {
    async fn a_cancel_stops_the_running_step_at_once_not_at_the_next_heartbeat(app: TestApp) {
        // A peer that takes a request and never answers.
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", peer.local_addr().unwrap());
        let (reached, mut arrived) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let (mut socket, _) = peer.accept().await.unwrap();
            let _ = reached.send(()).await;
            // Held until the caller gives up: a read of 0 bytes (or an error) is its hang-up.
            let mut buffer = vec![0u8; 65536];
            loop {
                match tokio::io::AsyncReadExt::read(&mut socket, &mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = reached.send(()).await;
        });
        // Workers whose heartbeat comes every twenty minutes (a lease of an hour); on PostgreSQL
        // told of the cancel by NOTIFY.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let store = as_another_process(&app, &stopped).await;
        let engine = flowline_engine::Engine::new(
            store,
            flowline_engine::EngineConfig { lease: Duration::from_secs(3600), ..app.config.clone() },
        );
        let workers = engine.spawn_workers(stopped);
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "slow", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
            json!({"nodeId": "n", "actionType": "run_api_request", "actionConfig": {"url": url}, "timeoutMs": 3_600_000}))
            .await
            .expect(201);
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        let mut all = Stream::open(&app, &app.owner, "", None).await.unwrap();
        let run = start(&app, &flow).await;
        arrived.recv().await.unwrap();
        // The step is running, its request in flight.
        app.post(&format!("/api/executions/{run}/cancel"), &app.owner, json!({})).await.expect(200);
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Frame::Event { data, .. } = all.frame().await
                    && data["type"] == "step.status"
                    && data["executionId"] == run.as_str()
                    && data["status"] == "cancelled"
                {
                    break;
                }
            }
        })
        .await
        .expect("the running step was stopped when its run was cancelled");
        tokio::time::timeout(Duration::from_secs(20), arrived.recv())
            .await
            .expect("the step's request was abandoned");
        stop.send(true).unwrap();
        for worker in workers {
            worker.await.unwrap();
        }
        let detail = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        assert_eq!(detail["status"], "cancelled", "{detail}");
        assert_eq!(detail["steps"][0]["status"], "cancelled", "{detail}");
        assert_eq!(detail["steps"][0]["attempts"].as_array().unwrap().len(), 1, "{detail}");
    }
}
