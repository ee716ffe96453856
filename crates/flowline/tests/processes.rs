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

use common::{BIN, Proc, count, pg_workspace, published_flow, serve, wait_for, worker};

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
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM action_executions WHERE status = 'running'"
        )
        .await,
        0
    );
}

/// `flowline serve` on the SQLite default in `dir`.
fn serve_in(dir: &Path) -> (Proc, String, Option<String>) {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FLOWLINE_DATA_DIR")
        .env("FLOWLINE_LOG", "warn");
    serve(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_loses_nothing_it_acknowledged_when_killed_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, token) = serve_in(dir.path());
    let token = token.unwrap();
    let client = reqwest::Client::new();
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (client, base, token, acked) = (
            client.clone(),
            base.clone(),
            token.clone(),
            acked_tx.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let sent = client
                    .post(format!("{base}/api/flows"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("w{writer} #{i}")}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        let _ = acked.send(body["id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
        }));
    }
    drop(acked_tx);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 300 {
        acknowledged.push(acked_rx.recv().await.expect("acknowledgements"));
    }
    let _ = server.signal("-KILL");
    for writer in writers {
        writer.await.unwrap();
    }
    while let Some(id) = acked_rx.recv().await {
        acknowledged.push(id);
    }
    let (_server, base, _) = serve_in(dir.path());
    for id in &acknowledged {
        let response = client
            .get(format!("{base}/api/flows/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged flow {id} was lost");
    }
}
