//! Group commit for SQLite's one writer.
//!
//! SQLite lets one connection write at a time, and every commit waits for the disk. Workers
//! therefore do not write their claims and step ends themselves: they hand them to one writer
//! task, which runs whatever has queued up meanwhile in a single transaction on its own
//! connection and commits once, then answers each. Under load a commit carries many steps; idle,
//! a step waits for nothing. If a batch fails, it is rolled back and each job is run alone, so
//! one bad job cannot fail the others.
//!
//! A commit that waits for the disk holds the writer for the flush. Instead, the writer's
//! connection commits without waiting (`synchronous=NORMAL`) and the reply thread flushes the
//! write-ahead log before it answers any job of the batch ([`Flush`]), while the writer already
//! runs the next batch: a job is answered only once its commit is on disk, as with
//! `synchronous=FULL`, and one flush covers every batch committed before it.

use flowline_store::execution::{ClaimParams, ClaimedStep, FinishOutcome, FinishStep};
use flowline_store::{StoreError, StoreResult};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::backend::{claim, held_steps};
use crate::sql_batch::{plan_finish, reported_ids};
use crate::sql_execution::{Writes, finish_step};
use crate::sql_store::{Tx, db_error, now};

/// The shortest time between two background checkpoints.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// The most jobs one commit carries.
const MAX_BATCH: usize = 512;
/// The longest the writer holds back for other writers before its next batch.
const MAX_YIELD: Duration = Duration::from_millis(50);

/// Lets this process's other write transactions (API changes, starts, heartbeats) take SQLite's
/// lock before the next batch: back to back, the writer's commits would leave them only the gaps
/// between two commits, which SQLite's busy handler rarely hits.
async fn make_way(waiting: &AtomicUsize) {
    let started = tokio::time::Instant::now();
    while waiting.load(Ordering::SeqCst) > 0 && started.elapsed() < MAX_YIELD {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// A write the writer task runs.
pub(crate) enum Job {
    /// Record how a claimed step ended.
    Finish(Arc<FinishStep>, oneshot::Sender<StoreResult<FinishOutcome>>),
    /// Claim due steps.
    Claim(ClaimParams, oneshot::Sender<StoreResult<Vec<ClaimedStep>>>),
}

enum Done {
    Finish(FinishOutcome),
    Claim(Vec<ClaimedStep>),
}

/// Makes the writer's commits durable: flushes the database's write-ahead log, where a
/// commit's pages are, to disk. `fdatasync` flushes the file's data whichever descriptor wrote
/// it, so a descriptor of its own serves; the log's file lives as long as the writer's
/// connection, which keeps it open, and is only ever overwritten in place, never replaced.
pub(crate) struct Flush {
    wal: PathBuf,
    file: Option<File>,
}

impl Flush {
    /// Flushes the log at `wal` (the database's path followed by `-wal`).
    pub(crate) fn new(wal: PathBuf) -> Self {
        Self { wal, file: None }
    }

    fn run(&mut self) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.wal)?),
        };
        file.sync_data()
    }
}

/// Runs jobs until every sender is gone. With `flush`, commits are flushed before their jobs
/// are answered; without, the connection's own `synchronous` setting is all there is.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    flush: Option<Flush>,
    waiting: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Mutex<()>>,
    committed: Arc<Notify>,
) {
    let (replies, mut flush) = replier(flush);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        make_way(&waiting).await;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let turn = gate.lock().await;
        let together = together(&mut conn, &batch).await;
        drop(turn);
        let answered: Answered = match together {
            Ok(results) => {
                committed.notify_one();
                batch
                    .drain(..)
                    .zip(results)
                    .map(|(job, result)| (job, Ok(result)))
                    .collect()
            }
            Err(error) => {
                tracing::warn!(%error, jobs = batch.len(), "a group commit failed; running its jobs one by one");
                let mut answered = Vec::with_capacity(batch.len());
                for job in batch.drain(..) {
                    let turn = gate.lock().await;
                    let result = alone(&mut conn, &job).await;
                    drop(turn);
                    answered.push((job, result));
                }
                answered
            }
        };
        if let Err(std::sync::mpsc::SendError(answered)) = replies.send(answered) {
            answer(&mut flush, vec![answered]);
        }
    }
    if let Err(error) = conn.close().await {
        tracing::warn!(%error, "the SQLite writer's connection did not close cleanly");
    }
}

/// A batch's jobs with their results.
type Answered = Vec<(Job, StoreResult<Done>)>;

