//! `GET /api/events`: run and step status changes as Server-Sent Events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use flowline_core::id::{ExecutionId, FlowId, WorkspaceId};
use flowline_store::Store;
use flowline_store::stats::{EventCursor, RunEvent};
use futures_util::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::ApiQuery;

/// The events route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_events))
}

/// How often the stream looks for new events when nothing woke it.
const POLL: Duration = Duration::from_millis(250);

/// Which events.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this flow's runs.
    #[param(value_type = Option<String>)]
    flow_id: Option<FlowId>,
    /// Only this run.
    #[param(value_type = Option<String>)]
    execution_id: Option<ExecutionId>,
    /// Resume after this event (as the `Last-Event-ID` header does); default: from now on.
    last_event_id: Option<String>,
    /// How often an idle stream sends a heartbeat comment, 100 to 60,000 ms (default 15,000).
    heartbeat_ms: Option<u64>,
}

struct Cursor {
    store: Arc<dyn Store>,
    workspace: WorkspaceId,
    flow: Option<FlowId>,
    execution: Option<ExecutionId>,
    last: EventCursor,
    ready: VecDeque<RunEvent>,
    wake: tokio::sync::watch::Receiver<flowline_store::execution::WorkSignal>,
}

/// Run (`execution.status`) and step (`step.status`) status changes of the workspace, as they
/// commit, across every process; each event's `id` resumes the stream after it
/// (`Last-Event-ID`), without gaps.
#[utoipa::path(get, path = "/api/events", tag = "executions", params(EventsQuery),
    responses((status = 200, description = "text/event-stream of RunEvent", content_type = "text/event-stream"),
        (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn stream_events(
    auth: Auth,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let workspace = auth.workspace();
    if let Some(flow) = query.flow_id {
        state.store.get_flow(workspace, flow).await?;
    }
    if let Some(execution) = query.execution_id {
        state.store.get_execution(workspace, execution).await?;
    }
    let heartbeat = query.heartbeat_ms.unwrap_or(15_000);
    if !(100..=60_000).contains(&heartbeat) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "heartbeatMs must be 100 to 60000",
        ));
    }
    let given = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .or(query.last_event_id);
    let last = match given {
        Some(text) => EventCursor::parse(&text).ok_or_else(|| {
            ApiError::bad_request("invalid_query", "Last-Event-ID must be an event's id")
        })?,
        // From now on: after the newest event there is.
        None => state.store.latest_event(workspace).await?,
    };
    let cursor = Cursor {
        store: state.store.clone(),
        workspace,
        flow: query.flow_id,
        execution: query.execution_id,
        last,
        ready: VecDeque::new(),
        wake: state.store.subscribe_work(),
    };
    let stream = futures_util::stream::unfold(cursor, next_event);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_millis(heartbeat))
            .text("heartbeat"),
    ))
}

async fn next_event(mut cursor: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    loop {
        if let Some(event) = cursor.ready.pop_front() {
            let sse = Event::default()
                .id(event.id.clone())
                .event(event.kind.clone())
                .json_data(&event)
                .unwrap_or_default();
            return Some((Ok(sse), cursor));
        }
        match cursor
            .store
            .events_after(
                cursor.workspace,
                cursor.last,
                cursor.flow,
                cursor.execution,
                200,
            )
            .await
        {
            Ok(events) if !events.is_empty() => {
                if let Some(newest) = events.last().and_then(|e| EventCursor::parse(&e.id)) {
                    cursor.last = newest;
                }
                cursor.ready.extend(events);
            }
            Ok(_) => {
                tokio::select! {
                    _ = cursor.wake.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reading run events failed; trying again");
                tokio::time::sleep(POLL * 4).await;
            }
        }
    }
}
