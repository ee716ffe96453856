//! The seed's six action endpoints: the action catalogue, a flow's actions (list, create,
//! update, delete) and one action's execution history.

use axum::Json;
use axum::http::StatusCode;
use flowline_core::action::{ActionCategory, ActionType};
use flowline_core::id::{ActionId, FlowId};
use flowline_core::retry::{MAX_TIMEOUT_MS, RetryPolicy};
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::flow::{ActionUpdate, FlowAction, NewAction, StepSummary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::nullable::nullable;
use crate::page::{PageBody, PageQuery};

/// The action routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_action_types))
        .routes(routes!(list_flow_actions, create_flow_action))
        .routes(routes!(update_flow_action, delete_flow_action))
        .routes(routes!(list_action_executions))
        .routes(routes!(test_flow_action))
}

/// A dry run of an action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestAction {
    /// The contact the templates see (`{{ contact.… }}`).
    #[schema(value_type = Option<String>)]
    contact_id: Option<flowline_core::id::ContactId>,
    /// The run variables the templates see (`{{ vars.… }}`).
    #[schema(value_type = Option<Object>)]
    vars: Option<serde_json::Map<String, serde_json::Value>>,
    /// Must be `true`: a test renders and checks, and sends nothing.
    dry_run: bool,
}

/// Dry-runs an action of a flow (its draft config): renders and checks it for a contact and
/// variables, and answers what it would send (secrets masked), sending and changing nothing.
#[utoipa::path(post, path = "/api/actions/flows/{flowId}/actions/{actionId}/test", tag = "actions",
    params(("flowId" = FlowId, Path, description = "The flow"), ("actionId" = ActionId, Path, description = "The action")),
    request_body = TestAction,
    responses((status = 200, body = flowline_engine::DryRun), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn test_flow_action(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath((flow_id, action_id)): ApiPath<(FlowId, ActionId)>,
    ApiJson(body): ApiJson<TestAction>,
) -> ApiResult<Json<flowline_engine::DryRun>> {
    auth.require(Role::Editor)?;
    if !body.dry_run {
        return Err(ApiError::Validation(ValidationErrors::single(
            "dryRun",
            "only dry runs are offered: publish the flow and start a run to act for real",
        )));
    }
    let action = state.store.get_action(auth.workspace(), action_id).await?;
    if action.flow_id != flow_id {
        return Err(ApiError::NotFound("action".into()));
    }
    let report = state
        .engine
        .dry_run(&action, body.contact_id, body.vars.unwrap_or_default())
        .await?;
    Ok(Json(report))
}

/// One action type of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionTypeInfo {
    /// The type's name, as `actionType` takes it.
    #[serde(rename = "type")]
    pub action_type: ActionType,
    /// basic, advanced or integration.
    pub category: ActionCategory,
    /// A short human name.
    pub label: &'static str,
    /// What it does.
    pub description: &'static str,
    /// JSON Schema (2020-12) of `actionConfig`, generated from the typed config.
    pub config_schema: serde_json::Value,
    /// Whether only admins may add or change actions of this type.
    pub admin_only: bool,
}

/// The catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionTypes {
    /// All eleven types.
    pub types: Vec<ActionTypeInfo>,
}

/// The eleven action types with their config schemas.
#[utoipa::path(get, path = "/api/actions/types", tag = "actions",
    responses((status = 200, body = ActionTypes), (status = 401, body = Problem)))]
async fn list_action_types(_auth: Auth) -> Json<ActionTypes> {
    Json(ActionTypes {
        types: ActionType::ALL
            .iter()
            .map(|&t| ActionTypeInfo {
                action_type: t,
                category: t.category(),
                label: t.label(),
                description: t.description(),
                config_schema: t.config_schema().clone(),
                admin_only: t.restricted_by_default(),
            })
            .collect(),
    })
}

/// A flow's actions.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowActions {
    /// Every action of the flow (at most 500), by node then position.
    pub items: Vec<FlowAction>,
}

/// Filters for a flow's actions.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FlowActionsQuery {
    /// Only this node's actions.
    node_id: Option<String>,
}

/// The actions of a flow.
#[utoipa::path(get, path = "/api/actions/flows/{flowId}", tag = "actions",
    params(("flowId" = FlowId, Path, description = "The flow"), FlowActionsQuery),
    responses((status = 200, body = FlowActions), (status = 404, body = Problem)))]
