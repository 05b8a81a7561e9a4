//! deputy's daemon: the HTTP API and SSE streams over the engine, and the daemon's
//! life cycle (data dir lock, store, engine, listener, graceful shutdown).
//!
//! Only this crate knows HTTP. `app(state)` builds the router, separate from serving it,
//! so tests can drive it directly; [`daemon::start`] runs the whole daemon in-process.

mod api;
pub mod auth;
mod body;
pub mod daemon;
pub mod dashboard;
mod error;
mod listener;
mod metrics_http;
pub mod openapi;
pub mod replay;
mod schedules_api;
mod sse;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, patch, post};
use deputy_core::time::Millis;
use deputy_engine::Engine;

pub use daemon::{Daemon, DaemonConfig, DaemonInfo};
pub use error::ApiError;

#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    /// Cancelled when the daemon stops: open event streams end.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The daemon's own API, for the MCP endpoint's tools.
    pub self_client: deputy_client::Client,
    pub started_at: Millis,
    pub data_dir: String,
    /// Finished tasks' event streams, rendered once for every client.
    pub replays: std::sync::Arc<replay::ReplayCache>,
    /// Recent figures for the dashboard's sparklines.
    pub figures: std::sync::Arc<dashboard::Figures>,
}

async fn openapi_json() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
}

/// The whole HTTP surface. `max_body` bounds every request body; with a `token`, every
/// request but the health probes must present it.
pub fn app(state: AppState, max_body: usize, token: Option<auth::Token>) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/v1/version", get(api::version))
        .route("/v1/status", get(api::status))
        .route("/v1/nodes", get(api::nodes))
        .route("/v1/tasks", post(api::submit).get(api::list))
        .route("/v1/tasks/{id}", get(api::get_task))
        .route("/v1/tasks/{id}/cancel", post(api::cancel))
        .route("/v1/tasks/{id}/retry", post(api::retry))
        .route("/v1/tasks/{id}/logs", get(api::logs))
        .route("/v1/tasks/{id}/trace", get(api::trace))
        .route("/v1/tasks/{id}/events", get(sse::task_events))
        .route("/v1/events", get(sse::all_events))
        .route("/v1/queue/pause", post(api::pause))
        .route("/v1/queue/resume", post(api::resume))
        .route("/v1/groups", get(api::groups).post(api::add_group))
        .route("/v1/groups/{name}", patch(api::update_group))
        .route("/v1/clean", post(api::clean))
        .route(
            "/v1/schedules",
            post(schedules_api::add).get(schedules_api::list),
        )
        .route(
            "/v1/schedules/{name}",
            get(schedules_api::show).delete(schedules_api::remove),
        )
        .route("/v1/schedules/{name}/pause", post(schedules_api::pause))
        .route("/v1/schedules/{name}/resume", post(schedules_api::resume))
        .route("/v1/stats", get(dashboard::figures::stats))
        .route("/metrics", get(metrics_http::metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .nest_service("/mcp", deputy_mcp::http_service(state.self_client.clone()))
        .merge(dashboard::routes(token.clone()))
        .fallback(|| async {
            ApiError::not_found("no such endpoint; see the README's HTTP section")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            metrics_http::track,
        ))
        .layer(middleware::from_fn_with_state(token, auth::require_token))
        .with_state(state)
}
