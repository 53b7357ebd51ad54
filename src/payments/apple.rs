//! Apple App Store Server Notifications V2. The body is `{"signedPayload": JWS}`; the
//! JWS (ES256) carries in its `x5c` header the certificate that signed it and the one
//! that issued that, which must lead up to the configured Apple root: nothing in the
//! request chooses what is trusted. The payload's `data.signedTransactionInfo` is
//! another JWS, verified the same way, since it is what says who bought what.
//!
//! As Apple's own App Store Server Library does: the chain is leaf ← intermediate ←
//! root, the leaf carries Apple's OID 1.2.840.113635.100.6.11.1 and the intermediate
//! 1.2.840.113635.100.6.2.1, and only the first two `x5c` entries are used (the third
//! is Apple's copy of its root, which proves nothing). Revocation (OCSP) is not
//! checked: that would need the network, and this module is sans-IO; the caller gives
//! the time.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter, VerifiedPath};
use x509_parser::certificate::X509Certificate;

/// The configured Apple root certificate (Apple Root CA - G3 in production; tests
/// make their own): the only trust anchor.
#[derive(Debug, Clone)]
pub struct AppleRoot {
    anchor: TrustAnchor<'static>,
}

impl AppleRoot {
    /// A certificate in PEM (`-----BEGIN CERTIFICATE-----`) or DER.
    pub fn parse(pem_or_der: &[u8]) -> anyhow::Result<AppleRoot> {
        let der = if pem_or_der.trim_ascii_start().starts_with(b"-----BEGIN") {
            CertificateDer::from_pem_slice(pem_or_der)?
        } else {
            CertificateDer::from(pem_or_der)
        };
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|error| anyhow::anyhow!("the Apple root is not a certificate: {error}"))?;
        Ok(AppleRoot {
            anchor: anchor.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppleError {
    /// Not signed by a chain up to the configured root, a bad signature, another
    /// algorithm than ES256, a certificate not valid now, a missing or malformed `x5c`,
    /// a JWS not in three parts…: the route answers 401.
    #[error("not signed by Apple: {0}")]
    Signature(String),
    /// Well signed but not the shape taken (bad JSON, missing fields, another app's
    /// bundle id): 400.
    #[error("not an App Store notification this server takes: {0}")]
    Shape(String),
}

fn signature(why: impl Into<String>) -> AppleError {
    AppleError::Signature(why.into())
}

fn shape(why: impl Into<String>) -> AppleError {
    AppleError::Shape(why.into())
}

/// What a notification asks of this server.
#[derive(Debug, Clone, PartialEq)]
pub enum Meaning {
    /// ONE_TIME_CHARGE of a consumable (transaction type "Consumable").
    Purchase(AppleTransaction),
    /// REFUND of a consumable: take the coins back.
    Refund(AppleTransaction),
    /// Any other notification type (TEST, CONSUMPTION_REQUEST, REFUND_DECLINED,
    /// subscriptions…), or a purchase or refund of something other than a consumable:
    /// acknowledged, nothing booked.
    Ignored { notification_type: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppleTransaction {
    /// notificationUUID: the event's id, the same on every redelivery.
    pub notification_uuid: String,
    /// transactionId: the purchase's id; a refund names the same.
    pub transaction_id: String,
    pub product_id: String,
    pub quantity: u64,
    /// appAccountToken (a UUID the app set at purchase, lowercase hyphenated); None
    /// when absent.
    pub account_token: Option<String>,
    /// The price in milliunits of the currency, and its ISO 4217 code, when present.
    pub price_milli: Option<u64>,
    pub currency: Option<String>,
    /// "Production" or "Sandbox".
    pub environment: String,
}

/// The HTTP body Apple posts.
#[derive(Deserialize)]
struct Body {
    #[serde(rename = "signedPayload")]
    signed_payload: String,
}

/// `responseBodyV2DecodedPayload`: the app is named in `data`, or in `summary` or
/// `externalPurchaseToken` for the notification types that carry those instead.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    notification_type: String,
    #[serde(rename = "notificationUUID")]
    notification_uuid: String,
    data: Option<AppData>,
    summary: Option<AppData>,
    external_purchase_token: Option<AppData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppData {
    bundle_id: Option<String>,
    signed_transaction_info: Option<String>,
}

/// `JWSTransactionDecodedPayload`, the fields this server reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Transaction {
    transaction_id: String,
    product_id: String,
    bundle_id: String,
    #[serde(rename = "type")]
    kind: String,
    quantity: u64,
    app_account_token: Option<String>,
    price: Option<u64>,
    currency: Option<String>,
    environment: String,
}

/// Verifies `body` (`{"signedPayload": JWS}`) and the `signedTransactionInfo` JWS
/// inside it, both up to `root`, at unix time `now_s`, and checks that the
/// notification is for `bundle_id`.
pub fn verify(
    root: &AppleRoot,
    bundle_id: &str,
    body: &[u8],
    now_s: i64,
) -> Result<Meaning, AppleError> {
    let body: Body = serde_json::from_slice(body).map_err(|error| {
        shape(format!(
            "the body is not {{\"signedPayload\": JWS}}: {error}"
        ))
    })?;
    let notification: Notification = decode(
        &root.verify_jws(&body.signed_payload, now_s)?,
        "a notification",
    )?;
    let app = (notification.data.as_ref())
        .or(notification.summary.as_ref())
        .or(notification.external_purchase_token.as_ref());
    if app.and_then(|app| app.bundle_id.as_deref()) != Some(bundle_id) {
        return Err(shape(format!("the notification is not for {bundle_id}")));
    }
    let refund = match notification.notification_type.as_str() {
        "ONE_TIME_CHARGE" => false,
        "REFUND" => true,
        _ => return Ok(notification.ignored()),
    };
    let signed_transaction = (app.and_then(|app| app.signed_transaction_info.as_deref()))
        .ok_or_else(|| shape("a purchase or refund without data.signedTransactionInfo"))?;
    let transaction: Transaction = decode(
        &root.verify_jws(signed_transaction, now_s)?,
        "a transaction",
    )?;
    if transaction.bundle_id != bundle_id {
        return Err(shape(format!("the transaction is not for {bundle_id}")));
    }
    if transaction.kind != "Consumable" {
        // Coins are consumables; anything else bought in the app is not ours to book.
        return Ok(notification.ignored());
    }
    let transaction = transaction.booked(notification.notification_uuid)?;
    Ok(if refund {
        Meaning::Refund(transaction)
    } else {
        Meaning::Purchase(transaction)
    })
}

impl Notification {
    fn ignored(self) -> Meaning {
        Meaning::Ignored {
            notification_type: self.notification_type,
        }
    }
}

impl Transaction {
    fn booked(self, notification_uuid: String) -> Result<AppleTransaction, AppleError> {
        if self.quantity == 0 {
            return Err(shape("a transaction of quantity 0"));
        }
        // StoreKit takes the token as a UUID; Apple may spell it either case.
        let account_token = (self.app_account_token.filter(|token| !token.is_empty()))
            .map(|token| lowercase_uuid(&token))
            .transpose()?;
        Ok(AppleTransaction {
            notification_uuid,
            transaction_id: self.transaction_id,
            product_id: self.product_id,
            quantity: self.quantity,
            account_token,
            price_milli: self.price,
            currency: self.currency,
            environment: self.environment,
        })
    }
}

fn lowercase_uuid(text: &str) -> Result<String, AppleError> {
    let lower = text.to_ascii_lowercase();
    let well_formed = lower.len() == 36
        && lower.char_indices().all(|(at, c)| match at {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if well_formed {
        Ok(lower)
    } else {
        Err(shape(format!("appAccountToken {text:?} is not a UUID")))
    }
}

/// A verified payload's JSON, read as `what` it should be.
fn decode<T: DeserializeOwned>(json: &[u8], what: &str) -> Result<T, AppleError> {
    serde_json::from_slice(json).map_err(|error| shape(format!("not {what}: {error}")))
}

/// A compact JWS's protected header, the fields that matter here.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
}

/// What signed Apple's certificates: ECDSA throughout (P-384 for the root and the
/// intermediate, P-256 for the leaf).
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

const LEAF_OID: &str = "1.2.840.113635.100.6.11.1";
const INTERMEDIATE_OID: &str = "1.2.840.113635.100.6.2.1";

/// Apple's signing certificates name no extended key usage, and Apple's libraries
/// require none: what marks them is Apple's OIDs, checked once the path holds. Any
/// usage named is accepted, as long as it parses.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, mut usages: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        usages.try_for_each(|usage| usage.map(drop))
    }
}

impl AppleRoot {
    /// The payload of a compact JWS signed ES256 by the leaf of its `x5c` chain, once
    /// that chain is verified up to this root at `now_s`.
    fn verify_jws(&self, jws: &str, now_s: i64) -> Result<Vec<u8>, AppleError> {
        let mut parts = jws.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(signature("a JWS is three parts separated by dots"));
        };
        let header: Header = serde_json::from_slice(&base64_url(header_part, "header")?)
            .map_err(|error| signature(format!("the JWS header is not JSON: {error}")))?;
        if header.alg != "ES256" {
            return Err(signature(format!("alg {:?}, not ES256", header.alg)));
        }
        let [leaf, intermediate, ..] = &header.x5c[..] else {
            return Err(signature("x5c does not hold a leaf and an intermediate"));
        };
        let (Ok(leaf), Ok(intermediate)) = (STANDARD.decode(leaf), STANDARD.decode(intermediate))
        else {
            return Err(signature("x5c holds something other than base64"));
        };
        let key = self.verify_chain(&leaf, &intermediate, now_s)?;
        // What is signed is `header.payload` as sent.
        let signing_input = &jws[..header_part.len() + 1 + payload_part.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(
                signing_input.as_bytes(),
                &base64_url(signature_part, "signature")?,
            )
            .map_err(|_| signature("the JWS signature does not match its leaf certificate"))?;
        base64_url(payload_part, "payload")
    }

    /// The leaf's public key, once leaf ← intermediate ← this root holds at `now_s` and
    /// both certificates carry Apple's marks.
    fn verify_chain(
        &self,
        leaf: &[u8],
        intermediate: &[u8],
        now_s: i64,
    ) -> Result<Vec<u8>, AppleError> {
        let now_s = u64::try_from(now_s).map_err(|_| signature("a time before 1970"))?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(now_s));
        let leaf_der = CertificateDer::from(leaf);
        let intermediates = [CertificateDer::from(intermediate)];
        let end_entity = EndEntityCert::try_from(&leaf_der)
            .map_err(|error| signature(format!("the leaf certificate: {error}")))?;
        // Not straight from the root: Apple's marked intermediate must be on the path.
        let through_intermediate =
            |path: &VerifiedPath<'_>| match path.intermediate_certificates().count() {
                1 => Ok(()),
                _ => Err(webpki::Error::UnknownIssuer),
            };
        let anchors = std::slice::from_ref(&self.anchor);
        end_entity
            .verify_for_usage(
                CHAIN_ALGORITHMS,
                anchors,
                &intermediates,
                time,
                AnyUsage,
                None,
                Some(&through_intermediate),
            )
            .map_err(|error| signature(format!("the x5c chain: {error}")))?;
        marked(
            &certificate(intermediate, "intermediate")?,
            INTERMEDIATE_OID,
        )?;
        let leaf = certificate(leaf, "leaf")?;
        marked(&leaf, LEAF_OID)?;
        Ok(leaf.public_key().subject_public_key.data.to_vec())
    }
}

fn base64_url(part: &str, what: &str) -> Result<Vec<u8>, AppleError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| signature(format!("the JWS {what} is not base64url")))
}

