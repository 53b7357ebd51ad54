//! An App Store of the tests' own: a root, an intermediate and a leaf shaped like
//! Apple's (P-256 keys, Apple's marker extensions), and App Store Server Notifications
//! V2 signed with them, as Apple sends them. `TestApple::new()` twice makes two
//! unrelated chains: a server configured with one's root must refuse the other's.
//!
//! Shared by the integration tests and, through `#[path]`, by the unit tests of
//! `src/payments/apple.rs`: it uses nothing of the crate itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// The app the notifications are for.
pub const BUNDLE_ID: &str = "com.example.ovation";
/// Apple's marker extensions: on the certificate that signs App Store data, and on
/// the intermediate that issues it.
const LEAF_OID: &[u64] = &[1, 2, 840, 113635, 100, 6, 11, 1];
const INTERMEDIATE_OID: &[u64] = &[1, 2, 840, 113635, 100, 6, 2, 1];
/// How long the leaf is valid after it is made; the CAs outlive it, so a test that
/// looks past it sees an expired leaf in a valid chain.
pub const LEAF_LIFETIME_S: i64 = 30 * 24 * 3600;
const CA_LIFETIME_S: i64 = 10 * 365 * 24 * 3600;

/// One chain, root to leaf, and the leaf's key to sign notifications with.
pub struct TestApple {
    root_pem: String,
    /// `x5c` as Apple sends it: leaf, intermediate, root, in standard base64.
    x5c: Vec<String>,
    signer: EcdsaKeyPair,
    /// The leaf's validity, unix seconds.
    pub leaf_not_before_s: i64,
    pub leaf_not_after_s: i64,
}

impl TestApple {
    /// A chain like Apple's, valid from an hour ago.
    pub fn new() -> TestApple {
        TestApple::with_markers(true, true)
    }

    /// A chain whose leaf or intermediate may lack Apple's marker extension, for the
    /// tests that must see it refused.
    pub fn with_markers(leaf_marked: bool, intermediate_marked: bool) -> TestApple {
        let now_s = unix_now_s();
        let root_key = key();
        let root = ca(
            "Test Apple Root CA",
            now_s,
            BasicConstraints::Unconstrained,
            None,
        )
        .self_signed(&root_key)
        .expect("rcgen signs the root");
        let intermediate_key = key();
        let marker = intermediate_marked.then_some(INTERMEDIATE_OID);
        let intermediate = ca(
            "Test Apple Intermediate",
            now_s,
            BasicConstraints::Constrained(0),
            marker,
        )
        .signed_by(&intermediate_key, &root, &root_key)
        .expect("rcgen signs the intermediate");
        let leaf_key = key();
        let (leaf_not_before_s, leaf_not_after_s) = (now_s - 3600, now_s + LEAF_LIFETIME_S);
        let leaf = leaf(leaf_not_before_s, leaf_not_after_s, leaf_marked)
            .signed_by(&leaf_key, &intermediate, &intermediate_key)
            .expect("rcgen signs the leaf");
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &leaf_key.serialize_der(),
            &SystemRandom::new(),
        )
        .expect("ring reads rcgen's P-256 key");
        TestApple {
            root_pem: root.pem(),
            x5c: [&leaf, &intermediate, &root].map(base64_der).into(),
            signer,
            leaf_not_before_s,
            leaf_not_after_s,
        }
    }

    /// The root to configure as the only trust anchor.
    pub fn root_pem(&self) -> String {
        self.root_pem.clone()
    }

    /// The JWS header Apple sends: ES256 and the chain.
    pub fn header(&self) -> Value {
        json!({ "alg": "ES256", "x5c": self.x5c })
    }

    /// A compact JWS of `claims`, signed by the leaf.
    pub fn jws(&self, claims: &Value) -> String {
        self.jws_with_header(&self.header(), claims)
    }

    /// A compact JWS of `claims` under any header, always ES256-signed by the leaf
    /// (for tests of headers that lie about it).
    pub fn jws_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", base64_url(header), base64_url(claims));
        let signature = self
            .signer
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("ECDSA signs");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The HTTP body of a notification about `transaction`, with a new notificationUUID.
    pub fn notification(&self, notification_type: &str, transaction: Value) -> String {
        self.with_notification_uuid(notification_type, &random_uuid(), transaction)
    }

    /// The HTTP body of a notification with the given notificationUUID (a redelivery
    /// keeps it).
    pub fn with_notification_uuid(
        &self,
        notification_type: &str,
        notification_uuid: &str,
        transaction: Value,
    ) -> String {
        let signed_transaction_info = self.jws(&transaction);
        let payload = payload(
            notification_type,
            notification_uuid,
            &signed_transaction_info,
        );
        body(&self.jws(&payload))
    }
}

