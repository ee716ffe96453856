//! The audit log, read-only.

use axum::Json;
use axum::extract::State;
use flowline_core::id::MemberId;
use flowline_core::role::Role;
use flowline_store::audit::{AuditEntry, AuditFilter};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiResult, Problem};
use crate::extract::ApiQuery;
use crate::page::{PageBody, page_request};

/// The audit routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// Filters and pagination for the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this kind of entity (`flow`, `action`, `token`, `member`, `workspace`).
    entity_type: Option<String>,
    /// Only this entity.
    entity_id: Option<String>,
    /// Only changes by this member.
    actor: Option<MemberId>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
    /// A previous page's `nextCursor`.
    cursor: Option<String>,
}

/// Who changed what, newest first (admins).
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = PageBody<AuditEntry>), (status = 403, body = Problem)))]
async fn list_audit(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<PageBody<AuditEntry>>> {
    auth.require(Role::Admin)?;
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let filter = AuditFilter {
        entity_type: query.entity_type,
        entity_id: query.entity_id,
        actor_member_id: query.actor,
    };
    Ok(Json(
        state
            .store
            .list_audit(auth.workspace(), filter, page)
            .await?
            .into(),
    ))
}
