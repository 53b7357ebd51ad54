//! Payment systems' notifications and the coin packs on sale. A notification's
//! signature is verified over the raw body before the body is parsed; nothing a
//! request says chooses the secret.

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{json_body, not_found, ApiError, AppState, Bearer};
use crate::gift::{RefundRefused, SettleRefused};
use crate::ledger::LedgerError;
use crate::payments::apple::{self, AppleError, Meaning as AppleMeaning};
use crate::payments::notification::{Notification, PurchaseCompleted};
use crate::payments::standard::{self, SignatureError, Signed};
use crate::payments::stripe::{self, Meaning};
use crate::payments::RefundShare;
use crate::payments::Unprocessable;
use crate::protocol::{ErrorCode, Rejection};

pub fn routes(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/api/coin-packs", get(coin_packs))
        .route(
            "/api/payments/standard",
            post(standard_webhook).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route(
            "/api/payments/stripe",
            post(stripe_webhook).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route(
            "/api/payments/apple",
            post(apple_notification).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route("/api/me/app-account-token", get(app_account_token))
        .route("/api/dev/store", post(dev_store))
}

async fn coin_packs(State(state): State<AppState>) -> Json<Value> {
    let packs: Vec<Value> = (state.payments.packs().iter())
        .map(|pack| {
            json!({
                "id": pack.id, "coins": pack.coins,
                "price": {"amount": pack.amount, "currency": pack.currency},
            })
        })
        .collect();
    // How the watch page has a viewer pay: the dev server's simulated store, or the
    // platform's checkout.
    let checkout = match (&state.payments.checkout_url, state.dev) {
        (_, true) => json!({"simulated": true}),
        (Some(url), false) => json!({"url": url}),
        (None, false) => Value::Null,
    };
    Json(json!({ "packs": packs, "checkout": checkout }))
}

#[derive(Deserialize)]
struct StoreRequest {
    pack: String,
}

/// `POST /api/dev/store {"pack"}` (dev mode): the simulated store. It pays for the
/// pack as a payment backend would, by sending a signed `purchase.completed`
/// notification through `POST /api/payments/standard`, so that what a developer
/// clicks through is the production path, signature included.
async fn dev_store(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<StoreRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    if !state.dev {
        return Err(not_found());
    }
    let request = json_body(body)?;
    let Some(pack) = state.payments.pack(&request.pack) else {
        let message = format!("no coin pack {:?}", request.pack);
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            message,
        ));
    };
    let secret = (state.payments.standard.as_ref()).expect("a dev server has a store secret");
    let purchase_id = format!("dev-{}", crate::ids::event_id());
    let body = json!({"type": "purchase.completed", "data": {
        "purchase_id": purchase_id, "user": user.id, "pack": pack.id,
        "amount": pack.amount, "currency": pack.currency, "store": "simulated",
    }})
    .to_string();
    let (id, now) = (format!("msg_{purchase_id}"), now_s());
    let notification = Request::post("/api/payments/standard")
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign(&id, now, body.as_bytes()))
        .body(Body::from(body))
        .expect("a well-formed request");
    let routes = routes(state.payments.max_body_bytes).with_state(state.clone());
    let answer = routes
        .oneshot(notification)
        .await
        .expect("routes never fail");
    if !answer.status().is_success() {
        return Ok(answer);
    }
    let coins = state.gifts.committed_balance(&user.id).await;
    let debt = state.gifts.debt(&user.id);
    let body = json!({"purchase_id": purchase_id, "coins": coins, "debt": debt});
    Ok(Json(body).into_response())
}

