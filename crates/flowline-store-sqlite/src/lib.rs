//! Flowline's SQLite backend: the zero-set-up default.
//!
//! One database file in WAL mode with foreign keys on, a busy timeout, and `synchronous=FULL`
//! unless asked otherwise. Writers take the write lock when they begin (`BEGIN IMMEDIATE`), so a
//! transaction that reads before it writes cannot fail on a lock upgrade. Tenant isolation is by
//! the `workspace_id` filter in every query (SQLite has no row-level security). The SQL shared
//! with PostgreSQL lives in `flowline-store/shared/sql_store.rs`.

mod backend;
#[path = "../../flowline-store/shared/sql_batch.rs"]
mod sql_batch;
#[path = "../../flowline-store/shared/sql_crm.rs"]
mod sql_crm;
#[path = "../../flowline-store/shared/sql_execution.rs"]
mod sql_execution;
#[path = "../../flowline-store/shared/sql_retention.rs"]
mod sql_retention;
#[path = "../../flowline-store/shared/sql_secrets.rs"]
mod sql_secrets;
#[path = "../../flowline-store/shared/sql_stats.rs"]
mod sql_stats;
#[path = "../../flowline-store/shared/sql_store.rs"]
mod sql_store;
mod writer;

pub use backend::{SqliteSettings, SqliteStore};
