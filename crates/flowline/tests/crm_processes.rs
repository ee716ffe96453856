//! The CRM actions across processes: three `flowline worker`s assigning a thousand contacts
//! round-robin on PostgreSQL, and a SQLite server, each killed between a step's claim and its
//! commit; every change is made exactly once.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flowline_core::action::ActionType;
use flowline_core::status::TriggerKind;
use flowline_engine::{Engine, EngineConfig, StartRun};
use flowline_store::crm::{NewAgent, NewContact, RunPlanner};
use flowline_store::tenancy::Actor;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

mod common;

use common::{BIN, Events, Proc, count, pg_workspace, published_flow, serve, wait_for, worker};

/// The actions each run takes, in order.
fn actions(board: &str) -> Vec<(ActionType, Value)> {
    vec![
        (ActionType::AddTag, json!({"tagName": "lead"})),
        (
            ActionType::AssignAgent,
            json!({"strategy": "round_robin", "priority": "high"}),
        ),
        (ActionType::MoveToBoard, json!({"boardId": board})),
        (
            ActionType::SetVariable,
            json!({"name": "agent", "type": "string", "value": "{{ contact.assignedAgentId }}"}),
        ),
    ]
}

/// Connections of process `pid` inside a transaction that has locked a contact row for a step
/// and not committed: a step between its claim and its commit, its change made but not kept.
async fn mid_step(conn: &mut PgConnection, pid: u32) -> i64 {
    sqlx::query_scalar(
        "SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
         WHERE a.application_name = $1 AND a.backend_xid IS NOT NULL \
         AND l.relation = 'contacts'::regclass AND l.mode = 'RowShareLock'",
    )
    .bind(format!("flowline-{pid}"))
    .fetch_one(conn)
    .await
    .unwrap()
}

