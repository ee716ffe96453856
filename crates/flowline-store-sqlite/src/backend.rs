//! How the shared SQL meets SQLite: connections, pragmas, migrations, transactions.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use flowline_core::id::WorkspaceId;
use flowline_core::token::TokenHash;
use flowline_store::{StoreError, StoreResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, SqlitePool};

use flowline_store::execution::{ClaimParams, ClaimedStep, FinishOutcome, FinishStep, WorkSignal};

use crate::writer::{Job, gone};

use crate::sql_batch::Held;
use crate::sql_execution::{ClaimedRow, complete_claim, push_ids};
use crate::sql_store::{Access, Conn, Tx, corrupt, db_error, now};

pub(crate) type Db = sqlx::Sqlite;
pub(crate) type StoreImpl = SqliteStore;
/// SQLite has no row locks: a write transaction holds the database's one write lock.
/// An attempt's duration in milliseconds, as SQL over `action_attempts a`.
/// SQLite's date functions keep milliseconds only: whole seconds come from `strftime('%s')`,
/// and the stored fraction (microseconds) is read from the text.
pub(crate) const ATTEMPT_MS: &str = "((CAST(strftime('%s', a.finished_at) AS INTEGER) \
     - CAST(strftime('%s', a.started_at) AS INTEGER)) * 1000.0 \
     + (CAST('0' || substr(a.finished_at, instr(a.finished_at, '.')) AS REAL) * (instr(a.finished_at, '.') > 0) \
     - CAST('0' || substr(a.started_at, instr(a.started_at, '.')) AS REAL) * (instr(a.started_at, '.') > 0)) * 1000.0)";

/// Whether run `e` finished longer ago than its workspace `w` keeps runs, as SQL.
pub(crate) const RETENTION_EXPIRED: &str =
    "julianday(e.finished_at) < julianday('now') - w.retention_days";

/// Events whose writing transactions, and every earlier one, have ended (SQLite's one writer
/// commits in id order: all of them).
pub(crate) const EVENTS_SETTLED: &str = "";

/// Events older than a day, which a resuming stream no longer needs.
pub(crate) const EVENTS_EXPIRED: &str =
    "created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day')";

/// A JSON column's text field, as SQL.
pub(crate) fn json_text(column: &str, key: &str) -> String {
    format!("json_extract({column}, '$.{key}')")
}

/// Statements of a `sql_execution::Writes` share one text: each statement is a trip to the
/// connection's thread, and its parameters bind in order across the statements of a text.
pub(crate) const MANY_STATEMENTS_PER_TEXT: bool = true;

pub(crate) const FOR_UPDATE: &str = "";

/// Nothing to lock: SQLite's writes take the database's one write lock.
pub(crate) const LOCK_STEPS: &str = "";

/// The write-ahead log's size, in pages, at which the writer checkpoints within its own commit:
/// a backstop only, for when the background checkpoints (`writer::checkpoint`) fall behind.
const WRITER_AUTOCHECKPOINT: u32 = 10_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to open the database.
#[derive(Clone, Debug)]
pub struct SqliteSettings {
    /// The database file; created when missing.
    pub path: PathBuf,
    /// `synchronous=NORMAL` instead of `FULL`: faster, may lose the last commits on power loss.
    pub synchronous_normal: bool,
    /// How long a writer waits for the write lock.
    pub busy_timeout: Duration,
    /// Pool size.
    pub max_connections: u32,
}

impl SqliteSettings {
    /// Durable defaults for the file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            synchronous_normal: false,
            busy_timeout: Duration::from_secs(10),
            max_connections: 8,
        }
    }
}

