//! Inbound webhooks: a per-flow token starts runs with the request's JSON body as the trigger.
//!
//! `POST /hooks/{flowId}` with the token in `X-Flowline-Token` (or `POST /hooks/{flowId}/{token}`
//! for senders that cannot set headers). A delivery carrying a `webhook-id` header (Standard
//! Webhooks) starts one run however often it is replayed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use flowline_core::id::{ExecutionId, FlowId};
use flowline_core::role::Role;
use flowline_core::status::{ExecutionStatus, TriggerKind};
use flowline_core::token::ClearToken;
use flowline_engine::{StartError, StartRun};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiPath, parse_json};

/// The webhook routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(rotate_webhook_token, remove_webhook_token))
        .routes(routes!(receive_hook))
        .routes(routes!(receive_hook_with_path_token))
}

/// A flow's new webhook token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookToken {
    /// Send it as `X-Flowline-Token`, or append it to the URL. Shown once.
    pub token: String,
    /// Where to send deliveries.
    pub url: String,
}

/// Creates (or replaces) a flow's inbound webhook token.
#[utoipa::path(post, path = "/api/flows/{flowId}/webhook", tag = "triggers",
    params(("flowId" = FlowId, Path, description = "The flow")),
    responses((status = 201, body = WebhookToken), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn rotate_webhook_token(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
) -> ApiResult<(StatusCode, Json<WebhookToken>)> {
    auth.require(Role::Editor)?;
    let token = ClearToken::generate();
    state
        .store
        .set_webhook_token(auth.workspace(), &auth.actor(), id, Some(token.hash()))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookToken {
            token: token.expose().to_owned(),
            url: format!("/hooks/{id}"),
        }),
    ))
}

/// Removes a flow's inbound webhook token: deliveries are refused from now on.
#[utoipa::path(delete, path = "/api/flows/{flowId}/webhook", tag = "triggers",
    params(("flowId" = FlowId, Path, description = "The flow")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_webhook_token(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<FlowId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    state
        .store
        .set_webhook_token(auth.workspace(), &auth.actor(), id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A delivery's answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookAccepted {
    /// The run the delivery started (or started before).
    pub id: ExecutionId,
    /// The run's status.
    pub status: ExecutionStatus,
    /// Whether this delivery was seen before (same `webhook-id`).
    pub duplicate: bool,
}

const MAX_DELIVERY_ID: usize = 200;

fn too_large(rejection: BytesRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(format!(
            "the body is over {} bytes",
            crate::extract::MAX_BODY_BYTES
        )),
        _ => ApiError::bad_request("unreadable_body", rejection.body_text()),
    }
}

async fn deliver(
    state: &AppState,
    flow: FlowId,
    token: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    let unauthorized = || ApiError::Unauthorized("unknown flow or wrong webhook token".into());
    let token = ClearToken::parse(token.trim()).ok_or_else(unauthorized)?;
    let workspace = state
        .store
        .find_webhook(flow, &token.hash())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(unauthorized)?;
    let payload: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        let is_json = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "deliveries are JSON: send `Content-Type: application/json`".into(),
            ));
        }
        parse_json(body)?
    };
    let delivery = match headers.get("webhook-id") {
        Some(value) => {
            let id = value
                .to_str()
                .ok()
                .filter(|v| !v.trim().is_empty() && v.len() <= MAX_DELIVERY_ID)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_webhook_id",
                        format!("webhook-id must be 1 to {MAX_DELIVERY_ID} visible characters"),
                    )
                })?;
            Some(format!("webhook:{}", id.trim()))
        }
        None => None,
    };
    let run = StartRun {
        flow_id: flow,
        contact_id: None,
        trigger_kind: TriggerKind::Webhook,
        trigger: payload,
        input: serde_json::json!({}),
        dedupe_key: delivery,
    };
    let started = state
        .engine
        .start(workspace, run)
        .await
        .map_err(|e| match e {
            StartError::Store(e) => ApiError::from(e),
        })?;
    let answer = HookAccepted {
        id: started.execution.id,
        status: started.execution.status,
        duplicate: started.duplicate,
    };
    Ok((
        if started.duplicate {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        },
        Json(answer),
    ))
}

/// Starts a run of an active flow with the delivery's JSON body as `{{ trigger }}`.
#[utoipa::path(post, path = "/hooks/{flowId}", tag = "triggers", security(()),
    params(("flowId" = FlowId, Path, description = "The flow"),
        ("X-Flowline-Token" = String, Header, description = "The flow's webhook token"),
        ("webhook-id" = Option<String>, Header, description = "A delivery id; replays start no second run")),
    request_body(content = Object, description = "Any JSON, available as {{ trigger }}"),
    responses((status = 202, body = HookAccepted), (status = 200, body = HookAccepted, description = "a replayed delivery"),
        (status = 401, body = Problem), (status = 409, body = Problem)))]
async fn receive_hook(
    State(state): State<AppState>,
    ApiPath(flow): ApiPath<FlowId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    let body = body.map_err(too_large)?;
    let token = headers
        .get("x-flowline-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::Unauthorized("send the flow's webhook token as X-Flowline-Token".into())
        })?
        .to_owned();
    deliver(&state, flow, &token, &headers, &body).await
}

/// The same, with the token in the path, for senders that cannot set headers.
#[utoipa::path(post, path = "/hooks/{flowId}/{token}", tag = "triggers", security(()),
    params(("flowId" = FlowId, Path, description = "The flow"), ("token" = String, Path, description = "The flow's webhook token")),
    request_body(content = Object, description = "Any JSON, available as {{ trigger }}"),
    responses((status = 202, body = HookAccepted), (status = 401, body = Problem), (status = 409, body = Problem)))]
async fn receive_hook_with_path_token(
    State(state): State<AppState>,
    ApiPath((flow, token)): ApiPath<(FlowId, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<HookAccepted>)> {
    let body = body.map_err(too_large)?;
    deliver(&state, flow, &token, &headers, &body).await
}
