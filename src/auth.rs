//! HMAC-signed, expiring tokens carrying a role and a scope.
//!
//! Format: `base64url(claims JSON) "." base64url(HMAC-SHA256(secret, first part))`. Stateless to
//! verify; a classroom token is additionally only good while its lesson lives (checked by the
//! lesson registry), so it expires with the lesson.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Tokens longer than this are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Claims {
    /// May host lessons in this classroom.
    Teacher { classroom: String, exp: i64 },
    /// May join this lesson as this classroom.
    Classroom {
        lesson: String,
        classroom: String,
        exp: i64,
    },
    /// May read usage within this scope.
    Admin { scope: AdminScope, exp: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", content = "id", rename_all = "snake_case")]
pub enum AdminScope {
    City,
    County(String),
    School(String),
}

impl Claims {
    pub fn exp(&self) -> i64 {
        match self {
            Claims::Teacher { exp, .. }
            | Claims::Classroom { exp, .. }
            | Claims::Admin { exp, .. } => *exp,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token has expired")]
    Expired,
}

#[derive(Clone)]
pub struct TokenKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> TokenKey {
        TokenKey {
            secret: secret.into(),
        }
    }

    /// A fresh random key, for servers that were given no secret (tokens die with the process).
    pub fn random() -> TokenKey {
        let secret: [u8; 32] = rand::random();
        TokenKey::new(secret.to_vec())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length.
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        // Claims are plain data; serializing them cannot fail.
        let json = serde_json::to_vec(claims).expect("claims serialize");
        let body = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Verifies signature and expiry against `now_unix` (seconds).
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp() <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teacher(exp: i64) -> Claims {
        Claims::Teacher {
            classroom: "c1".into(),
            exp,
        }
    }

    #[test]
    fn round_trips_and_rejects_tampering() {
        let key = TokenKey::new(b"k".to_vec());
        let token = key.sign(&teacher(100));
        assert_eq!(key.verify(&token, 50), Ok(teacher(100)));
        assert_eq!(key.verify(&token, 100), Err(TokenError::Expired));

        // Another key, a changed body, garbage and an oversized token are all refused.
        assert_eq!(
            TokenKey::new(b"other".to_vec()).verify(&token, 50),
            Err(TokenError::BadSignature)
        );
        let (_, sig) = token.split_once('.').unwrap();
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims::Admin {
                scope: AdminScope::City,
                exp: 100,
            })
            .unwrap(),
        );
        assert_eq!(
            key.verify(&format!("{forged_body}.{sig}"), 50),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify("no-dot", 50), Err(TokenError::Malformed));
        assert_eq!(key.verify("a.!!!", 50), Err(TokenError::Malformed));
        assert_eq!(
            key.verify(&"a".repeat(5000), 50),
            Err(TokenError::Malformed)
        );
    }
}
