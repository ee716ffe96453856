//! The parent's side: a pool of sandbox children, each running one script at a time, killed when
//! a script outlives its deadline by the margin and replaced when it dies.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::protocol::{Hello, MAX_FRAME, Request, Response};

/// How long past a script's deadline the parent waits before it kills the child: QuickJS checks
/// the deadline itself, except inside built-ins that never poll it.
pub const WATCHDOG_MARGIN: Duration = Duration::from_millis(250);

/// Why a script got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The child outlived the deadline plus the margin and was killed.
    #[error("the script ran past its deadline and its sandbox process was killed")]
    Killed,
    /// The child died while running the script (killed from outside, or crashed).
    #[error("the sandbox process died while running the script ({0})")]
    Died(String),
    /// A child could not be started.
    #[error("the sandbox process could not start: {0}")]
    Spawn(String),
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Scripts run so far.
    served: u32,
    /// Time spent running them: an upper bound of the CPU time it used.
    busy: Duration,
}

/// A child is retired after this many scripts.
const RETIRE_AFTER_SCRIPTS: u32 = 10_000;
/// A child is retired once it has been busy this long, well before the CPU-time limit it set
/// itself (`child::CPU_SECONDS`) could end it in the middle of a script.
const RETIRE_AFTER_BUSY: Duration = Duration::from_secs(crate::child::CPU_SECONDS / 2);

/// Health figures of the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Children started so far.
    pub started: u64,
    /// Children killed by the watchdog.
    pub killed: u64,
    /// Children that died on their own.
    pub died: u64,
    /// Children idle now.
    pub idle: usize,
}

/// A pool of sandbox children.
pub struct SandboxPool {
    program: PathBuf,
    slots: Semaphore,
    idle: Mutex<Vec<Worker>>,
    busy: Mutex<Vec<u32>>,
    began: tokio::sync::Notify,
    seccomp: AtomicBool,
    network_blocked: AtomicBool,
    started: AtomicU64,
    killed: AtomicU64,
    died: AtomicU64,
}

impl SandboxPool {
    /// A pool of at most `size` children of `program` (the `flowline` binary), started as needed.
    pub fn new(program: PathBuf, size: usize) -> Arc<Self> {
        Arc::new(Self {
            program,
            slots: Semaphore::new(size.max(1)),
            idle: Mutex::new(Vec::new()),
            busy: Mutex::new(Vec::new()),
            began: tokio::sync::Notify::new(),
            seccomp: AtomicBool::new(false),
            network_blocked: AtomicBool::new(false),
            started: AtomicU64::new(0),
            killed: AtomicU64::new(0),
            died: AtomicU64::new(0),
        })
    }

    /// Whether the last child started runs under the seccomp filter.
    pub fn seccomp(&self) -> bool {
        self.seccomp.load(Ordering::Relaxed)
    }

    /// Whether the last child started found itself unable to open a network socket.
    pub fn network_blocked(&self) -> bool {
        self.network_blocked.load(Ordering::Relaxed)
    }

    /// Starts a child now if none is idle, so the first script does not wait for one.
    pub async fn warm(&self) -> Result<(), PoolError> {
        let empty = self.idle.lock().map(|i| i.is_empty()).unwrap_or(true);
        if empty {
            let worker = self.spawn().await?;
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(worker);
            }
        }
        Ok(())
    }

    /// The process ids of the children running a script now.
    pub fn busy_pids(&self) -> Vec<u32> {
        self.busy.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Waits until a child is running a script, and answers its process id.
    pub async fn running(&self) -> u32 {
        loop {
            let began = self.began.notified();
            if let Some(pid) = self.busy_pids().first().copied() {
                return pid;
            }
            began.await;
        }
    }

    /// Health figures.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            started: self.started.load(Ordering::Relaxed),
            killed: self.killed.load(Ordering::Relaxed),
            died: self.died.load(Ordering::Relaxed),
            idle: self.idle.lock().map(|i| i.len()).unwrap_or(0),
        }
    }

    async fn spawn(&self) -> Result<Worker, PoolError> {
        let mut child = Command::new(&self.program)
            .arg("sandbox")
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PoolError::Spawn(format!("{}: {e}", self.program.display())))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| PoolError::Spawn("no stdin".into()))?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| PoolError::Spawn("no stdout".into()))?;
        let hello: Hello = tokio::time::timeout(Duration::from_secs(10), read(&mut stdout))
            .await
            .map_err(|_| PoolError::Spawn("it did not say hello within 10 s".into()))?
            .map_err(|e| PoolError::Spawn(e.to_string()))?;
        if !hello.seccomp && self.started.load(Ordering::Relaxed) == 0 {
            tracing::warn!(
                reason = hello.seccomp_error.as_deref().unwrap_or("unknown"),
                "the JavaScript sandbox runs without its seccomp filter: scripts still have no \
                 network or file API, but a QuickJS escape would not be stopped by the kernel"
            );
        }
        self.seccomp.store(hello.seccomp, Ordering::Relaxed);
        self.network_blocked
            .store(hello.network_blocked, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        Ok(Worker {
            child,
            stdin,
            stdout,
            served: 0,
            busy: Duration::ZERO,
        })
    }

    /// Runs a script in a child; the child is killed when `deadline + WATCHDOG_MARGIN` passes,
    /// and a child that is dropped mid-script (the caller gave up) is killed too.
    pub async fn run(&self, request: &Request) -> Result<Response, PoolError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| PoolError::Spawn("the pool is closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut worker = match idle {
            Some(worker) => worker,
            None => self.spawn().await?,
        };
        let pid = worker.child.id().unwrap_or(0);
        if let Ok(mut busy) = self.busy.lock() {
            busy.push(pid);
        }
        self.began.notify_waiters();
        let _busy = BusyGuard { pool: self, pid };
        let limit = Duration::from_millis(request.timeout_ms) + WATCHDOG_MARGIN;
        let exchange = async {
            write(&mut worker.stdin, request).await?;
            read::<Response>(&mut worker.stdout).await
        };
        let began = tokio::time::Instant::now();
        match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(response)) => {
                worker.served += 1;
                worker.busy += began.elapsed();
                // A retired child is dropped, which kills it; the next script starts another.
                if worker.served < RETIRE_AFTER_SCRIPTS
                    && worker.busy < RETIRE_AFTER_BUSY
                    && let Ok(mut idle) = self.idle.lock()
                {
                    idle.push(worker);
                }
                Ok(response)
            }
            Ok(Err(error)) => {
                self.died.fetch_add(1, Ordering::Relaxed);
                let _ = worker.child.start_kill();
                let status = worker.child.wait().await;
                Err(PoolError::Died(match status {
                    Ok(status) => status.to_string(),
                    Err(_) => error.to_string(),
                }))
            }
            Err(_) => {
                self.killed.fetch_add(1, Ordering::Relaxed);
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
                Err(PoolError::Killed)
            }
        }
    }
}

struct BusyGuard<'a> {
    pool: &'a SandboxPool,
    pid: u32,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.pool.busy.lock() {
            busy.retain(|p| *p != self.pid);
        }
    }
}

async fn write<T: serde::Serialize>(out: &mut ChildStdin, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame).await?;
    out.flush().await
}

async fn read<T: for<'de> serde::Deserialize<'de>>(input: &mut ChildStdout) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("the sandbox sent an oversized frame"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}
