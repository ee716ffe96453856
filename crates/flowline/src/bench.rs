//! `flowline bench`: the engine's throughput and latency on this machine, with the disk's own
//! flush rate beside them (this machine's disk throttles under sustained writes, so figures
//! taken in different disk states cannot be compared without it).

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use flowline_core::action::ActionType;
use flowline_core::status::{ExecutionStatus, TriggerKind};
use flowline_core::token::ClearToken;
use flowline_engine::{Engine, StartRun};
use flowline_store::Store;
use flowline_store::crm::{NewAgent, NewContact, RunPlanner};
use flowline_store::flow::{Flow, NewAction, NewFlow};
use flowline_store::page::PageRequest;
use flowline_store::tenancy::{Actor, NewWorkspace};
use flowline_store_postgres::PgStore;
use flowline_store_postgres::scratch::ScratchDatabase;
use flowline_store_sqlite::{SqliteSettings, SqliteStore};
use serde_json::json;

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Runs to enqueue before the workers start.
    #[arg(long, default_value_t = 2_000)]
    pub executions: usize,
    /// `set_variable` steps per run (`--flow chain`).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// `chain`: runs of `--steps` set_variable steps; `mixed`: one contact per run through
    /// add_tag → assign_agent (round-robin over 4 agents) → move_to_board → set_variable.
    #[arg(long, value_enum, default_value_t = FlowKind::Chain)]
    pub flow: FlowKind,
    /// Worker processes (`flowline worker`); 1 runs the workers in this process.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// A PostgreSQL URL with the right to create databases; a scratch database is created
    /// through it and dropped after. Without it, a fresh SQLite file is used.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Measure only until the first N runs have completed, the rest of the backlog still
    /// pending: the rate with a large backlog (`--executions 1000000 --steps 1 --sample 20000`)
    /// without waiting for all of it. Needs `--steps 1`: single-step runs end in claim order,
    /// oldest first.
    #[arg(long)]
    pub sample: Option<usize>,
}

/// Runs enqueued per transaction.
const ENQUEUE_BATCH: usize = 5_000;

/// Which flow the bench runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowKind {
    /// `--steps` set_variable steps.
    Chain,
    /// The CRM actions, one contact per run.
    Mixed,
    /// `--steps` run_javascript steps, each a small script in the sandbox.
    Javascript,
    /// `--steps` send_webhook steps, signed, to a receiver in this process.
    Webhook,
    /// `--steps` run_api_request steps (GET with a bearer secret) to a server in this process.
    Api,
}

/// Where the bench runs, kept alive until it ends.
enum Backend {
    Sqlite,
    Postgres(ScratchDatabase),
}

fn rss_mb(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/status".to_owned(), |p| {
        format!("/proc/{p}/status")
    });
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Durable commits the disk under `dir` does per second: 8 KiB write + fdatasync, for a second.
fn flushes_per_second(dir: &std::path::Path) -> anyhow::Result<f64> {
    let path = dir.join("flush-probe");
    let mut file = std::fs::File::create(&path).context("creating the flush probe")?;
    let block = vec![0x5au8; 8192];
    let started = Instant::now();
    let mut flushes = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        file.write_all(&block)?;
        file.sync_data()?;
        flushes += 1;
    }
    let rate = flushes as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}

