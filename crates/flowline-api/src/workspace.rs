//! The caller's workspace: its name and how long it keeps finished runs.

use axum::Json;
use axum::extract::State;
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::tenancy::Workspace;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiJson;

/// The workspace routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_workspace, update_workspace))
}

/// Changes to the workspace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWorkspace {
    /// 1 to 200 characters.
    name: Option<String>,
    /// Finished runs older than this are pruned: 1 to 3,650 days (default 30).
    retention_days: Option<i32>,
}

/// The caller's workspace.
#[utoipa::path(get, path = "/api/workspace", tag = "members",
    responses((status = 200, body = Workspace), (status = 401, body = Problem)))]
async fn get_workspace(auth: Auth, State(state): State<AppState>) -> ApiResult<Json<Workspace>> {
    Ok(Json(state.store.get_workspace(auth.workspace()).await?))
}

/// Renames the workspace or changes its retention (admins).
#[utoipa::path(put, path = "/api/workspace", tag = "members", request_body = UpdateWorkspace,
    responses((status = 200, body = Workspace), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn update_workspace(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UpdateWorkspace>,
) -> ApiResult<Json<Workspace>> {
    auth.require(Role::Admin)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| n.trim().to_owned());
    if name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 200)
    {
        errors.push("name", "1 to 200 characters");
    }
    if body
        .retention_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        errors.push("retentionDays", "1 to 3,650 days");
    }
    errors.into_result().map_err(ApiError::Validation)?;
    Ok(Json(
        state
            .store
            .update_workspace(auth.workspace(), &auth.actor(), name, body.retention_days)
            .await?,
    ))
}
