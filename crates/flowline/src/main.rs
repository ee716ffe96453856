//! The `flowline` binary: one process serving the API (and, as the engine grows, its workers
//! and scheduler), plus the administrative commands. This is the only crate that picks a
//! storage backend.

mod admin;
mod bench;
mod config;
mod database;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use flowline_core::role::Role;

/// Flowline: durable workflow actions for CRM flows.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (default: ./flowline.toml when present).
    #[arg(long, global = true, env = "FLOWLINE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the API and the web UI; on an empty database, creates a workspace and prints its
    /// owner token once.
    Serve {
        /// The address to listen on (default 127.0.0.1:8080).
        #[arg(long, env = "FLOWLINE_BIND")]
        bind: Option<std::net::SocketAddr>,
    },
    /// Runs the engine's workers only (no HTTP): add processes like this one to share the
    /// work of a PostgreSQL database.
    Worker,
    /// Measures the engine: steps/s, schedule-to-start latency, peak RSS, and the disk's flush rate.
    Bench(bench::BenchArgs),
    /// Brings the database schema up to date and exits.
    Migrate,
    /// Workspace administration.
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Token administration.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum WorkspaceCommand {
    /// Creates a workspace with an owner and prints the owner's token.
    Create {
        /// The workspace's name.
        #[arg(long)]
        name: String,
        /// Print one JSON line: {"workspaceId": ..., "token": ...}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a member with a role in a workspace and prints a token for it.
    Create {
        /// The workspace's id.
        #[arg(long)]
        workspace: String,
        /// viewer, editor, admin or owner.
        #[arg(long, default_value = "editor")]
        role: Role,
        /// The new member's and token's name (default: "<role> (cli)").
        #[arg(long)]
        name: Option<String>,
        /// Print one JSON line: {"token": ...}.
        #[arg(long)]
        json: bool,
    },
}

/// Puts the process's thread, and so every thread it starts from now on, under `SCHED_BATCH`
/// when asked to (and on Linux): the engine's threads hand work to each other all the time, and
/// under the default policy each hand-off lets the woken thread take the waker's core at once.
/// SQLite's writer, a chain of threads that is the engine's bound there, was preempted ~7,400
/// times a second that way; batch scheduling let it run 9–18% more steps (BENCHMARKS.md).
/// Nothing else changes: no priority, no privilege needed.
#[allow(unsafe_code)]
fn schedule_threads(scheduling: config::CpuScheduling) {
    if scheduling != config::CpuScheduling::Batch {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid `sched_param` for the call's duration; pid 0 is this thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, "batch scheduling is not available; the threads keep the system's");
        }
    }
}

fn main() -> std::process::ExitCode {
    // The hidden `sandbox` subcommand: a JavaScript sandbox child of a serving process. It
    // starts nothing else (no runtime, no threads, no configuration) before it confines itself.
    if std::env::args_os().nth(1).is_some_and(|a| a == "sandbox") {
        return std::process::ExitCode::from(flowline_sandbox::child::serve() as u8);
    }
    let cli = Cli::parse();
    let config = match config::Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("flowline: {error:#}");
            return std::process::ExitCode::from(2);
        }
    };
    config::init_logging(&config);
    schedule_threads(config.cpu_scheduling);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flowline: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { bind } => serve::run(config, bind).await,
            Command::Worker => serve::run_worker(config).await,
            Command::Bench(args) => bench::run(args, &config).await,
            Command::Migrate => admin::migrate(&config).await,
            Command::Workspace {
                command: WorkspaceCommand::Create { name, json },
            } => admin::create_workspace(&config, &name, json).await,
            Command::Token {
                command:
                    TokenCommand::Create {
                        workspace,
                        role,
                        name,
                        json,
                    },
            } => admin::create_token(&config, &workspace, role, name, json).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flowline: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
