//! Flowline as several processes: three `flowline worker`s sharing one PostgreSQL database
//! through a SIGKILL and dropped connections, and a SQLite server killed mid-write.

use std::path::Path;
use std::process::Command;

use flowline_core::action::ActionType;
use flowline_core::status::TriggerKind;
use flowline_engine::{Engine, EngineConfig, StartRun};
use serde_json::json;
use sqlx::{Connection, PgConnection};

mod common;

use common::{BIN, Events, Proc, count, pg_workspace, published_flow, serve, wait_for, worker};

/// Running steps whose lease owner matches `holder` (a `LIKE` pattern).
async fn held_by(conn: &mut PgConnection, holder: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM action_executions WHERE status = 'running' AND lease_owner LIKE $1",
    )
    .bind(holder)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_two_thousand_steps_exactly_once_through_a_sigkill_and_dropped_connections()
 {
    const RUNS: usize = 200;
    const STEPS: usize = 10;
    let (db, store, w) = pg_workspace().await;
    let actions = (0..STEPS)
        .map(|i| {
            (
                ActionType::SetVariable,
                json!({"name": format!("v{i}"), "type": "number", "value": format!("{{{{ trigger.run * 100 + {i} }}}}")}),
            )
        })
        .collect();
    let flow = published_flow(&*store, w, "chain", actions).await;
    let engine = Engine::new(store.clone(), EngineConfig::default());
    for run in 0..RUNS {
        let start = StartRun {
            flow_id: flow.id,
            contact_id: None,
            trigger_kind: TriggerKind::Manual,
            trigger: json!({"run": run}),
            input: json!({}),
            dedupe_key: None,
        };
        engine.start(w, start).await.unwrap();
    }

    let mut workers: Vec<Proc> = (0..3).map(|_| worker(db.url())).collect();
    wait_for(db.url(), "a quarter of the steps", async |c| {
        count(
            c,
            "SELECT count(*) FROM action_executions WHERE status = 'completed'",
        )
        .await
            >= (RUNS * STEPS / 4) as i64
    })
    .await;
    // One worker dies mid-run, holding steps; the others rescue them once their leases expire.
    // It is frozen first, and killed only once the database shows it holding running steps,
    // so the kill is sure to strand some.
    let holder = format!("%-{}", workers[0].pid());
    loop {
        wait_for(db.url(), "the first worker to hold steps", async |c| {
            held_by(c, &holder).await > 0
        })
        .await;
        workers[0].nudge("-STOP");
        let mut check = PgConnection::connect(db.url()).await.unwrap();
        if held_by(&mut check, &holder).await > 0 {
            break;
        }
        workers[0].nudge("-CONT");
    }
    let _ = workers[0].signal("-KILL");
    // Every connection to the database is dropped under the survivors' feet.
    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!dropped.is_empty());
    wait_for(db.url(), "every run", async |c| {
        count(
            c,
            "SELECT count(*) FROM flow_executions WHERE status = 'completed'",
        )
        .await
            == RUNS as i64
    })
    .await;
    for worker in &mut workers[1..] {
        let _ = worker.signal("-TERM");
    }

    let mut c = PgConnection::connect(db.url()).await.unwrap();
    let total = (RUNS * STEPS) as i64;
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM action_executions").await,
        total,
        "one row per step"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM action_executions WHERE status = 'completed'"
        )
        .await,
        total
    );
    assert_eq!(
        count(
            &mut c,
            concat!(
                "SELECT count(*) FROM ",
                attempts!(),
                " a WHERE outcome = 'completed'"
            )
        )
        .await,
        total
    );
    assert_eq!(
        count(
            &mut c,
            concat!(
                "SELECT count(*) FROM (SELECT action_execution_id FROM ",
                attempts!(),
                " a WHERE outcome = 'completed' GROUP BY 1 HAVING count(*) > 1) twice"
            )
        )
        .await,
        0,
        "no step completed twice"
    );
    assert_eq!(
        count(
            &mut c,
            concat!(
                "SELECT count(*) FROM ",
                attempts!(),
                " a JOIN ",
                attempts!(),
                " b ON a.action_execution_id = b.action_execution_id AND a.attempt < b.attempt \
                 WHERE a.finished_at IS NULL OR b.started_at < a.finished_at"
            )
        )
        .await,
        0,
        "no step was ever held by two workers at once"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM action_variables").await,
        total
    );
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM action_variables v JOIN flow_executions e ON e.id = v.flow_execution_id \
         WHERE (v.value #>> '{}')::numeric <> (e.trigger->>'run')::numeric * 100 + substr(v.name, 2)::numeric",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every variable holds its own run's value");
    assert!(
        count(
            &mut c,
            "SELECT count(*) FROM action_attempts WHERE outcome = 'worker_lost'"
        )
        .await
            >= 1,
        "the killed worker's steps were rescued"
    );
    // ... and finished by the others: each has a later, completed attempt.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM action_attempts l JOIN action_executions s ON s.id = l.action_execution_id \
             WHERE l.outcome = 'worker_lost' AND (s.status <> 'completed' OR s.attempt <= l.attempt)"
        )
        .await,
        0,
        "every rescued step was finished by a surviving worker"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM action_executions WHERE status = 'running'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_start_each_schedule_slot_once() {
    use flowline_store::flow::{FlowUpdate, PlannedSchedule};
    let (db, store, w) = pg_workspace().await;
    let flow = published_flow(
        &*store,
        w,
        "every second",
        vec![(
            ActionType::SetVariable,
            json!({"name": "slot", "type": "string", "value": "{{ trigger.scheduledAt }}"}),
        )],
    )
    .await;
    // Every second, from the next one; three processes' schedulers race for each slot.
    let first =
        chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0) + chrono::Duration::seconds(1);
    let schedule = PlannedSchedule {
        schedule: flowline_core::schedule::Schedule {
            cron: "* * * * * *".into(),
            timezone: "Europe/Paris".into(),
        },
        next_fire_at: Some(first),
    };
    store
        .update_flow(
            w,
            &flowline_store::tenancy::Actor::system("test"),
            flow.id,
            FlowUpdate {
                schedule: Some(Some(schedule)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut workers: Vec<Proc> = (0..3).map(|_| worker(db.url())).collect();
    wait_for(db.url(), "five scheduled runs completed", async |c| {
        count(
            c,
            "SELECT count(*) FROM flow_executions WHERE status = 'completed'",
        )
        .await
            >= 5
    })
    .await;
    for worker in &mut workers {
        worker.signal("-TERM");
    }
    let mut c = PgConnection::connect(db.url()).await.unwrap();
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) - count(DISTINCT trigger->>'scheduledAt') FROM flow_executions"
        )
        .await,
        0,
        "a slot started more than one run"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM flow_executions WHERE trigger_kind <> 'schedule' \
             OR (trigger->>'scheduledAt')::timestamptz < now() - interval '1 hour' \
             OR date_trunc('second', (trigger->>'scheduledAt')::timestamptz) <> (trigger->>'scheduledAt')::timestamptz"
        )
        .await,
        0,
        "every run is a schedule's, at a whole second"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM flow_executions e JOIN action_variables v ON v.flow_execution_id = e.id \
             WHERE v.value #>> '{}' <> e.trigger->>'scheduledAt'"
        )
        .await,
        0,
        "each run saw its own slot"
    );
    assert!(count(&mut c, "SELECT count(*) FROM action_variables").await >= 5);
}

