//! Step 2 of the request path: put the route's credentials on the request.
//!
//! `Credentials` holds one source per provider: a static token, or a [`TokenCache`] fed by the
//! provider's token endpoint. `authorize` writes `Authorization` and the route's header templates.

mod accounts;
mod cache;
mod grant;
mod status;
mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use zeroize::Zeroize;

use crate::config::{Config, GrantConfig, ProviderConfig, RouteAccount, RouteConfig};
use crate::metrics::Metrics;
use crate::secret::digest_name;
use crate::store::{CredentialKey, StoreError, TokenStore};
use crate::trust;

pub use accounts::AccountSet;
pub use cache::{CacheError, Lookup, TokenCache};
/// For [`crate::fuzzing`] only.
pub(crate) use grant::classify;
pub use grant::{GrantError, GrantRequest, ReadFailure, TokenClient, read_capped, retry_after};
pub use status::{ProviderState, ProviderStatus};
pub use token::{AccessToken, Issued, LifetimeSource, TokenResponseError};

/// A static token never expires on our side (the vendor's 401 says otherwise); a century stands
/// for "never" without overflowing `Instant`.
pub const STATIC_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where each provider's token comes from.
pub struct Credentials {
    sources: HashMap<String, Source>,
}

enum Source {
    Static(Arc<AccessToken>),
    Endpoint(Arc<TokenCache>),
    Accounts(Arc<AccountSet>),
}

/// The credential one request uses: a provider's own, or one connected account's.
#[derive(Clone)]
pub enum Credential {
    Static(Arc<AccessToken>),
    Cached(Arc<TokenCache>),
}

/// Why a request cannot be given credentials. Carries the provider name, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    #[error("provider {provider}: {error}; no token is requested until the configuration changes")]
    Rejected { provider: String, error: GrantError },
    #[error("provider {provider}: {error}")]
    Unavailable {
        provider: String,
        error: GrantError,
        retry_after: Duration,
    },
    /// A header template rendered to an invalid value (a token-response field with a line break).
    #[error("provider {provider}: header {header} cannot be built from the token response")]
    BadHeader { provider: String, header: String },
    /// The route names no account, or one that is not connected.
    #[error("provider {provider}: no connected account {}", .account.as_deref().unwrap_or("was named"))]
    NoAccount {
        provider: String,
        account: Option<String>,
    },
    /// The account's tokens are gone for good; a person must connect it again.
    #[error("provider {provider}: account {account} must be connected again")]
    ReauthorizationRequired { provider: String, account: String },
    /// The store could not say whether the account exists.
    #[error("provider {provider}: the token store cannot be read")]
    Store { provider: String },
}

/// Why the credential sources could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum CredentialSetupError {
    #[error("providers.{provider}: {error}")]
    Tls {
        provider: String,
        #[source]
        error: trust::TrustError,
    },
    #[error("providers.{provider}: token HTTP client: {error}")]
    Client {
        provider: String,
        #[source]
        error: reqwest::Error,
    },
    #[error("providers.{provider}.token: {error}")]
    StaticToken {
        provider: String,
        #[source]
        error: TokenResponseError,
    },
}

// === impl Credentials ===

/// The HTTP client for `provider`'s token endpoint, trusting its `ca`.
fn token_client(
    name: &str,
    provider: &ProviderConfig,
) -> Result<TokenClient, CredentialSetupError> {
    let tls =
        trust::client_config(provider.ca.as_ref()).map_err(|error| CredentialSetupError::Tls {
            provider: name.to_string(),
            error,
        })?;
    TokenClient::new(tls).map_err(|error| CredentialSetupError::Client {
        provider: name.to_string(),
        error,
    })
}

/// Everything a token cache depends on: the credential fingerprint and every other provider
/// setting (scheme, lifetimes, trusted roots...). Equal identities across a reload keep the cache.
fn identity(provider: &ProviderConfig) -> String {
    // Debug shows secrets as [redacted]; the fingerprint covers them.
    let settings = digest_name(format!("{provider:?}").as_bytes());
    format!("{}:{settings}", fingerprint(provider))
}

