//! Access and refresh tokens the sandbox issues and later checks on the vendor APIs.
//!
//! A JWT is `base64url(header).base64url(payload).base64url(HMAC-SHA256)` with a payload of
//! `sub`, `exp`, `iat`, `jti`, so clients can read `exp` as real vendors' tokens allow. The
//! registry, not the signature, is the authority: a token is valid while it is in the registry,
//! for the vendor that issued it, before its `tokio::time::Instant` expiry (so a paused test
//! clock controls it), while its family (if any) stands, and until `revoke_all` empties it.
//!
//! A family is what one user connection produced (Crossbeam, generic): its access tokens and its
//! chain of refresh tokens. Refreshing rotates: the presented refresh token retires and a new one is
//! current. A retired one presented again means it was stolen, and the whole family is revoked.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::{hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::time::Instant;

use super::{TokenFormat, Vendor};

/// Expiry used when `now + ttl` does not fit an `Instant` (a ttl of `Duration::MAX`).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Past this many entries, issuing a token first forgets the expired ones.
const PRUNE_ABOVE: usize = 10_000;

/// Names one family of tokens.
pub(super) type FamilyId = u64;

/// Who a token is issued to and what it may do.
#[derive(Clone, Copy, Debug)]
pub(super) struct TokenGrant<'a> {
    pub vendor: Vendor,
    pub client_id: &'a str,
    /// Space separated; `None` holds no scope at all.
    pub scope: Option<&'a str>,
    pub family: Option<FamilyId>,
}

/// Why an API call's token was refused. All but `InsufficientScope` are a 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TokenRejection {
    Unknown,
    OtherVendor,
    Expired,
    FamilyRevoked,
    InsufficientScope,
}

/// Why a refresh token was refused: all are `invalid_grant`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RefreshRejection {
    Unknown,
    OtherClient,
    /// Revoked earlier (by reuse or `revoke_all`).
    Revoked,
    /// A retired refresh token came back: the family has just been revoked.
    Reused,
}

/// A successful rotation: the family, its scope and the new current refresh token.
#[derive(Debug)]
pub(super) struct Rotation {
    pub family: FamilyId,
    pub scope: String,
    pub refresh_token: String,
}

#[derive(Debug)]
struct IssuedToken {
    vendor: Vendor,
    /// Tells the stats whose connection a deauthorization ended.
    client_id: String,
    expires_at: Instant,
    scope: Option<String>,
    family: Option<FamilyId>,
}

#[derive(Debug)]
struct Family {
    /// Only the vendor that opened a family honours its refresh tokens.
    vendor: Vendor,
    client_id: String,
    scope: String,
    /// The one refresh token that may be used next; `None` without `offline_access`.
    current_refresh: Option<String>,
    revoked: bool,
}

/// Tokens issued and still remembered, keyed by their full text.
pub(super) struct TokenRegistry {
    signing_key: hmac::Key,
    /// Unique text comes from HMAC(minting_key, counter): unguessable, and never fails.
    minting_key: hmac::Key,
    minted: u64,
    issued: HashMap<String, IssuedToken>,
    families: HashMap<FamilyId, Family>,
    /// Every refresh token ever issued, current or retired, to its family.
    refresh_tokens: HashMap<String, FamilyId>,
}

// === impl TokenRejection ===

impl TokenRejection {
    pub(super) fn description(self) -> &'static str {
        match self {
            TokenRejection::Unknown => "token unknown or revoked",
            TokenRejection::OtherVendor => "token issued by another vendor",
            TokenRejection::Expired => "token expired",
            TokenRejection::FamilyRevoked => "token revoked with its refresh token family",
            TokenRejection::InsufficientScope => "token scope does not cover this call",
        }
    }
}

// === impl RefreshRejection ===

impl RefreshRejection {
    pub(super) fn description(self) -> &'static str {
        match self {
            RefreshRejection::Unknown => "unknown refresh token",
            RefreshRejection::OtherClient => "refresh token issued to another client",
            RefreshRejection::Revoked => "refresh token revoked",
            RefreshRejection::Reused => "refresh token reused: token family revoked",
        }
    }
}

// === impl TokenRegistry ===

impl TokenRegistry {
    /// A registry with fresh random signing and minting keys.
    pub(super) fn new() -> Result<Self, Unspecified> {
        Ok(Self {
            signing_key: random_key()?,
            minting_key: random_key()?,
            minted: 0,
            issued: HashMap::new(),
            families: HashMap::new(),
            refresh_tokens: HashMap::new(),
        })
    }