/// The checks both backends share, as (what, SQL, expected) over a finished database.
fn ledger(runs: i64) -> Vec<(&'static str, &'static str, i64)> {
    vec![
        (
            "one tag named lead",
            "SELECT count(*) FROM tags WHERE name = 'lead'",
            1,
        ),
        (
            "every contact tagged once",
            "SELECT count(*) FROM contact_tags",
            runs,
        ),
        (
            "one assignment per contact",
            "SELECT count(*) FROM assignments",
            runs,
        ),
        (
            "no contact assigned twice",
            "SELECT count(*) FROM (SELECT contact_id FROM assignments GROUP BY contact_id HAVING count(*) > 1) twice",
            0,
        ),
        (
            "agents' counters agree with the history",
            "SELECT count(*) FROM agents g WHERE g.assigned_count <> \
             (SELECT count(*) FROM assignments a WHERE a.agent_id = g.id)",
            0,
        ),
        (
            "one card per contact",
            "SELECT count(*) FROM board_cards",
            runs,
        ),
        (
            "one move per contact",
            "SELECT count(*) FROM board_history",
            runs,
        ),
        (
            "every step completed once",
            concat!(
                "SELECT count(*) FROM ",
                attempts!(),
                " a WHERE outcome = 'completed'"
            ),
            runs * 4,
        ),
        (
            "every run completed",
            "SELECT count(*) FROM flow_executions WHERE status = 'completed'",
            runs,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_assign_a_thousand_contacts_round_robin_exactly_once_through_a_kill_mid_step()
{
    const RUNS: usize = 1000;
    const AGENTS: usize = 4;
    let (db, store, w) = pg_workspace().await;
    let actor = Actor::system("test");
    let engine = Engine::new(store.clone(), EngineConfig::default());
    let planner: Arc<dyn RunPlanner> = engine.clone();
    for i in 0..AGENTS {
        let agent = NewAgent {
            name: format!("agent {i}"),
            email: None,
            active: true,
            capacity: RUNS as i32,
        };
        store.create_agent(w, &actor, agent).await.unwrap();
    }
    let board = store
        .create_board(w, &actor, "Sales".into(), vec!["New".into(), "Won".into()])
        .await
        .unwrap();
    let flow = published_flow(&*store, w, "qualify", actions(&board.id.to_string())).await;
    for i in 0..RUNS {
        let contact = NewContact {
            name: Some(format!("Contact {i}")),
            email: Some(format!("c{i}@example.com")),
            attributes: json!({}),
            ..Default::default()
        };
        let contact = store
            .create_contact(w, &actor, contact, &planner)
            .await
            .unwrap();
        let start = StartRun {
            flow_id: flow.id,
            contact_id: Some(contact.id),
            trigger_kind: TriggerKind::Manual,
            trigger: json!({}),
            input: json!({}),
            dedupe_key: None,
        };
        engine.start(w, start).await.unwrap();
    }

    let mut workers: Vec<Proc> = (0..3).map(|_| worker(db.url())).collect();
    // One worker is frozen while one of its steps has changed a contact and not committed, and
    // killed there; its transaction dies with it, and the others redo the step once.
    let pid = workers[0].pid();
    let mut check = PgConnection::connect(db.url()).await.unwrap();
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries < 5_000, "never caught the worker mid-step");
        workers[0].nudge("-STOP");
        if mid_step(&mut check, pid).await > 0 {
            break;
        }
        workers[0].nudge("-CONT");
    }
    let _ = workers[0].signal("-KILL");
    wait_for(db.url(), "every run", async |c| {
        count(
            c,
            "SELECT count(*) FROM flow_executions WHERE status IN ('completed', 'failed')",
        )
        .await
            == RUNS as i64
    })
    .await;
    for worker in &mut workers[1..] {
        let _ = worker.signal("-TERM");
    }

    let mut c = PgConnection::connect(db.url()).await.unwrap();
    // Should a run have failed, its steps' errors say why.
    let failures: Vec<String> = sqlx::query_scalar(
        "SELECT concat(action_type, ' attempt ', attempt, ': ', error::text) FROM action_executions \
         WHERE status NOT IN ('completed', 'pending') ORDER BY id LIMIT 5",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for (what, sql, expected) in ledger(RUNS as i64) {
        let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(
            got, expected,
            "{what}; steps that did not complete: {failures:#?}"
        );
    }
    let per_agent: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM assignments GROUP BY agent_id ORDER BY count(*)")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(per_agent.len(), AGENTS);
    assert!(
        per_agent[AGENTS - 1] - per_agent[0] <= 1,
        "round-robin is even across processes: {per_agent:?}"
    );
    assert!(
        count(
            &mut c,
            "SELECT count(*) FROM action_attempts a JOIN action_executions s ON s.id = a.action_execution_id \
             WHERE a.outcome = 'worker_lost' AND s.action_type <> 'set_variable'"
        )
        .await
            >= 1,
        "the killed worker's step was rescued and redone"
    );
    let wrong_variable = count(
        &mut c,
        "SELECT count(*) FROM action_variables v JOIN flow_executions e ON e.id = v.flow_execution_id \
         JOIN contacts k ON k.id = e.contact_id WHERE v.value #>> '{}' <> k.assigned_agent_id::text",
    )
    .await;
    assert_eq!(wrong_variable, 0, "each run saw its own assignment");
}

/// `flowline serve` on the SQLite default in `dir`.
fn serve_in(dir: &Path) -> (Proc, String, Option<String>) {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FLOWLINE_DATA_DIR")
        .env("FLOWLINE_LEASE_MS", "1500")
        .env("FLOWLINE_LOG", "warn");
    serve(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_server_killed_mid_step_changes_every_contact_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, token) = serve_in(dir.path());
    let token = token.unwrap();
    let client = reqwest::Client::new();
    let call = async |path: String, body: Value| -> Option<Value> {
        let response = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .ok()?;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.ok()
    };
    for i in 0..3 {
        call(
            "/api/agents".into(),
            json!({"name": format!("agent {i}"), "capacity": 100_000}),
        )
        .await
        .unwrap();
    }
    let board = call(
        "/api/boards".into(),
        json!({"name": "Sales", "columns": ["New", "Won"]}),
    )
    .await
    .unwrap();
    // The runs start from `contact.created`: each contact created starts one.
    let flow = call(
        "/api/flows".into(),
        json!({"name": "qualify", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}]},
               "triggers": [{"event": "contact.created"}]}),
    )
    .await
    .unwrap();
    let flow = flow["id"].as_str().unwrap().to_owned();
    for (action_type, config) in actions(board["id"].as_str().unwrap()) {
        call(
            format!("/api/actions/flows/{flow}"),
            json!({"nodeId": "n", "actionType": action_type, "actionConfig": config}),
        )
        .await
        .unwrap();
    }
    call(format!("/api/flows/{flow}/publish"), json!({}))
        .await
        .unwrap();
    // Contacts pour in from four clients until the server dies.
    let mut events = Events::open(&base, &token, "").await;
    let mut creators = Vec::new();
    for creator in 0..4 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        creators.push(tokio::spawn(async move {
            for i in 0.. {
                let sent = client
                    .post(format!("{base}/api/contacts"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("Contact {creator}-{i}"), "email": format!("c{creator}-{i}@example.com")}))
                    .send()
                    .await;
                if !matches!(sent, Ok(r) if r.status() == 201) {
                    break;
                }
            }
        }));
    }
    let file = dir.path().join("flowline-data").join("flowline.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&file);
    let db = sqlx::SqlitePool::connect_with(options).await.unwrap();
    // Frozen while it holds a claimed CRM step it has not finished, then killed: each CRM step
    // seen starting is a chance, taken if the step is still running once the server is frozen.
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(tries < 5_000, "never caught the server holding steps");
        let event = events.next().await;
        if !(event["type"] == "step.status"
            && event["status"] == "running"
            && event["actionType"] != "set_variable")
        {
            continue;
        }
        server.nudge("-STOP");
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM action_executions WHERE status = 'running' AND action_type <> 'set_variable'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if held > 0 {
            break;
        }
        server.nudge("-CONT");
    }
    let _ = server.signal("-KILL");
    for creator in creators {
        creator.await.unwrap();
    }
    let (_server, base, _) = serve_in(dir.path());
    let mut events = Events::open(&base, &token, "").await;
    // Every contact that exists has its one run: the event and the run committed together.
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(contacts > 0);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_executions")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(runs, contacts, "one run per contact, none lost");
    // The restarted server rescues the steps the kill left running and ends every run.
    tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let ended: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM flow_executions WHERE status IN ('completed', 'failed')",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            if ended == contacts {
                break;
            }
            while events.next().await["type"] != "execution.status" {}
        }
    })
    .await
    .expect("every run ended after the restart");
    for (what, sql, expected) in ledger(contacts) {
        let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(got, expected, "{what}");
    }
    let per_agent: Vec<i64> =
        sqlx::query_scalar("SELECT count(*) FROM assignments GROUP BY agent_id ORDER BY count(*)")
            .fetch_all(&db)
            .await
            .unwrap();
    assert!(
        per_agent[per_agent.len() - 1] - per_agent[0] <= 1,
        "{per_agent:?}"
    );
    let rescued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM action_attempts a JOIN action_executions s ON s.id = a.action_execution_id \
         WHERE a.outcome = 'worker_lost' AND s.action_type <> 'set_variable'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(rescued >= 1, "a CRM step held at the kill was redone");
}