/// Names the settings a token depends on: when any changes (a new secret, another scope), the
/// stored token, refresh token and rejection of the old settings no longer apply.
fn fingerprint(provider: &ProviderConfig) -> String {
    let mut material = Vec::new();
    let mut add = |part: &str| {
        material.extend_from_slice(&(part.len() as u64).to_le_bytes());
        material.extend_from_slice(part.as_bytes());
    };
    let (grant, endpoint, seed) = match &provider.grant {
        GrantConfig::Static { token } => ("static", None, Some(token)),
        GrantConfig::ClientCredentials(endpoint) => ("client_credentials", Some(endpoint), None),
        GrantConfig::RefreshToken {
            endpoint,
            refresh_token,
        } => ("refresh_token", Some(endpoint), Some(refresh_token)),
        GrantConfig::AuthorizationCode(code) => return account_fingerprint(&code.endpoint),
    };
    add(grant);
    if let Some(endpoint) = endpoint {
        add(endpoint.token_url.as_str());
        add(&format!("{:?}", endpoint.client_auth));
        add(endpoint.client_id.expose());
        add(endpoint.client_secret.as_ref().map_or("", |s| s.expose()));
        for scope in &endpoint.scopes {
            add(scope);
        }
        for (name, value) in &endpoint.extra_params {
            add(name);
            add(value);
        }
    }
    add(seed.map_or("", |s| s.expose()));
    let name = digest_name(&material);
    material.zeroize();
    name
}

/// Names what connected accounts' tokens are bound to: the vendor's token endpoint and the client
/// id. A new client secret or other scopes keep the accounts a person connected.
fn account_fingerprint(endpoint: &crate::config::TokenEndpoint) -> String {
    let material = format!(
        "authorization_code\n{}\n{}",
        endpoint.token_url,
        endpoint.client_id.expose()
    );
    digest_name(material.as_bytes())
}

impl Credentials {
    /// One source per provider of `config`; token endpoints are not contacted until first use.
    /// Token caches count into `metrics`.
    pub fn build(
        config: &Config,
        store: &Arc<dyn TokenStore>,
        previous: Option<&Credentials>,
        metrics: &Metrics,
    ) -> Result<Credentials, CredentialSetupError> {
        let mut sources = HashMap::new();
        for (name, provider) in &config.providers {
            let identity = identity(provider);
            let fingerprint = fingerprint(provider);
            // Same credential: keep its cache (its one flight, refresh token and rejection
            // state), with the reload's other settings if they changed.
            if let Some(Source::Accounts(set)) = previous.and_then(|p| p.sources.get(name))
                && set.fingerprint() == fingerprint
            {
                if set.identity() != identity {
                    set.update(
                        Arc::clone(provider),
                        token_client(name, provider)?,
                        identity,
                    );
                }
                sources.insert(name.clone(), Source::Accounts(Arc::clone(set)));
                continue;
            }
            if let Some(Source::Endpoint(cache)) = previous.and_then(|p| p.sources.get(name))
                && cache.key().fingerprint == fingerprint
            {
                if cache.identity() != identity {
                    cache.update(
                        Arc::clone(provider),
                        token_client(name, provider)?,
                        identity,
                    );
                }
                sources.insert(name.clone(), Source::Endpoint(Arc::clone(cache)));
                continue;
            }
            let source = match &provider.grant {
                GrantConfig::Static { token } => {
                    let token = AccessToken::new(
                        token.clone(),
                        &provider.scheme,
                        (STATIC_LIFETIME, LifetimeSource::Static),
                        Default::default(),
                    )
                    .map_err(|error| CredentialSetupError::StaticToken {
                        provider: name.clone(),
                        error,
                    })?;
                    Source::Static(Arc::new(token))
                }
                GrantConfig::ClientCredentials(_) | GrantConfig::RefreshToken { .. } => {
                    let client = token_client(name, provider)?;
                    let key = CredentialKey {
                        provider: name.clone(),
                        account: None,
                        fingerprint,
                    };
                    let store = Arc::clone(store);
                    let cache = TokenCache::new(
                        Arc::clone(provider),
                        client,
                        store,
                        key,
                        identity,
                        metrics,
                    );
                    // New credentials (a rotated client secret), same refresh-token lineage:
                    // the configured refresh token was retired at the first rotation, so the
                    // newest one the old cache holds must carry over.
                    if let Some(Source::Endpoint(old)) = previous.and_then(|p| p.sources.get(name))
                        && let Some(newest) = old.refresh_token_of_lineage(provider)
                    {
                        cache.adopt_refresh_token(newest);
                    }
                    Source::Endpoint(Arc::new(cache))
                }
                GrantConfig::AuthorizationCode(_) => {
                    let metrics = metrics.provider(name, cache::grant_name(&provider.grant));
                    Source::Accounts(Arc::new(AccountSet::new(
                        Arc::clone(provider),
                        token_client(name, provider)?,
                        Arc::clone(store),
                        fingerprint,
                        identity,
                        metrics,
                    )))
                }
            };
            sources.insert(name.clone(), source);
        }
        Ok(Credentials { sources })
    }

