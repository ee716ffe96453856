//! Picks and opens the storage backend: PostgreSQL when `database_url` is set, else the SQLite
//! file in the data folder.

use std::sync::Arc;

use anyhow::Context;
use flowline_store::Store;
use flowline_store_postgres::{PgSettings, PgStore};
use flowline_store_sqlite::{SqliteSettings, SqliteStore};

use crate::config::{Config, SqliteSynchronous};

/// Opens the configured database and brings its schema up to date.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.database_url {
        Some(url) => {
            let settings = PgSettings {
                url: url.clone(),
                max_connections: config.pg_pool_size,
            };
            PgStore::migrate(&settings)
                .await
                .context("migrating the PostgreSQL database")?;
            let store = PgStore::connect(&settings)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Arc::new(store))
        }
        None => {
            std::fs::create_dir_all(&config.data_dir).with_context(|| {
                format!("creating the data folder {}", config.data_dir.display())
            })?;
            let mut settings = SqliteSettings::new(config.data_dir.join("flowline.db"));
            settings.synchronous_normal = config.sqlite_synchronous == SqliteSynchronous::Normal;
            let store = SqliteStore::open(&settings)
                .await
                .with_context(|| format!("opening {}", settings.path.display()))?;
            store
                .migrate()
                .await
                .context("migrating the SQLite database")?;
            Ok(Arc::new(store))
        }
    }
}

/// Where the data lives, for messages.
pub fn describe(config: &Config) -> String {
    match &config.database_url {
        Some(_) => "PostgreSQL (DATABASE_URL)".to_owned(),
        None => format!(
            "SQLite at {}",
            config.data_dir.join("flowline.db").display()
        ),
    }
}
