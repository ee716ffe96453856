//! How the shared SQL meets PostgreSQL: the application role, row-level security scoping,
//! migrations, transactions.

use std::str::FromStr;
use std::time::Duration;

use flowline_core::id::WorkspaceId;
use flowline_core::token::TokenHash;
use flowline_store::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::sql_store::{Access, Tx, db_error};

pub(crate) type Db = sqlx::Postgres;
pub(crate) type StoreImpl = PgStore;
pub(crate) const FOR_UPDATE: &str = "FOR UPDATE";

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
}

fn options(url: &str) -> StoreResult<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(db_error)
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
        Ok(Self { pool })
    }

    /// The connection pool (working as [`APP_ROLE`]), for backend-specific tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) async fn begin(&self, _access: Access) -> StoreResult<Tx> {
        self.pool.begin().await.map_err(db_error)
    }
}

/// Names the transaction's workspace; row-level security shows it nothing else.
pub(crate) async fn enter_workspace(tx: &mut Tx, workspace: WorkspaceId) -> StoreResult<()> {
    sqlx::query("SELECT set_config('flowline.workspace_id', $1, true)")
        .bind(workspace.to_string())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Lets the transaction read the one token row whose hash it presents.
pub(crate) async fn present_token(tx: &mut Tx, hash: &TokenHash) -> StoreResult<()> {
    let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
    sqlx::query("SELECT set_config('flowline.token_hash', $1, true)")
        .bind(hex)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}
