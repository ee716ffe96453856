//! Group commit for SQLite's one writer.
//!
//! SQLite lets one connection write at a time, and every commit waits for the disk. Workers
//! therefore do not write their claims and step ends themselves: they hand them to one writer
//! task, which runs whatever has queued up meanwhile in a single transaction on its own
//! connection and commits once, then answers each. Under load a commit carries many steps; idle,
//! a step waits for nothing. If a batch fails, it is rolled back and each job is run alone, so
//! one bad job cannot fail the others.

use flowline_store::execution::{ClaimParams, ClaimedStep, FinishOutcome, FinishStep};
use flowline_store::{StoreError, StoreResult};
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
    Finish(Box<FinishStep>, oneshot::Sender<StoreResult<FinishOutcome>>),
    /// Claim due steps.
    Claim(ClaimParams, oneshot::Sender<StoreResult<Vec<ClaimedStep>>>),
}

enum Done {
    Finish(FinishOutcome),
    Claim(Vec<ClaimedStep>),
}

/// Runs jobs until every sender is gone.
pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut jobs: mpsc::Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    gate: Arc<tokio::sync::Mutex<()>>,
    committed: Arc<Notify>,
) {
    let replies = replier();
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
        match together {
            Ok(results) => {
                committed.notify_one();
                let answered: Answered = batch
                    .drain(..)
                    .zip(results)
                    .map(|(job, result)| (job, Ok(result)))
                    .collect();
                if let Err(std::sync::mpsc::SendError(answered)) = replies.send(answered) {
                    answered
                        .into_iter()
                        .for_each(|(job, result)| reply(job, result));
                }
            }
            Err(error) => {
                tracing::warn!(%error, jobs = batch.len(), "a group commit failed; running its jobs one by one");
                for job in batch.drain(..) {
                    let turn = gate.lock().await;
                    let result = alone(&mut conn, &job).await;
                    drop(turn);
                    reply(job, result);
                }
            }
        }
    }
    if let Err(error) = conn.close().await {
        tracing::warn!(%error, "the SQLite writer's connection did not close cleanly");
    }
}

/// A batch's jobs with their results.
type Answered = Vec<(Job, StoreResult<Done>)>;

/// Answers committed batches on a thread of its own, so the writer starts its next batch at
/// once: waking each job's task, on another runtime, and freeing what it reported took the
/// writer about a tenth of its time. If the thread cannot start, the writer answers itself.
fn replier() -> std::sync::mpsc::Sender<Answered> {
    let (replies, answered) = std::sync::mpsc::channel::<Answered>();
    let started = std::thread::Builder::new()
        .name("flowline-sqlite-replies".into())
        .spawn(move || {
            for batch in answered {
                batch
                    .into_iter()
                    .for_each(|(job, result)| reply(job, result));
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "the SQLite writer's reply thread did not start; the writer answers itself");
    }
    replies
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
        let (reply, _answer) = oneshot::channel();
        let batch = vec![Job::Finish(
            Box::new(FinishStep {
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
        )];
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
