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
