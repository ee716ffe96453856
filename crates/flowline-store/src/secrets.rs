//! Secrets as storage sees them: names, times and sealed bytes. Sealing and opening happen
//! outside the store; no store operation ever sees a secret's value.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::id::WorkspaceId;
use serde::Serialize;

use crate::StoreResult;
use crate::tenancy::Actor;

/// A secret as the API shows it: never its value.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRecord {
    /// Its name, `{{ secrets.<name> }}` in templates.
    pub name: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When its value last changed.
    pub updated_at: DateTime<Utc>,
}

/// A secret's sealed value.
#[derive(Clone, Debug, PartialEq)]
pub struct SealedSecret {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// The AEAD nonce.
    pub nonce: Vec<u8>,
    /// The sealed value.
    pub ciphertext: Vec<u8>,
}

/// The secrets part of the store.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Sets a secret (creating or replacing it); answers it and whether it was created.
    async fn put_secret(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        sealed: SealedSecret,
    ) -> StoreResult<(SecretRecord, bool)>;

    /// The workspace's secrets, by name.
    async fn list_secrets(&self, workspace: WorkspaceId) -> StoreResult<Vec<SecretRecord>>;

    /// Deletes a secret.
    async fn delete_secret(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: &str,
    ) -> StoreResult<()>;

    /// The sealed values of the named secrets that exist.
    async fn sealed_secrets(
        &self,
        workspace: WorkspaceId,
        names: &[String],
    ) -> StoreResult<Vec<SealedSecret>>;

    /// Up to `limit` sealed secrets across workspaces, for the start-up key check.
    async fn sample_sealed_secrets(&self, limit: u32) -> StoreResult<Vec<SealedSecret>>;
}