async fn list_flow_actions(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath(flow_id): ApiPath<FlowId>,
    ApiQuery(query): ApiQuery<FlowActionsQuery>,
) -> ApiResult<Json<FlowActions>> {
    let mut items = state.store.list_actions(auth.workspace(), flow_id).await?;
    if let Some(node) = query.node_id {
        items.retain(|a| a.node_id == node);
    }
    Ok(Json(FlowActions { items }))
}

/// A new action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAction {
    /// A node of the flow's graph.
    node_id: String,
    /// One of the eleven types.
    action_type: ActionType,
    /// The config, valid against the type's `configSchema`.
    #[schema(value_type = Object)]
    action_config: serde_json::Value,
    /// A name for people.
    name: Option<String>,
    /// Where among the node's actions (0 first; default last).
    position: Option<i32>,
    /// Whether it runs (default true).
    enabled: Option<bool>,
    /// Retry policy; missing fields come from configuration.
    retry: Option<RetryPolicy>,
    /// Timeout in milliseconds (default from configuration).
    timeout_ms: Option<i64>,
}

/// Changes to an action; absent fields are kept, `null` clears nullable ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAction {
    /// Move to another node of the graph.
    node_id: Option<String>,
    /// A new type; needs an `actionConfig` valid for it.
    action_type: Option<ActionType>,
    /// A new config, valid for the (new or current) type.
    #[schema(value_type = Option<Object>)]
    action_config: Option<serde_json::Value>,
    /// A new name, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// A new position among the node's actions.
    position: Option<i32>,
    /// Enable or disable.
    enabled: Option<bool>,
    /// A new retry policy, or `null` for the defaults.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<RetryPolicy>)]
    retry: Option<Option<RetryPolicy>>,
    /// A new timeout, or `null` for the default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    timeout_ms: Option<Option<i64>>,
}

fn require_type_allowed(auth: &Auth, action_type: ActionType) -> ApiResult<()> {
    if action_type.restricted_by_default() && !auth.0.role.allows(Role::Admin) {
        return Err(ApiError::Forbidden(format!(
            "only admins may add or change `{action_type}` actions"
        )));
    }
    Ok(())
}

fn check_config(
    errors: &mut ValidationErrors,
    action_type: ActionType,
    config: &serde_json::Value,
) {
    if let Err(e) = action_type.parse_config(config) {
        errors.0.extend(e.prefixed("actionConfig").0);
    }
}

fn check_name(errors: &mut ValidationErrors, name: Option<String>) -> Option<String> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errors.push("name", "at most 200 characters");
    }
    name
}

fn check_common(
    errors: &mut ValidationErrors,
    position: Option<i32>,
    retry: Option<&RetryPolicy>,
    timeout: Option<i64>,
) {
    if position.is_some_and(|p| p < 0) {
        errors.push("position", "must be 0 or more");
    }
    if let Some(Err(e)) = retry.map(RetryPolicy::validate) {
        errors.0.extend(e.prefixed("retry").0);
    }
    if timeout.is_some_and(|t| !(1..=MAX_TIMEOUT_MS as i64).contains(&t)) {
        errors.push("timeoutMs", format!("must be 1 to {MAX_TIMEOUT_MS}"));
    }
}

fn check_node(errors: &mut ValidationErrors, node: &str) {
    if node.is_empty() {
        errors.push("nodeId", "is required");
    }
}

