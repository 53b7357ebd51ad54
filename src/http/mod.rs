//! The HTTP surface: one axum router for the WebSocket, the JSON API, metrics and the
//! static pages. Handlers stay thin: they check input and call into the hub, the
//! gift engine or the relay (`media.rs`: WHIP and WHEP).

mod media;
mod moderation;
mod overlay;
mod payments;
mod payouts;
mod pk;
mod upgrade;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
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
use crate::gift::GiftEngine;
use crate::hub::{Hub, Refusal};
use crate::protocol::{ErrorCode, Rejection};
use crate::relay::Relay;
use upgrade::WebSocketUpgrade;

/// Largest JSON body any API route accepts.
const MAX_JSON_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    pub gifts: Arc<GiftEngine>,
    pub relay: Arc<Relay>,
    pub tokens: Arc<Tokens>,
    pub dev: bool,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    /// Every WebSocket connection, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Where connections' writer tasks run (`ws::WriterPool`).
    pub writers: tokio::runtime::Handle,
    /// Set when the ledger met a storage fault and the server is stopping.
    pub fault: crate::ledger::StorageFault,
    /// Payment systems' secrets and the coin packs.
    pub payments: Arc<crate::payments::Payments>,
    /// Outgoing webhooks' endpoints.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

pub fn router(state: AppState, static_dir: PathBuf, cors_origins: &[String]) -> Router {
    let router = Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/ws", get(websocket))
        .route("/api/dev/token", post(dev_token))
        .route("/api/rooms", get(rooms))
        .route("/api/rooms/{room}/leaderboard", get(leaderboard))
        .route("/api/catalog", get(catalog))
        .route("/api/me/wallet", get(wallet))
        .route("/api/me/limits", axum::routing::put(set_limits))
        .route("/api/me/topup", post(top_up))
        .route("/api/admin/ledger/check", get(ledger_check))
        .route("/api/admin/debts", get(debts))
        .merge(media::routes(state.relay.settings().max_sdp_bytes))
        .merge(payments::routes(state.payments.max_body_bytes))
        .merge(payouts::routes())
        .merge(moderation::routes())
        .merge(pk::routes())
        .merge(overlay::routes())
        .merge(webhooks::routes())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .fallback_service(ServeDir::new(static_dir))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            crate::config::Limits::ms(state.hub.limits.http_request_timeout_ms),
        ))
        .layer(axum::middleware::map_response_with_state(
            state.relay.clone(),
            security_headers,
        ))
        .with_state(state.clone());
    if cors_origins.is_empty() && !state.relay.in_cluster() {
        return router;
    }
    router.layer(cors(cors_origins, state.relay.clone()))
}

/// `200 ok`; `503` with the reason once the ledger has met a storage fault.
async fn health(State(state): State<AppState>) -> Response {
    match state.fault.reason() {
        None => "ok".into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ledger storage fault: {reason}"),
        )
            .into_response(),
    }
}

/// Lets the configured origins' pages call the API and WHIP/WHEP with a token.
/// Cross-origin access for the configured origins and, in a cluster, for the pages
/// of the other nodes (whose viewers a full node redirects here).
fn cors(origins: &[String], relay: Arc<Relay>) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    let allowed = move |origin: &HeaderValue, _: &axum::http::request::Parts| {
        origins.contains(origin)
            || origin
                .to_str()
                .is_ok_and(|origin| relay.node_origins().iter().any(|node| node == origin))
    };
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::AllowOrigin::predicate(allowed))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::LOCATION, header::LINK])
}

