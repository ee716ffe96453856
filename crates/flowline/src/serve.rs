//! `flowline serve`: open the database, create the first workspace on an empty one, serve
//! until SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use flowline_api::AppState;
use flowline_core::token::ClearToken;
use flowline_store::tenancy::{Actor, NewWorkspace};

use crate::config::Config;
use crate::database;

/// Runs the server.
pub async fn run(config: Config, bind: Option<SocketAddr>) -> anyhow::Result<()> {
    let store = database::open(&config).await?;
    let engine_config = database::engine_config(&config, &*store).await?;
    let token = ClearToken::generate();
    let bootstrapped = store
        .bootstrap(NewWorkspace {
            name: config.bootstrap_workspace_name.clone(),
            owner_name: "Owner".to_owned(),
            token_name: "owner (bootstrap)".to_owned(),
            token_hash: token.hash(),
            actor: Actor::system("bootstrap"),
        })
        .await
        .context("creating the first workspace")?;
    if let Some(created) = bootstrapped {
        println!(
            "Created workspace \"{}\" ({}).",
            created.workspace.name, created.workspace.id
        );
        println!("Owner token (shown once, store it now): {}", token.expose());
    }
    let bind = bind.unwrap_or(config.bind);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let shutdown = shutdown_signal();
    println!(
        "Flowline listening on http://{address} ({})",
        database::describe(&config)
    );
    std::io::stdout().flush().ok();
    tracing::info!(%address, "serving");
    let engine = flowline_engine::Engine::new(store, engine_config);
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let workers = engine.spawn_workers(workers_stopped);
    flowline_api::serve(listener, AppState::new(engine), shutdown)
        .await
        .context("serving HTTP")?;
    // Let the steps in flight finish and record their ends before the process leaves.
    let _ = stop_workers.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Listens for SIGTERM and Ctrl-C from the call on, so a signal sent as soon as the process
/// says it is ready is heard (the default action would end it at once); the future resolves on
/// the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let next = |signal: std::io::Result<tokio::signal::unix::Signal>| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for a signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                _ = next(interrupt) => {},
                _ = next(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    }
}

/// `flowline worker`: the engine's workers and rescuer, no HTTP, until SIGTERM or Ctrl-C.
pub async fn run_worker(config: Config) -> anyhow::Result<()> {
    let store = database::open(&config).await?;
    let engine_config = database::engine_config(&config, &*store).await?;
    let engine = flowline_engine::Engine::new(store, engine_config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = engine.spawn_workers(stopped);
    let shutdown = shutdown_signal();
    println!(
        "Flowline worker {} running ({})",
        engine.config().worker_id,
        database::describe(&config)
    );
    std::io::stdout().flush().ok();
    shutdown.await;
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    tracing::info!("worker stopped");
    Ok(())
}
