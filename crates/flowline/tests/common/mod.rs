//! Running the `flowline` binary in tests: processes that are killed when dropped, started and
//! waited for by what they print, never by sleeping.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_flowline");

/// The PostgreSQL URL tests create scratch databases through.
pub fn pg_admin_url() -> String {
    std::env::var("FLOWLINE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A child process, killed if dropped while running so a failing test leaves none behind.
pub struct Proc(Option<Child>);

impl Proc {
    /// Spawns `command` and returns once it printed a line starting with `ready`, with the
    /// lines it printed up to and including that one.
    pub fn spawn(command: Command, ready: &str) -> (Proc, Vec<String>) {
        Self::spawn_logging(command, ready, Stdio::null())
    }

    /// As [`Proc::spawn`], with the process's log lines (stderr) sent to `stderr`.
    pub fn spawn_logging(mut command: Command, ready: &str, stderr: Stdio) -> (Proc, Vec<String>) {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn flowline");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let proc = Proc(Some(child));
        let mut lines = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the process reported ready");
            let done = line.starts_with(ready);
            lines.push(line);
            if done {
                return (proc, lines);
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Sends a signal that does not end the process (`-STOP`, `-CONT`).
    pub fn nudge(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.0.take().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the process exited")
            .expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `flowline serve` on a free port: the process, its base URL and the owner token it printed
/// (on an empty database).
pub fn serve(mut command: Command) -> (Proc, String, Option<String>) {
    command.args(["serve", "--bind", "127.0.0.1:0"]);
    let (proc, lines) = Proc::spawn(command, "Flowline listening on ");
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("Owner token (shown once, store it now): "))
        .map(str::to_owned);
    let base = lines
        .last()
        .and_then(|l| l.strip_prefix("Flowline listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .to_owned();
    (proc, base, token)
}

/// A `flowline worker` on the PostgreSQL database at `url`, with short leases, and few enough
/// basic steps in flight (16) that the tests' few hundred runs are shared by all the workers
/// instead of all taken by the first to claim, and stay queued while the workers run: each
/// worker holds steps from its start to near the end, so a test can catch one holding some.
pub fn worker(url: &str) -> Proc {
    let mut command = Command::new(BIN);
    command
        .arg("worker")
        .env("DATABASE_URL", url)
        .env("FLOWLINE_LEASE_MS", "1500")
        .env("FLOWLINE_CONCURRENCY_BASIC", "16")
        .env("FLOWLINE_LOG", "warn")
        .env_remove("FLOWLINE_DATA_DIR");
    Proc::spawn(command, "Flowline worker").0
}

/// A fresh PostgreSQL database, migrated, with one workspace: the database (dropped with it),
/// a store over it, and the workspace.
pub async fn pg_workspace() -> (
    flowline_store_postgres::scratch::ScratchDatabase,
    std::sync::Arc<dyn flowline_store::Store>,
    flowline_core::id::WorkspaceId,
) {
    use flowline_store_postgres::PgStore;
    let db = flowline_store_postgres::scratch::ScratchDatabase::create(&pg_admin_url())
        .await
        .unwrap();
    PgStore::migrate(&db.settings()).await.unwrap();
    let store: std::sync::Arc<dyn flowline_store::Store> =
        std::sync::Arc::new(PgStore::connect(&db.settings()).await.unwrap());
    let workspace = store
        .create_workspace(flowline_store::tenancy::NewWorkspace {
            name: "Acme".into(),
            owner_name: "Owner".into(),
            token_name: "t".into(),
            token_hash: flowline_core::token::ClearToken::generate().hash(),
            actor: flowline_store::tenancy::Actor::system("test"),
        })
        .await
        .unwrap()
        .workspace
        .id;
    (db, store, workspace)
}

/// Creates and publishes a flow whose one node `n` runs `actions` in order.
pub async fn published_flow(
    store: &dyn flowline_store::Store,
    workspace: flowline_core::id::WorkspaceId,
    name: &str,
    actions: Vec<(flowline_core::action::ActionType, serde_json::Value)>,
) -> flowline_store::flow::Flow {
    use flowline_store::flow::{NewAction, NewFlow};
    let actor = flowline_store::tenancy::Actor::system("test");
    let graph = serde_json::from_value(
        serde_json::json!({"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}]}),
    )
    .unwrap();
    let flow = store
        .create_flow(
            workspace,
            &actor,
            NewFlow {
                name: name.into(),
                description: None,
                graph,
                schedule: None,
                triggers: Vec::new(),
            },
        )
        .await
        .unwrap();
    for (action_type, action_config) in actions {
        let action = NewAction {
            flow_id: flow.id,
            node_id: "n".into(),
            action_type,
            action_config,
            name: None,
            position: None,
            enabled: true,
            retry: None,
            timeout_ms: None,
        };
        store
            .create_action(workspace, &actor, action)
            .await
            .unwrap();
    }
    store
        .publish_flow(workspace, &actor, flow.id)
        .await
        .unwrap()
}

/// Waits, woken by the workers' NOTIFYs (or every half second), until `done` says so.
pub async fn wait_for(
    url: &str,
    what: &str,
    mut done: impl AsyncFnMut(&mut sqlx::PgConnection) -> bool,
) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(url).await.unwrap();
    listener.listen("flowline_work").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    while !done(&mut conn).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    }
}

/// Every attempt of every step as SQL (a table of `action_execution_id`, `attempt`,
/// `started_at`, `finished_at`, `outcome`), for `concat!`: the rows of attempts that ended before
/// their step's last, and each step's last attempt from its own row.
#[macro_export]
macro_rules! attempts {
    () => {
        "(SELECT action_execution_id, attempt, started_at, finished_at, outcome FROM action_attempts \
         UNION ALL SELECT s.id, s.attempt, COALESCE(s.attempt_started_at, s.started_at), s.finished_at, \
         CASE WHEN s.status = 'running' THEN NULL ELSE s.status END FROM action_executions s \
         WHERE s.status <> 'pending' AND s.attempt > 0 AND NOT EXISTS (SELECT 1 FROM action_attempts t \
         WHERE t.action_execution_id = s.id AND t.attempt = s.attempt))"
    };
}

/// One number from `sql`.
pub async fn count(conn: &mut sqlx::PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// A server's live events (`GET /api/events`), read one at a time.
pub struct Events {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    /// The events of `token`'s workspace from now on (`query`: `&flowId=…` and the like).
    pub async fn open(base: &str, token: &str, query: &str) -> Self {
        let response = reqwest::Client::new()
            .get(format!("{base}/api/events?heartbeatMs=1000{query}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("the event stream");
        assert_eq!(response.status(), 200);
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event's JSON (heartbeats are skipped).
    pub async fn next(&mut self) -> serde_json::Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let data: String = frame
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).expect("an event's JSON");
                }
                continue;
            }
            let chunk = tokio::time::timeout(
                Duration::from_secs(60),
                futures_util::StreamExt::next(&mut self.body),
            )
            .await
            .expect("a frame (an event or a heartbeat) within 60 s")
            .expect("the stream goes on")
            .expect("a chunk");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until every run of `runs` has ended (`completed` or `failed`).
    pub async fn until_ended(&mut self, mut runs: std::collections::HashSet<String>) {
        while !runs.is_empty() {
            let event = self.next().await;
            if event["type"] == "execution.status"
                && (event["status"] == "completed" || event["status"] == "failed")
            {
                runs.remove(event["executionId"].as_str().unwrap_or_default());
            }
        }
    }
}