    /// The credential of `provider`, or of its connected `account`.
    pub async fn credential(
        &self,
        provider: &str,
        account: Option<&str>,
    ) -> Result<Credential, CredentialError> {
        match (self.sources.get(provider), account) {
            (Some(Source::Static(token)), _) => Ok(Credential::Static(Arc::clone(token))),
            (Some(Source::Endpoint(cache)), _) => Ok(Credential::Cached(Arc::clone(cache))),
            (Some(Source::Accounts(set)), Some(account)) => match set.cache(account).await {
                Ok(Some(cache)) => Ok(Credential::Cached(cache)),
                Ok(None) => Err(CredentialError::NoAccount {
                    provider: provider.to_string(),
                    account: Some(account.to_string()),
                }),
                Err(error) => {
                    tracing::error!(provider, %error, "cannot read the token store");
                    Err(CredentialError::Store {
                        provider: provider.to_string(),
                    })
                }
            },
            (Some(Source::Accounts(_)), None) => Err(CredentialError::NoAccount {
                provider: provider.to_string(),
                account: None,
            }),
            // Config validation guarantees every route's provider exists.
            (None, _) => Err(CredentialError::Unavailable {
                provider: provider.to_string(),
                error: GrantError::Transient {
                    reason: "unknown provider".into(),
                },
                retry_after: Duration::from_secs(60),
            }),
        }
    }

    /// Sets `Authorization` and the route's headers for a route that names its account (or needs
    /// none); returns the token used.
    pub async fn authorize(
        &self,
        route: &RouteConfig,
        headers: &mut HeaderMap,
    ) -> Result<Arc<AccessToken>, CredentialError> {
        let account = match &route.account {
            RouteAccount::Fixed(account) => Some(account.as_str()),
            RouteAccount::None | RouteAccount::FromHeader(_) => None,
        };
        self.credential(&route.provider, account)
            .await?
            .authorize(route, headers)
            .await
    }

    /// A valid token for `provider`'s own credential.
    pub async fn token(&self, provider: &str) -> Result<Arc<AccessToken>, CredentialError> {
        self.credential(provider, None).await?.token().await
    }

    /// The connected accounts of `provider`, when it has them.
    pub fn accounts(&self, provider: &str) -> Option<&Arc<AccountSet>> {
        match self.sources.get(provider)? {
            Source::Accounts(set) => Some(set),
            _ => None,
        }
    }

    /// Loads every connected account from the store, so that listings and metrics show them
    /// before their first request.
    pub async fn restore_accounts(&self) -> Result<(), StoreError> {
        for source in self.sources.values() {
            if let Source::Accounts(set) = source {
                set.restore_all().await?;
            }
        }
        Ok(())
    }