/// Flushes and answers committed batches on a thread of its own, so the writer starts its next
/// batch at once: the flush waits for the disk, and waking each job's task, on another runtime,
/// and freeing what it reported took the writer about a tenth of its time. Batches that queued
/// up during a flush share the next one. If the thread cannot start, the writer flushes and
/// answers itself, with the `Flush` handed back.
fn replier(flush: Option<Flush>) -> (std::sync::mpsc::Sender<Answered>, Option<Flush>) {
    let (replies, answered) = std::sync::mpsc::channel::<Answered>();
    let fallback = flush.as_ref().map(|flush| Flush::new(flush.wal.clone()));
    let mut flush = flush;
    let started = std::thread::Builder::new()
        .name("flowline-sqlite-replies".into())
        .spawn(move || {
            while let Ok(first) = answered.recv() {
                let mut batches = vec![first];
                batches.extend(answered.try_iter());
                answer(&mut flush, batches);
            }
        });
    match started {
        Ok(_) => (replies, None),
        Err(error) => {
            tracing::warn!(%error, "the SQLite writer's reply thread did not start; the writer answers itself");
            (replies, fallback)
        }
    }
}

/// Answers committed batches, once one flush has made them durable: if it fails, their commits
/// may not survive a power cut, and each job gets the error instead of its result.
fn answer(flush: &mut Option<Flush>, batches: Vec<Answered>) {
    let flushed = flush.as_mut().map_or(Ok(()), Flush::run);
    for (job, result) in batches.into_iter().flatten() {
        let result = match &flushed {
            Ok(()) => result,
            Err(error) => Err(StoreError::Backend(
                format!("the write-ahead log could not be flushed to disk: {error}").into(),
            )),
        };
        reply(job, result);
    }
}

async fn one(tx: &mut Tx<'_>, job: &Job) -> StoreResult<Done> {
    Ok(match job {
        Job::Finish(params, _) => Done::Finish(finish_step(tx, params).await?),
        Job::Claim(params, _) => Done::Claim(claim(tx, params).await?),
    })
}

/// How a transaction of the writer begins: it takes SQLite's write lock at once.
const BEGIN: &str = "BEGIN IMMEDIATE";