/// The SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    work: Arc<watch::Sender<WorkSignal>>,
    writer: mpsc::Sender<Job>,
    /// Write transactions of this process waiting for SQLite's lock outside the writer task;
    /// the writer lets them in between its batches.
    waiting_writers: Arc<AtomicUsize>,
    /// Taken by the writer for each batch and by each step's own transaction for its whole
    /// length: the process's busiest writers take turns here, in order, instead of meeting at
    /// SQLite's lock, whose busy handler waits by sleeping for milliseconds at a time.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file. Does not migrate.
    pub async fn open(settings: &SqliteSettings) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(db_error)?
            .filename(&settings.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(settings.busy_timeout)
            // The batched statements come in a few sizes each (`sql_execution::padded`): a few
            // hundred texts in all with the API's, each prepared once per connection.
            .statement_cache_capacity(512)
            // A batch statement's journal (to undo it alone) and its temporary tables stay in
            // memory instead of files created and deleted in /var/tmp (about one per group
            // commit; 10% of step throughput).
            .pragma("temp_store", "memory")
            .synchronous(if settings.synchronous_normal {
                SqliteSynchronous::Normal
            } else {
                SqliteSynchronous::Full
            });
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(db_error)?;
        // Everything below assumes the write-ahead log: readers beside the writer, and the
        // writer's own flush of the log's file. Where SQLite cannot use it (a file system
        // without the shared memory it needs, an in-memory database) it stays in another mode
        // without an error, so the mode is read back.
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            pool.close().await;
            return Err(StoreError::Backend(
                format!(
                    "SQLite keeps {} in `{mode}` journal mode instead of the write-ahead log \
                     Flowline needs; put the database file on a local file system",
                    settings.path.display()
                )
                .into(),
            ));
        }
        // With `synchronous=FULL` asked for, the writer's own connection commits without
        // waiting for the disk and the writer flushes its write-ahead log before it answers
        // (`writer::Flush`): its next batch runs while the last one's flush does.
        let flush = if settings.synchronous_normal {
            None
        } else {
            let path = std::fs::canonicalize(&settings.path)
                .map_err(|e| StoreError::Backend(Box::new(e)))?;
            let mut wal = path.into_os_string();
            wal.push("-wal");
            Some(crate::writer::Flush::new(wal.into()))
        };
        let writer_options = options.clone().synchronous(SqliteSynchronous::Normal);
        // The writer (see `writer`) runs on a thread of its own with its own connection: each of
        // its statements is a round trip to that connection, and on a busy runtime every round
        // trip would otherwise wait behind the workers' tasks.
        let (writer, jobs) = mpsc::channel(4096);
        let waiting_writers = Arc::new(AtomicUsize::new(0));
        let waiting = waiting_writers.clone();
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let writer_gate = gate.clone();
        let (ready, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("flowline-sqlite-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready.send(Err(StoreError::Backend(Box::new(error))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Connections of their own, not a pool's: a pool would test each connection
                    // on its way back with one more round trip, and hand it out again through
                    // a task of its own, between any two batches.
                    let checkpoints = options.connect().await.map_err(db_error);
                    let writes = writer_options
                        .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string())
                        .connect()
                        .await
                        .map_err(db_error);
                    match (writes, checkpoints) {
                        (Ok(writes), Ok(checkpoints)) => {
                            let _ = ready.send(Ok(()));
                            let committed = Arc::new(tokio::sync::Notify::new());
                            let writer = crate::writer::run(
                                writes,
                                jobs,
                                flush,
                                waiting,
                                writer_gate,
                                committed.clone(),
                            );
                            tokio::select! {
                                () = writer => {}
                                () = crate::writer::checkpoint(checkpoints, committed) => {}
                            }
                        }
                        (Err(error), _) | (_, Err(error)) => {
                            let _ = ready.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        started.await.map_err(|_| crate::writer::gone())??;
        Ok(Self {
            pool,
            work: Arc::new(watch::Sender::new(WorkSignal::default())),
            writer,
            waiting_writers,
            gate,
        })
    }

    /// Brings the schema up to date.
    pub async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))
    }

    /// The connection pool, for backend-specific tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Records a step's end through the writer's next group commit.
    pub(crate) async fn write_finish(&self, params: Arc<FinishStep>) -> StoreResult<FinishOutcome> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job::Finish(params, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Claims through the writer's next group commit.
    pub(crate) async fn write_claim(&self, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Job::Claim(params.clone(), reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub(crate) fn work_signal(&self) -> &watch::Sender<WorkSignal> {
        &self.work
    }

    /// The turn of a step's own transaction among this process's writers; see `gate`.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        Some(self.gate.clone().lock_owned().await)
    }

    /// One process owns a SQLite file: there is nobody else to tell.
    pub(crate) fn signal_other_processes(&self, _bump: impl FnOnce(&mut WorkSignal)) {}

    pub(crate) async fn begin(&self, access: Access) -> StoreResult<Tx<'static>> {
        match access {
            Access::Read => self.pool.begin().await,
            Access::Write => {
                self.waiting_writers.fetch_add(1, Ordering::SeqCst);
                let begun = self.pool.begin_with("BEGIN IMMEDIATE").await;
                self.waiting_writers.fetch_sub(1, Ordering::SeqCst);
                begun
            }
        }
        .map_err(db_error)
    }
}

/// Nothing to do: every query filters by workspace itself.
pub(crate) async fn enter_workspace(_tx: &mut Tx<'_>, _workspace: WorkspaceId) -> StoreResult<()> {
    Ok(())
}

/// Nothing to do: token rows are readable by hash.
pub(crate) async fn present_token(_tx: &mut Tx<'_>, _hash: &TokenHash) -> StoreResult<()> {
    Ok(())
}

