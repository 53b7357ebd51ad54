//! Tokens: HS256 JWTs with `sub`, `name`, `role`, `exp`. The platform's backend mints
//! them; the server verifies them (and mints them itself only in dev mode).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::protocol::{is_valid_id, UserRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Broadcaster,
    Admin,
    /// A third party's program (v2): joins, reads and chats, never pays.
    Bot,
}

/// A signed-in user, as proven by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// A minor (the token's `minor` claim): may watch and chat, never pay.
    pub minor: bool,
}

impl User {
    pub fn as_ref(&self) -> UserRef {
        UserRef {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    /// Each broadcaster owns exactly one room: the one named after them.
    pub fn owns_room(&self, room: &str) -> bool {
        self.role == Role::Broadcaster && self.id == room
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub minor: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("invalid token: {0}")]
    BadClaims(&'static str),
}

/// Checks a user's id, display name and role as the protocol defines them.
pub fn check_identity(id: &str, name: &str) -> Result<(), &'static str> {
    if !is_valid_id(id) {
        return Err("user id must match [a-z0-9_-]{1,64}");
    }
    if !(1..=40).contains(&name.chars().count()) || name.trim().is_empty() {
        return Err("name must be 1 to 40 characters");
    }
    Ok(())
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &[u8], leeway_s: u64) -> Tokens {
        // Only HS256: a token naming any other algorithm (including "none") is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_s;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<User, TokenError> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        check_identity(&claims.sub, &claims.name).map_err(TokenError::BadClaims)?;
        Ok(User {
            id: claims.sub,
            name: claims.name,
            role: claims.role,
            minor: claims.minor,
        })
    }

    pub fn mint(&self, user: &User, ttl_s: u64) -> String {
        let claims = Claims {
            sub: user.id.clone(),
            name: user.name.clone(),
            role: user.role,
            exp: unix_now_s() + ttl_s,
            minor: user.minor,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }
}

/// Node credentials: what an edge node shows the origin node when it pulls a room's
/// video (`Ovation-Node: EXPIRY.MAC`). The key is derived from the token secret, which
/// every node of a cluster shares, under a label of its own, so a credential is never
/// a user token and a user token is never a credential. Each names one room and
/// expires within a minute.
#[derive(Clone)]
pub struct NodeKey(Vec<u8>);

/// The header a node credential travels in.
pub const NODE_CREDENTIAL_HEADER: &str = "ovation-node";

impl NodeKey {
    pub fn derive(secret: &[u8]) -> NodeKey {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"ovation node credential v1");
        NodeKey(mac.finalize().into_bytes().to_vec())
    }

    fn mac(&self, room: &str, expires_s: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(format!("{room}\n{expires_s}").as_bytes());
        mac
    }

    /// A credential for pulling `room`, valid until `expires_s` (Unix seconds).
    pub fn mint(&self, room: &str, expires_s: u64) -> String {
        let tag = self.mac(room, expires_s).finalize().into_bytes();
        format!("{expires_s}.{}", hex::encode(tag))
    }

    /// Whether `credential` was minted by a node of this cluster for `room` and is
    /// still valid at `now_s`.
    pub fn verify(&self, room: &str, credential: &str, now_s: u64) -> bool {
        let Some((expires, tag)) = credential.split_once('.') else {
            return false;
        };
        let (Ok(expires_s), Ok(tag)) = (expires.parse::<u64>(), hex::decode(tag)) else {
            return false;
        };
        expires_s >= now_s && self.mac(room, expires_s).verify_slice(&tag).is_ok()
    }
}

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Dev mode's secret: generated once and kept in the data directory, so dev tokens
/// survive a restart (pages keep working after `cargo run` again).
pub fn dev_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("dev-token-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut secret = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> User {
        User {
            id: "bob".into(),
            name: "Bob".into(),
            role: Role::Viewer,
            minor: false,
        }
    }

    #[test]
    fn minted_token_verifies() {
        let tokens = Tokens::new(b"0123456789abcdef0123", 0);
        assert_eq!(tokens.verify(&tokens.mint(&bob(), 60)).unwrap(), bob());
    }

    #[test]
    fn other_secret_is_refused() {
        let ours = Tokens::new(b"0123456789abcdef0123", 0);
        let theirs = Tokens::new(b"another secret, 20b+", 0);
        assert!(ours.verify(&theirs.mint(&bob(), 60)).is_err());
    }

    #[test]
    fn node_credentials_name_one_room_and_expire() {
        let key = NodeKey::derive(b"0123456789abcdef0123");
        let credential = key.mint("cam", 100);
        assert!(key.verify("cam", &credential, 100));
        assert!(!key.verify("cam", &credential, 101), "expired");
        assert!(!key.verify("other", &credential, 50), "another room");
        let theirs = NodeKey::derive(b"another secret, 20b+");
        assert!(!theirs.verify("cam", &credential, 50), "another cluster");
        let later = credential.replacen("100.", "200.", 1);
        assert!(!key.verify("cam", &later, 150), "expiry is signed");
        for bad in ["", "100", "x.00", "100.zz"] {
            assert!(!key.verify("cam", bad, 50), "{bad:?}");
        }
    }

    #[test]
    fn bad_identity_in_claims_is_refused() {
        let tokens = Tokens::new(b"0123456789abcdef0123", 0);
        let user = User {
            id: "Not Valid".into(),
            ..bob()
        };
        assert!(tokens.verify(&tokens.mint(&user, 60)).is_err());
    }
}
