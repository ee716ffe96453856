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