fn certificate<'a>(der: &'a [u8], role: &str) -> Result<X509Certificate<'a>, AppleError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], certificate)) => Ok(certificate),
        _ => Err(signature(format!(
            "the {role} certificate is not DER X.509"
        ))),
    }
}

fn marked(certificate: &X509Certificate<'_>, oid: &str) -> Result<(), AppleError> {
    let extensions = certificate.extensions();
    if extensions
        .iter()
        .any(|extension| extension.oid.to_id_string() == oid)
    {
        Ok(())
    } else {
        Err(signature(format!(
            "{} lacks Apple's extension {oid}",
            certificate.subject()
        )))
    }
}

#[cfg(test)]
#[path = "../../tests/common/apple.rs"]
mod test_apple;

#[cfg(test)]
mod tests {
    use super::test_apple::{self, TestApple, BUNDLE_ID};
    use super::*;
    use serde_json::{json, Value};

    const TOKEN: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn root(apple: &TestApple) -> AppleRoot {
        AppleRoot::parse(apple.root_pem().as_bytes()).unwrap()
    }

    fn verified(apple: &TestApple, body: &str) -> Result<Meaning, AppleError> {
        verified_at(apple, body, test_apple::unix_now_s())
    }

    fn verified_at(apple: &TestApple, body: &str, now_s: i64) -> Result<Meaning, AppleError> {
        verify(&root(apple), BUNDLE_ID, body.as_bytes(), now_s)
    }

