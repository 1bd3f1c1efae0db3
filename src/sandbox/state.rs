//! Everything the sandbox remembers between requests: knobs, registered clients, Cross River
//! strikes, authorization codes, issued tokens and their families, and stats. One mutex, never
//! held across an `.await`.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::codes::{ApprovedCode, CodeExchange, CodeRegistry, CodeRejection};
use super::token_request::TokenRequest;
use super::tokens::{
    FamilyId, RefreshRejection, Rotation, TokenGrant, TokenRegistry, TokenRejection,
};
use super::{ExpiresIn, Failure, SandboxStats, TokenFormat, Vendor};
use crate::secret::Secret;

/// Cross River locks a client after this many wrong secrets (VENDORS.md §2).
const STRIKES_BEFORE_LOCK: u32 = 3;

/// Stands in the stats for a parameter whose value is a credential.
const REDACTED: &str = "[redacted]";

/// The knobs tests and scripts turn at run time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Knobs {
    /// `None`: each vendor's default lifetime.
    pub token_ttl: Option<Duration>,
    pub expires_in: ExpiresIn,
    pub token_format: TokenFormat,
    /// How many token requests still fail, and how.
    pub fail_next: (u32, Failure),
    pub latency: Duration,
}

/// Whether a client_id/secret pair is one a vendor knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientCheck {
    Valid,
    UnknownClient,
    MissingSecret,
    WrongSecret,
}

/// Shared by the server task and the handle.
#[derive(Debug)]
pub(super) struct SandboxState {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    knobs: Knobs,
    clients: HashMap<(Vendor, String), Secret>,
    partner_tokens: Vec<Secret>,
    /// Wrong secrets per Cross River client_id; at [`STRIKES_BEFORE_LOCK`] the client is locked.
    strikes: HashMap<String, u32>,
    codes: CodeRegistry,
    tokens: TokenRegistry,
    stats: SandboxStats,
}

// === impl SandboxState ===

