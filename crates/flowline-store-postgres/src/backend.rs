//! How the shared SQL meets PostgreSQL: the application role, row-level security scoping,
//! migrations, transactions.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowline_core::status::Queue;
use flowline_store::execution::{ClaimParams, ClaimedStep, FinishOutcome, FinishStep, WorkSignal};
use tokio::sync::watch;
use uuid::Uuid;

use flowline_core::id::WorkspaceId;
use flowline_core::token::TokenHash;
use flowline_store::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool, QueryBuilder};

use crate::sql_batch::Held;
use crate::sql_execution::{ClaimedRow, complete_claim, push_ids};
use crate::sql_store::{Access, Tx, db_error};

pub(crate) type Db = sqlx::Postgres;
pub(crate) type StoreImpl = PgStore;
/// An attempt's duration in milliseconds, as SQL over `action_attempts a`.
pub(crate) const ATTEMPT_MS: &str =
    "CAST(EXTRACT(EPOCH FROM (a.finished_at - a.started_at)) * 1000 AS DOUBLE PRECISION)";

/// Whether run `e` finished longer ago than its workspace `w` keeps runs, as SQL.
pub(crate) const RETENTION_EXPIRED: &str =
    "e.finished_at < now() - make_interval(days => w.retention_days)";

/// Events whose writing transactions, and every earlier one, have ended (SQLite's one writer
/// commits in id order: all of them).
pub(crate) const EVENTS_SETTLED: &str =
    "AND xact < pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// Events older than a day, which a resuming stream no longer needs.
pub(crate) const EVENTS_EXPIRED: &str = "created_at < now() - interval '1 day'";

/// A JSON column's text field, as SQL.
pub(crate) fn json_text(column: &str, key: &str) -> String {
    format!("({column} ->> '{key}')")
}

/// One statement per text: the extended protocol prepares one statement per message.
pub(crate) const MANY_STATEMENTS_PER_TEXT: bool = false;

pub(crate) const FOR_UPDATE: &str = "FOR UPDATE";

/// Locks the step rows `s` of a read, and only them, as an update of them would (not their
/// keys, so inserts referring to them do not wait).
pub(crate) const LOCK_STEPS: &str = "FOR NO KEY UPDATE OF s";

/// The role the server works as.
pub const APP_ROLE: &str = "flowline_app";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to connect.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// `postgres://…`; migrations run as this URL's user.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
}

impl PgSettings {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
        }
    }
}

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    work: Arc<watch::Sender<WorkSignal>>,
    /// This process's work signals not yet told to the others.
    outbox: Arc<watch::Sender<WorkSignal>>,
    finisher: tokio::sync::mpsc::Sender<crate::finisher::Report>,
}

/// Prepared statements a connection keeps: the batched statements come in a few sizes each
/// (`sql_execution::padded`), a few hundred texts in all with the API's.
const STATEMENT_CACHE: usize = 512;

/// The channel processes tell each other of new work on.
const WORK_CHANNEL: &str = "flowline_work";

/// A NOTIFY payload's word for cancelled runs, beside the queues' names.
const CANCEL: &str = "cancel";

/// The URL's options. Connections name this process (`flowline-<pid>`) in `pg_stat_activity`
/// unless the URL names an `application_name` itself, and run without JIT compilation:
/// Flowline's statements are short, and a claim whose estimated cost crosses `jit_above_cost` (a
/// `LIMIT` the planner cannot see, a large queue) spent 150–250 ms compiling what runs in 2 ms.
/// Each connection keeps up to [`STATEMENT_CACHE`] prepared statements.
fn options(url: &str) -> StoreResult<PgConnectOptions> {
    let options = PgConnectOptions::from_str(url)
        .map_err(db_error)?
        .options([("jit", "off")])
        .statement_cache_capacity(STATEMENT_CACHE);
    if options.get_application_name().is_some() {
        return Ok(options);
    }
    Ok(options.application_name(&format!("flowline-{}", std::process::id())))
}

impl PgStore {
    /// Brings the schema up to date, as the URL's user, on a connection of its own.
    pub async fn migrate(settings: &PgSettings) -> StoreResult<()> {
        let mut conn = PgConnection::connect_with(&options(&settings.url)?)
            .await
            .map_err(db_error)?;
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        conn.close().await.map_err(db_error)
    }