/// The decoded notification payload (`responseBodyV2DecodedPayload`) around a signed
/// transaction.
pub fn payload(
    notification_type: &str,
    notification_uuid: &str,
    signed_transaction: &str,
) -> Value {
    json!({
        "notificationType": notification_type,
        "notificationUUID": notification_uuid,
        "version": "2.0",
        "signedDate": unix_now_s() * 1000,
        "data": {
            "bundleId": BUNDLE_ID,
            "bundleVersion": "1",
            "environment": "Sandbox",
            "signedTransactionInfo": signed_transaction,
        },
    })
}

/// The HTTP body Apple posts: `{"signedPayload": JWS}`.
pub fn body(signed_payload: &str) -> String {
    json!({ "signedPayload": signed_payload }).to_string()
}

/// A consumable's transaction (`JWSTransactionDecodedPayload`): one of `product`
/// bought for 0.99 USD by the account the app named with `account_token`.
pub fn transaction(id: &str, product: &str, account_token: &str) -> Value {
    let now_ms = unix_now_s() * 1000;
    json!({
        "transactionId": id,
        "originalTransactionId": id,
        "productId": product,
        "bundleId": BUNDLE_ID,
        "type": "Consumable",
        "quantity": 1,
        "appAccountToken": account_token,
        "inAppOwnershipType": "PURCHASED",
        "price": 990,
        "currency": "USD",
        "storefront": "USA",
        "purchaseDate": now_ms,
        "originalPurchaseDate": now_ms,
        "signedDate": now_ms,
        "environment": "Sandbox",
        "transactionReason": "PURCHASE",
    })
}

/// A random version 4 UUID, lowercase and hyphenated.
pub fn random_uuid() -> String {
    let bits = rand::random::<u128>() & !(0xf000 << 64) | (0x4000 << 64);
    let bits = bits & !(0xc << 60) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

pub fn unix_now_s() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH);
    i64::try_from(since_epoch.expect("after 1970").as_secs()).expect("before 2262")
}

fn key() -> KeyPair {
    KeyPair::generate().expect("rcgen makes a P-256 key")
}

fn params(common_name: &str, not_before_s: i64, not_after_s: i64) -> CertificateParams {
    let at = |s: i64| {
        let s = u64::try_from(s).expect("after 1970");
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(s)
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Ovation tests");
    params.not_before = at(not_before_s);
    params.not_after = at(not_after_s);
    params
}

fn ca(
    common_name: &str,
    now_s: i64,
    constraints: BasicConstraints,
    marker: Option<&[u64]>,
) -> CertificateParams {
    let mut params = params(common_name, now_s - 24 * 3600, now_s + CA_LIFETIME_S);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.custom_extensions = marker.into_iter().map(marker_extension).collect();
    params
}

fn leaf(not_before_s: i64, not_after_s: i64, marked: bool) -> CertificateParams {
    let mut params = params(
        "Test Prod ECC Mac App Store and iTunes Store Receipt Signing",
        not_before_s,
        not_after_s,
    );
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.custom_extensions = marked
        .then(|| marker_extension(LEAF_OID))
        .into_iter()
        .collect();
    params
}

/// Apple's marker extensions hold an ASN.1 NULL.
fn marker_extension(oid: &[u64]) -> CustomExtension {
    CustomExtension::from_oid_content(oid, vec![0x05, 0x00])
}

fn base64_der(certificate: &Certificate) -> String {
    STANDARD.encode(certificate.der())
}

fn base64_url(json: &Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}