/// The clock leases are measured by: this process's (SQLite has one machine).
pub(crate) async fn db_now(_tx: &mut Tx<'_>) -> StoreResult<DateTime<Utc>> {
    Ok(now())
}

/// Nothing to do: there is no row-level security to widen.
pub(crate) async fn enter_engine_scope(_tx: &mut Tx<'_>) -> StoreResult<()> {
    Ok(())
}

/// Claims due steps with one `UPDATE … RETURNING`, taking each workspace's oldest steps in
/// turn (round-robin by rank) so a busy workspace cannot starve a quiet one. The workspaces with
/// pending steps are walked through the `(queue, workspace_id, run_at)` index one seek each, and
/// only their few oldest due steps are ranked: the cost follows the number of workspaces, not
/// the size of the backlog. A workspace alone offers the whole batch; beside others, each offers
/// twice its fair share of it, and at least `per_workspace_limit` steps, so a busy workspace
/// beside a few quiet ones still fills the batch.
pub(crate) async fn claim(conn: &mut Conn, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>> {
    let at = now();
    let expires =
        at + chrono::Duration::from_std(params.lease).unwrap_or(chrono::Duration::seconds(30));
    let token = Uuid::now_v7();
    let rows = sqlx::query_as::<_, ClaimedRow>(
        "UPDATE action_executions SET status = 'running', attempt = attempt + 1, lease_owner = $1, lease_token = $2, \
         lease_expires_at = $3, started_at = COALESCE(started_at, $4), attempt_started_at = $4 \
         WHERE id IN ( \
             WITH RECURSIVE workspaces(ws) AS ( \
                 SELECT (SELECT workspace_id FROM action_executions WHERE status = 'pending' AND queue = $5 ORDER BY workspace_id LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT workspace_id FROM action_executions \
                         WHERE status = 'pending' AND queue = $5 AND workspace_id > workspaces.ws \
                         ORDER BY workspace_id LIMIT 1) \
                 FROM workspaces WHERE workspaces.ws IS NOT NULL), \
             share(n) AS ( \
                 SELECT MAX($6, CASE WHEN COUNT(*) <= 1 THEN $7 ELSE ($7 * 2 + COUNT(*) - 1) / COUNT(*) END) \
                 FROM workspaces WHERE ws IS NOT NULL), \
             oldest AS ( \
                 SELECT a.id, a.workspace_id, a.run_at FROM workspaces w JOIN action_executions a \
                 ON a.id IN (SELECT b.id FROM action_executions b WHERE b.status = 'pending' AND b.queue = $5 \
                             AND b.workspace_id = w.ws AND b.run_at <= $4 ORDER BY b.run_at, b.id \
                             LIMIT (SELECT n FROM share)) \
                 WHERE w.ws IS NOT NULL) \
             SELECT id FROM (SELECT id, run_at, ROW_NUMBER() OVER (PARTITION BY workspace_id ORDER BY run_at, id) AS rank \
                             FROM oldest) \
             ORDER BY rank, run_at LIMIT $7) \
         RETURNING id, workspace_id, flow_execution_id, action_id, action_type, node_id, attempt, max_attempts",
    )
    .bind(&params.owner)
    .bind(token)
    .bind(expires)
    .bind(at)
    .bind(params.queue.as_str())
    .bind(i64::from(params.per_workspace_limit.max(1)))
    .bind(i64::from(params.limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(db_error)?;
    complete_claim(conn, rows, token, at).await
}

/// Nothing to relay on SQLite; waits for shutdown.
pub(crate) async fn relay_wakeups(_store: &SqliteStore, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
}

/// The running steps among `ids`, with their runs' status and flow, as one row of JSON: sqlx
/// passes SQLite's rows from the connection's thread to the writer one message each, and a
/// batch's fifty-odd rows, each a hand-over between two threads, cost several times the read.
/// `ahead`, a statement (the writer's `BEGIN`), is sent with the read in the same trip to the
/// connection.
pub(crate) async fn held_steps(
    conn: &mut Conn,
    ahead: &str,
    ids: &[Uuid],
) -> StoreResult<Vec<Held>> {
    let mut query = QueryBuilder::<Db>::new(ahead);
    query.push(
        "; SELECT json_group_array(json_object('id', hex(s.id), 'lease_token', hex(s.lease_token), \
         'attempt', s.attempt, 'workspace_id', hex(s.workspace_id), \
         'flow_execution_id', hex(s.flow_execution_id), 'action_type', s.action_type, \
         'run_status', e.status, 'flow_id', hex(e.flow_id))) \
         FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
         WHERE s.status = 'running' AND s.id IN (",
    );
    push_ids(&mut query, ids);
    let rows: String = query
        .build_query_scalar()
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    serde_json::from_str(&rows).map_err(|e| corrupt("held steps", e))
}