    /// 43 characters of base64url that no one can predict and no two calls share.
    pub(super) fn mint(&mut self) -> String {
        self.minted += 1;
        let tag = hmac::sign(&self.minting_key, &self.minted.to_be_bytes());
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    pub(super) fn issue(
        &mut self,
        grant: TokenGrant<'_>,
        ttl: Duration,
        format: TokenFormat,
    ) -> String {
        let now = Instant::now();
        if self.issued.len() > PRUNE_ABOVE {
            self.issued.retain(|_, token| token.expires_at > now);
        }
        let token = match format {
            TokenFormat::Jwt => self.signed_jwt(grant.client_id, ttl),
            TokenFormat::Opaque => self.mint(),
        };
        self.issued.insert(
            token.clone(),
            IssuedToken {
                vendor: grant.vendor,
                client_id: grant.client_id.to_owned(),
                expires_at: now.checked_add(ttl).unwrap_or(now + FOREVER),
                scope: grant.scope.map(str::to_owned),
                family: grant.family,
            },
        );
        token
    }

    /// `Ok` when `token` is live for `vendor` and its scope holds `required_scope`, if given.
    pub(super) fn check(
        &self,
        vendor: Vendor,
        token: &str,
        required_scope: Option<&str>,
    ) -> Result<(), TokenRejection> {
        let issued = self.issued.get(token).ok_or(TokenRejection::Unknown)?;
        if issued.vendor != vendor {
            return Err(TokenRejection::OtherVendor);
        }
        if Instant::now() >= issued.expires_at {
            return Err(TokenRejection::Expired);
        }
        let family_revoked = issued
            .family
            .and_then(|family| self.families.get(&family))
            .is_some_and(|family| family.revoked);
        if family_revoked {
            return Err(TokenRejection::FamilyRevoked);
        }
        if let Some(required) = required_scope {
            let granted = issued.scope.as_deref().unwrap_or_default();
            if !granted.split_whitespace().any(|scope| scope == required) {
                return Err(TokenRejection::InsufficientScope);
            }
        }
        Ok(())
    }

    /// Forgets one token and returns the client it was issued to; `None` when it was not a token
    /// of `vendor`.
    pub(super) fn revoke(&mut self, vendor: Vendor, token: &str) -> Option<String> {
        match self.issued.get(token) {
            Some(issued) if issued.vendor == vendor => {
                self.issued.remove(token).map(|issued| issued.client_id)
            }
            _ => None,
        }
    }

    /// Forgets every token, refresh tokens and families included; returns how many access tokens
    /// were still live.
    /// The refresh token each live family of `client_id` would accept next.
    pub(super) fn current_refresh_tokens(&self, client_id: &str) -> Vec<String> {
        self.families
            .values()
            .filter(|family| family.client_id == client_id && !family.revoked)
            .filter_map(|family| family.current_refresh.clone())
            .collect()
    }

    pub(super) fn revoke_access_tokens(&mut self) {
        self.issued.clear();
    }

    pub(super) fn revoke_all(&mut self) -> usize {
        let now = Instant::now();
        let live = self
            .issued
            .values()
            .filter(|token| token.expires_at > now)
            .count();
        self.issued.clear();
        self.refresh_tokens.clear();
        for family in self.families.values_mut() {
            family.revoked = true;
        }
        live
    }

    /// A new family for one user connection, without refresh tokens.
    pub(super) fn open_family(&mut self, vendor: Vendor, client_id: &str, scope: &str) -> FamilyId {
        let id = FamilyId::try_from(self.families.len()).unwrap_or(FamilyId::MAX);
        self.families.insert(
            id,
            Family {
                vendor,
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                current_refresh: None,
                revoked: false,
            },
        );
        id
    }

    /// A new family for a connection that asked for `offline_access`, and its first refresh token.
    pub(super) fn open_offline_family(
        &mut self,
        vendor: Vendor,
        client_id: &str,
        scope: &str,
    ) -> (FamilyId, String) {
        let id = self.open_family(vendor, client_id, scope);
        let refresh_token = self.mint();
        self.refresh_tokens.insert(refresh_token.clone(), id);
        if let Some(family) = self.families.get_mut(&id) {
            family.current_refresh = Some(refresh_token.clone());
        }
        (id, refresh_token)
    }

    /// Retires `presented` and returns its successor; a retired token revokes the family.
    pub(super) fn rotate(
        &mut self,
        vendor: Vendor,
        client_id: &str,
        presented: &str,
    ) -> Result<Rotation, RefreshRejection> {
        let id = *self
            .refresh_tokens
            .get(presented)
            .ok_or(RefreshRejection::Unknown)?;
        let successor = self.mint();
        let family = self
            .families
            .get_mut(&id)
            .ok_or(RefreshRejection::Unknown)?;
        // Another vendor never issued it, so to this one it is unknown, and no theft either.
        if family.vendor != vendor {
            return Err(RefreshRejection::Unknown);
        }
        if family.client_id != client_id {
            return Err(RefreshRejection::OtherClient);
        }
        if family.revoked {
            return Err(RefreshRejection::Revoked);
        }
        if family.current_refresh.as_deref() != Some(presented) {
            family.revoked = true;
            family.current_refresh = None;
            return Err(RefreshRejection::Reused);
        }
        family.current_refresh = Some(successor.clone());
        let scope = family.scope.clone();
        self.refresh_tokens.insert(successor.clone(), id);
        Ok(Rotation {
            family: id,
            scope,
            refresh_token: successor,
        })
    }

    fn signed_jwt(&mut self, client_id: &str, ttl: Duration) -> String {
        // `exp` is wall-clock time, as clients compare it with theirs.
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let jti = self.mint();
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
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

impl std::fmt::Debug for TokenRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the keys nor the tokens belong in a log line.
        f.debug_struct("TokenRegistry")
            .field("issued", &self.issued.len())
            .field("families", &self.families.len())
            .finish_non_exhaustive()
    }
}

fn random_key() -> Result<hmac::Key, Unspecified> {
    let mut key = [0u8; 32];
    rand::fill(&mut key)?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
