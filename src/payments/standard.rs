//! Standard Webhooks signatures (spec v1): `webhook-signature: v1,<base64>` where the
//! base64 is HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{raw body}` with the
//! secret's bytes (`whsec_<base64>`). Several space-separated signatures may be sent
//! (secret rotation); one that matches is enough. Sans-IO: the caller gives the time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What is wrong with a notification's signature; every case answers 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the webhook-id, webhook-timestamp or webhook-signature header is missing")]
    Missing,
    #[error("the webhook-timestamp header is not a number of seconds")]
    BadTimestamp,
    #[error("the webhook-timestamp is more than the tolerance away from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// A signing secret, `whsec_` and the base64 of its bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    const PREFIX: &'static str = "whsec_";

    pub fn parse(text: &str) -> anyhow::Result<Secret> {
        let encoded = text
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| anyhow::anyhow!("a Standard Webhooks secret starts with whsec_"))?;
        let bytes = BASE64.decode(encoded)?;
        anyhow::ensure!(
            (24..=64).contains(&bytes.len()),
            "a Standard Webhooks secret holds 24 to 64 bytes"
        );
        Ok(Secret(bytes))
    }

    /// The secret as it is shown and configured: `whsec_` and its base64.
    pub fn encoded(&self) -> String {
        format!("{}{}", Self::PREFIX, BASE64.encode(&self.0))
    }

    /// A new secret of 32 random bytes.
    pub fn random(rng: &mut impl rand::RngCore) -> Secret {
        let mut bytes = vec![0; 32];
        rng.fill_bytes(&mut bytes);
        Secret(bytes)
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for a notification (what a sender sends).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }
}

/// A notification's signature headers, as received.
pub struct Signed<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks the signature over the raw `body`, and that the timestamp is within
/// `tolerance_s` of `now_s` (unix seconds). Comparison is constant-time.
pub fn verify(
    secret: &Secret,
    signed: &Signed<'_>,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let (Some(id), Some(timestamp), Some(signatures)) =
        (signed.id, signed.timestamp, signed.signature)
    else {
        return Err(SignatureError::Missing);
    };
    let sent_s: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if sent_s.abs_diff(now_s) > tolerance_s.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let matches = signatures
        .split(' ')
        .filter_map(|signature| signature.strip_prefix("v1,"))
        .filter_map(|tag| BASE64.decode(tag).ok())
        .any(|tag| secret.mac(id, timestamp, body).verify_slice(&tag).is_ok());
    if matches {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The known-answer vector of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn signed(signature: &str) -> Signed<'_> {
        Signed {
            id: Some(ID),
            timestamp: Some("1614265330"),
            signature: Some(signature),
        }
    }

    #[test]
    fn the_specifications_vector_signs_and_verifies() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(
            verify(&secret, &signed(SIGNATURE), BODY, TIMESTAMP, 300),
            Ok(())
        );
        // One of several signatures (a rotated secret) is enough.
        let rotated = format!("v1,AAAA {SIGNATURE}");
        assert_eq!(
            verify(&secret, &signed(&rotated), BODY, TIMESTAMP, 300),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_a_stale_time_or_missing_headers_are_refused() {
        let secret = Secret::parse(SECRET).unwrap();
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&secret, &signed(SIGNATURE), tampered, TIMESTAMP, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&secret, &signed(SIGNATURE), BODY, TIMESTAMP + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(&secret, &signed(SIGNATURE), BODY, TIMESTAMP - 301, 300),
            Err(SignatureError::Stale)
        );
        let unsigned = Signed {
            signature: None,
            ..signed(SIGNATURE)
        };
        assert_eq!(
            verify(&secret, &unsigned, BODY, TIMESTAMP, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(&secret, &signed("v1,not base64!"), BODY, TIMESTAMP, 300),
            Err(SignatureError::Mismatch)
        );
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_c2hvcnQ=").is_err());
    }
}
