//! Operator commands that act on credentials outside the request path: `check --online` (mint one
//! token per provider and call its test path) and `reset` (forget a rejection).
//!
//! Both use the same store as the proxy, so a stored rejection is honoured and a rotated refresh
//! token is kept. When a proxy already owns the store, `reset` goes through its admin listener.
//! `accounts` (below) does the same for connected accounts.

pub mod accounts;

use std::sync::Arc;

use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};

use crate::config::{Config, GrantConfig};
use crate::credential::CredentialError;
use crate::metrics::{Metrics, MetricsError, Registry};
use crate::state::{State, StateError};
use crate::store::{self, StoreError, TokenStore};

/// Why an operator command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("unknown provider `{0}`")]
    UnknownProvider(String),
    #[error(
        "the store is in use by a running authrelay and the config has no admin listener to ask it"
    )]
    NoAdmin,
    #[error("the running authrelay's admin listener: {0}")]
    Admin(String),
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
}

/// The outcome of `check --online` for one provider.
#[derive(Debug)]
pub struct OnlineCheck {
    pub provider: String,
    pub ok: bool,
    /// One line for the operator; never a token or secret.
    pub summary: String,
}

/// Opens the configured store (opening a file store authenticates every record).
pub async fn open_store(config: &Config) -> Result<Arc<dyn TokenStore>, OperateError> {
    Ok(store::open(&config.store).await?)
}

/// Obtains one token per provider that needs no person (static, client credentials, refresh
/// token): at most one token request each, none for a provider whose secret was rejected before.
/// Then calls the provider's `test_path` below the upstream of its first route, when it has one.
pub async fn check_online(config: Config) -> Result<Vec<OnlineCheck>, OperateError> {
    let store = open_store(&config).await?;
    // A one-off run: its metrics are counted but never scraped.
    let metrics = Metrics::new(Registry::new())?;
    let state = State::build(config, &store, &metrics)?;
    let mut checks = Vec::new();
    for (name, provider) in &state.config.providers {
        let grant = match provider.grant {
            GrantConfig::Static { .. } => "static token",
            GrantConfig::ClientCredentials(_) => "client credentials",
            GrantConfig::RefreshToken { .. } => "refresh token",
            GrantConfig::AuthorizationCode(_) => {
                // Each account was connected by a person; `accounts list` shows their states.
                checks.push(OnlineCheck {
                    provider: name.clone(),
                    ok: true,
                    summary: "authorization code: see `authrelay accounts list` for the \
                              connected accounts"
                        .into(),
                });
                continue;
            }
        };
        if let Err(error) = state.credentials.token(name).await {
            checks.push(OnlineCheck {
                provider: name.clone(),
                ok: false,
                summary: describe(&error),
            });
            continue;
        }
        let route = state
            .config
            .routes
            .iter()
            .find(|route| &route.provider == name);
        let (Some(test_path), Some(route)) = (&provider.test_path, route) else {
            let summary = format!("{grant}: token obtained; no test path to call");
            checks.push(OnlineCheck {
                provider: name.clone(),
                ok: true,
                summary,
            });
            continue;
        };
        let mut headers = HeaderMap::new();
        let summary = match state.credentials.authorize(route, &mut headers).await {
            Err(error) => Err(describe(&error)),
            Ok(_) => {
                let uri = route.upstream.join(test_path);
                let mut request =
                    Request::new(Empty::new().map_err(|never| match never {}).boxed());
                *request.method_mut() = Method::GET;
                *request.headers_mut() = headers;
                *request.uri_mut() = uri.parse().unwrap_or_default();
                match state.upstream.send(route, request).await {
                    Ok(response) if response.status().is_success() => Ok(format!(
                        "{grant}: token obtained; GET {test_path} -> {}",
                        response.status()
                    )),
                    Ok(response) => Err(format!(
                        "{grant}: token obtained; GET {test_path} -> {}",
                        response.status()
                    )),
                    Err(error) => Err(format!(
                        "{grant}: token obtained; GET {test_path} failed: {error}"
                    )),
                }
            }
        };
        checks.push(match summary {
            Ok(summary) => OnlineCheck {
                provider: name.clone(),
                ok: true,
                summary,
            },
            Err(summary) => OnlineCheck {
                provider: name.clone(),
                ok: false,
                summary,
            },
        });
    }
    Ok(checks)
}

fn describe(error: &CredentialError) -> String {
    match error {
        CredentialError::Rejected { error, .. } => {
            format!("credentials rejected ({error}); not retried until reset or changed")
        }
        CredentialError::Unavailable { error, .. } => format!("no token: {error}"),
        CredentialError::BadHeader { header, .. } => {
            format!("token obtained, but header {header} cannot be built from it")
        }
        CredentialError::NoAccount { .. }
        | CredentialError::ReauthorizationRequired { .. }
        | CredentialError::Store { .. } => error.to_string(),
    }
}

/// Forgets the rejection of `provider`: in the store when no proxy holds it, otherwise through
/// the running proxy's admin listener (which also clears its memory). Returns what was done.
pub async fn reset(config: &Config, provider: &str) -> Result<String, OperateError> {
    if !config.providers.contains_key(provider) {
        return Err(OperateError::UnknownProvider(provider.to_string()));
    }
    match open_store(config).await {
        Ok(store) => {
            let cleared = store.clear_rejections(provider).await?;
            Ok(format!(
                "{provider}: reset in the store ({cleared} stored rejection(s) cleared)"
            ))
        }
        Err(OperateError::Store(StoreError::InUse { .. })) => {
            let admin = config.admin.as_ref().ok_or(OperateError::NoAdmin)?;
            let url = format!("http://{}/providers/{provider}/reset", admin.bind);
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|error| OperateError::Admin(error.to_string()))?;
            let mut request = client.post(&url);
            if let Some(token) = &admin.token {
                request = request.bearer_auth(token.expose());
            }
            let response = request
                .send()
                .await
                .map_err(|error| OperateError::Admin(error.without_url().to_string()))?;
            match response.status() {
                StatusCode::OK => Ok(format!(
                    "{provider}: reset by the running authrelay at {}",
                    admin.bind
                )),
                status => Err(OperateError::Admin(format!("answered {status}"))),
            }
        }
        Err(error) => Err(error),
    }
}