/// `flowline serve` on the SQLite default in `dir`.
fn serve_in(dir: &Path) -> (Proc, String, Option<String>) {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FLOWLINE_DATA_DIR")
        .env("FLOWLINE_LEASE_MS", "1000")
        .env("FLOWLINE_LOG", "warn");
    serve(command)
}

/// Sends `body` to `path` as `token` and returns the answer's status and JSON, or `None` when
/// the server could not be reached.
async fn call(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.ok()?;
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_nothing_it_acknowledged_when_killed_mid_write() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, token) = serve_in(dir.path());
    let token = token.unwrap();
    let client = reqwest::Client::new();
    // A flow of three steps, each setting a variable.
    let (_, flow) = call(&client, &base, &token, Method::POST, "/api/flows",
        Some(json!({"name": "chain", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}})))
        .await
        .unwrap();
    let flow = flow["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        let (status, _) = call(&client, &base, &token, Method::POST, &format!("/api/actions/flows/{flow}"),
            Some(json!({"nodeId": "n", "actionType": "set_variable",
                "actionConfig": {"name": format!("v{i}"), "type": "number", "value": format!("{{{{ trigger.run * 10 + {i} }}}}")}})))
            .await
            .unwrap();
        assert_eq!(status, 201);
    }
    let (status, _) = call(
        &client,
        &base,
        &token,
        Method::POST,
        &format!("/api/flows/{flow}/publish"),
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);

    // Four writers create flows (each through the pool of ordinary connections) and two start
    // runs (queued by the engine's writer, their steps ended by its group commits), while a
    // reader records the runs it sees completed, until the server is killed.
    let (flows_tx, mut flows_rx) = tokio::sync::mpsc::unbounded_channel();
    let (runs_tx, mut runs_rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let mut writers = Vec::new();
    for writer in 0..6 {
        let (client, base, token, flow) =
            (client.clone(), base.clone(), token.clone(), flow.clone());
        let (flows, runs, started) = (flows_tx.clone(), runs_tx.clone(), started.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                if writer < 4 {
                    match call(
                        &client,
                        &base,
                        &token,
                        Method::POST,
                        "/api/flows",
                        Some(json!({"name": format!("w{writer} #{i}")})),
                    )
                    .await
                    {
                        Some((201, body)) => {
                            let _ = flows.send(body["id"].as_str().unwrap().to_owned());
                        }
                        _ => break,
                    }
                } else {
                    let run = i64::from(writer) * 100_000 + i;
                    match call(
                        &client,
                        &base,
                        &token,
                        Method::POST,
                        &format!("/api/flows/{flow}/executions"),
                        Some(json!({"input": {"run": run}})),
                    )
                    .await
                    {
                        Some((202, body)) => {
                            let id = body["id"].as_str().unwrap().to_owned();
                            started.lock().unwrap().push((id.clone(), run));
                            let _ = runs.send((id, run));
                        }
                        _ => break,
                    }
                }
            }
        }));
    }
    drop((flows_tx, runs_tx));
    let (seen_tx, mut seen_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, serde_json::Value)>();
    let reader = {
        let (client, base, token, started) =
            (client.clone(), base.clone(), token.clone(), started.clone());
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let Some((id, _)) = ({
                    let started = started.lock().unwrap();
                    (!started.is_empty()).then(|| started[next % started.len()].clone())
                }) else {
                    tokio::task::yield_now().await;
                    continue;
                };
                next += 1;
                match call(
                    &client,
                    &base,
                    &token,
                    Method::GET,
                    &format!("/api/executions/{id}"),
                    None,
                )
                .await
                {
                    Some((200, run)) if run["status"] == "completed" => {
                        let _ = seen_tx.send((id, run));
                    }
                    Some((200, _)) => {}
                    _ => break,
                }
            }
        })
    };
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 300 {
        acknowledged.push(flows_rx.recv().await.expect("acknowledged flows"));
    }
    let mut seen_completed = std::collections::HashMap::new();
    while seen_completed.len() < 20 {
        let (id, run) = seen_rx.recv().await.expect("runs seen completed");
        seen_completed.insert(id, run);
    }
    let _ = server.signal("-KILL");
    for writer in writers {
        writer.await.unwrap();
    }
    reader.await.unwrap();
    while let Some(id) = flows_rx.recv().await {
        acknowledged.push(id);
    }
    let mut runs = Vec::new();
    while let Some(run) = runs_rx.recv().await {
        runs.push(run);
    }
    while let Some((id, run)) = seen_rx.recv().await {
        seen_completed.insert(id, run);
    }

    let (_server, base, _) = serve_in(dir.path());
    let get = async |path: String| {
        call(&client, &base, &token, Method::GET, &path, None)
            .await
            .expect("the restarted server answers")
    };
    // Listening first: no run's end after the restart goes unseen.
    let mut events = Events::open(&base, &token, &format!("&flowId={flow}")).await;
    for id in &acknowledged {
        let (status, _) = get(format!("/api/flows/{id}")).await;
        assert_eq!(status, 200, "acknowledged flow {id} was lost");
    }
    // Every run seen completed is as it was; every run acknowledged is there, and the restarted
    // server finishes those the kill interrupted (their leases expire and they are rescued).
    let mut unfinished = std::collections::HashSet::new();
    for (id, _) in &runs {
        let (status, now) = get(format!("/api/executions/{id}")).await;
        assert_eq!(status, 200, "acknowledged run {id} was lost");
        if let Some(before) = seen_completed.get(id) {
            assert_eq!(&now, before, "a run seen completed changed");
        }
        if now["status"] != "completed" {
            unfinished.insert(id.clone());
        }
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        events.until_ended(unfinished),
    )
    .await
    .expect("every acknowledged run ended after the restart");
    // Each run's variables are its own, each written once.
    for (id, run) in &runs {
        let (_, now) = get(format!("/api/executions/{id}")).await;
        assert_eq!(now["status"], "completed", "{now}");
        let mut values: Vec<i64> = now["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_i64().unwrap())
            .collect();
        values.sort();
        assert_eq!(values, vec![run * 10, run * 10 + 1, run * 10 + 2], "{now}");
        let steps = now["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{now}");
        for step in steps {
            let completed = step["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["outcome"] == "completed")
                .count();
            assert_eq!(completed, 1, "{step}");
        }
    }
}
