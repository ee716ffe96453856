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
/// planner cannot see, on a large queue, would otherwise be compiled at every run. What a claim
/// sets for itself (no bitmap scans, commit without waiting for the disk) ends with its
/// transaction: the next transaction on the same connection, a step's end say, is durable.
#[tokio::test]
async fn connections_run_without_jit_and_claims_keep_their_settings_to_themselves() {
    let db = ScratchDatabase::create(&admin_url())
        .await
        .expect("scratch database");
    PgStore::migrate(&db.settings()).await.expect("migrate");
    let mut settings = db.settings();
    settings.max_connections = 1;
    let store = PgStore::connect(&settings).await.expect("connect");
    let show = |name: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!("SHOW {name}")))
                .fetch_one(&pool)
                .await
                .expect("show")
        }
    };
    assert_eq!(show("jit").await, "off");
    let claimed = flowline_store::Store::claim_steps(
        &store,
        &flowline_store::execution::ClaimParams {
            queue: flowline_core::status::Queue::Basic,
            limit: 10,
            owner: "test".into(),
            lease: std::time::Duration::from_secs(30),
            per_workspace_limit: 10,
        },
    )
    .await
    .expect("claim");
    assert!(claimed.is_empty());
    assert_eq!(show("synchronous_commit").await, "on");
    assert_eq!(show("enable_bitmapscan").await, "on");
}
