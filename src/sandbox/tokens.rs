//! Access tokens the sandbox issues and later checks on the vendor APIs.
//!
//! A JWT is `base64url(header).base64url(payload).base64url(HMAC-SHA256)` with a payload of
//! `sub`, `exp`, `iat`, `jti`, so clients can read `exp` as real vendors' tokens allow. The
//! registry, not the signature, is the authority: a token is valid while it is in the registry,
//! for the vendor that issued it, before its `tokio::time::Instant` expiry (so a paused test
//! clock controls it), and until `revoke_all` empties the registry.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::{hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::{TokenFormat, Vendor};

/// Expiry used when `now + ttl` does not fit an `Instant` (a ttl knob of u64::MAX seconds).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Past this many entries, issuing a token first forgets the expired ones.
const PRUNE_ABOVE: usize = 10_000;

/// The random generator failed; the token endpoint answers 500.
#[derive(Debug)]
pub(super) struct IssueError;

/// Why an API call's token was refused, for the `error_description`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenRejection {
    Unknown,
    OtherVendor,
    Expired,
}

#[derive(Debug)]
struct IssuedToken {
    vendor: Vendor,
    expires_at: Instant,
}

/// Tokens issued and still remembered, keyed by their full text.
pub(super) struct TokenRegistry {
    signing_key: hmac::Key,
    issued: HashMap<String, IssuedToken>,
}

// === impl TokenRejection ===

impl TokenRejection {
    pub(super) fn description(self) -> &'static str {
        match self {
            TokenRejection::Unknown => "token unknown or revoked",
            TokenRejection::OtherVendor => "token issued by another vendor",
            TokenRejection::Expired => "token expired",
        }
    }
}

// === impl TokenRegistry ===

impl TokenRegistry {
    /// A registry with a fresh random signing key.
    pub(super) fn new() -> Result<Self, Unspecified> {
        let mut key = [0u8; 32];
        rand::fill(&mut key)?;
        Ok(Self {
            signing_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            issued: HashMap::new(),
        })
    }

    pub(super) fn issue(
        &mut self,
        vendor: Vendor,
        client_id: &str,
        ttl: Duration,
        format: TokenFormat,
    ) -> Result<String, IssueError> {
        let now = Instant::now();
        if self.issued.len() > PRUNE_ABOVE {
            self.issued.retain(|_, token| token.expires_at > now);
        }
        let token = match format {
            TokenFormat::Jwt => self.signed_jwt(client_id, ttl)?,
            TokenFormat::Opaque => URL_SAFE_NO_PAD.encode(random_bytes::<32>()?),
        };
        self.issued.insert(
            token.clone(),
            IssuedToken {
                vendor,
                expires_at: now.checked_add(ttl).unwrap_or(now + FOREVER),
            },
        );
        Ok(token)
    }

    pub(super) fn check(&self, vendor: Vendor, token: &str) -> Result<(), TokenRejection> {
        let issued = self.issued.get(token).ok_or(TokenRejection::Unknown)?;
        if issued.vendor != vendor {
            return Err(TokenRejection::OtherVendor);
        }
        if Instant::now() >= issued.expires_at {
            return Err(TokenRejection::Expired);
        }
        Ok(())
    }

    /// Forgets every token; returns how many were still live.
    pub(super) fn revoke_all(&mut self) -> usize {
        let now = Instant::now();
        let live = self
            .issued
            .values()
            .filter(|token| token.expires_at > now)
            .count();
        self.issued.clear();
        live
    }

    fn signed_jwt(&self, client_id: &str, ttl: Duration) -> Result<String, IssueError> {
        // `exp` is wall-clock time, as clients compare it with theirs.
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let jti: String = random_bytes::<16>()?
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT"});
        let payload = serde_json::json!({
            "sub": client_id,
            "exp": issued_at.saturating_add(ttl.as_secs()),
            "iat": issued_at,
            "jti": jti,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = hmac::sign(&self.signing_key, signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

impl std::fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the key nor the tokens belong in a log line.
        f.debug_struct("TokenRegistry")
            .field("issued", &self.issued.len())
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IssueError> {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes).map_err(|_| IssueError)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jwt_payload_carries_sub_and_exp() {
        let mut registry = TokenRegistry::new().unwrap();
        let token = registry
            .issue(
                Vendor::Generic,
                "client-a",
                Duration::from_secs(60),
                TokenFormat::Jwt,
            )
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(payload["sub"], "client-a");
        assert_eq!(
            payload["exp"].as_u64().unwrap() - payload["iat"].as_u64().unwrap(),
            60
        );
        assert_eq!(registry.check(Vendor::Generic, &token), Ok(()));
        assert_eq!(
            registry.check(Vendor::CrossRiver, &token),
            Err(TokenRejection::OtherVendor)
        );
    }

    #[tokio::test]
    async fn opaque_tokens_are_unique_and_revocable() {
        let mut registry = TokenRegistry::new().unwrap();
        let ttl = Duration::from_secs(60);
        let first = registry
            .issue(Vendor::Generic, "c", ttl, TokenFormat::Opaque)
            .unwrap();
        let second = registry
            .issue(Vendor::Generic, "c", ttl, TokenFormat::Opaque)
            .unwrap();
        assert_ne!(first, second);
        assert!(!first.contains('.'));
        assert_eq!(registry.revoke_all(), 2);
        assert_eq!(
            registry.check(Vendor::Generic, &first),
            Err(TokenRejection::Unknown)
        );
    }
}
