//! The shared conformance suite, on a fresh SQLite file per test.

use std::sync::Arc;

use flowline_store_sqlite::{SqliteSettings, SqliteStore};
use flowline_store_tests::{Fresh, conformance_suite};

async fn fresh() -> Fresh {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&SqliteSettings::new(dir.path().join("flowline.db")))
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    Fresh {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

conformance_suite!(fresh);

/// SQLite is built with its query planner stability guarantee (`.cargo/config.toml`): without
/// it, a statement with a bound `LIMIT`, like every claim, is parsed anew each time it runs.
#[tokio::test]
async fn sqlite_is_built_with_a_stable_query_planner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&SqliteSettings::new(dir.path().join("flowline.db")))
        .await
        .expect("open");
    let used: i64 = sqlx::query_scalar("SELECT sqlite_compileoption_used('ENABLE_QPSG')")
        .fetch_one(store.pool())
        .await
        .expect("compile options");
    assert_eq!(used, 1);
}

/// A database SQLite cannot keep in write-ahead-log mode is refused at open, with the reason,
/// instead of failing each write later.
#[tokio::test]
async fn a_database_without_the_write_ahead_log_is_refused_at_open() {
    let error = SqliteStore::open(&SqliteSettings::new(":memory:"))
        .await
        .expect_err("an in-memory database has no write-ahead log");
    let message = error.to_string();
    assert!(message.contains("`memory` journal mode"), "{message}");
    assert!(message.contains("write-ahead log"), "{message}");
}
