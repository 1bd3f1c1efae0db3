//! Everything the sandbox remembers between requests: knobs, registered clients, Cross River
//! strikes, issued tokens and stats. One mutex, never held across an `.await`.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::token_request::TokenRequest;
use super::tokens::{IssueError, TokenRegistry, TokenRejection};
use super::{ExpiresIn, Failure, SandboxStats, TokenFormat, Vendor};
use crate::secret::Secret;

/// Cross River locks a client after this many wrong secrets (VENDORS.md §2).
const STRIKES_BEFORE_LOCK: u32 = 3;

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
        // `TokenRequest` never holds client_secret among its params.
        client.last_params = request.params.clone();
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
        vendor: Vendor,
        client_id: &str,
        ttl: Duration,
        format: TokenFormat,
    ) -> Result<String, IssueError> {
        self.lock().tokens.issue(vendor, client_id, ttl, format)
    }

    pub(super) fn check_token(&self, vendor: Vendor, token: &str) -> Result<(), TokenRejection> {
        self.lock().tokens.check(vendor, token)
    }

    pub(super) fn is_partner_token(&self, token: &str) -> bool {
        let presented = Secret::new(token);
        self.lock()
            .partner_tokens
            .iter()
            .any(|known| known.same_as(&presented))
    }

    /// Returns how many live tokens were revoked.
    pub(super) fn revoke_all_tokens(&self) -> usize {
        self.lock().tokens.revoke_all()
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
