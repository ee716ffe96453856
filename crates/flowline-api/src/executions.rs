//! Runs: start, read, list, cancel, resume; and publishing the flow they run.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::id::{ContactId, ExecutionId, FlowId};
use flowline_core::role::Role;
use flowline_core::status::TriggerKind;
use flowline_engine::{StartError, StartRun};
use flowline_store::execution::{Execution, ExecutionDetail};
use flowline_store::flow::Flow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::page::{PageBody, PageQuery};

/// The run routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_flow))
        .routes(routes!(start_execution, list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(retry_execution))
}

/// Publishes a flow's draft as its next version and makes it active.
#[utoipa::path(post, path = "/api/flows/{flowId}/publish", tag = "executions",
    params(("flowId" = FlowId, Path, description = "The flow")),
    responses((status = 200, body = Flow), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn publish_flow(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
) -> ApiResult<Json<Flow>> {
    auth.require(Role::Editor)?;
    Ok(Json(
        state
            .engine
            .store()
            .publish_flow(auth.workspace(), &auth.actor(), id)
            .await?,
    ))
}

/// A run to start.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartExecution {
    /// The contact it runs for.
    contact_id: Option<ContactId>,
    /// Input, available as `{{ trigger.… }}` and `{{ execution.input.… }}`.
    #[schema(value_type = Option<Object>)]
    input: Option<serde_json::Value>,
}

/// The accepted run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The run's id.
    pub id: ExecutionId,
    /// `pending`, or `completed` for a flow with nothing to run.
    pub status: flowline_core::status::ExecutionStatus,
}

/// Starts a run of an active flow; it is queued durably before this answers.
#[utoipa::path(post, path = "/api/flows/{flowId}/executions", tag = "executions",
    params(("flowId" = FlowId, Path, description = "The flow")), request_body = StartExecution,
    responses((status = 202, body = Accepted), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn start_execution(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
    ApiJson(body): ApiJson<StartExecution>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    auth.require(Role::Editor)?;
    let input = body.input.unwrap_or_else(|| serde_json::json!({}));
    if !input.is_object() {
        return Err(ApiError::invalid("input", "must be a JSON object"));
    }
    let run = StartRun {
        flow_id: id,
        contact_id: body.contact_id,
        trigger_kind: TriggerKind::Manual,
        trigger: input.clone(),
        input,
        dedupe_key: None,
    };
    let execution = state
        .engine
        .start(auth.workspace(), run)
        .await
        .map_err(|e| match e {
            StartError::Store(e) => ApiError::from(e),
        })?
        .execution;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: execution.id,
            status: execution.status,
        }),
    ))
}

/// The runs of a flow, newest first.
#[utoipa::path(get, path = "/api/flows/{flowId}/executions", tag = "executions",
    params(("flowId" = FlowId, Path, description = "The flow"), PageQuery),
    responses((status = 200, body = PageBody<Execution>), (status = 404, body = Problem)))]
async fn list_executions(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Execution>>> {
    let page = query.page()?;
    Ok(Json(
        state
            .engine
            .store()
            .list_executions(auth.workspace(), id, page)
            .await?
            .into(),
    ))
}

/// A run: status, timings, error, steps with their attempts, and variables.
#[utoipa::path(get, path = "/api/executions/{executionId}", tag = "executions",
    params(("executionId" = ExecutionId, Path, description = "The run")),
    responses((status = 200, body = ExecutionDetail), (status = 404, body = Problem)))]
async fn get_execution(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ExecutionId>,
) -> ApiResult<Json<ExecutionDetail>> {
    Ok(Json(
        state
            .engine
            .store()
            .get_execution(auth.workspace(), id)
            .await?,
    ))
}

/// Cancels a run: no step starts after this answers.
#[utoipa::path(post, path = "/api/executions/{executionId}/cancel", tag = "executions",
    params(("executionId" = ExecutionId, Path, description = "The run")),
    responses((status = 200, body = Execution), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn cancel_execution(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ExecutionId>,
) -> ApiResult<Json<Execution>> {
    auth.require(Role::Editor)?;
    Ok(Json(
        state
            .engine
            .store()
            .cancel_execution(auth.workspace(), &auth.actor(), id)
            .await?,
    ))
}

/// Resumes a failed run from its failed step, with the variables it had.
#[utoipa::path(post, path = "/api/executions/{executionId}/retry", tag = "executions",
    params(("executionId" = ExecutionId, Path, description = "The run")),
    responses((status = 202, body = Execution), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn retry_execution(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ExecutionId>,
) -> ApiResult<(StatusCode, Json<Execution>)> {
    auth.require(Role::Editor)?;
    let execution = state
        .engine
        .store()
        .retry_execution(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(execution)))
}
