//! `/metrics` in the Prometheus text format, and the count of HTTP requests by route.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

/// The `/metrics` route (outside the OpenAPI document: it is not JSON).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.engine.config().metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return ApiError::Unauthorized("/metrics asks for its bearer token".into())
                .into_response();
        }
    }
    match state.engine.render_metrics().await {
        Ok(text) => {
            let mut response = (StatusCode::OK, text).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `/api/flows/{flowId}` as `/api/flows/:flowId`, the notation the API's documentation uses.
fn colon_style(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// Counts every request by method, route template and status, and times it.
pub async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| colon_style(p.as_str()));
    let method = request.method().as_str().to_owned();
    let began = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let metrics = state.engine.metrics();
    metrics.inc(
        "flowline_http_requests_total",
        "HTTP requests by method, route template and status.",
        &[("method", &method), ("route", &route), ("status", &status)],
    );
    metrics.observe(
        "flowline_http_request_duration_seconds",
        "How long HTTP requests took, by route template.",
        &[("route", &route)],
        began.elapsed().as_secs_f64(),
    );
    response
}
