//! API tokens: create (the clear token is shown once), list, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::id::{MemberId, TokenId};
use flowline_core::role::Role;
use flowline_core::token::ClearToken;
use flowline_store::tenancy::{NewToken, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{PageBody, PageQuery};

/// The token routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// A new token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateToken {
    /// A name to recognise it by (1 to 200 characters).
    name: String,
    /// The member it speaks for (default: the caller). Its role may not exceed the caller's.
    member_id: Option<MemberId>,
}

/// A created token: the only time its clear text is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    /// The bearer token. Store it now: it cannot be shown again.
    pub token: String,
    /// The token's record.
    #[serde(flatten)]
    pub record: TokenRecord,
}

/// The workspace's tokens (never their secrets), newest first.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = PageBody<TokenRecord>), (status = 403, body = Problem)))]
async fn list_tokens(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<TokenRecord>>> {
    auth.require(Role::Admin)?;
    Ok(Json(
        state
            .store
            .list_tokens(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Creates a token for the caller or another member.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)))]
async fn create_token(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    auth.require(Role::Admin)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "1 to 200 characters"));
    }
    let member_id = body.member_id.unwrap_or(auth.0.member_id);
    let member = state.store.get_member(auth.workspace(), member_id).await?;
    // A token for someone else must be weaker than its creator: it follows its member's role,
    // so a token minted for a peer would rise with the peer's next promotion.
    if member_id != auth.0.member_id && !auth.0.role.outranks(member.role) {
        return Err(ApiError::Forbidden(format!(
            "a {} can create tokens for itself and for members with a lower role, not for a {}",
            auth.0.role, member.role
        )));
    }
    let clear = ClearToken::generate();
    let record = state
        .store
        .create_token(
            auth.workspace(),
            &auth.actor(),
            NewToken {
                member_id,
                name,
                hash: clear.hash(),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: clear.expose().to_owned(),
            record,
        }),
    ))
}

/// Revokes a token at once; revoking a revoked token changes nothing.
#[utoipa::path(delete, path = "/api/tokens/{tokenId}", tag = "tokens",
    params(("tokenId" = TokenId, Path, description = "The token")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_token(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TokenId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    let token = state.store.get_token(auth.workspace(), id).await?;
    if !auth.0.role.allows(token.role) {
        return Err(ApiError::Forbidden(format!(
            "a {} cannot revoke the token of a member with the {} role",
            auth.0.role, token.role
        )));
    }
    state
        .store
        .revoke_token(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