    fn consumable() -> Value {
        test_apple::transaction("2000000123", "coins_100", TOKEN)
    }

    #[track_caller]
    fn assert_signature(result: Result<Meaning, AppleError>) {
        assert!(
            matches!(result, Err(AppleError::Signature(_))),
            "{result:?}"
        );
    }

    #[track_caller]
    fn assert_shape(result: Result<Meaning, AppleError>) {
        assert!(matches!(result, Err(AppleError::Shape(_))), "{result:?}");
    }

    /// The same compact JWS with another payload: its signature no longer matches.
    fn with_payload(jws: &str, claims: &Value) -> String {
        let parts: Vec<&str> = jws.split('.').collect();
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    }

    #[test]
    fn a_one_time_charge_of_a_consumable_is_a_purchase_with_all_its_fields() {
        let apple = TestApple::new();
        let uuid = test_apple::random_uuid();
        let mut transaction = consumable();
        // Apple may spell the token in capitals; it is booked in lower case.
        transaction["appAccountToken"] = json!(TOKEN.to_ascii_uppercase());
        let body = apple.with_notification_uuid("ONE_TIME_CHARGE", &uuid, transaction);
        let expected = AppleTransaction {
            notification_uuid: uuid,
            transaction_id: "2000000123".into(),
            product_id: "coins_100".into(),
            quantity: 1,
            account_token: Some(TOKEN.into()),
            price_milli: Some(990),
            currency: Some("USD".into()),
            environment: "Sandbox".into(),
        };
        assert_eq!(verified(&apple, &body), Ok(Meaning::Purchase(expected)));
    }

