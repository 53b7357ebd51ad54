//! The WebSocket opening handshake (RFC 6455 §4.2) as an axum extractor. After the
//! 101 response the connection is taken back from hyper as the plain `TcpStream` and
//! handed to the WebSocket edge (`ws`).

use std::future::Future;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use super::ApiError;
use crate::protocol::ErrorCode;
use crate::ws::UpgradedSocket;

/// Appended to the client's key before hashing, by RFC 6455.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request, not yet answered.
pub struct WebSocketUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Response> {
        let bad = |message: &str| {
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message).into_response()
        };
        if parts.method != Method::GET {
            return Err(bad("a WebSocket upgrade must be a GET"));
        }
        // RFC 6455 §4.2.1: the request MUST carry a Host header.
        if !parts.headers.contains_key(header::HOST) {
            return Err(bad("a WebSocket upgrade must carry a Host header"));
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade")
            || !has_token(&parts.headers, header::UPGRADE, "websocket")
        {
            return Err(bad(
                "expected a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
            ));
        }
        if !has_token(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            let mut refused = ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                ErrorCode::BadRequest,
                "only WebSocket version 13 is supported",
            )
            .into_response();
            refused.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return Err(refused);
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|key| is_valid_key(key.as_bytes()))
            .ok_or_else(|| bad("Sec-WebSocket-Key must be 16 bytes in base64"))?;
        let accept = accept_key(key.as_bytes());
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or_else(|| bad("this connection cannot be upgraded"))?;
        Ok(WebSocketUpgrade { accept, on_upgrade })
    }
}

impl WebSocketUpgrade {
    /// Answers 101 and runs `connection` on the socket once hyper hands it over.
    pub fn on_upgrade<F, C>(self, connection: C) -> Response
    where
        C: FnOnce(UpgradedSocket) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(%error, "WebSocket upgrade failed"),
            };
            // The accept loop serves plain TCP with hyper's HTTP/1 connection, so this
            // is the type it upgraded.
            match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let socket = UpgradedSocket {
                        tcp: parts.io.into_inner(),
                        received: parts.read_buf,
                    };
                    connection(socket).await;
                }
                Err(_) => tracing::error!("upgraded connection is not a TcpStream"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// Whether a comma-separated header holds `token`, ignoring case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn is_valid_key(key: &[u8]) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    engine.decode(key).is_ok_and(|nonce| nonce.len() == 16)
}

fn accept_key(key: &[u8]) -> HeaderValue {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(ACCEPT_GUID)
        .finalize();
    let accept = base64::engine::general_purpose::STANDARD.encode(digest);
    HeaderValue::from_str(&accept).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        let key = b"dGhlIHNhbXBsZSBub25jZQ==";
        assert!(is_valid_key(key));
        assert_eq!(accept_key(key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!is_valid_key(b"c2hvcnQ="), "a key must be 16 bytes");
    }

    #[test]
    fn header_tokens_are_matched_in_lists_ignoring_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(has_token(&headers, header::CONNECTION, "upgrade"));
        assert!(!has_token(&headers, header::UPGRADE, "websocket"));
    }
}
