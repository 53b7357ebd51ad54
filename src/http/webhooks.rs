//! Outgoing webhook endpoints over HTTP: an admin's for the whole platform under
//! `/api/admin/webhooks`, a broadcaster's for their room under `/api/me/webhooks`;
//! each lists, removes, shows its delivery log and replays.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_body, only, ApiError, AppState, Bearer};
use crate::auth::{Role, User};
use crate::ledger::webhooks::Owner;
use crate::protocol::Rejection;
use crate::webhooks::Registration;

const MAX_LOG_PAGE: usize = 500;

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for base in ["/api/admin/webhooks", "/api/me/webhooks"] {
        router = router
            .route(base, get(list).post(register))
            .route(&format!("{base}/{{id}}"), delete(remove))
            .route(&format!("{base}/{{id}}/deliveries"), get(deliveries))
            .route(&format!("{base}/{{id}}/replay"), post(replay));
    }
    router
}

/// Whose endpoints the caller manages on this route: the platform's (admins, on
/// `/api/admin/…`) or their own room's (broadcasters, on `/api/me/…`).
fn owner(user: &User, path: &str) -> Result<Owner, ApiError> {
    if path.starts_with("/api/admin/") {
        only(user, Role::Admin, "platform webhooks are for admins")?;
        Ok(Owner::Platform)
    } else {
        only(
            user,
            Role::Broadcaster,
            "a room's webhooks are for its broadcaster",
        )?;
        Ok(Owner::Room(user.id.clone()))
    }
}

/// An admin manages every endpoint; a broadcaster only their own.
fn scope(owner: &Owner) -> Option<&Owner> {
    match owner {
        Owner::Platform => None,
        Owner::Room(_) => Some(owner),
    }
}

async fn register(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    uri: axum::http::Uri,
    body: Result<Json<Registration>, JsonRejection>,
) -> Result<Response, ApiError> {
    let owner = owner(&user, uri.path())?;
    let (endpoint, secret) = state.webhooks.register(owner, json_body(body)?).await?;
    let answer = json!({"id": endpoint.id, "secret": secret, "url": endpoint.url, "events": endpoint.events});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn list(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    let owner = owner(&user, uri.path())?;
    let endpoints = state.webhooks.endpoints(Some(&owner)).await?;
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn remove(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    uri: axum::http::Uri,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = owner(&user, uri.path())?;
    state.webhooks.remove(scope(&owner), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
}

async fn deliveries(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let owner = owner(&user, uri.path())?;
    let Query(page) = page.map_err(|e| ApiError::from(Rejection::bad_request(e.body_text())))?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=MAX_LOG_PAGE).contains(&limit) {
        return Err(Rejection::bad_request(format!("limit must be 1 to {MAX_LOG_PAGE}")).into());
    }
    let attempts = state.webhooks.attempts(scope(&owner), &id, limit).await?;
    Ok(Json(json!({ "deliveries": attempts })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// Milliseconds since the Unix epoch: events from then on are sent again.
    since: u64,
}

async fn replay(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    uri: axum::http::Uri,
    Path(id): Path<String>,
    body: Result<Json<Replay>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let owner = owner(&user, uri.path())?;
    let since = json_body(body)?.since;
    let queued = state.webhooks.replay(scope(&owner), &id, since).await?;
    Ok(Json(json!({ "queued": queued })))
}