    #[test]
    fn a_refund_of_a_consumable_is_a_refund_and_the_optional_fields_may_be_absent() {
        let apple = TestApple::new();
        let mut transaction = consumable();
        for field in ["appAccountToken", "price", "currency"] {
            transaction.as_object_mut().unwrap().remove(field);
        }
        let body = apple.notification("REFUND", transaction);
        let Ok(Meaning::Refund(refund)) = verified(&apple, &body) else {
            panic!("not a refund: {:?}", verified(&apple, &body));
        };
        assert_eq!(refund.transaction_id, "2000000123");
        assert_eq!(
            (refund.account_token, refund.price_milli, refund.currency),
            (None, None, None)
        );
    }

    #[test]
    fn other_notifications_and_other_products_are_acknowledged_and_ignored() {
        let apple = TestApple::new();
        let ignored = |kind: &str| {
            Ok(Meaning::Ignored {
                notification_type: kind.into(),
            })
        };
        for kind in [
            "TEST",
            "CONSUMPTION_REQUEST",
            "REFUND_DECLINED",
            "DID_RENEW",
        ] {
            let body = apple.notification(kind, consumable());
            assert_eq!(verified(&apple, &body), ignored(kind));
        }
        let mut subscription = consumable();
        subscription["type"] = json!("Auto-Renewable Subscription");
        let body = apple.notification("ONE_TIME_CHARGE", subscription);
        assert_eq!(verified(&apple, &body), ignored("ONE_TIME_CHARGE"));
    }

