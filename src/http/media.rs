//! WHIP (RFC 9725) and WHEP over the relay: an SDP offer in, `201 Created` with the
//! answer and the session's `Location` out; `DELETE` on the `Location` ends it.
//! Candidates are all in the answer (no trickle), so `PATCH` answers 405.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{unreadable_body, ApiError, AppState, Bearer, MaybeBearer};
use crate::auth::{Role, NODE_CREDENTIAL_HEADER};
use crate::config::IceServer;
use crate::protocol::{is_valid_id, ErrorCode, Rejection};
use crate::relay::placement::Placement;
use crate::relay::{Negotiated, RelayError, RelayReport, Side};

pub fn routes(max_sdp_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/whip/{room}", post(whip))
        .route("/whip/{room}/{session}", delete(end_whip))
        .route("/whep/{room}", post(whep))
        .route("/whep/{room}/{session}", delete(end_whep))
        .route("/api/rtc", get(rtc_config))
        .route("/api/admin/rtc", get(rtc_sessions))
        .layer(DefaultBodyLimit::max(max_sdp_bytes))
}

async fn whip(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Bearer(user): Bearer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let offer = sdp_offer(&room, &headers, body)?;
    if !user.owns_room(&room) {
        return Err(Rejection::new(
            ErrorCode::Forbidden,
            format!("only the broadcaster of room {room:?} can publish to it"),
        )
        .into());
    }
    let negotiated = state
        .relay
        .publish(&room, &user.id, offer)
        .await
        .map_err(Rejection::from)?;
    Ok(created(&state, "whip", &room, negotiated))
}

async fn whep(
    State(state): State<AppState>,
    Path(room): Path<String>,
    placed: Result<Query<Placed>, QueryRejection>,
    MaybeBearer(user): MaybeBearer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(placed) =
        placed.map_err(|_| Rejection::bad_request("redirects must be a small whole number"))?;
    let offer = sdp_offer(&room, &headers, body)?;
    if let Some(credential) = headers.get(NODE_CREDENTIAL_HEADER) {
        let credential = credential.to_str().unwrap_or_default();
        let negotiated = state
            .relay
            .serve_edge(&room, credential, offer)
            .await
            .map_err(Rejection::from)?;
        return Ok(created(&state, "whep", &room, negotiated));
    }
    match state.relay.place(&room, placed.redirects) {
        Placement::Here => {}
        Placement::Elsewhere(node) => return Ok(redirect_to(&node, &room, placed.redirects + 1)),
        Placement::Full => return Err(Rejection::from(RelayError::NodesFull).into()),
    }
    let user = user.map(|u| u.id);
    let negotiated = state
        .relay
        .play(&room, user.as_deref(), offer)
        .await
        .map_err(Rejection::from)?;
    Ok(created(&state, "whep", &room, negotiated))
}

/// How many times a WHEP request was redirected already (`?redirects=N`, set by the
/// nodes that redirect it).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Placed {
    redirects: u32,
}

/// `307 Temporary Redirect` to the same WHEP endpoint on a node with room: clients
/// repeat the POST with the same offer there (WHIP/WHEP allow redirects for load
/// balancing).
fn redirect_to(node: &str, room: &str, redirects: u32) -> Response {
    let location = format!(
        "{}/whep/{room}?redirects={redirects}",
        node.trim_end_matches('/')
    );
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn end_whip(
    State(state): State<AppState>,
    Path((room, session)): Path<(String, String)>,
    Bearer(user): Bearer,
) -> Result<StatusCode, ApiError> {
    state
        .relay
        .delete(Side::Whip, &room, &session, Some(&user.id))
        .map_err(Rejection::from)?;
    Ok(StatusCode::OK)
}

async fn end_whep(
    State(state): State<AppState>,
    Path((room, session)): Path<(String, String)>,
    MaybeBearer(user): MaybeBearer,
) -> Result<StatusCode, ApiError> {
    let user = user.map(|u| u.id);
    state
        .relay
        .delete(Side::Whep, &room, &session, user.as_deref())
        .map_err(Rejection::from)?;
    Ok(StatusCode::OK)
}

/// The STUN/TURN servers a client should use, for pages that build their own
/// `RTCPeerConnection` before they have a `Link` header to read.
async fn rtc_config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "ice_servers": state.relay.settings().ice_servers }))
}

/// Open relay sessions, pulls and traffic, for operators (and the tests that prove
/// nothing is left over).
async fn rtc_sessions(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<RelayReport>, ApiError> {
    super::only(&user, Role::Admin, "relay sessions are for admins")?;
    Ok(Json(state.relay.report()))
}

/// Checks the room id, the content type and the body of an offer.
fn sdp_offer(
    room: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<String, ApiError> {
    if !is_valid_id(room) {
        return Err(Rejection::bad_request("room must match [a-z0-9_-]{1,64}").into());
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "send the SDP offer with Content-Type: application/sdp",
        ));
    }
    let body =
        body.map_err(|rejection| unreadable_body(rejection.status(), rejection.body_text()))?;
    let offer = String::from_utf8(body.to_vec())
        .map_err(|_| Rejection::bad_request("the SDP offer is not UTF-8"))?;
    if !offer.starts_with("v=0") {
        return Err(Rejection::bad_request(
            "the body is not an SDP offer (it must start with v=0)",
        )
        .into());
    }
    Ok(offer)
}

/// `201 Created` with the answer, the session's `Location`, and the ICE servers as
/// `Link` headers (RFC 9725 section 4.6).
fn created(state: &AppState, side: &str, room: &str, negotiated: Negotiated) -> Response {
    let location = format!("/{side}/{room}/{}", negotiated.session);
    let mut response = (StatusCode::CREATED, negotiated.answer).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    for server in &state.relay.settings().ice_servers {
        for link in ice_server_links(server) {
            if let Ok(value) = HeaderValue::from_str(&link) {
                headers.append(header::LINK, value);
            }
        }
    }
    response
}

fn ice_server_links(server: &IceServer) -> Vec<String> {
    server
        .urls
        .iter()
        .map(|url| {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            link
        })
        .collect()
}
