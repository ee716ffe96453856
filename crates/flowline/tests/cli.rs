//! The `flowline` binary as a user runs it: serve on the SQLite default and on PostgreSQL,
//! the admin commands beside a running server, clean shutdown on SIGTERM.

use std::path::Path;
use std::process::{Command, Output};

use flowline_store_postgres::scratch::ScratchDatabase;
use serde_json::Value;

mod common;

use common::{BIN, Proc, pg_admin_url, serve};

/// A `flowline` command in `dir`, with no inherited Flowline settings.
fn flowline(dir: &Path, database_url: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("FLOWLINE_DATA_DIR")
        .env_remove("FLOWLINE_BIND");
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command
}

fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// A fresh PostgreSQL database, and the runtime it was made on (kept while it is used).
fn scratch_database() -> (tokio::runtime::Runtime, ScratchDatabase) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime
        .block_on(ScratchDatabase::create(&pg_admin_url()))
        .expect("scratch database");
    (runtime, db)
}

fn json_line(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line: {stdout}");
    serde_json::from_str(lines[0]).expect("JSON")
}

fn serve_creates_a_workspace_and_admin_commands_work_beside_it(
    dir: &Path,
    database_url: Option<&str>,
) {
    let (mut server, base, token) = serve(flowline(dir, database_url));
    let owner = token.expect("an empty database prints an owner token");
    assert!(owner.starts_with("flw_"));
    let (status, me) = get(&base, "/api/me", &owner);
    assert_eq!(status, 200);
    assert_eq!(me["role"], "owner");
    assert_eq!(me["workspaceName"], "Default workspace");

    // Admin commands on the same database while the server runs.
    let created = json_line(
        &flowline(dir, database_url)
            .args(["workspace", "create", "--name", "Acme", "--json"])
            .output()
            .unwrap(),
    );
    let workspace = created["workspaceId"].as_str().unwrap().to_owned();
    let acme_owner = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created.as_object().unwrap().len(), 2);
    let (status, me) = get(&base, "/api/me", &acme_owner);
    assert_eq!(
        (status, me["workspaceId"].as_str()),
        (200, Some(workspace.as_str()))
    );
    let editor = json_line(
        &flowline(dir, database_url)
            .args([
                "token",
                "create",
                "--workspace",
                &workspace,
                "--role",
                "editor",
                "--json",
            ])
            .output()
            .unwrap(),
    );
    let editor = editor["token"].as_str().unwrap().to_owned();
    let (status, me) = get(&base, "/api/me", &editor);
    assert_eq!((status, me["role"].as_str()), (200, Some("editor")));
    let (status, _) = get(&base, "/api/tokens", &editor);
    assert_eq!(status, 403);
    let (_, audit) = get(&base, "/api/audit", &acme_owner);
    let cli_entries = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actorLabel"] == "cli")
        .count();
    assert!(cli_entries >= 4, "CLI changes are audited: {audit}");

    // Bad input to the CLI fails with a message, not a panic.
    let bad = flowline(dir, database_url)
        .args(["token", "create", "--workspace", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a workspace id"));
    let missing = flowline(dir, database_url)
        .args([
            "token",
            "create",
            "--workspace",
            &flowline_core::id::WorkspaceId::new().to_string(),
        ])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no workspace"));
    let role = flowline(dir, database_url)
        .args([
            "token",
            "create",
            "--workspace",
            &workspace,
            "--role",
            "god",
        ])
        .output()
        .unwrap();
    assert!(!role.status.success());

    let status = server.signal("-TERM");
    assert!(
        status.success(),
        "SIGTERM ends the server cleanly: {status:?}"
    );

    // A restart keeps everything and prints no new token.
    let (mut again, again_base, again_token) = serve(flowline(dir, database_url));
    assert!(again_token.is_none());
    let (status, _) = get(&again_base, "/api/me", &owner);
    assert_eq!(status, 200);
    assert!(again.signal("-TERM").success());
    let migrated = flowline(dir, database_url).arg("migrate").output().unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}

#[test]
fn serve_on_the_sqlite_default_then_admin_commands_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    serve_creates_a_workspace_and_admin_commands_work_beside_it(dir.path(), None);
    assert!(
        dir.path().join("flowline-data/flowline.db").exists(),
        "the default data folder is ./flowline-data"
    );
}

