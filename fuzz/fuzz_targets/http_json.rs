//! Any JSON body of the HTTP API (dev token, top-up), parsed as the handlers do.
#![no_main]

use axum::Json;
use libfuzzer_sys::fuzz_target;
use ovation::http::{DevTokenRequest, TopUpRequest};

fuzz_target!(|body: &[u8]| {
    let _ = Json::<DevTokenRequest>::from_bytes(body);
    let _ = Json::<TopUpRequest>::from_bytes(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = ovation::auth::check_identity(text, text);
    }
});