    #[test]
    fn a_chain_up_to_another_root_is_refused() {
        let (trusted, stranger) = (TestApple::new(), TestApple::new());
        let body = stranger.notification("ONE_TIME_CHARGE", consumable());
        assert_signature(verified(&trusted, &body));
        // Nor may a trusted notification carry a stranger's transaction.
        let payload = test_apple::payload("REFUND", "u", &stranger.jws(&consumable()));
        assert_signature(verified(
            &trusted,
            &test_apple::body(&trusted.jws(&payload)),
        ));
    }

    #[test]
    fn a_tampered_payload_or_transaction_is_refused() {
        let apple = TestApple::new();
        let payload = test_apple::payload("ONE_TIME_CHARGE", "u1", &apple.jws(&consumable()));
        let mut replayed = payload.clone();
        replayed["notificationUUID"] = json!("u2");
        let tampered = with_payload(&apple.jws(&payload), &replayed);
        assert_signature(verified(&apple, &test_apple::body(&tampered)));

        let mut more = consumable();
        more["quantity"] = json!(100);
        let transaction = with_payload(&apple.jws(&consumable()), &more);
        let payload = test_apple::payload("ONE_TIME_CHARGE", "u3", &transaction);
        assert_signature(verified(&apple, &test_apple::body(&apple.jws(&payload))));
    }

    #[test]
    fn only_es256_with_a_leaf_and_an_intermediate_is_taken() {
        let apple = TestApple::new();
        let payload = test_apple::payload("ONE_TIME_CHARGE", "u", &apple.jws(&consumable()));
        let signed_under = |header: &Value| apple.jws_with_header(header, &payload);
        let verified_jws = |jws: &str| verified(&apple, &test_apple::body(jws));
        assert!(verified_jws(&signed_under(&apple.header())).is_ok());
        let x5c = apple.header()["x5c"].clone();
        for header in [
            json!({ "alg": "HS256", "x5c": x5c }),
            json!({ "x5c": x5c }),
            json!({ "alg": "ES256" }),
            json!({ "alg": "ES256", "x5c": [x5c[0]] }),
            json!({ "alg": "ES256", "x5c": [x5c[1], x5c[0]] }),
            json!({ "alg": "ES256", "x5c": ["not base64!", "not base64!"] }),
        ] {
            assert_signature(verified_jws(&signed_under(&header)));
        }
        let signed = signed_under(&json!({ "alg": "none", "x5c": x5c }));
        assert_signature(verified_jws(&signed[..=signed.rfind('.').unwrap()]));
        for not_a_jws in ["", "a.b", "a.b.c.d", "!.!.!"] {
            assert_signature(verified_jws(not_a_jws));
        }
    }

    #[test]
    fn a_leaf_not_valid_at_the_time_given_is_refused() {
        let apple = TestApple::new();
        let body = apple.notification("ONE_TIME_CHARGE", consumable());
        assert!(verified_at(&apple, &body, apple.leaf_not_after_s).is_ok());
        assert_signature(verified_at(&apple, &body, apple.leaf_not_after_s + 1));
        assert_signature(verified_at(&apple, &body, apple.leaf_not_before_s - 1));
        assert_signature(verified_at(&apple, &body, -1));
    }

    #[test]
    fn certificates_without_apples_marks_are_refused() {
        for (leaf, intermediate) in [(false, true), (true, false)] {
            let apple = TestApple::with_markers(leaf, intermediate);
            let body = apple.notification("ONE_TIME_CHARGE", consumable());
            assert_signature(verified(&apple, &body));
        }
    }