#[test]
fn the_data_dir_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("elsewhere");
    let output = flowline(dir.path(), None)
        .env("FLOWLINE_DATA_DIR", &data)
        .args(["workspace", "create", "--name", "X", "--json"])
        .output()
        .unwrap();
    json_line(&output);
    assert!(data.join("flowline.db").exists());
    assert!(!dir.path().join("flowline-data").exists());
}

#[test]
fn serve_on_postgresql_then_admin_commands_beside_it() {
    let (_runtime, db) = scratch_database();
    let dir = tempfile::tempdir().unwrap();
    serve_creates_a_workspace_and_admin_commands_work_beside_it(dir.path(), Some(db.url()));
    assert!(
        !dir.path().join("flowline-data").exists(),
        "PostgreSQL needs no data folder"
    );
    drop(db);
}

/// The scheduling policy of each of `pid`'s threads (`/proc/PID/task/TID/stat`, field 41).
#[cfg(target_os = "linux")]
fn thread_policies(pid: &str) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .map(|task| {
            let stat = std::fs::read_to_string(task.expect("a thread").path().join("stat"))
                .expect("the thread's stat");
            // The name, field 2, is in parentheses and may hold anything; field 3 follows the last.
            let after_name = &stat[stat.rfind(')').expect("a name") + 1..];
            after_name
                .split_whitespace()
                .nth(41 - 3)
                .and_then(|policy| policy.parse().ok())
                .expect("a policy")
        })
        .collect()
}

/// The scheduling policies of a `flowline serve` started by `command`, read once it is ready;
/// it is then stopped with SIGTERM, which it must survive to stop cleanly.
#[cfg(target_os = "linux")]
fn serving_thread_policies(command: Command) -> Vec<u32> {
    let (mut server, _, _) = serve(command);
    let policies = thread_policies(&server.pid().to_string());
    assert!(policies.len() > 2, "the runtime's threads: {policies:?}");
    assert!(server.signal("-TERM").success());
    policies
}

#[cfg(target_os = "linux")]
#[test]
fn the_threads_run_under_batch_scheduling_unless_told_otherwise() {
    const SCHED_BATCH: u32 = 3;
    let inherited = thread_policies("self");
    let dir = tempfile::tempdir().unwrap();
    let policies = serving_thread_policies(flowline(dir.path(), None));
    assert!(
        policies.iter().all(|policy| *policy == SCHED_BATCH),
        "every thread under SCHED_BATCH: {policies:?}"
    );

    let mut command = flowline(dir.path(), None);
    command.env("FLOWLINE_CPU_SCHEDULING", "normal");
    let policies = serving_thread_policies(command);
    assert!(
        policies.iter().all(|policy| inherited.contains(policy)),
        "as the server was started ({inherited:?}): {policies:?}"
    );
}

/// `flowline migrate` with one setting from the environment (and `database_url`): it must be
/// refused; its error is returned.
fn refused_setting(dir: &Path, database_url: Option<&str>, env: Option<(&str, &str)>) -> String {
    let mut command = flowline(dir, database_url);
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    let output = command.arg("migrate").output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let error = refused_setting(dir.path(), Some("mysql://nope"), None);
    assert!(error.contains("DATABASE_URL must be a postgres://"));
    refused_setting(dir.path(), None, Some(("FLOWLINE_BIND", "not-an-address")));
    let error = refused_setting(
        dir.path(),
        None,
        Some(("FLOWLINE_CPU_SCHEDULING", "fastest")),
    );
    assert!(error.to_lowercase().contains("cpu_scheduling"), "{error}");
}

