//! A room's moderation over HTTP: its rules and audit log for its broadcaster,
//! moderators and admins, and actions for back offices (an admin suspending a
//! broadcaster's gifting, a moderation tool), taken exactly as the `mod` message takes
//! them.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{json_body, ApiError, AppState, Bearer};
use crate::moderation::Action;
use crate::protocol::{is_valid_id, ModRequest, Rejection};

/// The most log records one request returns.
const MAX_LOG_PAGE: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/rooms/{room}/moderation",
        get(moderation_log).post(moderate),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    /// Records before this `rev` (the next page of a log read newest first).
    before: Option<u64>,
    limit: Option<usize>,
}

fn checked_room(room: &str) -> Result<(), ApiError> {
    if is_valid_id(room) {
        Ok(())
    } else {
        Err(Rejection::bad_request("room must match [a-z0-9_-]{1,64}").into())
    }
}

/// `GET /api/rooms/{room}/moderation?before&limit` → `{"room","rules","log"}`, the
/// log newest first.
async fn moderation_log(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(room): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    checked_room(&room)?;
    let Query(page) = page.map_err(|e| ApiError::from(Rejection::bad_request(e.body_text())))?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(Rejection::bad_request(format!("limit must be 1 to {MAX_LOG_PAGE}")).into());
    }
    let before = page.before.unwrap_or(u64::MAX);
    let (rules, log) = (state.hub)
        .moderation_log(&user, &room, before, limit)
        .await?;
    Ok(Json(json!({ "room": room, "rules": rules, "log": log })))
}

/// `POST /api/rooms/{room}/moderation` with a `mod` message's fields (without `type`
/// and `room`) → `201` and the action's record.
async fn moderate(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(room): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> Result<Response, ApiError> {
    checked_room(&room)?;
    let mut fields = json_body(body)?;
    fields.insert("room".into(), Value::String(room.clone()));
    let request: ModRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::from(Rejection::bad_request(e.to_string())))?;
    let action = Action::parse(request)?;
    let room = state.hub.ready_room(&room).await?;
    let record = state.hub.moderate(&user, &room, action).await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}
