//! Throwaway databases: a fresh, migrated database per test or benchmark run, dropped after.

use std::time::Duration;

use flowline_core::id::WorkspaceId;
use flowline_store::StoreResult;
use sqlx::{Connection, Executor, PgConnection};

use crate::backend::{APP_ROLE, PgSettings};
use crate::sql_store::db_error;

/// A database created for one test or benchmark run and dropped (with its connections) when
/// this value is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

/// `postgres://u@h:p/db?x` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl ScratchDatabase {
    /// Creates an empty database through `admin_url` (a superuser's connection to any existing
    /// database), after making sure the application role exists, one creator at a time.
    pub async fn create(admin_url: &str) -> StoreResult<Self> {
        let name = format!("flowline_scratch_{}", WorkspaceId::new().0.simple());
        let mut conn = PgConnection::connect(admin_url).await.map_err(db_error)?;
        // Roles are shared by the whole cluster; creating one concurrently races in the
        // catalog, so creators take turns.
        conn.execute("SELECT pg_advisory_lock(727274)")
            .await
            .map_err(db_error)?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(APP_ROLE)
                .fetch_one(&mut conn)
                .await
                .map_err(db_error)?;
        if !exists {
            conn.execute(
                "CREATE ROLE flowline_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            )
            .await
            .map_err(db_error)?;
        }
        conn.execute("GRANT flowline_app TO CURRENT_USER")
            .await
            .map_err(db_error)?;
        conn.execute("SELECT pg_advisory_unlock(727274)")
            .await
            .map_err(db_error)?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .map_err(db_error)?;
        conn.close().await.map_err(db_error)?;
        let url = with_database(admin_url, &name);
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    /// The database's URL (same user as the admin URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Settings for a store on this database.
    pub fn settings(&self) -> PgSettings {
        PgSettings::new(self.url.clone())
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside an async runtime; the cleanup gets a small runtime of its own.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    let drop_it = async {
                        let mut conn = PgConnection::connect(&admin_url).await?;
                        conn.execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await?;
                        conn.close().await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(30), drop_it).await;
                });
            }
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