/// `POST /api/payments/standard`: a Standard Webhooks notification from the
/// platform's payment backend.
async fn standard_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = &state.payments.standard else {
        return Err(not_found());
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let signed = Signed {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    standard::verify(secret, &signed, &body, now_s(), state.payments.tolerance_s)
        .map_err(unauthorized)?;
    let event_id = signed.id.expect("a verified notification has an id");
    let notification: Notification = serde_json::from_slice(&body).map_err(|error| {
        Rejection::bad_request(format!("not a notification this server takes: {error}"))
    })?;
    let (refunded, chargeback) = match notification {
        Notification::PurchaseCompleted(completed) => {
            return credit(&state, "standard", event_id, completed).await
        }
        Notification::PurchaseRefunded(refunded) => (refunded, false),
        Notification::PurchaseChargedBack(refunded) => (refunded, true),
        Notification::PayoutPaid(payout) => {
            return settle(&state, event_id, &payout.payout_id, true).await
        }
        Notification::PayoutFailed(payout) => {
            return settle(&state, event_id, &payout.payout_id, false).await
        }
    };
    let share = refunded.coins.map_or(RefundShare::All, RefundShare::Coins);
    let purchase_id = &refunded.purchase_id;
    take_back(&state, "standard", event_id, purchase_id, share, chargeback).await
}

/// `POST /api/payments/stripe`: a Stripe webhook event.
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = &state.payments.stripe else {
        return Err(not_found());
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok());
    stripe::verify(secret, header, &body, now_s(), state.payments.tolerance_s)
        .map_err(unauthorized)?;
    let event: stripe::Event = serde_json::from_slice(&body)
        .map_err(|error| Rejection::bad_request(format!("not a Stripe event: {error}")))?;
    match event.meaning().map_err(Rejection::bad_request)? {
        Meaning::Purchase(completed) => credit(&state, "stripe", &event.id, completed).await,
        Meaning::Refund {
            payment_intent,
            share,
            chargeback,
        } => {
            take_back(
                &state,
                "stripe",
                &event.id,
                &payment_intent,
                share,
                chargeback,
            )
            .await
        }
        Meaning::Ignored => Ok(Json(json!({"status": "ignored"}))),
    }
}

/// `POST /api/payments/apple`: an App Store Server Notification V2. A purchase's buyer
/// is the user whose app account token the app gave StoreKit
/// (`GET /api/me/app-account-token`).
async fn apple_notification(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(store) = &state.payments.apple else {
        return Err(not_found());
    };
    let meaning = apple::verify(&store.root, &store.bundle_id, &body, now_s()).map_err(
        |error| match error {
            AppleError::Signature(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                error.to_string(),
            ),
            AppleError::Shape(_) => Rejection::bad_request(error.to_string()).into(),
        },
    )?;
    let ignored = Json(json!({"status": "ignored"}));
    let (AppleMeaning::Purchase(transaction) | AppleMeaning::Refund(transaction)) = &meaning else {
        return Ok(ignored);
    };
    if transaction.environment != "Production" && !store.sandbox {
        return Ok(ignored);
    }
    let event_id = transaction.notification_uuid.clone();
    match meaning {
        AppleMeaning::Purchase(transaction) => {
            let user = apple_buyer(&state, transaction.account_token.as_deref()).await?;
            let completed = (state.payments)
                .apple_purchase(transaction, user)
                .map_err(unprocessable)?;
            credit(&state, "apple", &event_id, completed).await
        }
        AppleMeaning::Refund(transaction) => {
            let purchase_id = &transaction.transaction_id;
            take_back(
                &state,
                "apple",
                &event_id,
                purchase_id,
                RefundShare::All,
                false,
            )
            .await
        }
        AppleMeaning::Ignored { .. } => Ok(ignored),
    }
}

/// The user whose app account token a purchase carries (422 without one).
async fn apple_buyer(state: &AppState, token: Option<&str>) -> Result<String, ApiError> {
    let token = token.ok_or_else(|| unknown_name("the purchase carries no appAccountToken"))?;
    let user = (state.gifts.ledger().user_of_app_account_token(token).await)
        .map_err(crate::gift::ledger_rejection)?;
    user.ok_or_else(|| unknown_name(format!("no user has the app account token {token}")))
}

