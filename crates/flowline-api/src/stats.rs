//! Execution statistics.

use axum::Json;
use axum::extract::State;
use flowline_core::id::FlowId;
use flowline_store::stats::Stats;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiQuery;

/// The statistics route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

/// Which statistics.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// `1h`, `24h` (default) or `7d`.
    window: Option<String>,
    /// Only this flow.
    #[param(value_type = Option<String>)]
    flow_id: Option<FlowId>,
}

/// Per action type (counts, success rate, attempt duration percentiles, retries), per error
/// category and severity, and per flow, for the steps and runs created in the window.
#[utoipa::path(get, path = "/api/stats", tag = "executions", params(StatsQuery),
    responses((status = 200, body = Stats), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn get_stats(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    let window = match query.window.as_deref().unwrap_or("24h") {
        "1h" => chrono::Duration::hours(1),
        "24h" => chrono::Duration::hours(24),
        "7d" => chrono::Duration::days(7),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "window must be 1h, 24h or 7d",
            ));
        }
    };
    if let Some(flow) = query.flow_id {
        state.store.get_flow(auth.workspace(), flow).await?;
    }
    let from = chrono::Utc::now() - window;
    Ok(Json(
        state
            .store
            .stats(auth.workspace(), from, query.flow_id)
            .await?,
    ))
}
