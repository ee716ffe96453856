//! Flows: create, read, update (partial), delete, list.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::crm::EventTrigger;
use flowline_core::graph::FlowGraph;
use flowline_core::id::FlowId;
use flowline_core::role::Role;
use flowline_core::schedule::{CronSchedule, Schedule};
use flowline_core::status::FlowStatus;
use flowline_core::validation::ValidationErrors;
use flowline_store::flow::{Flow, FlowFilter, FlowUpdate, NewFlow, PlannedSchedule};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::nullable::nullable;
use crate::page::{PageBody, page_request};

/// The flow routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_flows, create_flow))
        .routes(routes!(get_flow, update_flow, delete_flow))
}

/// A new flow; it starts as a draft.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateFlow {
    /// 1 to 200 characters.
    name: String,
    /// What it is for (at most 2,000 characters).
    description: Option<String>,
    /// Nodes and edges (default: empty). A run starts at the first node.
    graph: Option<FlowGraph>,
    /// Runs the flow by itself on a cron schedule (while it is active).
    schedule: Option<Schedule>,
    /// Contact events that start the flow (while it is active).
    #[serde(default)]
    triggers: Vec<EventTrigger>,
}

/// Changes to a flow; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFlow {
    /// A new name.
    name: Option<String>,
    /// A new description, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// A new graph; it may not drop a node that still holds actions.
    graph: Option<FlowGraph>,
    /// `draft` or `archived` (publishing is `POST /api/flows/{flowId}/publish`).
    status: Option<FlowStatus>,
    /// A new schedule, or `null` to stop running by itself.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Schedule>)]
    schedule: Option<Option<Schedule>>,
    /// New event triggers, replacing the old ones.
    triggers: Option<Vec<EventTrigger>>,
}

/// Checks event triggers: no filter their event lacks, and every tag, board and column they
/// name exists (and the column is on the board).
async fn check_triggers(
    errors: &mut ValidationErrors,
    state: &AppState,
    workspace: flowline_core::id::WorkspaceId,
    triggers: &[EventTrigger],
) -> ApiResult<()> {
    if triggers.len() > 20 {
        errors.push("triggers", "at most 20 triggers");
    }
    for (i, trigger) in triggers.iter().enumerate() {
        if let Some(problem) = trigger.problem() {
            errors.push(format!("triggers[{i}]"), problem);
            continue;
        }
        if let Some(tag) = trigger.tag_id
            && let Err(e) = state.store.get_tag(workspace, tag).await
        {
            crate::refs::missing(errors, format!("triggers[{i}].tagId"), "tag", e)?;
        }
        if let Some(board) = trigger.board_id {
            match state.store.get_board(workspace, board).await {
                Ok(b) => {
                    if let Some(column) = trigger.column_id
                        && !b.columns.iter().any(|c| c.id == column)
                    {
                        errors.push(
                            format!("triggers[{i}].columnId"),
                            "no such column on the board",
                        );
                    }
                }
                Err(e) => {
                    crate::refs::missing(errors, format!("triggers[{i}].boardId"), "board", e)?
                }
            }
        } else if trigger.column_id.is_some() {
            errors.push(
                format!("triggers[{i}].columnId"),
                "give the column's `boardId` too",
            );
        }
    }
    Ok(())
}

/// Parses a schedule and plans its next slot.
fn check_schedule(
    errors: &mut ValidationErrors,
    schedule: Option<Schedule>,
) -> Option<PlannedSchedule> {
    let schedule = schedule?;
    match CronSchedule::parse(&schedule) {
        Ok(parsed) => Some(PlannedSchedule {
            next_fire_at: parsed.next_after(chrono::Utc::now()),
            schedule,
        }),
        Err(e) => {
            errors.0.extend(e.prefixed("schedule").0);
            None
        }
    }
}

fn check_name(errors: &mut ValidationErrors, name: &str) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push("name", "1 to 200 characters");
    }
    name.to_owned()
}

fn check_description(errors: &mut ValidationErrors, description: Option<String>) -> Option<String> {
    let description = description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 2_000)
    {
        errors.push("description", "at most 2,000 characters");
    }
    description
}