/// A percentile for the JSON output: `null` when nothing was measured.
fn measured(sorted: &[f64], p: f64) -> serde_json::Value {
    if sorted.is_empty() {
        serde_json::Value::Null
    } else {
        json!(percentile(sorted, p))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

async fn chain_flow(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    steps: usize,
) -> anyhow::Result<Flow> {
    chain_of(store, workspace, steps, |i| {
        (
            ActionType::SetVariable,
            json!({"name": format!("v{i}"), "type": "number", "value": format!("{{{{ trigger.run + {i} }}}}")}),
        )
    })
    .await
}

async fn chain_of(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    steps: usize,
    step: impl Fn(usize) -> (ActionType, serde_json::Value),
) -> anyhow::Result<Flow> {
    let actor = Actor::system("bench");
    let graph =
        serde_json::from_value(json!({"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}]}))?;
    let flow = store
        .create_flow(
            workspace,
            &actor,
            NewFlow {
                name: format!("{steps} steps"),
                description: None,
                graph,
                schedule: None,
                triggers: Vec::new(),
            },
        )
        .await?;
    for i in 0..steps {
        store
            .create_action(
                workspace,
                &actor,
                NewAction {
                    flow_id: flow.id,
                    node_id: "n".into(),
                    action_type: step(i).0,
                    action_config: step(i).1,
                    name: None,
                    position: None,
                    enabled: true,
                    retry: None,
                    timeout_ms: None,
                },
            )
            .await?;
    }
    Ok(store.publish_flow(workspace, &actor, flow.id).await?)
}

/// The mixed flow: add_tag → assign_agent (round-robin over four agents) → move_to_board →
/// set_variable, with its agents and board.
async fn mixed_flow(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
) -> anyhow::Result<Flow> {
    let actor = Actor::system("bench");
    for i in 0..4 {
        let agent = NewAgent {
            name: format!("agent {i}"),
            email: None,
            active: true,
            capacity: 1_000_000,
        };
        store.create_agent(workspace, &actor, agent).await?;
    }
    let board = store
        .create_board(
            workspace,
            &actor,
            "Pipeline".into(),
            vec!["New".into(), "Qualified".into()],
        )
        .await?;
    let graph =
        serde_json::from_value(json!({"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}]}))?;
    let flow = store
        .create_flow(
            workspace,
            &actor,
            NewFlow {
                name: "mixed".into(),
                description: None,
                graph,
                schedule: None,
                triggers: Vec::new(),
            },
        )
        .await?;
    let steps = [
        (ActionType::AddTag, json!({"tagName": "lead"})),
        (ActionType::AssignAgent, json!({"strategy": "round_robin"})),
        (
            ActionType::MoveToBoard,
            json!({"boardId": board.id, "columnId": board.columns[1].id}),
        ),
        (
            ActionType::SetVariable,
            json!({"name": "agent", "type": "string", "value": "{{ contact.assignedAgentId }}"}),
        ),
    ];
    for (action_type, action_config) in steps {
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
        store.create_action(workspace, &actor, action).await?;
    }
    Ok(store.publish_flow(workspace, &actor, flow.id).await?)
}

fn start(flow: &Flow, run: usize) -> StartRun {
    StartRun {
        flow_id: flow.id,
        contact_id: None,
        trigger_kind: TriggerKind::Manual,
        trigger: json!({"run": run}),
        input: json!({}),
        dedupe_key: None,
    }
}

struct Workers {
    children: Vec<Child>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    fn start(
        engine: &Arc<Engine>,
        count: usize,
        url: Option<&str>,
        secret_key: &str,
    ) -> anyhow::Result<Self> {
        if count <= 1 {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let handles = engine.spawn_workers(stopped);
            return Ok(Self {
                children: Vec::new(),
                stop: Some(stop),
                handles,
            });
        }
        let url = url.context("several worker processes need PostgreSQL (--database-url)")?;
        // This process starts runs; the workers are elsewhere: relay its wake-ups to them.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let relay = engine.store().clone();
        let handles = vec![tokio::spawn(
            async move { relay.relay_wakeups(stopped).await },
        )];
        let exe = std::env::current_exe().context("finding the flowline binary")?;
        let children = (0..count)
            .map(|_| {
                Command::new(&exe)
                    .arg("worker")
                    .env("DATABASE_URL", url)
                    .env("FLOWLINE_SECRET_KEY", secret_key)
                    .env("FLOWLINE_OUTBOUND_ALLOW", "127.0.0.1/32")
                    .env("FLOWLINE_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting a worker process")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            children,
            stop: Some(stop),
            handles,
        })
    }

    fn peak_rss_mb(&self) -> f64 {
        self.children
            .iter()
            .map(|c| rss_mb(Some(c.id())))
            .fold(rss_mb(None), f64::max)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        for handle in self.handles.drain(..) {
            let _ = handle.await;
        }
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Runs the bench and prints its figures.
pub async fn run(args: BenchArgs, config: &crate::config::Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.executions >= 1 && args.steps >= 1,
        "--executions and --steps must be at least 1"
    );
    if let Some(sample) = args.sample {
        anyhow::ensure!(
            (1..=args.executions).contains(&sample),
            "--sample must be between 1 and --executions"
        );
        anyhow::ensure!(
            args.steps == 1 && args.flow != FlowKind::Mixed,
            "--sample needs single-step runs (--steps 1, not --flow mixed): they end in claim order"
        );
    }
    let scratch_dir = tempfile::tempdir().context("creating a scratch folder")?;
    let flushes = flushes_per_second(scratch_dir.path())?;
    let (store, backend, label): (Arc<dyn Store>, Backend, &str) = match &args.database_url {
        Some(url) => {
            let db = ScratchDatabase::create(url)
                .await
                .context("creating a scratch database (needs CREATEDB)")?;
            let mut settings = db.settings();
            settings.max_connections = 20;
            PgStore::migrate(&settings).await?;
            let store = PgStore::connect(&settings).await?;
            (Arc::new(store), Backend::Postgres(db), "postgresql")
        }
        None => {
            let mut settings = SqliteSettings::new(scratch_dir.path().join("bench.db"));
            settings.synchronous_normal =
                config.sqlite_synchronous == crate::config::SqliteSynchronous::Normal;
            let store = SqliteStore::open(&settings).await?;
            store.migrate().await?;
            (Arc::new(store), Backend::Sqlite, "sqlite")
        }
    };
    let url = match &backend {
        Backend::Postgres(db) => Some(db.url().to_owned()),
        Backend::Sqlite => None,
    };
    let created = store
        .create_workspace(NewWorkspace {
            name: "bench".into(),
            owner_name: "bench".into(),
            token_name: "bench".into(),
            token_hash: ClearToken::generate().hash(),
            actor: Actor::system("bench"),
        })
        .await?;
    let workspace = created.workspace.id;
    let (flow, steps_per_run) = match args.flow {
        FlowKind::Chain => (
            chain_flow(&*store, workspace, args.steps).await?,
            args.steps,
        ),
        FlowKind::Mixed => (mixed_flow(&*store, workspace).await?, 4),
        FlowKind::Javascript => {
            let flow = chain_of(&*store, workspace, args.steps, |i| {
                (
                    ActionType::RunJavascript,
                    json!({"code": format!("setVariable('v{i}', trigger.run + {i});\nreturn {{run: trigger.run, step: {i}}};")}),
                )
            })
            .await?;
            (flow, args.steps)
        }
        FlowKind::Webhook | FlowKind::Api => {
            let receiver = receiver().await?;
            let webhook = args.flow == FlowKind::Webhook;
            let flow = chain_of(&*store, workspace, args.steps, |i| {
                if webhook {
                    (
                        ActionType::SendWebhook,
                        json!({"url": format!("{receiver}/hooks/{i}"), "signingSecret": "{{ secrets.bench_whsec }}", "eventType": "bench.step"}),
                    )
                } else {
                    (
                        ActionType::RunApiRequest,
                        json!({"url": format!("{receiver}/api/{i}"), "authentication": {"type": "bearer", "token": "{{ secrets.bench_token }}"},
                               "responseMapping": [{"path": "status", "variable": format!("s{i}")}]}),
                    )
                }
            })
            .await?;
            (flow, args.steps)
        }
    };
    // Outbound flows call a server in this process, and sign with a secret.
    let (key, key_text) = flowline_engine::secrets::SecretKey::generate();
    for (name, value) in [
        (
            "bench_whsec",
            "whsec_YmVuY2gtc2lnbmluZy1rZXktMzItYnl0ZXMtbG9uZyE=",
        ),
        ("bench_token", "bench-bearer-token"),
    ] {
        let (nonce, ciphertext) = key.seal(workspace, name, value);
        store
            .put_secret(
                workspace,
                &Actor::system("bench"),
                flowline_store::secrets::SealedSecret {
                    workspace_id: workspace,
                    name: name.into(),
                    nonce,
                    ciphertext,
                },
            )
            .await?;
    }
    let mut engine_config = config.engine();
    // `--database-url` picks the backend here, not the configuration's `database_url`.
    engine_config.concurrency.insert(
        flowline_core::status::Queue::Basic,
        config.concurrency_basic(args.database_url.is_some()),
    );
    engine_config.secret_key = Some(key);
    engine_config.outbound.allow.push("127.0.0.1/32".parse()?);
    let engine = Engine::new(store.clone(), engine_config);
    let planner: Arc<dyn RunPlanner> = engine.clone();
    let progress = !args.json;

    // Enqueue everything first: the workers then face the whole backlog. Runs of the mixed
    // flow each get a contact of their own first.
    let enqueue_started = Instant::now();
    let mut ids = Vec::with_capacity(args.executions);
    let mut batch = Vec::with_capacity(ENQUEUE_BATCH);
    for run in 0..args.executions {
        let mut start = start(&flow, run);
        if args.flow == FlowKind::Mixed {
            let contact = NewContact {
                name: Some(format!("Contact {run}")),
                email: Some(format!("contact{run}@example.com")),
                attributes: json!({}),
                ..Default::default()
            };
            let contact = store
                .create_contact(workspace, &Actor::system("bench"), contact, &planner)
                .await?;
            start.contact_id = Some(contact.id);
        }
        batch.push(start);
        if batch.len() == ENQUEUE_BATCH || run + 1 == args.executions {
            ids.extend(
                engine
                    .start_many(workspace, flow.id, std::mem::take(&mut batch))
                    .await?,
            );
            if progress {
                eprint!("\renqueuing {}/{}", run + 1, args.executions);
            }
        }
    }
    let enqueue_seconds = enqueue_started.elapsed().as_secs_f64();
    let measured_runs = args.sample.unwrap_or(args.executions);
    let total_steps = measured_runs * steps_per_run;

    let workers = Workers::start(&engine, args.workers, url.as_deref(), &key_text)?;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut peak_rss = 0f64;
    // The run ends when its last run does, as that run's row says: polling reads one run until
    // then (listing every run as the workers go would take the database from them), and the
    // poll's interval does not count.
    let ended = loop {
        // Runs end about in claim order, which is start order.
        let last = ids[measured_runs - 1];
        let (done, ended) = match store.get_execution(workspace, last).await?.execution {
            run if !run.status.is_finished() => (0, None),
            run if args.sample.is_some() => (measured_runs, run.finished_at),
            _ => completed_runs(&*store, workspace, flow.id, args.executions).await?,
        };
        peak_rss = peak_rss.max(workers.peak_rss_mb());
        if progress {
            let shown = match ended {
                Some(_) => done,
                None => finished_about(&*store, workspace, &ids[..measured_runs]).await?,
            };
            eprint!(
                "\r{}",
                bar(shown, measured_runs, started.elapsed().as_secs_f64())
            );
        }
        match ended {
            Some(ended) if done >= measured_runs => break ended,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let seconds = ((ended - started_at).num_microseconds().unwrap_or(0) as f64 / 1e6).max(1e-3);
    let steps_per_second = total_steps as f64 / seconds;
    let (failed, durations) = match args.sample {
        // Most of the backlog is still pending: every 100th sampled run is read back instead.
        Some(sample) => {
            let mut failed = 0;
            for id in ids[..sample].iter().step_by(100) {
                let run = store.get_execution(workspace, *id).await?;
                failed += usize::from(run.execution.status == ExecutionStatus::Failed);
            }
            (failed, Vec::new())
        }
        None => (
            failed_runs(&*store, workspace, flow.id).await?,
            step_durations(&*store, workspace, flow.id).await?,
        ),
    };
    anyhow::ensure!(
        failed == 0,
        "{failed} run(s) failed: the figures would not be comparable; see `flowline serve` on the same database"
    );
    if progress {
        eprintln!();
    }

    // Latency when not saturated: single-step runs started one at a time (not with a sample:
    // the rest of its backlog keeps the workers saturated).
    let (latencies, idle_durations) = if args.sample.is_some() {
        (Vec::new(), Vec::new())
    } else {
        let single = chain_flow(&*store, workspace, 1).await?;
        unsaturated(&engine, &*store, workspace, &single).await?
    };
    // A script's cost over a set_variable step, both unsaturated.
    let script_overhead = if args.flow == FlowKind::Javascript {
        let script = chain_of(&*store, workspace, 1, |_| {
            (
                ActionType::RunJavascript,
                json!({"code": "setVariable('v', trigger.run); return trigger.run;"}),
            )
        })
        .await?;
        let (_, script_durations) = unsaturated(&engine, &*store, workspace, &script).await?;
        Some(percentile(&script_durations, 50.0) - percentile(&idle_durations, 50.0))
    } else {
        None
    };
    peak_rss = peak_rss.max(workers.peak_rss_mb());
    workers.stop().await;
    drop(engine);
    drop(store);
    drop(backend);

    let result = json!({
        "backend": label,
        "executions": args.executions,
        "flow": flow_name(args.flow),
        "stepMs": {"p50": measured(&durations, 50.0), "p95": measured(&durations, 95.0)},
        "idleStepMsP50": measured(&idle_durations, 50.0),
        "scriptOverheadMsP50": script_overhead,
        "stepsPerExecution": steps_per_run,
        "failedRuns": failed,
        "steps": total_steps,
        "sampledRuns": args.sample,
        "workers": args.workers,
        "seconds": seconds,
        "enqueueSeconds": enqueue_seconds,
        "stepsPerSecond": steps_per_second,
        "latencyMs": {"p50": measured(&latencies, 50.0), "p95": measured(&latencies, 95.0), "p99": measured(&latencies, 99.0)},
        "peakRssMb": peak_rss,
        "flushesPerSecond": flushes,
        "sqliteSynchronous": (url.is_none()).then_some(config.sqlite_synchronous),
        "cpuScheduling": config.cpu_scheduling,
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "backend            {label} ({} worker process{}, {} scheduling)",
            args.workers,
            if args.workers == 1 { "" } else { "es" },
            match config.cpu_scheduling {
                crate::config::CpuScheduling::Batch => "batch",
                crate::config::CpuScheduling::Normal => "normal",
            }
        );
        println!("disk               {flushes:.0} durable flushes/s (write + fdatasync)");
        println!(
            "backlog            {} runs x {steps_per_run} steps = {total_steps} steps ({} flow), enqueued in {enqueue_seconds:.1}s",
            args.executions,
            flow_name(args.flow)
        );
        match args.sample {
            Some(sample) => println!(
                "throughput         {steps_per_second:.0} steps/s over the first {sample} runs ({seconds:.1}s), {} runs still pending then",
                args.executions - sample
            ),
            None => println!("throughput         {steps_per_second:.0} steps/s ({seconds:.1}s)"),
        }
        if !durations.is_empty() {
            println!(
                "step duration      p50 {:.2} ms, p95 {:.2} ms (first attempt, claim to end, {} steps sampled)",
                percentile(&durations, 50.0),
                percentile(&durations, 95.0),
                durations.len()
            );
        }
        if !latencies.is_empty() {
            println!(
                "schedule-to-start  p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms (unsaturated, {} runs)",
                percentile(&latencies, 50.0),
                percentile(&latencies, 95.0),
                percentile(&latencies, 99.0),
                latencies.len()
            );
        }
        if let Some(overhead) = script_overhead {
            println!(
                "script overhead    p50 {overhead:.2} ms over a set_variable step (both unsaturated)"
            );
        }
        println!("peak RSS           {peak_rss:.0} MB");
    }
    Ok(())
}

fn flow_name(kind: FlowKind) -> &'static str {
    match kind {
        FlowKind::Chain => "chain",
        FlowKind::Mixed => "mixed",
        FlowKind::Javascript => "javascript",
        FlowKind::Webhook => "webhook",
        FlowKind::Api => "api",
    }
}

/// How long the steps of the flow's 200 newest runs took (first attempt, start to end), sorted.
async fn step_durations(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    flow: flowline_core::id::FlowId,
) -> anyhow::Result<Vec<f64>> {
    let mut durations = Vec::new();
    for run in store
        .list_executions(workspace, flow, PageRequest::first(200))
        .await?
        .items
    {
        for step in store.get_execution(workspace, run.id).await?.steps {
            if let Some(first) = step.attempts.first()
                && let Some(finished) = first.finished_at
            {
                durations.push(
                    (finished - first.started_at)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1000.0,
                );
            }
        }
    }
    durations.sort_by(|a, b| a.total_cmp(b));
    Ok(durations)
}

/// 300 runs of `flow` started 5 ms apart while the workers idle: each step's schedule-to-start
/// latency and its first attempt's duration, both sorted.
async fn unsaturated(
    engine: &Arc<Engine>,
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    flow: &Flow,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let ms = |micros: Option<i64>| micros.unwrap_or(0) as f64 / 1000.0;
    let mut ids = Vec::new();
    for run in 0..300 {
        ids.push(
            engine
                .start(workspace, start(flow, run))
                .await?
                .execution
                .id,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while completed_runs(store, workspace, flow.id, ids.len())
        .await?
        .0
        < ids.len()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut latencies, mut durations) = (Vec::new(), Vec::new());
    for id in ids {
        for step in store.get_execution(workspace, id).await?.steps {
            if let Some(first) = step.attempts.first() {
                latencies.push(ms((first.started_at - step.created_at).num_microseconds()));
                if let Some(finished) = first.finished_at {
                    durations.push(ms((finished - first.started_at).num_microseconds()));
                }
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    durations.sort_by(|a, b| a.total_cmp(b));
    Ok((latencies, durations))
}

/// A server on 127.0.0.1 that answers every request `200 {}` at once; its base URL.
async fn receiver() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(|| async { axum::Json(json!({"ok": true})) });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// How many of the flow's runs failed.
async fn failed_runs(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    flow: flowline_core::id::FlowId,
) -> anyhow::Result<usize> {
    let mut failed = 0;
    let mut page = PageRequest::first(200);
    loop {
        let batch = store.list_executions(workspace, flow, page).await?;
        failed += batch
            .items
            .iter()
            .filter(|e| e.status == ExecutionStatus::Failed)
            .count();
        match batch.next_cursor {
            Some(cursor) => {
                page = PageRequest {
                    limit: 200,
                    cursor: Some(cursor),
                }
            }
            None => return Ok(failed),
        }
    }
}

/// How many of the flow's runs finished, and when the last of them did (counted page by page,
/// newest first).
/// About how many of `ids` have finished. Runs end about in the order they started, so the
/// first unfinished one is found by bisection: a dozen reads of one run whatever the backlog,
/// where counting would read them all. (Only the text output asks; `--json` does not.)
async fn finished_about(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    ids: &[flowline_core::id::ExecutionId],
) -> anyhow::Result<usize> {
    let (mut finished, mut unfinished) = (0, ids.len());
    while finished < unfinished {
        let middle = (finished + unfinished) / 2;
        let run = store.get_execution(workspace, ids[middle]).await?.execution;
        if run.status.is_finished() {
            finished = middle + 1;
        } else {
            unfinished = middle;
        }
    }
    Ok(finished)
}

/// A progress bar: `[#########---------] 1200/4000 runs, 0.4s`.
fn bar(done: usize, total: usize, seconds: f64) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {done}/{total} runs, {seconds:.1}s   ",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

async fn completed_runs(
    store: &dyn Store,
    workspace: flowline_core::id::WorkspaceId,
    flow: flowline_core::id::FlowId,
    expected: usize,
) -> anyhow::Result<(usize, Option<chrono::DateTime<chrono::Utc>>)> {
    let mut done = 0;
    let mut last = None;
    let mut seen = 0;
    let mut page = PageRequest::first(200);
    loop {
        let batch = store.list_executions(workspace, flow, page).await?;
        seen += batch.items.len();
        for run in batch.items.iter().filter(|e| e.status.is_finished()) {
            done += 1;
            last = last.max(run.finished_at);
        }
        match batch.next_cursor {
            Some(cursor) if seen < expected => {
                page = PageRequest {
                    limit: 200,
                    cursor: Some(cursor),
                }
            }
            _ => return Ok((done, last)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn the_progress_bar_fills_with_the_runs_finished() {
        assert_eq!(
            bar(0, 40, 0.0),
            format!("[{}] 0/40 runs, 0.0s   ", "-".repeat(30))
        );
        assert_eq!(
            bar(20, 40, 1.25),
            format!("[{}{}] 20/40 runs, 1.2s   ", "#".repeat(15), "-".repeat(15))
        );
        assert_eq!(
            bar(40, 40, 2.0),
            format!("[{}] 40/40 runs, 2.0s   ", "#".repeat(30))
        );
        assert_eq!(
            bar(0, 0, 0.0),
            format!("[{}] 0/0 runs, 0.0s   ", "#".repeat(30))
        );
    }
}