/// Runs a batch in one transaction, begun and committed by hand so that `BEGIN` travels to the
/// connection's thread with the first read and `COMMIT` with the last writes: each trip is a
/// hand-over between two threads, and a batch made four of them, not two. If anything fails,
/// the transaction is rolled back before the error is returned.
async fn together(conn: &mut SqliteConnection, batch: &[Job]) -> StoreResult<Vec<Done>> {
    let result = batch_writes(conn, batch).await;
    if result.is_err() {
        // Whatever failed, including the commit, leaves no transaction open; if none is, SQLite
        // says so, which changes nothing.
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

async fn batch_writes(conn: &mut SqliteConnection, batch: &[Job]) -> StoreResult<Vec<Done>> {
    // Step ends first, all at once, so the steps they queue can be claimed by this very batch.
    let reports: Vec<&FinishStep> = batch
        .iter()
        .filter_map(|job| match job {
            Job::Finish(report, _) => Some(&**report),
            Job::Claim(..) => None,
        })
        .collect();
    let mut writes = Writes::default();
    let finished = if reports.is_empty() {
        sqlx::raw_sql(BEGIN)
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        Vec::new()
    } else {
        let held = held_steps(conn, BEGIN, &reported_ids(&reports)).await?;
        plan_finish(held, &reports, now(), &mut writes)?
    };
    // Claims read what they claim: the step ends' writes go first, on their own.
    if batch.iter().any(|job| matches!(job, Job::Claim(..))) {
        std::mem::take(&mut writes).run(conn).await?;
    }
    let mut finished = finished.into_iter();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(match job {
            Job::Finish(..) => Done::Finish(finished.next().ok_or_else(mismatch)?),
            Job::Claim(params, _) => Done::Claim(claim(conn, params).await?),
        });
    }
    writes.statement("COMMIT");
    writes.run(conn).await?;
    Ok(results)
}

async fn alone(conn: &mut SqliteConnection, job: &Job) -> StoreResult<Done> {
    let mut tx = conn.begin_with(BEGIN).await.map_err(db_error)?;
    let result = one(&mut tx, job).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(result)
}

fn reply(job: Job, result: StoreResult<Done>) {
    match (job, result) {
        (Job::Finish(_, tx), Ok(Done::Finish(outcome))) => {
            let _ = tx.send(Ok(outcome));
        }
        (Job::Claim(_, tx), Ok(Done::Claim(claimed))) => {
            let _ = tx.send(Ok(claimed));
        }
        (Job::Finish(_, tx), Err(e)) => {
            let _ = tx.send(Err(e));
        }
        (Job::Claim(_, tx), Err(e)) => {
            let _ = tx.send(Err(e));
        }
        (Job::Finish(_, tx), Ok(Done::Claim(_))) => {
            let _ = tx.send(Err(mismatch()));
        }
        (Job::Claim(_, tx), Ok(Done::Finish(_))) => {
            let _ = tx.send(Err(mismatch()));
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Backend("the writer answered a job with another job's result".into())
}

/// The writer task is gone (the store is shutting down).
pub(crate) fn gone() -> StoreError {
    StoreError::Backend("the SQLite writer task has stopped".into())
}

/// Copies committed pages from the write-ahead log into the database file, on a connection of
/// its own, while the writer goes on committing: SQLite's automatic checkpoint would run inside
/// the commit that crosses its threshold, and hold every job of that batch for the copy and its
/// flushes. Runs after a commit, at most every [`CHECKPOINT_EVERY`]; a `PASSIVE` checkpoint
/// waits for neither readers nor the writer, and what it cannot copy yet, the next one does.
pub(crate) async fn checkpoint(mut conn: SqliteConnection, committed: Arc<Notify>) {
    loop {
        committed.notified().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(%error, "a checkpoint of the write-ahead log failed; the next one retries it");
        }
        tokio::time::sleep(CHECKPOINT_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowline_core::id::{ExecutionId, StepId, WorkspaceId};
    use flowline_store::execution::{Next, StepResult};
    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    fn finished_job() -> (Job, oneshot::Receiver<StoreResult<FinishOutcome>>) {
        let (reply, answer) = oneshot::channel();
        let job = Job::Finish(
            Arc::new(FinishStep {
                workspace_id: WorkspaceId::new(),
                execution_id: ExecutionId::new(),
                step_id: StepId::new(),
                lease_token: uuid::Uuid::now_v7(),
                input: None,
                result: StepResult::Completed {
                    output: serde_json::json!({}),
                    variables: Vec::new(),
                    next: Next::Complete,
                },
                hand_on: None,
            }),
            reply,
        );
        (job, answer)
    }

    /// Committed jobs are answered with their results once the log is flushed, and with an
    /// error instead when the flush fails: their commits might not survive a power cut.
    #[tokio::test]
    async fn jobs_are_answered_only_once_their_commit_is_flushed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = dir.path().join("db-wal");
        std::fs::write(&wal, b"frames").expect("write the log");
        let (job, answered) = finished_job();
        answer(
            &mut Some(Flush::new(wal)),
            vec![vec![(job, Ok(Done::Finish(FinishOutcome::Applied)))]],
        );
        assert!(matches!(
            answered.await.expect("answered"),
            Ok(FinishOutcome::Applied)
        ));

        let (first, first_answer) = finished_job();
        let (second, second_answer) = finished_job();
        answer(
            &mut Some(Flush::new(dir.path().join("missing-wal"))),
            vec![
                vec![(first, Ok(Done::Finish(FinishOutcome::Applied)))],
                vec![(second, Ok(Done::Finish(FinishOutcome::Applied)))],
            ],
        );
        for answered in [first_answer, second_answer] {
            let error = answered
                .await
                .expect("answered")
                .expect_err("a failed flush fails the job");
            assert!(
                error.to_string().contains("could not be flushed"),
                "{error}"
            );
        }
    }

    /// A batch that fails after its `BEGIN` ran (here, on a database without the schema) leaves
    /// no transaction open, so the writer's next transaction, and each job run alone, can begin.
    #[tokio::test]
    async fn a_failed_batch_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("empty.db"))
            .create_if_missing(true)
            .connect()
            .await
            .expect("connect");
        let (job, _answer) = finished_job();
        let batch = vec![job];
        // The batch's own statements leave its transaction open when they fail...
        assert!(batch_writes(&mut conn, &batch).await.is_err());
        assert!(
            sqlx::raw_sql(BEGIN).execute(&mut conn).await.is_err(),
            "the failed batch's transaction is still open"
        );
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut conn)
            .await
            .expect("rollback");
        // ...and a batch run as the writer runs it does not.
        assert!(together(&mut conn, &batch).await.is_err());
        sqlx::raw_sql(BEGIN)
            .execute(&mut conn)
            .await
            .expect("a new transaction begins");
    }
}
