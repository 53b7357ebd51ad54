//! Creators' money over HTTP: earnings by state, payouts asked for and listed, the
//! pending payouts for the back office, and statements as JSON or CSV.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{json_body, only, ApiError, AppState, Bearer};
use crate::auth::{Role, User};
use crate::gift::ledger_rejection;
use crate::ledger::{Account, Payee};
use crate::money::Day;
use crate::protocol::Rejection;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/me/earnings", get(earnings))
        .route("/api/me/payouts", get(payouts).post(request_payout))
        .route("/api/me/statement", get(statement))
        .route("/api/admin/payouts", get(pending_payouts))
}

/// `?as=agency`: the caller's agency's earnings rather than their own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Whose {
    #[serde(rename = "as")]
    acting_as: Option<String>,
}

/// The payee a broadcaster acts for.
fn payee(state: &AppState, user: &User, acting_as: Option<&str>) -> Result<Payee, ApiError> {
    only(user, Role::Broadcaster, "earnings are for broadcasters")?;
    let agency = match acting_as {
        None | Some("broadcaster") => false,
        Some("agency") => true,
        Some(_) => return Err(Rejection::bad_request("as must be broadcaster or agency").into()),
    };
    Ok(state.gifts.payee_for(&user.id, agency)?)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|error| Rejection::bad_request(error.body_text()).into())
}

/// `GET /api/me/earnings`: what the broadcaster's room was paid (split by account)
/// and their earnings by state: `held`, `available`, `pending`, `paid`.
async fn earnings(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    whose: Result<Query<Whose>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let payee = payee(&state, &user, query(whose)?.acting_as.as_deref())?;
    let by_state = state.gifts.earnings_by_state(&payee).await;
    let mut body =
        serde_json::to_value(by_state.map_err(ledger_rejection)?).expect("earnings serialize");
    if let Payee::Broadcaster(room) = &payee {
        let paid = state.gifts.ledger().earnings(room).await;
        let paid = serde_json::to_value(paid.map_err(ledger_rejection)?).expect("serialize");
        for (field, value) in paid.as_object().expect("an object") {
            body[field] = value.clone();
        }
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayoutRequest {
    /// Minor units (1/100 coin).
    amount: u64,
    key: String,
    #[serde(rename = "as")]
    acting_as: Option<String>,
}

/// `POST /api/me/payouts {"amount","key"}` → `201 {"payout_id","status",…}`.
async fn request_payout(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<PayoutRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(body)?;
    let payee = payee(&state, &user, request.acting_as.as_deref())?;
    let payout = (state.gifts)
        .request_payout(&payee, request.amount, &request.key)
        .await?;
    Ok((StatusCode::CREATED, Json(payout)).into_response())
}

/// `GET /api/me/payouts`: the caller's payouts, newest first.
async fn payouts(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    whose: Result<Query<Whose>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let payee = payee(&state, &user, query(whose)?.acting_as.as_deref())?;
    let payouts = state
        .gifts
        .payouts_of(&payee)
        .await
        .map_err(ledger_rejection)?;
    Ok(Json(json!({ "payouts": payouts })))
}

/// `GET /api/admin/payouts`: every payout the payment system has yet to settle, and
/// the refund losses the platform carries (creators' shares already available when
/// their coins were refunded).
async fn pending_payouts(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<serde_json::Value>, ApiError> {
    only(&user, Role::Admin, "pending payouts are for admins")?;
    let payouts = state
        .gifts
        .pending_payouts()
        .await
        .map_err(ledger_rejection)?;
    let losses = state
        .gifts
        .ledger()
        .balances_of(vec![Account::Losses])
        .await;
    let losses = losses.map_err(ledger_rejection)?[0];
    Ok(Json(json!({ "payouts": payouts, "losses": losses })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    from: String,
    to: String,
    #[serde(rename = "as")]
    acting_as: Option<String>,
}

/// The longest statement: a year and a day.
const MAX_STATEMENT_DAYS: u32 = 366;

/// `GET /api/me/statement?from=YYYY-MM-DD&to=YYYY-MM-DD`: JSON, or CSV when asked
/// with `Accept: text/csv`.
async fn statement(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    headers: HeaderMap,
    period: Result<Query<Period>, QueryRejection>,
) -> Result<Response, ApiError> {
    let period = query(period)?;
    let payee = payee(&state, &user, period.acting_as.as_deref())?;
    let day = |text: &str, name: &str| {
        Day::parse(text).ok_or_else(|| Rejection::bad_request(format!("{name} must be YYYY-MM-DD")))
    };
    let (from, to) = (day(&period.from, "from")?, day(&period.to, "to")?);
    if to < from || from.plus(MAX_STATEMENT_DAYS) <= to {
        let message =
            format!("from must not be after to, and at most {MAX_STATEMENT_DAYS} days before");
        return Err(Rejection::bad_request(message).into());
    }
    let statement = state.gifts.statement(&payee, from, to).await;
    let statement = statement.map_err(ledger_rejection)?;
    let wants_csv = (headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()))
        .is_some_and(|accept| accept.contains("text/csv"));
    if !wants_csv {
        return Ok(Json(statement).into_response());
    }
    let file = format!("attachment; filename=\"statement-{from}-{to}.csv\"");
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
        (header::CONTENT_DISPOSITION, file),
    ];
    Ok((headers, statement.to_csv()).into_response())
}
