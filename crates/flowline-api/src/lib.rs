//! Flowline's HTTP API.
//!
//! An axum router over a [`Store`]: bearer-token auth with role checks, the seed's six action
//! endpoints and the resources around them, problem+json errors for every failure, an OpenAPI
//! 3.1 document generated from the handlers, and a browsable reference that needs no internet.
//! This crate must not pick a storage backend or write SQL.

pub mod actions;
pub mod audit;
pub mod auth;
pub mod contacts;
pub mod crm;
pub mod error;
pub mod events;
pub mod executions;
pub mod extract;
pub mod flows;
pub mod health;
pub mod hooks;
pub mod members;
pub mod metrics;
mod nullable;
pub mod page;
mod refs;
pub mod secrets;
pub mod stats;
pub mod tokens;
pub mod workspace;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowline_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use error::{ApiError, problem_response};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The engine, which starts runs.
    pub engine: Arc<flowline_engine::Engine>,
}

impl AppState {
    /// State over an engine and its store.
    pub fn new(engine: Arc<flowline_engine::Engine>) -> Self {
        Self {
            store: engine.store().clone(),
            engine,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Flowline",
        description = "The workflow action engine behind a CRM flow builder. Authenticate with \
                       `Authorization: Bearer flw_...`. Errors are `application/problem+json`.",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "actions", description = "Action types and the actions of flows"),
        (name = "flows", description = "Flows and their graphs"),
        (name = "executions", description = "Publishing flows and their runs"),
        (name = "triggers", description = "Inbound webhooks that start runs"),
        (name = "contacts", description = "Contacts, their tags and board places, and backups of deleted ones"),
        (name = "crm", description = "Tags, agents, campaigns and boards"),
        (name = "secrets", description = "Encrypted secrets, used as {{ secrets.name }} by outbound actions"),
        (name = "tokens", description = "API tokens"),
        (name = "members", description = "Workspace members"),
        (name = "audit", description = "Who changed what"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("flw_...")
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// The routes and the OpenAPI document they describe.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(actions::router())
        .merge(flows::router())
        .merge(contacts::router())
        .merge(crm::router())
        .merge(secrets::router())
        .merge(stats::router())
        .merge(events::router())
        .merge(workspace::router())
        .merge(executions::router())
        .merge(hooks::router())
        .merge(tokens::router())
        .merge(members::router())
        .merge(audit::router())
        .merge(health::router())
        .split_for_parts()
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

async fn no_route() -> ApiError {
    ApiError::NoRoute("no such route".into())
}

async fn no_method() -> Response {
    problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "this route does not take that method".into(),
        None,
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal("handler panicked".into()).into_response()
}

/// The whole application: API, docs, fallbacks and middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = routes();
    api.merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
        .merge(metrics::router())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Serves the application on `listener` until `shutdown` resolves, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