    #[test]
    fn another_apps_notification_or_a_body_of_another_shape_is_refused() {
        let apple = TestApple::new();
        let body = apple.notification("ONE_TIME_CHARGE", consumable());
        let now_s = test_apple::unix_now_s();
        let other_app = verify(&root(&apple), "com.example.other", body.as_bytes(), now_s);
        assert_shape(other_app);
        // A notification for this app about another app's transaction.
        let mut foreign = consumable();
        foreign["bundleId"] = json!("com.example.other");
        assert_shape(verified(&apple, &apple.notification("REFUND", foreign)));
        let mut no_quantity = consumable();
        no_quantity.as_object_mut().unwrap().remove("quantity");
        assert_shape(verified(&apple, &apple.notification("REFUND", no_quantity)));
        let mut bad_token = consumable();
        bad_token["appAccountToken"] = json!("user-42");
        assert_shape(verified(&apple, &apple.notification("REFUND", bad_token)));
        for body in ["not json", "{}", r#"{"signedPayload": 1}"#] {
            assert_shape(verified(&apple, body));
        }
    }

    #[test]
    fn the_root_is_read_from_pem_or_der() {
        let apple = TestApple::new();
        let pem = apple.root_pem();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let body = apple.notification("TEST", consumable());
        for root in [pem.as_bytes(), der.as_ref()] {
            let root = AppleRoot::parse(root).unwrap();
            let now_s = test_apple::unix_now_s();
            assert!(verify(&root, BUNDLE_ID, body.as_bytes(), now_s).is_ok());
        }
        assert!(AppleRoot::parse(b"not a certificate").is_err());
        assert!(AppleRoot::parse(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }

    /// Apple's production chain: Apple Root CA - G3 and the WWDR G6 intermediate (both
    /// published at apple.com/certificateauthority) and a notification signing leaf
    /// valid from 2025-09-19 to 2027-10-13, as every notification's `x5c` carries it
    /// (public certificates, no key): the checks must take Apple's real certificates,
    /// not only the ones the tests make.
    const APPLE_ROOT_CA_G3: &str = concat!(
        "MIICQzCCAcmgAwIBAgIILcX8iNLFS5UwCgYIKoZIzj0EAwMwZzEbMBkGA1UEAwwSQXBwbGUgUm9vdCBDQSAt",
        "IEczMSYwJAYDVQQLDB1BcHBsZSBDZXJ0aWZpY2F0aW9uIEF1dGhvcml0eTETMBEGA1UECgwKQXBwbGUgSW5j",
        "LjELMAkGA1UEBhMCVVMwHhcNMTQwNDMwMTgxOTA2WhcNMzkwNDMwMTgxOTA2WjBnMRswGQYDVQQDDBJBcHBs",
        "ZSBSb290IENBIC0gRzMxJjAkBgNVBAsMHUFwcGxlIENlcnRpZmljYXRpb24gQXV0aG9yaXR5MRMwEQYDVQQK",
        "DApBcHBsZSBJbmMuMQswCQYDVQQGEwJVUzB2MBAGByqGSM49AgEGBSuBBAAiA2IABJjpLz1AcqTtkyJygRMc",
        "3RCV8cWjTnHcFBbZDuWmBSp3ZHtfTjjTuxxEtX/1H7YyYl3J6YRbTzBPEVoA/VhYDKX1DyxNB0cTddqXl5dv",
        "MVztK517IDvYuVTZXpmkOlEKMaNCMEAwHQYDVR0OBBYEFLuw3qFYM4iapIqZ3r6966/ayySrMA8GA1UdEwEB",
        "/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49BAMDA2gAMGUCMQCD6cHEFl4aXTQY2e3v9GwOAEZL",
        "uN+yRhHFD/3meoyhpmvOwgPUnPWTxnS4at+qIxUCMG1mihDK1A3UT82NQz60imOlM27jbdoXt2QfyFMm+Yhi",
        "dDkLF1vLUagM6BgD56KyKA==",
    );

    const APPLE_WWDR_G6: &str = concat!(
        "MIIDFjCCApygAwIBAgIUIsGhRwp0c2nvU4YSycafPTjzbNcwCgYIKoZIzj0EAwMwZzEbMBkGA1UEAwwSQXBw",
        "bGUgUm9vdCBDQSAtIEczMSYwJAYDVQQLDB1BcHBsZSBDZXJ0aWZpY2F0aW9uIEF1dGhvcml0eTETMBEGA1UE",
        "CgwKQXBwbGUgSW5jLjELMAkGA1UEBhMCVVMwHhcNMjEwMzE3MjAzNzEwWhcNMzYwMzE5MDAwMDAwWjB1MUQw",
        "QgYDVQQDDDtBcHBsZSBXb3JsZHdpZGUgRGV2ZWxvcGVyIFJlbGF0aW9ucyBDZXJ0aWZpY2F0aW9uIEF1dGhv",
        "cml0eTELMAkGA1UECwwCRzYxEzARBgNVBAoMCkFwcGxlIEluYy4xCzAJBgNVBAYTAlVTMHYwEAYHKoZIzj0C",
        "AQYFK4EEACIDYgAEbsQKC94PrlWmZXnXgtxzdVJL8T0SGYngDRGpngn3N6PT8JMEb7FDi4bBmPhCnZ3/sq6P",
        "F/cGcKXWsL5vOteRhyJ45x3ASP7cOB+aao90fcpxSv/EZFbniAbNgZGhIhpIo4H6MIH3MBIGA1UdEwEB/wQI",
        "MAYBAf8CAQAwHwYDVR0jBBgwFoAUu7DeoVgziJqkipnevr3rr9rLJKswRgYIKwYBBQUHAQEEOjA4MDYGCCsG",
        "AQUFBzABhipodHRwOi8vb2NzcC5hcHBsZS5jb20vb2NzcDAzLWFwcGxlcm9vdGNhZzMwNwYDVR0fBDAwLjAs",
        "oCqgKIYmaHR0cDovL2NybC5hcHBsZS5jb20vYXBwbGVyb290Y2FnMy5jcmwwHQYDVR0OBBYEFD8vlCNR01DJ",
        "mig97bB85c+lkGKZMA4GA1UdDwEB/wQEAwIBBjAQBgoqhkiG92NkBgIBBAIFADAKBggqhkjOPQQDAwNoADBl",
        "AjBAXhSq5IyKogMCPtw490BaB677CaEGJXufQB/EqZGd6CSjiCtOnuMTbXVXmxxcxfkCMQDTSPxarZXvNrkx",
        "U3TkUMI33yzvFVVRT4wxWJC994OsdcZ4+RGNsYDyR5gmdr0nDGg=",
    );

    const APPLE_SIGNING_LEAF: &str = concat!(
        "MIIEMTCCA7agAwIBAgIQR8KHzdn554Z/UoradNx9tzAKBggqhkjOPQQDAzB1MUQwQgYDVQQDDDtBcHBsZSBX",
        "b3JsZHdpZGUgRGV2ZWxvcGVyIFJlbGF0aW9ucyBDZXJ0aWZpY2F0aW9uIEF1dGhvcml0eTELMAkGA1UECwwC",
        "RzYxEzARBgNVBAoMCkFwcGxlIEluYy4xCzAJBgNVBAYTAlVTMB4XDTI1MDkxOTE5NDQ1MVoXDTI3MTAxMzE3",
        "NDcyM1owgZIxQDA+BgNVBAMMN1Byb2QgRUNDIE1hYyBBcHAgU3RvcmUgYW5kIGlUdW5lcyBTdG9yZSBSZWNl",
        "aXB0IFNpZ25pbmcxLDAqBgNVBAsMI0FwcGxlIFdvcmxkd2lkZSBEZXZlbG9wZXIgUmVsYXRpb25zMRMwEQYD",
        "VQQKDApBcHBsZSBJbmMuMQswCQYDVQQGEwJVUzBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNnVvhcv7iT+",
        "7Ex5tBMBgrQspHzIsXRi0Yxfek7lv8wEmj/bHiWtNwJqc2BoHzsQiEjP7KFIIKg4Y8y0/nynuAmjggIIMIIC",
        "BDAMBgNVHRMBAf8EAjAAMB8GA1UdIwQYMBaAFD8vlCNR01DJmig97bB85c+lkGKZMHAGCCsGAQUFBwEBBGQw",
        "YjAtBggrBgEFBQcwAoYhaHR0cDovL2NlcnRzLmFwcGxlLmNvbS93d2RyZzYuZGVyMDEGCCsGAQUFBzABhiVo",
        "dHRwOi8vb2NzcC5hcHBsZS5jb20vb2NzcDAzLXd3ZHJnNjAyMIIBHgYDVR0gBIIBFTCCAREwggENBgoqhkiG",
        "92NkBQYBMIH+MIHDBggrBgEFBQcCAjCBtgyBs1JlbGlhbmNlIG9uIHRoaXMgY2VydGlmaWNhdGUgYnkgYW55",
        "IHBhcnR5IGFzc3VtZXMgYWNjZXB0YW5jZSBvZiB0aGUgdGhlbiBhcHBsaWNhYmxlIHN0YW5kYXJkIHRlcm1z",
        "IGFuZCBjb25kaXRpb25zIG9mIHVzZSwgY2VydGlmaWNhdGUgcG9saWN5IGFuZCBjZXJ0aWZpY2F0aW9uIHBy",
        "YWN0aWNlIHN0YXRlbWVudHMuMDYGCCsGAQUFBwIBFipodHRwOi8vd3d3LmFwcGxlLmNvbS9jZXJ0aWZpY2F0",
        "ZWF1dGhvcml0eS8wHQYDVR0OBBYEFIFioG4wMMVA1ku9zJmGNPAVn3eqMA4GA1UdDwEB/wQEAwIHgDAQBgoq",
        "hkiG92NkBgsBBAIFADAKBggqhkjOPQQDAwNpADBmAjEA+qXnREC7hXIWVLsLxznjRpIzPf7VHz9V/CTm8+LJ",
        "lrQepnmcPvGLNcX6XPnlcgLAAjEA5IjNZKgg5pQ79knF4IbTXdKv8vutIDMXDmjPVT3dGvFtsGRwXOywR2kZ",
        "CdSrfeot",
    );

    fn der(base64: &str) -> Vec<u8> {
        STANDARD.decode(base64).unwrap()
    }

    #[test]
    fn apples_production_chain_holds_while_its_leaf_is_valid() {
        let apple_root = AppleRoot::parse(&der(APPLE_ROOT_CA_G3)).unwrap();
        let (leaf, intermediate) = (der(APPLE_SIGNING_LEAF), der(APPLE_WWDR_G6));
        let october_2025 = 1_761_962_975;
        let key = apple_root
            .verify_chain(&leaf, &intermediate, october_2025)
            .unwrap();
        assert_eq!(
            (key.len(), key[0]),
            (65, 0x04),
            "an uncompressed P-256 point"
        );
        let november_2027 = 1_830_000_000;
        assert!(apple_root
            .verify_chain(&leaf, &intermediate, november_2027)
            .is_err());
        let test_root = root(&TestApple::new());
        assert!(test_root
            .verify_chain(&leaf, &intermediate, october_2025)
            .is_err());
        // The intermediate and the leaf are not interchangeable.
        assert!(apple_root
            .verify_chain(&intermediate, &leaf, october_2025)
            .is_err());
    }

    #[test]
    fn a_leaf_issued_straight_by_the_root_is_refused() {
        use rcgen::{BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair};
        let mark = |oid: &[u64]| CustomExtension::from_oid_content(oid, vec![0x05, 0x00]);
        let root_key = KeyPair::generate().unwrap();
        let mut root_params = CertificateParams::default();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let signed_by_root = |is_ca: IsCa, oid: &[u64]| {
            let mut params = CertificateParams::default();
            (params.is_ca, params.custom_extensions) = (is_ca, vec![mark(oid)]);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("{oid:?}"));
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &root_cert, &root_key).unwrap()
        };
        let leaf = signed_by_root(IsCa::ExplicitNoCa, &[1, 2, 840, 113635, 100, 6, 11, 1]);
        let intermediate = signed_by_root(
            IsCa::Ca(BasicConstraints::Constrained(0)),
            &[1, 2, 840, 113635, 100, 6, 2, 1],
        );
        let root = AppleRoot::parse(root_cert.der()).unwrap();
        let now_s = test_apple::unix_now_s();
        let result = root.verify_chain(leaf.der(), intermediate.der(), now_s);
        assert!(
            matches!(result, Err(AppleError::Signature(_))),
            "{result:?}"
        );
    }
}
