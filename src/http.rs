//! The HTTP surface: one axum router for the WebSocket, the JSON API, metrics and the
//! static pages. Handlers stay thin: they check input and call into the hub.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Query, State, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use crate::auth::{check_identity, Role, Tokens, User};
use crate::hub::Hub;

/// Largest JSON body any API route accepts.
const MAX_JSON_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub tokens: Arc<Tokens>,
    pub dev: bool,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    /// Every WebSocket connection, so shutdown can wait for them.
    pub connections: TaskTracker,
}

pub fn router(state: AppState, static_dir: PathBuf) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/ws", get(websocket))
        .route("/api/dev/token", post(dev_token))
        .route("/api/rooms", get(rooms))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .fallback_service(ServeDir::new(static_dir))
        .with_state(state)
}

/// An HTTP error with the protocol's code, as `{"code","message"}`.
pub struct ApiError {
    status: StatusCode,
    code: crate::protocol::ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: crate::protocol::ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::error_sent(self.code);
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&state.metrics),
    )
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A missing or bad token makes a read-only guest, as the protocol says.
    let user = query
        .token
        .as_deref()
        .and_then(|token| state.tokens.verify(token).ok());
    let limits = &state.hub.limits;
    let upgrade = upgrade
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes);
    let AppState {
        hub,
        shutdown,
        connections,
        ..
    } = state;
    upgrade.on_upgrade(move |socket| {
        connections.track_future(crate::ws::run(socket, hub, user, shutdown))
    })
}

#[derive(Deserialize)]
struct DevTokenRequest {
    user: String,
    name: Option<String>,
    role: Option<Role>,
}

async fn dev_token(
    State(state): State<AppState>,
    body: Result<Json<DevTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::protocol::ErrorCode;
    if !state.dev {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "not found",
        ));
    }
    let Json(request) = body.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            e.body_text(),
        )
    })?;
    let name = request.name.unwrap_or_else(|| request.user.clone());
    check_identity(&request.user, &name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, e))?;
    let user = User {
        id: request.user,
        name,
        role: request.role.unwrap_or(Role::Viewer),
    };
    let token = state.tokens.mint(&user, state.hub.limits.dev_token_ttl_s);
    Ok(Json(json!({ "token": token })))
}

async fn rooms(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "rooms": state.hub.rooms() }))
}