/// Pages load only our own scripts and styles, connect only to this node (and in a
/// cluster to the other nodes, where WHEP may redirect them), and cannot be framed.
async fn security_headers(State(relay): State<Arc<Relay>>, mut response: Response) -> Response {
    let connect = std::iter::once("'self'".to_owned())
        .chain(relay.node_origins())
        .collect::<Vec<_>>()
        .join(" ");
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; \
         img-src 'self' data: blob:; media-src 'self' blob:; connect-src {connect}; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(csp);
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

/// An HTTP error with the protocol's code, as `{"code","message"}`; with a retry hint,
/// also `"retry_after_ms"` and a `Retry-After` header (whole seconds, rounded up).
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::error_sent(self.code);
        let mut body = json!({"code": self.code, "message": self.message});
        let Some(ms) = self.retry_after_ms else {
            return (self.status, Json(body)).into_response();
        };
        body["retry_after_ms"] = ms.into();
        let seconds = ms.div_ceil(1000).to_string();
        (self.status, [(header::RETRY_AFTER, seconds)], Json(body)).into_response()
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
    if let Some(user) = &user {
        note_minor(&state, user).await;
    }
    let limits = &state.hub.limits;
    let user_id = user.as_ref().map(|u| u.id.as_str());
    let ticket = match state.hub.admission.admit(limits, peer.ip(), user_id) {
        Ok(ticket) => ticket,
        Err(refusal) => return refused(refusal),
    };
    let AppState {
        hub,
        gifts,
        shutdown,
        connections,
        writers,
        ..
    } = state;
    upgrade.on_upgrade(move |socket| {
        connections.track_future(async move {
            crate::ws::run(socket, hub, gifts, user, shutdown, writers).await;
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
pub struct DevTokenRequest {
    user: String,
    name: Option<String>,
    role: Option<Role>,
    /// A minor's token (may watch and chat, never pay).
    #[serde(default)]
    minor: bool,
}

async fn dev_token(
    State(state): State<AppState>,
    body: Result<Json<DevTokenRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.dev {
        return Err(not_found());
    }
    let request = json_body(body)?;
    let name = request.name.unwrap_or_else(|| request.user.clone());
    check_identity(&request.user, &name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, e))?;
    let user = User {
        id: request.user,
        name,
        role: request.role.unwrap_or(Role::Viewer),
        minor: request.minor,
    };
    let token = state.tokens.mint(&user, state.hub.limits.dev_token_ttl_s);
    Ok(Json(json!({ "token": token })))
}

async fn rooms(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "rooms": state.hub.rooms() }))
}

/// Dev-only routes outside dev mode look like they do not exist.
fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "not found")
}

/// `forbidden` (with `why`) unless `user` has `role`.
fn only(user: &User, role: Role, why: &str) -> Result<(), ApiError> {
    if user.role == role {
        Ok(())
    } else {
        Err(Rejection::new(ErrorCode::Forbidden, why).into())
    }
}

/// The user proven by an `Authorization: Bearer` token; 401 without one.
pub struct Bearer(pub User);

impl axum::extract::FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = MaybeBearer::from_request_parts(parts, state).await?.0;
        user.map(Bearer).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "send Authorization: Bearer <token>",
            )
        })
    }
}

/// The user of an `Authorization: Bearer` token if one is sent (a bad one is 401),
/// `None` for a guest.
pub struct MaybeBearer(pub Option<User>);

impl axum::extract::FromRequestParts<AppState> for MaybeBearer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, why);
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(MaybeBearer(None));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
        let user = state
            .tokens
            .verify(token.trim())
            .map_err(|e| unauthorized(&e.to_string()))?;
        note_minor(state, &user).await;
        Ok(MaybeBearer(Some(user)))
    }
}

/// A minor's token seen: the books remember, so that no purchase is credited to them.
async fn note_minor(state: &AppState, user: &User) {
    if user.minor {
        if let Err(refusal) = state.gifts.note_minor(&user.id).await {
            tracing::warn!(user = %user.id, message = %refusal.message, "recording a minor failed");
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value)
        .map_err(|rejection| unreadable_body(rejection.status(), rejection.body_text()))
}

/// A body axum could not take: too large (413) or malformed (400).
fn unreadable_body(status: StatusCode, why: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, why)
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, why)
    }
}