    /// Resolves once every token request in flight has finished and written its outcome: a
    /// shutdown must not cut a refresh between the vendor's rotation and the store write.
    pub async fn settle(&self) {
        for source in self.sources.values() {
            match source {
                Source::Endpoint(cache) => cache.settle().await,
                Source::Accounts(set) => {
                    for cache in set.loaded() {
                        cache.settle().await;
                    }
                }
                Source::Static(_) => {}
            }
        }
    }

    /// The token cached for `provider`, valid or not; `None` before the first request.
    pub fn cached(&self, provider: &str) -> Option<Arc<AccessToken>> {
        match self.sources.get(provider)? {
            Source::Static(token) => Some(Arc::clone(token)),
            Source::Endpoint(cache) => cache.current(),
            Source::Accounts(_) => None,
        }
    }

    /// Clears a rejection or backoff of `provider`, in memory and in `store` (operator reset).
    /// Returns how many stored records were cleared.
    pub async fn reset(&self, provider: &str, store: &dyn TokenStore) -> Result<usize, StoreError> {
        // The store first: in a fleet every flight reads it, and would block again on the
        // rejection still written there.
        let cleared = store.clear_rejections(provider).await;
        match self.sources.get(provider) {
            Some(Source::Endpoint(cache)) => cache.unblock(),
            Some(Source::Accounts(set)) => set.loaded().iter().for_each(|cache| cache.unblock()),
            _ => {}
        }
        cleared
    }
}

// === impl Credential ===

impl Credential {
    /// A valid token: cached, or obtained by the one request in flight.
    pub async fn token(&self) -> Result<Arc<AccessToken>, CredentialError> {
        match self {
            Credential::Static(token) => Ok(Arc::clone(token)),
            Credential::Cached(cache) => {
                let key = cache.key();
                let provider = || key.provider.clone();
                cache.get().await.map(|(token, _)| token).map_err(|error| {
                    match (error, &key.account) {
                        (CacheError::Rejected(error), Some(account))
                            if error.needs_reauthorization() =>
                        {
                            CredentialError::ReauthorizationRequired {
                                provider: provider(),
                                account: account.clone(),
                            }
                        }
                        (CacheError::Rejected(error), _) => CredentialError::Rejected {
                            provider: provider(),
                            error,
                        },
                        (CacheError::Unavailable { error, retry_after }, _) => {
                            CredentialError::Unavailable {
                                provider: provider(),
                                error,
                                retry_after,
                            }
                        }
                    }
                })
            }
        }
    }

    /// Sets `Authorization` and the route's headers on `headers`; returns the token used, so a 401
    /// can invalidate exactly that one.
    pub async fn authorize(
        &self,
        route: &RouteConfig,
        headers: &mut HeaderMap,
    ) -> Result<Arc<AccessToken>, CredentialError> {
        let token = self.token().await?;
        headers.insert(AUTHORIZATION, token.authorization().clone());
        for (name, template) in &route.headers {
            let value = template.render(|field| token.field(field)).map_err(|_| {
                CredentialError::BadHeader {
                    provider: route.provider.clone(),
                    header: name.to_string(),
                }
            })?;
            headers.insert(name.clone(), value);
        }
        Ok(token)
    }

    /// True when a new token can be obtained after a 401: not a static token, and not a
    /// connected account without a refresh token (Xref's live until deauthorized: a 401 from
    /// one endpoint must not throw away the only token there is).
    pub fn can_refresh(&self) -> bool {
        match self {
            Credential::Cached(cache) => cache.renewable(),
            Credential::Static(_) => false,
        }
    }

    /// Forgets `used` if it is still cached (the vendor answered 401 to it). Returns false when
    /// the credential is cooling down after a refused replay (no refresh).
    pub fn invalidate(&self, used: &Arc<AccessToken>) -> bool {
        match self {
            Credential::Cached(cache) if cache.renewable() => cache.invalidate(used),
            _ => false,
        }
    }

    /// A replay with a fresh token was refused too (see [`TokenCache::invalidate`]).
    pub fn note_replay_failed(&self) {
        if let Credential::Cached(cache) = self {
            cache.note_replay_failed();
        }
    }
}