/// Adds an action to a node of a flow.
#[utoipa::path(post, path = "/api/actions/flows/{flowId}", tag = "actions",
    params(("flowId" = FlowId, Path, description = "The flow")),
    request_body = CreateAction,
    responses((status = 201, body = FlowAction), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_flow_action(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath(flow_id): ApiPath<FlowId>,
    ApiJson(body): ApiJson<CreateAction>,
) -> ApiResult<(StatusCode, Json<FlowAction>)> {
    auth.require(Role::Editor)?;
    require_type_allowed(&auth, body.action_type)?;
    let mut errors = ValidationErrors::default();
    check_node(&mut errors, &body.node_id);
    check_config(&mut errors, body.action_type, &body.action_config);
    let name = check_name(&mut errors, body.name);
    check_common(
        &mut errors,
        body.position,
        body.retry.as_ref(),
        body.timeout_ms,
    );
    if errors.0.is_empty() {
        crate::refs::check_action_refs(
            &mut errors,
            &state,
            auth.workspace(),
            body.action_type,
            &body.action_config,
        )
        .await?;
    }
    errors.into_result().map_err(ApiError::Validation)?;
    let action = state
        .store
        .create_action(
            auth.workspace(),
            &auth.actor(),
            NewAction {
                flow_id,
                node_id: body.node_id,
                action_type: body.action_type,
                action_config: body.action_config,
                name,
                position: body.position,
                enabled: body.enabled.unwrap_or(true),
                retry: body.retry,
                timeout_ms: body.timeout_ms,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(action)))
}

/// Changes an action of a flow.
#[utoipa::path(put, path = "/api/actions/flows/{flowId}/actions/{actionId}", tag = "actions",
    params(("flowId" = FlowId, Path, description = "The flow"), ("actionId" = ActionId, Path, description = "The action")),
    request_body = UpdateAction,
    responses((status = 200, body = FlowAction), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_flow_action(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath((flow_id, action_id)): ApiPath<(FlowId, ActionId)>,
    ApiJson(body): ApiJson<UpdateAction>,
) -> ApiResult<Json<FlowAction>> {
    auth.require(Role::Editor)?;
    let current = state.store.get_action(auth.workspace(), action_id).await?;
    if current.flow_id != flow_id {
        return Err(ApiError::NotFound("action".into()));
    }
    require_type_allowed(&auth, current.action_type)?;
    let new_type = body.action_type.unwrap_or(current.action_type);
    require_type_allowed(&auth, new_type)?;
    let mut errors = ValidationErrors::default();
    if let Some(node) = &body.node_id {
        check_node(&mut errors, node);
    }
    match (&body.action_config, body.action_type) {
        (Some(config), _) => check_config(&mut errors, new_type, config),
        (None, Some(t)) if t != current.action_type => errors.push(
            "actionConfig",
            format!("changing the type to `{t}` needs a config for it"),
        ),
        _ => {}
    }
    let name = body.name.map(|n| check_name(&mut errors, n));
    check_common(
        &mut errors,
        body.position,
        body.retry.as_ref().and_then(Option::as_ref),
        body.timeout_ms.flatten(),
    );
    if let (true, Some(config)) = (errors.0.is_empty(), &body.action_config) {
        crate::refs::check_action_refs(&mut errors, &state, auth.workspace(), new_type, config)
            .await?;
    }
    errors.into_result().map_err(ApiError::Validation)?;
    let action = state
        .store
        .update_action(
            auth.workspace(),
            &auth.actor(),
            flow_id,
            action_id,
            ActionUpdate {
                node_id: body.node_id,
                action_type: body.action_type,
                action_config: body.action_config,
                name,
                position: body.position,
                enabled: body.enabled,
                retry: body.retry,
                timeout_ms: body.timeout_ms,
                expected_type: Some(current.action_type),
            },
        )
        .await?;
    Ok(Json(action))
}

/// Deletes an action of a flow.
#[utoipa::path(delete, path = "/api/actions/flows/{flowId}/actions/{actionId}", tag = "actions",
    params(("flowId" = FlowId, Path, description = "The flow"), ("actionId" = ActionId, Path, description = "The action")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_flow_action(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath((flow_id, action_id)): ApiPath<(FlowId, ActionId)>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    let current = state.store.get_action(auth.workspace(), action_id).await?;
    if current.flow_id != flow_id {
        return Err(ApiError::NotFound("action".into()));
    }
    require_type_allowed(&auth, current.action_type)?;
    state
        .store
        .delete_action(
            auth.workspace(),
            &auth.actor(),
            flow_id,
            action_id,
            Some(current.action_type),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The step executions of one action, newest first.
#[utoipa::path(get, path = "/api/actions/{actionId}/executions", tag = "actions",
    params(("actionId" = ActionId, Path, description = "The action"), PageQuery),
    responses((status = 200, body = PageBody<StepSummary>), (status = 404, body = Problem)))]
async fn list_action_executions(
    auth: Auth,
    state: axum::extract::State<AppState>,
    ApiPath(action_id): ApiPath<ActionId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<StepSummary>>> {
    let page = query.page()?;
    let steps = state
        .store
        .list_action_executions(auth.workspace(), action_id, page)
        .await?;
    Ok(Json(steps.into()))
}
