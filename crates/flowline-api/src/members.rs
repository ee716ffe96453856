//! Members of the workspace and who the caller is.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::email::Email;
use flowline_core::id::{MemberId, TokenId, WorkspaceId};
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::tenancy::{Member, MemberUpdate, NewMember};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::nullable::nullable;
use crate::page::{PageBody, PageQuery};

/// The member routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me))
        .routes(routes!(list_members, create_member))
        .routes(routes!(get_member, update_member, delete_member))
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The workspace the token acts in.
    pub workspace_id: WorkspaceId,
    /// The workspace's name.
    pub workspace_name: String,
    /// The member the token speaks for.
    pub member_id: MemberId,
    /// The member's name.
    pub member_name: String,
    /// The member's role.
    pub role: Role,
    /// The token presented.
    pub token_id: TokenId,
}

/// The caller: workspace, member, role and token.
#[utoipa::path(get, path = "/api/me", tag = "members",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn get_me(auth: Auth, State(state): State<AppState>) -> ApiResult<Json<Me>> {
    let workspace = state.store.get_workspace(auth.workspace()).await?;
    let p = auth.0;
    Ok(Json(Me {
        workspace_id: p.workspace_id,
        workspace_name: workspace.name,
        member_id: p.member_id,
        member_name: p.member_name,
        role: p.role,
        token_id: p.token_id,
    }))
}

/// A new member.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateMember {
    /// 1 to 200 characters.
    name: String,
    /// An email address.
    email: Option<String>,
    /// viewer, editor, admin or owner.
    role: Role,
}

/// Changes to a member; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMember {
    /// A new name.
    name: Option<String>,
    /// A new email, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    /// A new role; the last owner keeps theirs.
    role: Option<Role>,
}

fn check_name(errors: &mut ValidationErrors, name: &str) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push("name", "1 to 200 characters");
    }
    name.to_owned()
}

fn check_email(errors: &mut ValidationErrors, email: Option<String>) -> Option<String> {
    let email = email?;
    match Email::parse(&email) {
        Ok(e) => Some(e.into_string()),
        Err(e) => {
            errors.push("email", e.to_string());
            None
        }
    }
}

/// The workspace's members, newest first.
#[utoipa::path(get, path = "/api/members", tag = "members", params(PageQuery),
    responses((status = 200, body = PageBody<Member>), (status = 403, body = Problem)))]
async fn list_members(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Member>>> {
    auth.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .list_members(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Adds a member (owners only).
#[utoipa::path(post, path = "/api/members", tag = "members", request_body = CreateMember,
    responses((status = 201, body = Member), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_member(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    auth.require(Role::Owner)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, &body.name);
    let email = check_email(&mut errors, body.email);
    errors.into_result().map_err(ApiError::Validation)?;
    let member = state
        .store
        .create_member(
            auth.workspace(),
            &auth.actor(),
            NewMember {
                name,
                email,
                role: body.role,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(member)))
}

/// One member.
#[utoipa::path(get, path = "/api/members/{memberId}", tag = "members",
    params(("memberId" = MemberId, Path, description = "The member")),
    responses((status = 200, body = Member), (status = 404, body = Problem)))]
async fn get_member(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<MemberId>,
) -> ApiResult<Json<Member>> {
    if id != auth.0.member_id {
        auth.require(Role::Admin)?;
    }
    Ok(Json(state.store.get_member(auth.workspace(), id).await?))
}

/// Changes a member (owners only).
#[utoipa::path(put, path = "/api/members/{memberId}", tag = "members",
    params(("memberId" = MemberId, Path, description = "The member")), request_body = UpdateMember,
    responses((status = 200, body = Member), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_member(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<MemberId>,
    ApiJson(body): ApiJson<UpdateMember>,
) -> ApiResult<Json<Member>> {
    auth.require(Role::Owner)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, &n));
    let email = body.email.map(|e| check_email(&mut errors, e));
    errors.into_result().map_err(ApiError::Validation)?;
    let member = state
        .store
        .update_member(
            auth.workspace(),
            &auth.actor(),
            id,
            MemberUpdate {
                name,
                email,
                role: body.role,
            },
        )
        .await?;
    Ok(Json(member))
}

/// Removes a member and its tokens (owners only); the last owner stays.
#[utoipa::path(delete, path = "/api/members/{memberId}", tag = "members",
    params(("memberId" = MemberId, Path, description = "The member")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_member(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<MemberId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Owner)?;
    state
        .store
        .delete_member(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
