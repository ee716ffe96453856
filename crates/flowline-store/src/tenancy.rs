//! Workspaces, members, tokens and who is acting.

use chrono::{DateTime, Utc};
use flowline_core::id::{MemberId, TokenId, WorkspaceId};
use flowline_core::role::Role;
use flowline_core::token::TokenHash;
use serde::Serialize;

/// A tenant.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// Its id.
    pub id: WorkspaceId,
    /// Its name.
    pub name: String,
    /// Finished runs older than this many days are pruned.
    pub retention_days: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A person (or system) in a workspace, with a role.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Its id.
    pub id: MemberId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Display name.
    pub name: String,
    /// Contact address, if known.
    pub email: Option<String>,
    /// What it may do.
    pub role: Role,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A token's stored facts; never its hash or clear text.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// Its id.
    pub id: TokenId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// The member it speaks for.
    pub member_id: MemberId,
    /// A name to recognise it by.
    pub name: String,
    /// The member's role, which the token carries.
    pub role: Role,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last presented.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whom an authenticated request speaks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The workspace it acts in.
    pub workspace_id: WorkspaceId,
    /// The member.
    pub member_id: MemberId,
    /// The member's name.
    pub member_name: String,
    /// The token presented.
    pub token_id: TokenId,
    /// The member's role.
    pub role: Role,
}

/// Who makes a change, as the audit log records it.
#[derive(Clone, Debug, PartialEq)]
pub struct Actor {
    /// The member, when a member acts.
    pub member_id: Option<MemberId>,
    /// The token, when a token was presented.
    pub token_id: Option<TokenId>,
    /// A readable name: the member's name, or `cli`, `engine`, ...
    pub label: String,
}

impl Actor {
    /// A member acting through a token.
    pub fn from_principal(p: &Principal) -> Self {
        Self {
            member_id: Some(p.member_id),
            token_id: Some(p.token_id),
            label: p.member_name.clone(),
        }
    }

    /// Flowline itself, or an operator at its command line.
    pub fn system(label: &str) -> Self {
        Self {
            member_id: None,
            token_id: None,
            label: label.to_owned(),
        }
    }
}

/// A new workspace, its first owner and the owner's first token.
#[derive(Clone, Debug)]
pub struct NewWorkspace {
    /// The workspace's name.
    pub name: String,
    /// The owner's name.
    pub owner_name: String,
    /// The owner token's name.
    pub token_name: String,
    /// The owner token's hash.
    pub token_hash: TokenHash,
    /// Who creates it, for the audit log.
    pub actor: Actor,
}

/// What creating a workspace made.
#[derive(Clone, Debug)]
pub struct CreatedWorkspace {
    /// The workspace.
    pub workspace: Workspace,
    /// Its owner.
    pub owner: Member,
    /// The owner's token.
    pub token: TokenRecord,
}

/// A new member.
#[derive(Clone, Debug)]
pub struct NewMember {
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: Option<String>,
    /// Role.
    pub role: Role,
}

/// Changes to a member; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct MemberUpdate {
    /// New name.
    pub name: Option<String>,
    /// New email (`Some(None)` clears it).
    pub email: Option<Option<String>>,
    /// New role.
    pub role: Option<Role>,
}

/// A new token for an existing member.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// The member it speaks for.
    pub member_id: MemberId,
    /// A name to recognise it by.
    pub name: String,
    /// Its hash.
    pub hash: TokenHash,
}
