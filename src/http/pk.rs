//! `GET /api/pk/{pk}`: a battle's state, its scores counted from the ledger now.
//! Public, like the rooms' events that carry the same.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::{ApiError, AppState};
use crate::protocol::{ErrorCode, PkView, Rejection};

/// Battle ids are `pk_` and an event id.
const MAX_ID_CHARS: usize = 64;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/pk/{pk}", get(battle))
}

async fn battle(
    State(state): State<AppState>,
    Path(pk): Path<String>,
) -> Result<Json<PkView>, ApiError> {
    if pk.len() > MAX_ID_CHARS {
        return Err(Rejection::bad_request("no battle has so long an id").into());
    }
    match state.hub.battle_view(&pk).await? {
        Some(view) => Ok(Json(view)),
        None => Err(Rejection::new(ErrorCode::NotFound, "no such battle").into()),
    }
}