    /// Connects a pool whose every connection works as [`APP_ROLE`]. Migrate first.
    pub async fn connect(settings: &PgSettings) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET ROLE flowline_app").await?;
                    Ok(())
                })
            })
            .connect_with(options(&settings.url)?)
            .await
            .map_err(db_error)?;
        let (finisher, reports) = tokio::sync::mpsc::channel(4096);
        crate::finisher::spawn(pool.clone(), reports);
        Ok(Self {
            pool,
            work: Arc::new(watch::Sender::new(WorkSignal::default())),
            outbox: Arc::new(watch::Sender::new(WorkSignal::default())),
            finisher,
        })
    }

    /// The connection pool (working as [`APP_ROLE`]), for backend-specific tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn work_signal(&self) -> &watch::Sender<WorkSignal> {
        &self.work
    }

    /// Marks that other processes should hear of new work; `relay_wakeups` sends one NOTIFY
    /// for however many marks piled up meanwhile, outside the enqueuing transactions, so no
    /// step's commit waits on NOTIFY's global lock.
    pub(crate) fn signal_other_processes(&self, bump: impl FnOnce(&mut WorkSignal)) {
        self.outbox.send_modify(bump);
    }

    /// Records a step's end through the finisher's next group commit.
    pub(crate) async fn write_finish(
        &self,
        params: std::sync::Arc<FinishStep>,
    ) -> StoreResult<FinishOutcome> {
        let gone = || StoreError::Backend("the step finisher has stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.finisher
            .send((params, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Claims in a transaction of its own.
    pub(crate) async fn write_claim(&self, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>> {
        let mut tx = self.begin(Access::Write).await?;
        enter_engine_scope(&mut tx).await?;
        let claimed = claim(&mut tx, params).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(claimed)
    }

    /// PostgreSQL locks rows, not the database: step transactions need no turn.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        None
    }

    pub(crate) async fn begin(&self, _access: Access) -> StoreResult<Tx<'static>> {
        self.pool.begin().await.map_err(db_error)
    }
}

/// The settings that name a transaction's workspace (`$1`), as a select list. The role again, per
/// transaction: a connection whose session role was reset (a pooler in transaction mode, DISCARD
/// ALL) must still never run as its owner.
macro_rules! workspace_settings {
    () => {
        "set_config('role', 'flowline_app', true), set_config('flowline.workspace_id', $1, true)"
    };
}

/// Names the transaction's workspace; row-level security shows it nothing else.
pub(crate) async fn enter_workspace(tx: &mut Tx<'_>, workspace: WorkspaceId) -> StoreResult<()> {
    sqlx::query(concat!("SELECT ", workspace_settings!()))
        .bind(workspace.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Lets the transaction read the one token row whose hash it presents.
pub(crate) async fn present_token(tx: &mut Tx<'_>, hash: &TokenHash) -> StoreResult<()> {
    let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
    sqlx::query("SELECT set_config('role', 'flowline_app', true), set_config('flowline.token_hash', $1, true)")
        .bind(hex)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Settings, as a select list, for a transaction of the engine's hot path (claims, step ends)
/// whose statements all reach their rows by key: index scans and nested loops only. The planner
/// otherwise judges by statistics, which lag behind a table that grows from empty: autovacuum
/// analyzes it a minute later at best, and until then a generic plan that reads the whole table
/// (fine at ten rows) is kept by every connection for every batch, slower with each one (measured:
/// a batch of 46 step ends, 19 ms with a sequential scan and a hash join, 6 ms by keys).
macro_rules! plan_by_keys {
    () => {
        "set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), \
         set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
    };
}

/// [`enter_workspace`] for a transaction of the engine's hot path, which also plans by keys
/// ([`plan_by_keys`]): both in one round trip.
pub(crate) async fn enter_workspace_by_keys(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
) -> StoreResult<()> {
    sqlx::query(concat!(
        "SELECT ",
        workspace_settings!(),
        ", ",
        plan_by_keys!()
    ))
    .bind(workspace.to_string())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The database's clock, which leases are measured by.
pub(crate) async fn db_now(tx: &mut Tx<'_>) -> StoreResult<DateTime<Utc>> {
    sqlx::query_scalar("SELECT date_trunc('microseconds', clock_timestamp())")
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

/// Lets the transaction see the queue across workspaces (claims, heartbeats, rescues): the
/// row-level security policies of the run and step tables admit this scope and no other table's do.
pub(crate) async fn enter_engine_scope(tx: &mut Tx<'_>) -> StoreResult<()> {
    sqlx::query("SELECT set_config('role', 'flowline_app', true), set_config('flowline.scope', 'engine', true)")
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Claims due steps: the few oldest due steps of each workspace with pending work (found one
/// index seek per workspace, not by scanning the backlog), ranked round-robin across workspaces,
/// then locked with `FOR UPDATE SKIP LOCKED` so concurrent workers never wait for each other or
/// share a step. Each workspace offers its share of four batches' worth of candidates (at least
/// `per_workspace_limit`): a lone busy workspace fills whole batches, and workers of several
/// processes that skip each other's locked candidates still find enough left to claim. The
/// candidates are locked by primary key: their recheck is written `(…) IS TRUE` so the planner
/// cannot read it as a match for the pending-steps index and scan the whole queue instead.
///
/// The claim's transaction plans by keys ([`plan_by_keys`]). Row-level security adds the
/// engine-scope filter to every scan, the planner guesses that it passes 1% of rows, and with a
/// large queue it then prefers reading every pending step through a bitmap and sorting them
/// (400 ms for a million) over walking the index in order, where the first row it reads is the
/// answer; with a queue that grew from empty faster than autovacuum analyzes it, it locks its
/// candidates by reading the whole table.
///
/// A claim commits without waiting for the disk (`synchronous_commit = off` for its transaction
/// alone). A claim lost in a crash only leaves its steps pending: whatever its worker did next is
/// refused by the lease guard when it reports, and the step runs again, as after any lost lease.
/// Step ends and every other change still wait for the disk.
pub(crate) async fn claim(tx: &mut Tx<'_>, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>> {
    let (_, _, _, _, _, at): (String, String, String, String, String, DateTime<Utc>) =
        sqlx::query_as(concat!(
            "SELECT ",
            plan_by_keys!(),
            ", set_config('synchronous_commit', 'off', true), \
             date_trunc('microseconds', clock_timestamp())"
        ))
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
    let expires =
        at + chrono::Duration::from_std(params.lease).unwrap_or(chrono::Duration::seconds(30));
    let token = Uuid::now_v7();
    let rows = sqlx::query_as::<_, ClaimedRow>(
        "WITH RECURSIVE workspaces(ws) AS ( \
             SELECT (SELECT workspace_id FROM action_executions WHERE status = 'pending' AND queue = $1 ORDER BY workspace_id LIMIT 1) \
             UNION ALL \
             SELECT (SELECT workspace_id FROM action_executions \
                     WHERE status = 'pending' AND queue = $1 AND workspace_id > workspaces.ws \
                     ORDER BY workspace_id LIMIT 1) \
             FROM workspaces WHERE workspaces.ws IS NOT NULL), \
         share(n) AS ( \
             SELECT GREATEST($3, ($4 * 4 + GREATEST(COUNT(*), 1) - 1) / GREATEST(COUNT(*), 1)) \
             FROM workspaces WHERE ws IS NOT NULL), \
         oldest AS ( \
             SELECT b.id, b.workspace_id, b.run_at FROM workspaces w CROSS JOIN LATERAL ( \
                 SELECT id, workspace_id, run_at FROM action_executions \
                 WHERE status = 'pending' AND queue = $1 AND workspace_id = w.ws AND run_at <= $2 \
                 ORDER BY run_at, id LIMIT (SELECT n FROM share)) b \
             WHERE w.ws IS NOT NULL), \
         candidates AS ( \
             SELECT id, rank, run_at FROM (SELECT id, run_at, row_number() OVER (PARTITION BY workspace_id ORDER BY run_at, id) AS rank \
                             FROM oldest) ranked \
             ORDER BY rank, run_at LIMIT $4 * 4), \
         locked AS ( \
             SELECT a.id FROM candidates c JOIN action_executions a ON a.id = c.id \
             WHERE (a.status = 'pending' AND a.run_at <= $2) IS TRUE ORDER BY c.rank, c.run_at LIMIT $4 \
             FOR UPDATE OF a SKIP LOCKED) \
         UPDATE action_executions s SET status = 'running', attempt = s.attempt + 1, lease_owner = $5, lease_token = $6, \
             lease_expires_at = $7, started_at = COALESCE(s.started_at, $2), attempt_started_at = $2 \
         FROM locked WHERE s.id = locked.id \
         RETURNING s.id, s.workspace_id, s.flow_execution_id, s.action_id, s.action_type, s.node_id, s.attempt, \
         s.max_attempts",
    )
    .bind(params.queue.as_str())
    .bind(at)
    .bind(i64::from(params.per_workspace_limit.max(1)))
    .bind(i64::from(params.limit))
    .bind(&params.owner)
    .bind(token)
    .bind(expires)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    complete_claim(tx, rows, token, at).await
}

/// LISTENs for other processes' work signals and NOTIFYs them of this process's, until shutdown.
/// A lost connection is re-established (the listener reconnects; failed NOTIFYs are retried by
/// the next signal, and workers' slow poll covers the gap).
pub(crate) async fn relay_wakeups(store: &PgStore, mut shutdown: watch::Receiver<bool>) {
    let mut outbox = store.outbox.subscribe();
    // Nothing told yet: this process's work signalled before its relay ran is told once it
    // listens.
    let mut told = WorkSignal::default();
    let mut listener = loop {
        let attempt = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&store.pool).await?;
            listener.listen(WORK_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match attempt.await {
            Ok(listener) => break listener,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for work yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    // Other processes' work and cancels signalled before this one listened went unheard: its
    // workers look once.
    store.work.send_modify(WorkSignal::bump_all);
    let mut pending = *outbox.borrow_and_update() != told;
    loop {
        if pending {
            // The payload names the queues given work since the last NOTIFY, and `cancel` when
            // runs were cancelled.
            let now = *outbox.borrow_and_update();
            let mut queues: Vec<&str> = now
                .changed_since(&told)
                .iter()
                .map(|q| q.as_str())
                .collect();
            if now.cancels() != told.cancels() {
                queues.push(CANCEL);
            }
            told = now;
            pending = false;
            if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WORK_CHANNEL)
                .bind(queues.join(","))
                .execute(&store.pool)
                .await
            {
                tracing::warn!(%error, "could not NOTIFY other processes of work");
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = outbox.changed() => {
                if changed.is_err() {
                    break;
                }
                pending = true;
            }
            received = listener.try_recv() => match received {
                Ok(Some(notification)) => store.work.send_modify(|signal| {
                    let payload = notification.payload();
                    let named: Vec<Queue> = payload.split(',').filter_map(|q| q.parse().ok()).collect();
                    let cancels = payload.split(',').any(|q| q == CANCEL);
                    if named.is_empty() && !cancels {
                        signal.bump(None);
                    }
                    for queue in named {
                        signal.bump(Some(queue));
                    }
                    if cancels {
                        signal.bump_cancels();
                    }
                }),
                // The connection dropped; try_recv reconnects on the next call. Wake workers in
                // case a signal was lost meanwhile.
                Ok(None) => store.work.send_modify(WorkSignal::bump_all),
                Err(error) => {
                    tracing::warn!(%error, "listening for work failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => break,
                    }
                }
            },
        }
    }
}

/// The running steps among `ids`, with their runs' status and flow, locked to the commit so a
/// cancel applies before or after the batch; locked in step id order, the order heartbeats take
/// too, so the two cannot deadlock.
pub(crate) async fn held_steps(tx: &mut Tx<'_>, ids: &[Uuid]) -> StoreResult<Vec<Held>> {
    let mut query = QueryBuilder::<Db>::new(
        "SELECT s.id, s.lease_token, s.attempt, s.workspace_id, s.flow_execution_id, s.action_type, \
         e.status AS run_status, e.flow_id \
         FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
         WHERE s.status = 'running' AND s.id IN (",
    );
    push_ids(&mut query, ids);
    query.push(" ORDER BY s.id FOR UPDATE");
    query
        .build_query_as::<Held>()
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)
}
