//! A broadcaster's stream overlay (an OBS browser source, `static/overlay.html`): the
//! room's read-only overlay key, made on first request and rotatable, the check the
//! page asks before it connects, and the test and replay alerts ([overlay.md]).
//!
//! [overlay.md]: ../../docs/overlay.md

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{only, ApiError, AppState, Bearer};
use crate::auth::{Role, User};
use crate::gift::ledger_rejection;
use crate::protocol::{is_valid_id, to_json, EphemeralEvent, ErrorCode, Rejection, TextFrame};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/me/overlay", get(overlay))
        .route("/api/me/overlay/rotate", post(rotate))
        .route("/api/me/overlay/test", post(test_alert))
        .route("/api/me/overlay/replay", post(replay_alert))
        .route("/api/overlay/{room}", get(check))
}

/// What the broadcaster pastes into OBS: `{"room","key","url"}` (`url` without the
/// origin, which only the browser knows behind a proxy).
fn described(room: &str, key: &str) -> Json<serde_json::Value> {
    // Room ids are `[a-z0-9_-]` and keys hex digits: nothing to escape.
    let url = format!("/overlay.html?room={room}&key={key}");
    Json(json!({ "room": room, "key": key, "url": url }))
}

fn broadcaster(user: &User) -> Result<(), ApiError> {
    only(
        user,
        Role::Broadcaster,
        "stream overlays are for broadcasters",
    )
}

/// `GET /api/me/overlay`: the caller's overlay key and URL, made on first request.
async fn overlay(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<serde_json::Value>, ApiError> {
    broadcaster(&user)?;
    let key = (state.gifts.ledger().overlay_key(&user.id).await).map_err(ledger_rejection)?;
    Ok(described(&user.id, &key))
}

/// `POST /api/me/overlay/rotate`: a new key; the old URL stops working.
async fn rotate(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<serde_json::Value>, ApiError> {
    broadcaster(&user)?;
    let ledger = state.gifts.ledger();
    let key = (ledger.rotate_overlay_key(&user.id).await).map_err(ledger_rejection)?;
    tracing::info!(room = %user.id, "overlay key rotated");
    Ok(described(&user.id, &key))
}

/// `POST /api/me/overlay/test`: the room's overlays (on this node) show a sample alert.
async fn test_alert(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<StatusCode, ApiError> {
    broadcaster(&user)?;
    let event = EphemeralEvent::OverlayTest { room: &user.id };
    send(&state, &user.id, "overlay_test", to_json(&event));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/me/overlay/replay`: the room's overlays (on this node) show their last
/// alert again.
async fn replay_alert(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<StatusCode, ApiError> {
    broadcaster(&user)?;
    let event = EphemeralEvent::OverlayReplay { room: &user.id };
    send(&state, &user.id, "overlay_replay", to_json(&event));
    Ok(StatusCode::NO_CONTENT)
}

/// To the room's members on this node; a room nobody is in has no overlay to tell.
fn send(state: &AppState, room: &str, kind: &'static str, frame: String) {
    if let Some(room) = state.hub.room(room) {
        room.broadcast_ephemeral(kind, TextFrame::from(frame));
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

/// The longest key looked up (ours are 32 hex digits).
const MAX_KEY_LEN: usize = 64;

/// `GET /api/overlay/{room}?key=KEY` (no token): `200 {"room"}` when `KEY` is the
/// room's current overlay key, else `403`. A query axum cannot read is a missing key.
async fn check(
    State(state): State<AppState>,
    Path(room): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refused = || Rejection::new(ErrorCode::Forbidden, "not this room's overlay key");
    let key = query
        .ok()
        .and_then(|Query(query)| query.key)
        .unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !is_valid_id(&room) {
        return Err(refused().into());
    }
    let valid = state.gifts.ledger().is_overlay_key(&room, &key).await;
    if !valid.map_err(ledger_rejection)? {
        return Err(refused().into());
    }
    Ok(Json(json!({ "room": room })))
}