impl SandboxState {
    pub(super) fn new(
        clients: Vec<(Vendor, String, Secret)>,
        partner_tokens: Vec<Secret>,
        token_ttl: Option<Duration>,
    ) -> io::Result<Self> {
        let tokens = TokenRegistry::new().map_err(|_| io::Error::other("no random signing key"))?;
        let inner = Inner {
            knobs: Knobs {
                token_ttl,
                expires_in: ExpiresIn::default(),
                token_format: TokenFormat::default(),
                fail_next: (0, Failure::ServerError),
                latency: Duration::ZERO,
            },
            clients: clients
                .into_iter()
                .map(|(vendor, id, secret)| ((vendor, id), secret))
                .collect(),
            partner_tokens,
            strikes: HashMap::new(),
            codes: CodeRegistry::default(),
            tokens,
            stats: SandboxStats::default(),
        };
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave these maps half-updated in a way that matters to a fake.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn knobs(&self) -> Knobs {
        self.lock().knobs
    }

    pub(super) fn update_knobs(&self, change: impl FnOnce(&mut Knobs)) {
        change(&mut self.lock().knobs);
    }

    /// Consumes one pending injected failure, if any.
    pub(super) fn take_injected_failure(&self) -> Option<Failure> {
        let mut inner = self.lock();
        let (remaining, failure) = &mut inner.knobs.fail_next;
        if *remaining == 0 {
            return None;
        }
        *remaining -= 1;
        Some(*failure)
    }

    /// Counts a token request; `None` when its body or credentials could not even be read.
    pub(super) fn record_token_request(&self, request: Option<&TokenRequest>) {
        let mut inner = self.lock();
        inner.stats.token_requests += 1;
        let Some(request) = request else { return };
        let Some(client_id) = request.client_id.as_ref() else {
            return;
        };
        let client = inner.stats.clients.entry(client_id.clone()).or_default();
        client.token_requests += 1;
        client.last_client_auth = request.client_auth;
        client.last_scope = request.scope().map(str::to_owned);
        // `TokenRequest` never holds client_secret, codes or refresh tokens among its params;
        // that they were sent is still worth seeing.
        client.last_params = request.params.clone();
        for name in request.secret_params.keys() {
            client.last_params.insert(name.clone(), REDACTED.to_owned());
        }
    }

    pub(super) fn count_request(&self) {
        self.lock().stats.requests += 1;
    }

    pub(super) fn count_api_request(&self) {
        self.lock().stats.api_requests += 1;
    }

    pub(super) fn check_client(
        &self,
        vendor: Vendor,
        client_id: &str,
        secret: Option<&Secret>,
    ) -> ClientCheck {
        let inner = self.lock();
        let Some(known) = inner.clients.get(&(vendor, client_id.to_owned())) else {
            return ClientCheck::UnknownClient;
        };
        match secret {
            None => ClientCheck::MissingSecret,
            Some(secret) if known.same_as(secret) => ClientCheck::Valid,
            Some(_) => ClientCheck::WrongSecret,
        }
    }

    /// Counts a wrong secret against a Cross River client.
    pub(super) fn add_strike(&self, client_id: &str) {
        *self.lock().strikes.entry(client_id.to_owned()).or_default() += 1;
    }

    pub(super) fn is_locked(&self, client_id: &str) -> bool {
        self.lock()
            .strikes
            .get(client_id)
            .is_some_and(|strikes| *strikes >= STRIKES_BEFORE_LOCK)
    }

    pub(super) fn issue_token(
        &self,
        grant: TokenGrant<'_>,
        ttl: Duration,
        format: TokenFormat,
    ) -> String {
        self.lock().tokens.issue(grant, ttl, format)
    }

    pub(super) fn check_token(
        &self,
        vendor: Vendor,
        token: &str,
        required_scope: Option<&str>,
    ) -> Result<(), TokenRejection> {
        self.lock().tokens.check(vendor, token, required_scope)
    }

    /// Forgets one Xref token at the client's request, counting it for the client it was issued
    /// to; false when there was no such token.
    pub(super) fn deauthorize_xref_token(&self, token: &str) -> bool {
        let mut inner = self.lock();
        let Some(client_id) = inner.tokens.revoke(Vendor::Xref, token) else {
            return false;
        };
        inner
            .stats
            .clients
            .entry(client_id)
            .or_default()
            .deauthorizations += 1;
        true
    }

    /// Remembers what the user approved; returns the code to redirect with.
    pub(super) fn approve_code(&self, approved: ApprovedCode) -> String {
        let mut inner = self.lock();
        let code = inner.tokens.mint();
        inner.codes.insert(code.clone(), approved);
        code
    }

    /// Consumes `code`, counting a successful exchange for the client that presented it.
    pub(super) fn redeem_code(
        &self,
        code: &str,
        exchange: CodeExchange<'_>,
    ) -> Result<ApprovedCode, CodeRejection> {
        let mut inner = self.lock();
        let approved = inner.codes.redeem(code, exchange)?;
        let client = inner.stats.clients.entry(exchange.client_id.to_owned());
        client.or_default().code_grants += 1;
        Ok(approved)
    }

    /// A new token family for one user connection, without refresh tokens.
    pub(super) fn open_family(&self, vendor: Vendor, client_id: &str, scope: &str) -> FamilyId {
        self.lock().tokens.open_family(vendor, client_id, scope)
    }

    /// A new token family with its first refresh token.
    pub(super) fn open_offline_family(
        &self,
        vendor: Vendor,
        client_id: &str,
        scope: &str,
    ) -> (FamilyId, String) {
        self.lock()
            .tokens
            .open_offline_family(vendor, client_id, scope)
    }

    /// Rotates a refresh token, counting the grant or the family revoked by its reuse.
    pub(super) fn rotate_refresh_token(
        &self,
        vendor: Vendor,
        client_id: &str,
        presented: &str,
    ) -> Result<Rotation, RefreshRejection> {
        let mut inner = self.lock();
        let rotated = inner.tokens.rotate(vendor, client_id, presented);
        let client = inner.stats.clients.entry(client_id.to_owned()).or_default();
        match &rotated {
            Ok(_) => client.refresh_grants += 1,
            Err(RefreshRejection::Reused) => client.families_revoked += 1,
            Err(_) => {}
        }
        rotated
    }

    pub(super) fn is_partner_token(&self, token: &str) -> bool {
        let presented = Secret::new(token);
        self.lock()
            .partner_tokens
            .iter()
            .any(|known| known.same_as(&presented))
    }

    pub(super) fn current_refresh_tokens(&self, client_id: &str) -> Vec<String> {
        self.lock().tokens.current_refresh_tokens(client_id)
    }

    /// Returns how many live tokens were revoked.
    pub(super) fn revoke_all_tokens(&self) -> usize {
        self.lock().tokens.revoke_all()
    }

    pub(super) fn revoke_access_tokens(&self) {
        self.lock().tokens.revoke_access_tokens();
    }

    pub(super) fn stats(&self) -> SandboxStats {
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        for (client_id, client) in &mut stats.clients {
            client.locked = inner
                .strikes
                .get(client_id)
                .is_some_and(|strikes| *strikes >= STRIKES_BEFORE_LOCK);
        }
        stats
    }
}