#[test]
fn bench_prints_its_figures_as_one_json_object() {
    let dir = tempfile::tempdir().unwrap();
    let output = flowline(dir.path(), None)
        .args(["bench", "--executions", "20", "--steps", "3", "--json"])
        .output()
        .unwrap();
    let figures = json_line(&output);
    assert_eq!(figures["backend"], "sqlite");
    assert_eq!(figures["steps"], 60);
    assert_eq!(figures["cpuScheduling"], "batch");
    for field in ["stepsPerSecond", "peakRssMb", "flushesPerSecond"] {
        assert!(
            figures[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {figures}"
        );
    }
    for p in ["p50", "p95", "p99"] {
        assert!(
            figures["latencyMs"][p].as_f64().is_some_and(|v| v >= 0.0),
            "{p}: {figures}"
        );
    }
}

#[test]
fn bench_runs_worker_processes_on_postgresql_and_prints_its_figures_with_a_progress_bar() {
    let (_runtime, db) = scratch_database();
    let dir = tempfile::tempdir().unwrap();
    let output = flowline(dir.path(), None)
        .args([
            "bench",
            "--executions",
            "40",
            "--steps",
            "3",
            "--workers",
            "2",
        ])
        .args(["--database-url", db.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("[##############################] 40/40 runs"),
        "{stderr}"
    );
    for line in [
        "backend            postgresql",
        "(2 worker processes",
        "durable flushes/s (write + fdatasync)",
        "40 runs x 3 steps = 120 steps",
        "steps/s (",
        "schedule-to-start  p50 ",
        "peak RSS           ",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    drop(db);
}

#[test]
fn bench_samples_the_rate_over_the_oldest_runs_of_a_larger_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let output = flowline(dir.path(), None)
        .args([
            "bench",
            "--executions",
            "12000",
            "--steps",
            "1",
            "--sample",
            "300",
            "--json",
        ])
        .output()
        .unwrap();
    let figures = json_line(&output);
    assert_eq!(figures["executions"], 12000);
    assert_eq!(figures["sampledRuns"], 300);
    assert_eq!(figures["steps"], 300);
    assert_eq!(figures["failedRuns"], 0);
    assert!(figures["stepsPerSecond"].as_f64().is_some_and(|v| v > 0.0));
    // The workers never idle while the backlog lasts: no unsaturated latency to report.
    assert!(figures["latencyMs"]["p50"].is_null(), "{figures}");
    let refused = flowline(dir.path(), None)
        .args([
            "bench",
            "--executions",
            "10",
            "--steps",
            "2",
            "--sample",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--sample needs single-step runs"));
}

fn put_secret(base: &str, token: &str, name: &str, value: &str) -> u16 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .put(format!("{base}/api/secrets/{name}"))
            .bearer_auth(token)
            .json(&serde_json::json!({"value": value}))
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    })
}

#[test]
fn the_key_file_is_made_once_private_and_a_wrong_key_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base, token) = serve(flowline(dir.path(), None));
    let token = token.unwrap();
    assert_eq!(
        put_secret(&base, &token, "crm_token", "a-secret-value"),
        201
    );
    let _ = server.signal("-TERM");
    let key_file = dir.path().join("flowline-data").join("secret.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file is readable by its owner only");
    let key = std::fs::read_to_string(&key_file).unwrap();
    // The same key (from the file, or given) opens the secrets: the server starts.
    let mut with_key = flowline(dir.path(), None);
    with_key.env("FLOWLINE_SECRET_KEY", key.trim());
    let (mut again, _, _) = serve(with_key);
    let _ = again.signal("-TERM");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        key,
        "made once"
    );
    // Another key cannot open them: the start fails and says why.
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let output = flowline(dir.path(), None)
        .env("FLOWLINE_SECRET_KEY", other)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot decrypt the stored secrets"),
        "{stderr}"
    );
    assert!(stderr.contains("crm_token"), "{stderr}");
    let output = flowline(dir.path(), None)
        .env("FLOWLINE_SECRET_KEY", "short")
        .args(["serve", "--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("32 bytes"));
}

fn call(method: reqwest::Method, base: &str, path: &str, token: &str, body: Value) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    })
}