/// The one place protocol rejections become HTTP statuses.
impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        let status = match rejection.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::LimitReached | ErrorCode::Banned => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::NotFound | ErrorCode::NotJoined => StatusCode::NOT_FOUND,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::InsufficientFunds | ErrorCode::InDebt => StatusCode::PAYMENT_REQUIRED,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Conflict | ErrorCode::Exhausted => StatusCode::CONFLICT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            retry_after_ms: rejection.retry_after_ms,
            ..ApiError::new(status, rejection.code, rejection.message)
        }
    }
}

async fn catalog(State(state): State<AppState>) -> Json<serde_json::Value> {
    let catalog = &state.gifts.catalog;
    Json(json!({
        "stickers": catalog.stickers,
        "question_min_coins": catalog.question_min_coins,
    }))
}

async fn leaderboard(
    State(state): State<AppState>,
    axum::extract::Path(room): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let top = state.hub.leaderboard(&room).await?;
    Ok(Json(json!({ "top": top })))
}

async fn wallet(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<crate::gift::WalletView>, ApiError> {
    Ok(Json(state.gifts.wallet(&user.id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// The user's own daily cap in coins; `null` clears it.
    daily_coins: Option<u64>,
}

/// `PUT /api/me/limits {"daily_coins": N}`: a user lowers their own daily cap.
async fn set_limits(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<LimitsRequest>, JsonRejection>,
) -> Result<Json<crate::gift::WalletView>, ApiError> {
    let request = json_body(body)?;
    state
        .gifts
        .set_daily_cap(&user.id, request.daily_coins)
        .await?;
    Ok(Json(state.gifts.wallet(&user.id).await?))
}

#[derive(Deserialize)]
pub struct TopUpRequest {
    coins: u64,
    key: String,
}

/// Largest simulated purchase, so a dev client cannot overflow anything.
const MAX_TOP_UP_COINS: u64 = 1_000_000_000;

async fn top_up(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<TopUpRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.dev {
        return Err(not_found());
    }
    let request = json_body(body)?;
    if !(1..=MAX_TOP_UP_COINS).contains(&request.coins) {
        return Err(
            Rejection::bad_request(format!("coins must be 1 to {MAX_TOP_UP_COINS}")).into(),
        );
    }
    let coins = state
        .gifts
        .top_up(&user, request.coins, &request.key)
        .await?;
    let balance = crate::protocol::to_json(&crate::protocol::EphemeralEvent::Balance {
        coins,
        debt: state.gifts.debt(&user.id),
    });
    state.hub.send_to_user(&user.id, balance.into());
    Ok(Json(json!({ "coins": coins })))
}

/// Who owes what after refunds, from the books: `{"debts":[{"user","coins"}]}`.
async fn debts(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<serde_json::Value>, ApiError> {
    only(&user, Role::Admin, "debts are for admins")?;
    let mut debts = (state.gifts.ledger().debts().await).map_err(crate::gift::ledger_rejection)?;
    debts.sort();
    let debts: Vec<serde_json::Value> = (debts.into_iter())
        .map(|(user, owed)| json!({"user": user, "coins": owed.owed_coins()}))
        .collect();
    Ok(Json(json!({ "debts": debts })))
}

async fn ledger_check(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Response, ApiError> {
    only(&user, Role::Admin, "the books are for admins")?;
    let report = state
        .gifts
        .ledger()
        .check()
        .await
        .map_err(crate::gift::ledger_rejection)?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Ok((status, Json(report)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), MAX_JSON_BODY)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_retry_hint_becomes_503_with_retry_after_in_whole_seconds() {
        let (status, retry_after, body) =
            parts(Rejection::unavailable("the ledger is down").into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["code"], "unavailable");
        assert_eq!(body["retry_after_ms"], 1000);
        // Rounded up: never earlier than the hint.
        let hinted = Rejection::new(ErrorCode::Unavailable, "busy").retry_after(1500);
        assert_eq!(parts(hinted.into()).await.1.as_deref(), Some("2"));
        // No hint, no header.
        let (status, retry_after, body) =
            parts(Rejection::bad_request("coins must be 1 to 10").into()).await;
        assert_eq!((status, retry_after), (StatusCode::BAD_REQUEST, None));
        assert!(body.get("retry_after_ms").is_none());
    }
}
