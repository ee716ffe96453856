//! The secrets SQL both backends share: sealed bytes in, sealed bytes out.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::id::WorkspaceId;
use flowline_store::secrets::{SealedSecret, SecretRecord, SecretStore};
use flowline_store::tenancy::Actor;
use flowline_store::{StoreError, StoreResult};
use serde_json::json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::backend::{Db, StoreImpl, enter_engine_scope};
use crate::sql_store::{Access, audit, commit, db_error, entry, now};

type Row = (String, DateTime<Utc>, DateTime<Utc>);

fn record((name, created_at, updated_at): Row) -> SecretRecord {
    SecretRecord {
        name,
        created_at,
        updated_at,
    }
}

#[async_trait]
impl SecretStore for StoreImpl {
    async fn put_secret(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        sealed: SealedSecret,
    ) -> StoreResult<(SecretRecord, bool)> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let existing: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM secrets WHERE workspace_id = $1 AND name = $2")
                .bind(workspace.0)
                .bind(&sealed.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let created = existing.is_none();
        sqlx::query(
            "INSERT INTO secrets (id, workspace_id, name, nonce, ciphertext, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (workspace_id, name) \
             DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(Uuid::now_v7())
        .bind(workspace.0)
        .bind(&sealed.name)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let row: Row = sqlx::query_as(
            "SELECT name, created_at, updated_at FROM secrets WHERE workspace_id = $1 AND name = $2",
        )
        .bind(workspace.0)
        .bind(&sealed.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        // The audit log names the secret, never its value.
        let action = if created {
            "secret.create"
        } else {
            "secret.update"
        };
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                action,
                "secret",
                &sealed.name,
                None,
                Some(json!({"name": sealed.name})),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok((record(row), created))
    }

    async fn list_secrets(&self, workspace: WorkspaceId) -> StoreResult<Vec<SecretRecord>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT name, created_at, updated_at FROM secrets WHERE workspace_id = $1 ORDER BY name LIMIT 1000",
        )
        .bind(workspace.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(rows.into_iter().map(record).collect())
    }

    async fn delete_secret(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: &str,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let gone = sqlx::query("DELETE FROM secrets WHERE workspace_id = $1 AND name = $2")
            .bind(workspace.0)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound("secret"));
        }
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "secret.delete",
                "secret",
                name,
                Some(json!({"name": name})),
                None,
            ),
        )
        .await?;
        commit(tx).await
    }

    async fn sealed_secrets(
        &self,
        workspace: WorkspaceId,
        names: &[String],
    ) -> StoreResult<Vec<SealedSecret>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let mut query: QueryBuilder<Db> =
            QueryBuilder::new("SELECT name, nonce, ciphertext FROM secrets WHERE workspace_id = ");
        query.push_bind(workspace.0);
        query.push(" AND name IN (");
        let mut list = query.separated(", ");
        for name in names {
            list.push_bind(name.clone());
        }
        query.push(")");
        let rows: Vec<(String, Vec<u8>, Vec<u8>)> = query
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        commit(tx).await?;
        Ok(rows
            .into_iter()
            .map(|(name, nonce, ciphertext)| SealedSecret {
                workspace_id: workspace,
                name,
                nonce,
                ciphertext,
            })
            .collect())
    }

    async fn sample_sealed_secrets(&self, limit: u32) -> StoreResult<Vec<SealedSecret>> {
        let mut tx = self.begin(Access::Read).await?;
        enter_engine_scope(&mut tx).await?;
        let rows: Vec<(Uuid, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT workspace_id, name, nonce, ciphertext FROM secrets ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(rows
            .into_iter()
            .map(|(workspace, name, nonce, ciphertext)| SealedSecret {
                workspace_id: workspace.into(),
                name,
                nonce,
                ciphertext,
            })
            .collect())
    }
}