/// `GET /api/me/app-account-token`: the UUID an app passes to StoreKit as
/// `appAccountToken`, so that the App Store's notifications name this user.
async fn app_account_token(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<Value>, ApiError> {
    let token = (state.gifts.ledger().app_account_token(&user.id).await)
        .map_err(crate::gift::ledger_rejection)?;
    Ok(Json(json!({ "app_account_token": token })))
}

fn now_s() -> i64 {
    crate::ids::unix_ms() as i64 / 1000
}

fn unauthorized(error: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        error.to_string(),
    )
}

/// Credits a completed purchase once, tells the buyer's pages, and answers the
/// payment system.
async fn credit(
    state: &AppState,
    provider: &str,
    event_id: &str,
    completed: PurchaseCompleted,
) -> Result<Json<Value>, ApiError> {
    let purchase = (state.payments)
        .purchase(provider, event_id, completed)
        .map_err(unprocessable)?;
    if state.gifts.profile(&purchase.user).await?.minor {
        let message = format!(
            "{:?} is a minor: no purchase is credited to them",
            purchase.user
        );
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Forbidden,
            message,
        ));
    }
    let credited = state
        .gifts
        .credit_purchase(purchase)
        .await
        .map_err(|error| match error {
            LedgerError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "this purchase id was notified before with different content",
            ),
            other => crate::gift::ledger_rejection(other).into(),
        })?;
    Ok(answer(state, credited))
}

/// Takes back a refunded or charged-back purchase's coins.
async fn take_back(
    state: &AppState,
    provider: &str,
    event_id: &str,
    purchase_id: &str,
    share: RefundShare,
    chargeback: bool,
) -> Result<Json<Value>, ApiError> {
    let refund = state
        .gifts
        .refund_purchase(provider, event_id, purchase_id, share, chargeback)
        .await;
    let credited = refund.map_err(|refused| match refused {
        RefundRefused::UnknownPurchase => {
            unknown_name(format!("no purchase {purchase_id:?} was credited"))
        }
        RefundRefused::Coins(message) => Rejection::bad_request(message).into(),
        RefundRefused::Ledger(LedgerError::Conflict) => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "this purchase was refunded or charged back before, differently",
        ),
        RefundRefused::Ledger(other) => crate::gift::ledger_rejection(other).into(),
    })?;
    Ok(answer(state, credited))
}

/// Books the payment system's word on a payout.
async fn settle(
    state: &AppState,
    event_id: &str,
    payout_id: &str,
    paid: bool,
) -> Result<Json<Value>, ApiError> {
    let settled = state.gifts.settle_payout(payout_id, paid, event_id).await;
    let settled = settled.map_err(|refused| match refused {
        SettleRefused::UnknownPayout => {
            unknown_name(format!("no payout {payout_id:?} was asked for"))
        }
        SettleRefused::SettledOtherwise => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "this payout was settled before, the other way",
        ),
        SettleRefused::Ledger(other) => crate::gift::ledger_rejection(other).into(),
    })?;
    let status = if settled.duplicate {
        "duplicate"
    } else {
        "applied"
    };
    Ok(Json(json!({"status": status})))
}

/// Tells the user's pages their new balance (when something changed) and answers the
/// payment system.
fn answer(state: &AppState, credited: crate::gift::Credited) -> Json<Value> {
    let user = &credited.user;
    if credited.duplicate {
        return Json(json!({"status": "duplicate"}));
    }
    let balance = crate::protocol::EphemeralEvent::Balance {
        coins: credited.balance,
        debt: state.gifts.debt(user),
    };
    state
        .hub
        .send_to_user(user, crate::protocol::to_json(&balance).into());
    Json(json!({"status": "applied"}))
}

fn unprocessable(error: Unprocessable) -> ApiError {
    match error {
        Unprocessable::Shape(message) => Rejection::bad_request(message).into(),
        unknown => unknown_name(unknown.to_string()),
    }
}

/// A well-signed notification naming a user, pack or purchase this server does not
/// know (422).
fn unknown_name(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::NotFound,
        message.into(),
    )
}
