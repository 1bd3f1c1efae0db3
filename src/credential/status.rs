//! What each provider's credentials look like right now: the one snapshot that `/readyz` shows
//! and that `/metrics` turns into gauges at scrape time.

use std::time::Duration;

use tokio::time::Instant;

use super::grant::GrantError;
use super::{Credentials, Source};
use crate::metrics::{ProviderGauges, names};

/// The state of one provider's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderState {
    /// A token is cached (or the provider has a static token), or the next request will get one.
    Ok,
    /// No request has needed a token yet.
    NotYetUsed,
    /// A token request is in flight (the first one, or a renewal).
    Renewing,
    /// The last token request failed; the next is allowed after `retry_in`.
    BackingOff,
    /// The vendor rejected the credentials: nothing is tried until the config changes or an
    /// operator resets the provider.
    CredentialsRejected,
    /// A person must authorize the grant again (authorization-code accounts; none yet).
    ReauthorizationRequired,
}

/// One provider's credentials at one moment. Holds no token and no secret.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub provider: String,
    /// The account of a per-account token; `None` for the provider's own token.
    pub account: Option<String>,
    pub state: ProviderState,
    /// Time left on the cached token (zero once expired); `None` when no token is cached or
    /// the token never expires (static).
    pub expires_in: Option<Duration>,
    /// When backing off: time until the next token request is allowed.
    pub retry_in: Option<Duration>,
    /// Why the provider is rejected or backing off (statuses and OAuth codes only).
    pub error: Option<GrantError>,
}

// === impl ProviderState ===

impl ProviderState {
    /// The state's name, as `/readyz` and the `state` metric label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Ok => names::STATE_OK,
            ProviderState::NotYetUsed => names::STATE_NOT_YET_USED,
            ProviderState::Renewing => names::STATE_RENEWING,
            ProviderState::BackingOff => names::STATE_BACKING_OFF,
            ProviderState::CredentialsRejected => names::STATE_CREDENTIALS_REJECTED,
            ProviderState::ReauthorizationRequired => names::STATE_REAUTHORIZATION_REQUIRED,
        }
    }
}

// === impl ProviderStatus ===

impl ProviderStatus {
    /// The gauges a scrape shows for this provider.
    pub fn gauges(&self) -> ProviderGauges<'_> {
        ProviderGauges {
            provider: &self.provider,
            account: self.account.as_deref().unwrap_or(names::NO_ACCOUNT),
            state: self.state.as_str(),
            expires_in: self.expires_in,
        }
    }
}

// === impl Credentials ===

impl Credentials {
    /// Every provider's status now, sorted by provider name.
    pub fn snapshot(&self) -> Vec<ProviderStatus> {
        let now = Instant::now();
        let mut statuses: Vec<ProviderStatus> = self
            .sources
            .iter()
            .flat_map(|(name, source)| match source {
                Source::Static(_) => vec![ProviderStatus {
                    provider: name.clone(),
                    account: None,
                    state: ProviderState::Ok,
                    expires_in: None,
                    retry_in: None,
                    error: None,
                }],
                Source::Endpoint(cache) => vec![cache.status(now)],
                Source::Accounts(set) => set.statuses(now),
            })
            .collect();
        statuses.sort_by(|a, b| (&a.provider, &a.account).cmp(&(&b.provider, &b.account)));
        statuses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_metric_label_set() {
        let states = [
            ProviderState::Ok,
            ProviderState::NotYetUsed,
            ProviderState::Renewing,
            ProviderState::BackingOff,
            ProviderState::CredentialsRejected,
            ProviderState::ReauthorizationRequired,
        ];
        assert_eq!(states.map(ProviderState::as_str), names::PROVIDER_STATES);
        for state in states {
            let json = serde_json::to_value(state).unwrap_or_default();
            assert_eq!(json, state.as_str());
        }
    }
}
