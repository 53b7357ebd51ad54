//! The HTTP surface: one axum router for the WebSocket, the JSON API, metrics and the
//! static pages. Handlers stay thin: they check input and call into the hub.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
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
use crate::hub::{Hub, Refusal};
use crate::protocol::ErrorCode;

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
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Pages load only our own scripts, styles and connections, and cannot be framed.
async fn security_headers(mut response: Response) -> Response {
    const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
        img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
        object-src 'none'; base-uri 'none'; frame-ancestors 'none'";
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// An HTTP error with the protocol's code, as `{"code","message"}`.
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // A missing or bad token makes a read-only guest, as the protocol says.
    let user = query
        .token
        .as_deref()
        .and_then(|token| state.tokens.verify(token).ok());
    let limits = &state.hub.limits;
    let user_id = user.as_ref().map(|u| u.id.as_str());
    let ticket = match state.hub.admission.admit(limits, peer.ip(), user_id) {
        Ok(ticket) => ticket,
        Err(refusal) => return refused(refusal),
    };
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
        connections.track_future(async move {
            crate::ws::run(socket, hub, user, shutdown).await;
            drop(ticket);
        })
    })
}

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::ServerFull => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::TooManyFromAddress | Refusal::TooManyForUser => StatusCode::TOO_MANY_REQUESTS,
    };
    ApiError::new(status, ErrorCode::RateLimited, refusal.message()).into_response()
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
