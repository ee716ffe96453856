//! How the shared SQL meets SQLite: connections, pragmas, migrations, transactions.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use flowline_core::id::WorkspaceId;
use flowline_core::token::TokenHash;
use flowline_store::{StoreError, StoreResult};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::sql_store::{Access, Tx, db_error};

pub(crate) type Db = sqlx::Sqlite;
pub(crate) type StoreImpl = SqliteStore;
/// SQLite has no row locks: a write transaction holds the database's one write lock.
pub(crate) const FOR_UPDATE: &str = "";

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
            .synchronous(if settings.synchronous_normal {
                SqliteSynchronous::Normal
            } else {
                SqliteSynchronous::Full
            });
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        Ok(Self { pool })
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

    pub(crate) async fn begin(&self, access: Access) -> StoreResult<Tx> {
        match access {
            Access::Read => self.pool.begin().await,
            Access::Write => self.pool.begin_with("BEGIN IMMEDIATE").await,
        }
        .map_err(db_error)
    }
}

/// Nothing to do: every query filters by workspace itself.
pub(crate) async fn enter_workspace(_tx: &mut Tx, _workspace: WorkspaceId) -> StoreResult<()> {
    Ok(())
}

/// Nothing to do: token rows are readable by hash.
pub(crate) async fn present_token(_tx: &mut Tx, _hash: &TokenHash) -> StoreResult<()> {
    Ok(())
}
