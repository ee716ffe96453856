//! Flowline's PostgreSQL backend: for many processes and more than one machine's worth of work.
//!
//! Migrations run as the connection URL's user and create `flowline_app`, a role that owns
//! nothing and is neither superuser nor BYPASSRLS. Every pooled connection switches to it
//! (`SET ROLE`), and every transaction names its workspace with
//! `set_config('flowline.workspace_id', …, true)`: row-level security, enabled and forced on
//! every tenant table, then shows it that workspace's rows and nothing else. The SQL shared with
//! SQLite lives in `flowline-store/shared/sql_store.rs`.

mod backend;
mod finisher;
pub mod scratch;
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

pub use backend::{APP_ROLE, PgSettings, PgStore};