/// `flowline serve` on the SQLite default in `dir`, with `env`, its log lines written to `log`:
/// the process, its base URL and the owner token.
fn serve_logging(dir: &Path, env: &[(&str, &str)], log: &Path) -> (Proc, String, String) {
    let mut command = flowline(dir, None);
    command
        .envs(env.iter().copied())
        .args(["serve", "--bind", "127.0.0.1:0"]);
    let (server, lines) = Proc::spawn_logging(
        command,
        "Flowline listening on ",
        std::process::Stdio::from(std::fs::File::create(log).unwrap()),
    );
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("Owner token (shown once, store it now): "))
        .unwrap()
        .to_owned();
    let base = lines
        .last()
        .and_then(|l| l.strip_prefix("Flowline listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    (server, base, token)
}

/// Publishes a one-action flow, runs it, and asks for the run until it has ended (each answer
/// is a round trip to the server); returns the flow's id and the run.
fn run_one(base: &str, token: &str, action: Value) -> (String, Value) {
    use reqwest::Method;
    use serde_json::json;
    let flow = call(
        Method::POST,
        base,
        "/api/flows",
        token,
        json!({"name": "one", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}),
    );
    let flow = flow["id"].as_str().unwrap().to_owned();
    let mut body = action;
    body["nodeId"] = json!("n");
    call(
        Method::POST,
        base,
        &format!("/api/actions/flows/{flow}"),
        token,
        body,
    );
    call(
        Method::POST,
        base,
        &format!("/api/flows/{flow}/publish"),
        token,
        json!({}),
    );
    let run = call(
        Method::POST,
        base,
        &format!("/api/flows/{flow}/executions"),
        token,
        json!({}),
    );
    let run = run["id"].as_str().unwrap().to_owned();
    for _ in 0..20_000 {
        let detail = get(base, &format!("/api/executions/{run}"), token).1;
        if detail["status"] == "completed" || detail["status"] == "failed" {
            return (flow, detail);
        }
    }
    panic!("run {run} did not end");
}

#[test]
fn json_log_lines_of_a_step_carry_its_workspace_flow_run_and_step() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flowline.log");
    let env = [
        ("FLOWLINE_LOG_FORMAT", "json"),
        ("FLOWLINE_LOG", "info,flowline_engine=debug"),
    ];
    let (mut server, base, token) = serve_logging(dir.path(), &env, &log);
    let (flow, detail) = run_one(
        &base,
        &token,
        json!({"actionType": "set_variable", "actionConfig": {"name": "x", "type": "number", "value": 1}}),
    );
    assert_eq!(detail["status"], "completed");
    let _ = server.signal("-TERM");
    let text = std::fs::read_to_string(&log).unwrap();
    let step = detail["steps"][0]["id"].as_str().unwrap();
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "step started" && l["span"]["step"] == step)
        .unwrap_or_else(|| panic!("a JSON line for the step in:\n{text}"));
    let span = &line["span"];
    assert_eq!(span["name"], "step");
    assert_eq!(span["execution"], detail["id"]);
    assert_eq!(span["flow"], flow.as_str());
    assert_eq!(span["workspace"], detail["workspaceId"]);
    assert!(!text.contains(&token), "the owner token is not logged");
}

/// A peer on 127.0.0.1 that answers every request `500` with `body`; its base URL.
fn echoing_peer(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buffer = [0u8; 8192];
            let _ = stream.read(&mut buffer);
            let reply = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\nx-echo: {body}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    url
}

#[test]
fn secret_values_never_reach_the_logs_even_when_a_peer_echoes_them() {
    use base64::Engine as _;
    use reqwest::Method;
    use serde_json::json;
    const SECRET: &str = "sk_live_log_7hQ2pL9xZ4vB8nM3";
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let peer = echoing_peer(format!("your token {SECRET} ({b64}) is wrong"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flowline.log");
    let env = [
        ("FLOWLINE_LOG", "trace,hyper=info,h2=info"),
        ("FLOWLINE_OUTBOUND_ALLOW", "127.0.0.1/32"),
    ];
    let (mut server, base, token) = serve_logging(dir.path(), &env, &log);
    call(
        Method::PUT,
        &base,
        "/api/secrets/api_token",
        &token,
        json!({"value": SECRET}),
    );
    let (_, detail) = run_one(
        &base,
        &token,
        json!({"actionType": "run_api_request", "retry": {"maxAttempts": 1},
        "actionConfig": {"url": format!("{peer}/x?key={{{{ secrets.api_token }}}}"),
                         "authentication": {"type": "bearer", "token": "{{ secrets.api_token }}"}}}),
    );
    assert_eq!(detail["status"], "failed");
    assert_eq!(detail["steps"][0]["error"]["category"], "upstream");
    let _ = server.signal("-TERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.len() > 1000,
        "the server logged at trace level: {} bytes",
        text.len()
    );
    for form in [SECRET.to_owned(), b64.trim_end_matches('=').to_owned()] {
        assert!(!text.contains(&form), "a secret reached the logs");
        assert!(!detail.to_string().contains(&form));
    }
}
