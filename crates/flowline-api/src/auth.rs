//! Bearer-token authentication and role checks.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use flowline_core::role::Role;
use flowline_core::token::ClearToken;
use flowline_store::tenancy::{Actor, Principal};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller. Extracting it answers 401 for a missing, duplicated, garbled,
/// unknown or revoked token.
#[derive(Clone, Debug)]
pub struct Auth(pub Principal);

impl Auth {
    /// 403 unless the caller's role includes `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role.allows(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {role} role; the token's member is {}",
                self.0.role
            )))
        }
    }

    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor {
        Actor::from_principal(&self.0)
    }

    /// The caller's workspace.
    pub fn workspace(&self) -> flowline_core::id::WorkspaceId {
        self.0.workspace_id
    }
}

fn presented_token(parts: &Parts) -> Result<ClearToken, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized(
            "send exactly one `Authorization: Bearer <token>` header".into(),
        ));
    };
    let value = value.to_str().map_err(|_| {
        ApiError::Unauthorized("the Authorization header is not readable text".into())
    })?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized("expected a Bearer token".into()));
    }
    ClearToken::parse(token.trim())
        .ok_or_else(|| ApiError::Unauthorized("that is not a Flowline token (flw_...)".into()))
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = presented_token(parts)?;
        let principal = state
            .store
            .authenticate(&token.hash())
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .ok_or_else(|| ApiError::Unauthorized("the token is unknown or revoked".into()))?;
        Ok(Auth(principal))
    }
}
