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

/// The engine's settings with the secret key: `secret_key` when set; else, on the SQLite
/// default, the key file in the data folder (made once, mode 0600). Fails when the database holds
/// secrets the key cannot open, or holds secrets and there is no key.
pub async fn engine_config(
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<flowline_engine::EngineConfig> {
    use flowline_engine::secrets::SecretKey;
    let key = match (&config.secret_key, &config.database_url) {
        (Some(text), _) => Some(
            SecretKey::from_base64(text).context("FLOWLINE_SECRET_KEY (secret_key) is unusable")?,
        ),
        (None, None) => Some(key_file(&config.data_dir.join("secret.key"))?),
        (None, Some(_)) => None,
    };
    let sample = store
        .sample_sealed_secrets(1_000)
        .await
        .context("reading the stored secrets")?;
    match (&key, sample.first()) {
        (None, Some(_)) => anyhow::bail!(
            "the database holds secrets but no secret key is configured: set FLOWLINE_SECRET_KEY to the key they were sealed with"
        ),
        (Some(key), _) => {
            for sealed in &sample {
                key.open(sealed.workspace_id, &sealed.name, &sealed.nonce, &sealed.ciphertext)
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "the secret key cannot decrypt the stored secrets (secret `{}` of workspace {}): \
                             start with the key they were sealed with",
                            sealed.name,
                            sealed.workspace_id
                        )
                    })?;
            }
        }
        (None, None) => {}
    }
    let mut engine = config.engine();
    engine.secret_key = key;
    Ok(engine)
}

/// Reads the key file, or makes it (readable by its owner only) when there is none.
fn key_file(path: &std::path::Path) -> anyhow::Result<flowline_engine::secrets::SecretKey> {
    use flowline_engine::secrets::SecretKey;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        return SecretKey::from_base64(&text)
            .with_context(|| format!("the key file {} is unusable", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let (key, text) = SecretKey::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the key file {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "made a secret key file; back it up with the database");
    Ok(key)
}