fn check_graph(errors: &mut ValidationErrors, graph: &FlowGraph) {
    if let Err(e) = graph.validate() {
        errors.0.extend(e.prefixed("graph").0);
    }
}

/// Filters and pagination for flows.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowsQuery {
    /// Only flows in this status.
    status: Option<FlowStatus>,
    /// 1 to 200 (default 50).
    limit: Option<u32>,
    /// A previous page's `nextCursor`.
    cursor: Option<String>,
}

/// The workspace's flows, newest first.
#[utoipa::path(get, path = "/api/flows", tag = "flows", params(FlowsQuery),
    responses((status = 200, body = PageBody<Flow>), (status = 400, body = Problem)))]
async fn list_flows(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FlowsQuery>,
) -> ApiResult<Json<PageBody<Flow>>> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let flows = state
        .store
        .list_flows(
            auth.workspace(),
            FlowFilter {
                status: query.status,
            },
            page,
        )
        .await?;
    Ok(Json(flows.into()))
}

/// Creates a draft flow.
#[utoipa::path(post, path = "/api/flows", tag = "flows", request_body = CreateFlow,
    responses((status = 201, body = Flow), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_flow(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateFlow>,
) -> ApiResult<(StatusCode, Json<Flow>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, &body.name);
    let description = check_description(&mut errors, body.description);
    let graph = body.graph.unwrap_or_default();
    check_graph(&mut errors, &graph);
    let schedule = check_schedule(&mut errors, body.schedule);
    check_triggers(&mut errors, &state, auth.workspace(), &body.triggers).await?;
    errors.into_result().map_err(ApiError::Validation)?;
    let flow = state
        .store
        .create_flow(
            auth.workspace(),
            &auth.actor(),
            NewFlow {
                name,
                description,
                graph,
                schedule,
                triggers: body.triggers,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(flow)))
}

/// One flow.
#[utoipa::path(get, path = "/api/flows/{flowId}", tag = "flows",
    params(("flowId" = FlowId, Path, description = "The flow")),
    responses((status = 200, body = Flow), (status = 404, body = Problem)))]
async fn get_flow(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
) -> ApiResult<Json<Flow>> {
    Ok(Json(state.store.get_flow(auth.workspace(), id).await?))
}

/// Changes a flow's name, description, graph or status.
#[utoipa::path(put, path = "/api/flows/{flowId}", tag = "flows",
    params(("flowId" = FlowId, Path, description = "The flow")), request_body = UpdateFlow,
    responses((status = 200, body = Flow), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_flow(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
    ApiJson(body): ApiJson<UpdateFlow>,
) -> ApiResult<Json<Flow>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, &n));
    let description = body.description.map(|d| check_description(&mut errors, d));
    if let Some(graph) = &body.graph {
        check_graph(&mut errors, graph);
    }
    let schedule = body.schedule.map(|s| check_schedule(&mut errors, s));
    if let Some(triggers) = &body.triggers {
        check_triggers(&mut errors, &state, auth.workspace(), triggers).await?;
    }
    if body.status == Some(FlowStatus::Active) {
        errors.push(
            "status",
            "publish a flow with POST /api/flows/{flowId}/publish",
        );
    }
    errors.into_result().map_err(ApiError::Validation)?;
    let flow = state
        .store
        .update_flow(
            auth.workspace(),
            &auth.actor(),
            id,
            FlowUpdate {
                name,
                description,
                graph: body.graph,
                status: body.status,
                schedule,
                triggers: body.triggers,
            },
        )
        .await?;
    Ok(Json(flow))
}

/// Deletes a flow that never ran, with its actions.
#[utoipa::path(delete, path = "/api/flows/{flowId}", tag = "flows",
    params(("flowId" = FlowId, Path, description = "The flow")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_flow(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    // Deleting a flow deletes its actions: the same rule as deleting them one by one.
    if !auth.0.role.allows(Role::Admin) {
        let actions = state.store.list_actions(auth.workspace(), id).await?;
        if let Some(restricted) = actions
            .iter()
            .find(|a| a.action_type.restricted_by_default())
        {
            return Err(ApiError::Forbidden(format!(
                "the flow holds a `{}` action, which only admins may delete",
                restricted.action_type
            )));
        }
    }
    state
        .store
        .delete_flow(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
