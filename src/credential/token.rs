//! An access token as the proxy holds it: the secret value, when it stops being usable, the
//! ready-made `Authorization` value, and the extra fields of the token response (for templates).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::HeaderValue;
use tokio::time::Instant;

use crate::secret::Secret;
use crate::store::StoredToken;

/// Shortest and longest lifetime believed from a token response; outside is a vendor bug or a unit
/// mix-up (milliseconds), and clamping keeps the cache from hammering or never renewing.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A usable token.
pub struct AccessToken {
    value: Secret,
    /// `<scheme> <token>`, built once per token and marked sensitive.
    authorization: HeaderValue,
    /// When the vendor stops accepting it.
    pub expires_at: Instant,
    /// From when on the cache renews it; set once, so a cache hit is one comparison.
    renew_at: Instant,
    /// How long it lived when issued.
    pub lifetime: Duration,
    /// Which part of the token response gave the lifetime.
    pub lifetime_source: LifetimeSource,
    /// Token-response fields other than `access_token` (`scope`, `xref_account_id`), for header templates.
    fields: BTreeMap<String, String>,
}

/// What a token endpoint issued: the access token and, with some grants, a (rotated) refresh token.
#[derive(Debug)]
pub struct Issued {
    pub token: AccessToken,
    pub refresh_token: Option<Secret>,
}

/// Why a token response could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenResponseError {
    #[error("the token response is not a JSON object")]
    NotJson,
    #[error("the token response has no access_token")]
    NoAccessToken,
    #[error("the access token cannot be sent in a header (it holds control characters)")]
    UnsendableToken,
}

/// Where a token's lifetime came from, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSource {
    /// A static token: no lifetime of its own.
    Static,
    /// Read back from the token store after a restart.
    Stored,
    ExpiresIn,
    JwtExp,
    Default,
}

// === impl AccessToken ===

impl AccessToken {
    /// A token whose value and lifetime are known (static tokens, tests).
    pub fn new(
        value: Secret,
        scheme: &str,
        (lifetime, lifetime_source): (Duration, LifetimeSource),
        fields: BTreeMap<String, String>,
    ) -> Result<AccessToken, TokenResponseError> {
        let mut authorization = HeaderValue::from_str(&format!("{scheme} {}", value.expose()))
            .map_err(|_| TokenResponseError::UnsendableToken)?;
        authorization.set_sensitive(true);
        Ok(AccessToken {
            value,
            authorization,
            expires_at: Instant::now() + lifetime,
            renew_at: Instant::now() + lifetime,
            lifetime,
            lifetime_source,
            fields,
        })
    }

    /// Reads a token endpoint's JSON answer tolerantly: `access_token` is required; `expires_in`
    /// may be a number or a numeric string; lifetime falls back to the JWT `exp`, then `default_ttl`.
    pub fn from_response(
        body: &[u8],
        scheme: &str,
        default_ttl: Duration,
    ) -> Result<Issued, TokenResponseError> {
        let serde_json::Value::Object(object) =
            serde_json::from_slice(body).map_err(|_| TokenResponseError::NotJson)?
        else {
            return Err(TokenResponseError::NotJson);
        };
        let mut value = None;
        let mut refresh_token = None;
        let mut expires_in = None;
        let mut fields = BTreeMap::new();
        for (name, field) in object {
            match (name.as_str(), field) {
                ("access_token", serde_json::Value::String(token)) if !token.is_empty() => {
                    value = Some(Secret::new(token));
                }
                // The refresh token is not a header-template field: it must never reach an upstream.
                ("refresh_token", serde_json::Value::String(token)) if !token.is_empty() => {
                    refresh_token = Some(Secret::new(token));
                }
                ("access_token" | "refresh_token", _) => {}
                ("expires_in", field) => expires_in = seconds(&field),
                (_, serde_json::Value::String(text)) => {
                    fields.insert(name, text);
                }
                (_, field @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    fields.insert(name, field.to_string());
                }
                _ => {}
            }
        }
        let value = value.ok_or(TokenResponseError::NoAccessToken)?;
        let (lifetime, source) = match expires_in {
            Some(lifetime) => (lifetime, LifetimeSource::ExpiresIn),
            None => match jwt_lifetime(value.expose()) {
                Some(lifetime) => (lifetime, LifetimeSource::JwtExp),
                None => (default_ttl, LifetimeSource::Default),
            },
        };
        let lifetime = lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME);
        Ok(Issued {
            token: AccessToken::new(value, scheme, (lifetime, source), fields)?,
            refresh_token,
        })
    }

    /// What the store keeps of this token: the value, wall-clock expiry and fields.
    pub fn to_stored(&self) -> StoredToken {
        let remaining = self.remaining(Instant::now());
        StoredToken {
            value: self.value.clone(),
            expires_at: SystemTime::now() + remaining,
            lifetime: self.lifetime,
            fields: self.fields.clone(),
        }
    }

    /// A token read back from the store, or `None` when it has expired meanwhile.
    pub fn from_stored(stored: &StoredToken, scheme: &str) -> Option<AccessToken> {
        let remaining = stored.expires_at.duration_since(SystemTime::now()).ok()?;
        let mut token = AccessToken::new(
            stored.value.clone(),
            scheme,
            (stored.lifetime, LifetimeSource::Stored),
            stored.fields.clone(),
        )
        .ok()?;
        // Normally at most MAX_LIFETIME; a token stored as never expiring (a connected account
        // whose vendor states no expiry and issues no refresh token) keeps that.
        let longest = MAX_LIFETIME
            .max(stored.lifetime)
            .min(super::STATIC_LIFETIME);
        token.expires_at = Instant::now() + remaining.min(longest);
        token.renew_at = token.expires_at;
        Some(token)
    }

    /// The token itself.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The token itself, or a field of the token response, for header templates.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "token" => Some(self.value.expose()),
            _ => self.fields.get(name).map(String::as_str),
        }
    }

    /// True when `other` carries the same token value (used to invalidate exactly the token that failed).
    pub fn same_token(&self, other: &AccessToken) -> bool {
        self.value.same_as(&other.value)
    }

    /// Renew `margin` before expiry (the cache's `refresh_before`).
    /// Adds `fields` this token's response did not carry (a refresh answer lacks what the code
    /// exchange captured, such as `xref_account_id`).
    pub fn inherit_fields(&mut self, fields: &BTreeMap<String, String>) {
        for (name, value) in fields {
            self.fields
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
    }

    pub fn renew_before(&mut self, margin: Duration) {
        self.renew_at = self
            .expires_at
            .checked_sub(margin)
            .unwrap_or(self.expires_at);
    }

    /// True until the renewal window opens.
    pub fn fresh(&self, now: Instant) -> bool {
        now < self.renew_at
    }

    /// Time left before the vendor stops accepting it.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &self.value)
            .field("expires_at", &self.expires_at)
            .field("lifetime", &self.lifetime)
            .field("lifetime_source", &self.lifetime_source)
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn seconds(field: &serde_json::Value) -> Option<Duration> {
    let secs = match field {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_LIFETIME.as_secs_f64())))
}

/// Lifetime from a JWT's `exp` claim, read without verifying the signature: it only decides when
/// to renew, never whether to trust the token.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    // An already expired JWT gets the shortest lifetime, not the default: it is useless now.
    Some(Duration::from_secs_f64(
        (exp - now).clamp(0.0, MAX_LIFETIME.as_secs_f64()),
    ))
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
