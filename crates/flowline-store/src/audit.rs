//! The append-only audit log.

use chrono::{DateTime, Utc};
use flowline_core::id::{AuditId, MemberId, TokenId, WorkspaceId};
use serde::Serialize;

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Its id.
    pub id: AuditId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The member who acted, if a member did.
    pub actor_member_id: Option<MemberId>,
    /// The token presented, if any.
    pub actor_token_id: Option<TokenId>,
    /// Who acted, readably.
    pub actor_label: String,
    /// What was done: `flow.create`, `token.revoke`, ...
    pub action: String,
    /// The kind of entity changed.
    pub entity_type: String,
    /// The entity changed.
    pub entity_id: Option<String>,
    /// The entity before (absent for creations; secrets never appear).
    pub before: Option<serde_json::Value>,
    /// The entity after (absent for deletions).
    pub after: Option<serde_json::Value>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewAuditEntry {
    /// What was done.
    pub action: String,
    /// The kind of entity.
    pub entity_type: String,
    /// The entity.
    pub entity_id: Option<String>,
    /// Before.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
}

/// Which entries to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this kind of entity.
    pub entity_type: Option<String>,
    /// Only this entity.
    pub entity_id: Option<String>,
    /// Only changes by this member.
    pub actor_member_id: Option<MemberId>,
}
