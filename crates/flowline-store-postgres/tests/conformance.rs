//! The shared conformance suite, on a fresh PostgreSQL database per test.

use std::sync::Arc;

use flowline_store_postgres::PgStore;
use flowline_store_postgres::scratch::ScratchDatabase;
use flowline_store_tests::{Fresh, conformance_suite};

fn admin_url() -> String {
    std::env::var("FLOWLINE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

async fn fresh() -> Fresh {
    let db = ScratchDatabase::create(&admin_url())
        .await
        .expect("scratch database");
    PgStore::migrate(&db.settings()).await.expect("migrate");
    let store = PgStore::connect(&db.settings()).await.expect("connect");
    Fresh {
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

conformance_suite!(fresh);

/// Flowline's connections run without JIT compilation: a claim planned with a `LIMIT` the
/// planner cannot see, on a large queue, would otherwise be compiled at every run.
#[tokio::test]
async fn connections_run_without_jit() {
    let db = ScratchDatabase::create(&admin_url())
        .await
        .expect("scratch database");
    PgStore::migrate(&db.settings()).await.expect("migrate");
    let store = PgStore::connect(&db.settings()).await.expect("connect");
    let jit: String = sqlx::query_scalar("SHOW jit")
        .fetch_one(store.pool())
        .await
        .expect("show jit");
    assert_eq!(jit, "off");
}
