//! Connected accounts: the authorization-code flow that creates them (`begin` sends a person to
//! the vendor, `complete` takes the code back), and what operators do with them afterwards
//! (`list`, `remove`, Crossbeam's `organizations`).
//!
//! The admin listener serves these over HTTP; the CLI calls the same functions when no proxy owns
//! the store.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{
    AuthorizationCode, ClientAuth, GrantConfig, TokenEndpoint, check_account_name,
};
use crate::credential::{
    AccessToken, AccountSet, GrantError, GrantRequest, LifetimeSource, ProviderState, ReadFailure,
    STATIC_LIFETIME, read_capped,
};
use crate::secret::Secret;
use crate::state::State;
use crate::store::{AccountInfo, CredentialRecord, StoreError};

/// RFC 6749 section 10.12: `state` binds the callback to the request that started it. Ten
/// minutes is ample for a person to log in and approve.
const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// Authorizations started and not yet completed; beyond this the oldest are dropped, so a
/// script hammering `/connect` cannot grow memory.
const MAX_PENDING: usize = 256;
/// Random bytes in a `state` and in a PKCE verifier (RFC 7636 asks for at least 32).
const RANDOM_BYTES: usize = 32;
/// Longest answer read from a revocation endpoint or `users/me`.
const MAX_ANSWER: usize = 256 * 1024;

/// Why a connect, callback or account operation failed. Never holds a code, token or secret.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    #[error("provider {0} does not connect accounts (its grant is not authorization_code)")]
    NotAuthorizationCode(String),
    #[error("{0}")]
    BadAccountName(String),
    #[error("no connected account {account} for provider {provider}")]
    UnknownAccount { provider: String, account: String },
    #[error(
        "the authorization state is unknown, already used or expired; start the connection again"
    )]
    BadState,
    #[error("the callback carries no code")]
    NoCode,
    #[error("the vendor did not authorize the connection ({0})")]
    Denied(String),
    #[error("{}", exchange_message(.0))]
    Exchange(GrantError),
    #[error("the vendor's revocation endpoint failed: {0}")]
    Revoke(String),
    #[error("provider {0} has no organizations endpoint (test_path) or no route to call it on")]
    NoOrganizations(String),
    #[error("{0}")]
    Vendor(String),
    #[error("token store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot get the account's token: {0}")]
    Token(String),
}

fn exchange_message(error: &GrantError) -> String {
    match error {
        GrantError::Rejected {
            oauth_error: Some(code),
            ..
        } if code == "invalid_grant" => "the vendor refused the code (invalid_grant): it expired \
             or was already used; start the connection again"
            .to_owned(),
        other => format!("the code exchange failed: {other}"),
    }
}

/// Authorizations a person has started and not yet finished, by `state`.
#[derive(Default)]
pub struct PendingAuthorizations {
    pending: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    provider: String,
    account: String,
    /// The PKCE verifier, when the authorize request carried its challenge.
    verifier: Option<Secret>,
    expires_at: Instant,
}

/// A connection completed by a callback.
#[derive(Debug, Clone, Serialize)]
pub struct Connected {
    pub provider: String,
    pub account: String,
}

/// One connected account, as listings show it. Holds no token.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AccountView {
    pub provider: String,
    pub account: String,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Seconds left on the access token; `None` when none is held.
    pub expires_in_seconds: Option<u64>,
    pub scopes: Vec<String>,
    /// `ok`, `refresh_failing`, `reauthorization_required` or `credentials_rejected`.
    pub state: String,
    pub last_error: Option<String>,
}

/// An organization of a Crossbeam user.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Organization {
    pub name: String,
    pub uuid: String,
}

/// What `remove` did at the vendor before deleting the account.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Removed {
    pub provider: String,
    pub account: String,
    /// `revoked` (the vendor's endpoint answered 2xx), `no_endpoint`, `no_token` or `skipped`.
    pub revocation: String,
}

// === impl PendingAuthorizations ===

impl PendingAuthorizations {
    /// Starts a connection of `account` at `provider`: the vendor URL to send the person to.
    pub fn begin(
        &self,
        state: &State,
        provider: &str,
        account: &str,
    ) -> Result<String, AccountError> {
        let (_, code) = authorization_code(state, provider)?;
        check_account_name(account).map_err(AccountError::BadAccountName)?;
        let state_value = random_text();
        let verifier = code.pkce.then(|| Secret::new(random_text()));
        let url = authorize_url(code, &state_value, verifier.as_ref());
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|_, p| p.expires_at > now);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.expires_at)
                .map(|(key, _)| key.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state_value,
            Pending {
                provider: provider.to_owned(),
                account: account.to_owned(),
                verifier,
                expires_at: now + STATE_LIFETIME,
            },
        );
        Ok(url)
    }

    /// Finishes a connection from the vendor's redirect: checks `state` (single use, bound to
    /// the provider), exchanges the code and stores the account. The query's `error`, if any,
    /// ends it without a token request.
    pub async fn complete(
        &self,
        state: &State,
        provider: &str,
        query: Option<&str>,
    ) -> Result<Connected, AccountError> {
        let params: HashMap<String, String> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let pending = params
            .get("state")
            .and_then(|value| self.take(value))
            .filter(|pending| pending.provider == provider)
            .ok_or(AccountError::BadState)?;
        if let Some(error) = params.get("error") {
            return Err(AccountError::Denied(oauth_code_text(error)));
        }
        let code = params
            .get("code")
            .filter(|code| !code.is_empty())
            .map(|code| Secret::new(code.as_str()))
            .ok_or(AccountError::NoCode)?;
        let (set, config) = authorization_code(state, provider)?;
        let settings = set.provider();
        let grant = GrantRequest::AuthorizationCode {
            code: &code,
            redirect_uri: config.redirect_uri.as_str(),
            code_verifier: pending.verifier.as_ref(),
        };
        let issued = set
            .client()
            .request(&settings, &config.endpoint, grant)
            .await
            .map_err(AccountError::Exchange)?;
        let record = connected_record(&issued.token, issued.refresh_token, &config.endpoint.scopes);
        set.connect(&pending.account, &record).await?;
        tracing::info!(provider, account = %pending.account, "account connected");
        Ok(Connected {
            provider: provider.to_owned(),
            account: pending.account,
        })
    }

    /// Removes and returns the pending authorization of `state_value`, if it has not expired.
    fn take(&self, state_value: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let found = pending.remove(state_value)?;
        (found.expires_at > Instant::now()).then_some(found)
    }
}

/// The account set and authorization-code settings of `provider`.
fn authorization_code<'a>(
    state: &'a State,
    provider: &str,
) -> Result<(&'a std::sync::Arc<AccountSet>, &'a AuthorizationCode), AccountError> {
    let config = state
        .config
        .providers
        .get(provider)
        .ok_or_else(|| AccountError::UnknownProvider(provider.to_owned()))?;
    let GrantConfig::AuthorizationCode(code) = &config.grant else {
        return Err(AccountError::NotAuthorizationCode(provider.to_owned()));
    };
    let set = state
        .credentials
        .accounts(provider)
        .ok_or_else(|| AccountError::NotAuthorizationCode(provider.to_owned()))?;
    Ok((set, code))
}

/// The vendor's authorize URL: the standard parameters (RFC 6749 section 4.1.1), the PKCE
/// challenge (RFC 7636), and the provider's extra parameters such as `audience`.
fn authorize_url(code: &AuthorizationCode, state_value: &str, verifier: Option<&Secret>) -> String {
    let client_id = code.endpoint.client_id.expose();
    let encoded_id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let base = code.authorize_url.replace("{client_id}", &encoded_id);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", code.redirect_uri.as_str())
        .append_pair("state", state_value);
    if !code.endpoint.scopes.is_empty() {
        query.append_pair("scope", &code.endpoint.scopes.join(" "));
    }
    if let Some(verifier) = verifier {
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.expose().as_bytes());
        query
            .append_pair("code_challenge", &URL_SAFE_NO_PAD.encode(digest.as_ref()))
            .append_pair("code_challenge_method", "S256");
    }
    for (name, value) in &code.endpoint.extra_params {
        query.append_pair(name, value);
    }
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", query.finish())
}

/// The record of a freshly connected account.
fn connected_record(
    token: &AccessToken,
    refresh_token: Option<Secret>,
    requested_scopes: &[String],
) -> CredentialRecord {
    let mut stored = token.to_stored();
    if refresh_token.is_none() && token.lifetime_source == LifetimeSource::Default {
        // The vendor stated no expiry and gave nothing to renew with (Xref): the token is good
        // until it is deauthorized, not until `default_ttl` would disconnect the account.
        stored.expires_at = SystemTime::now() + STATIC_LIFETIME;
        stored.lifetime = STATIC_LIFETIME;
    }
    let scopes = match token.field("scope") {
        Some(granted) => granted.split_whitespace().map(str::to_owned).collect(),
        None => requested_scopes.to_vec(),
    };
    CredentialRecord {
        account: Some(AccountInfo {
            connected_at: SystemTime::now(),
            scopes,
            fields: stored.fields.clone(),
            reauthorization_required: false,
            last_error: None,
        }),
        access_token: Some(stored),
        refresh_token,
        ..CredentialRecord::default()
    }
}

/// 32 random bytes, base64url: a `state` or a PKCE verifier.
fn random_text() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    // The system RNG failing is not recoverable; a predictable state would be worse.
    #[allow(
        clippy::expect_used,
        reason = "no safe fallback for a failing system RNG"
    )]
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An OAuth error code from a redirect, only when it looks like one (it is shown on a page).
fn oauth_code_text(text: &str) -> String {
    let plausible = !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plausible {
        text.to_owned()
    } else {
        "unreadable error code".to_owned()
    }
}

/// Every connected account of every authorization-code provider, sorted.
pub async fn list(state: &State) -> Result<Vec<AccountView>, AccountError> {
    let now = Instant::now();
    let mut views = Vec::new();
    for name in state.config.providers.keys() {
        let Some(set) = state.credentials.accounts(name) else {
            continue;
        };
        set.restore_all().await?;
        for cache in set.loaded() {
            let status = cache.status(now);
            let account = status.account.clone().unwrap_or_default();
            // A cache not used since start-up has read nothing yet: the stored record says.
            let stored = match (cache.account_info(), status.expires_in) {
                (Some(_), Some(_)) => None,
                _ => set.stored(&account).await?,
            };
            let info = cache
                .account_info()
                .or_else(|| stored.as_ref().and_then(|record| record.account.clone()));
            let state = match status.state {
                ProviderState::ReauthorizationRequired => "reauthorization_required",
                ProviderState::CredentialsRejected => "credentials_rejected",
                ProviderState::BackingOff => "refresh_failing",
                _ if info.as_ref().is_some_and(|i| i.reauthorization_required) => {
                    "reauthorization_required"
                }
                _ => "ok",
            };
            let expires_in = status.expires_in.or_else(|| {
                let expires_at = stored.as_ref()?.access_token.as_ref()?.expires_at;
                Some(
                    expires_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default(),
                )
            });
            views.push(AccountView {
                provider: name.clone(),
                account,
                connected_at: info
                    .as_ref()
                    .and_then(|i| i.connected_at.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs()),
                // A token that never expires on our side shows no countdown.
                expires_in_seconds: expires_in
                    .filter(|left| *left < STATIC_LIFETIME / 2)
                    .map(|d| d.as_secs()),
                scopes: info.as_ref().map(|i| i.scopes.clone()).unwrap_or_default(),
                state: state.to_owned(),
                last_error: status
                    .error
                    .map(|error| error.code())
                    .or_else(|| info.and_then(|i| i.last_error)),
            });
        }
    }
    views.sort_by(|a, b| (&a.provider, &a.account).cmp(&(&b.provider, &b.account)));
    Ok(views)
}

/// Disconnects `account`: revokes its token at the vendor when the provider has a `revoke_url`
/// (Xref's deauthorize takes the access token in its own scheme; others get RFC 7009), then
/// deletes it. A failed revocation keeps the account, unless `force`.
pub async fn remove(
    state: &State,
    provider: &str,
    account: &str,
    force: bool,
) -> Result<Removed, AccountError> {
    let (set, code) = authorization_code(state, provider)?;
    let cache = set
        .cache(account)
        .await?
        .ok_or_else(|| AccountError::UnknownAccount {
            provider: provider.to_owned(),
            account: account.to_owned(),
        })?;
    let settings = set.provider();
    // A cache not used since start-up holds no token yet: the stored one is revoked.
    let token = match cache.current() {
        Some(token) => Some(token),
        None => set.stored(account).await?.and_then(|record| {
            AccessToken::from_stored(&record.access_token?, &settings.scheme)
                .map(std::sync::Arc::new)
        }),
    };
    let revocation = match (&settings.revoke_url, token) {
        (None, _) => "no_endpoint",
        (Some(_), None) => "no_token",
        (Some(url), Some(token)) => {
            match revoke(set.client().http(), url, &token, &code.endpoint).await {
                Ok(()) => "revoked",
                Err(error) if force => {
                    tracing::warn!(provider, account, %error, "revocation failed; removing the account anyway (forced)");
                    "skipped"
                }
                Err(error) => return Err(error),
            }
        }
    };
    set.remove(account).await?;
    tracing::info!(provider, account, revocation, "account removed");
    Ok(Removed {
        provider: provider.to_owned(),
        account: account.to_owned(),
        revocation: revocation.to_owned(),
    })
}

/// One revocation request. Xref (`json_body` client auth) authenticates with the token itself in
/// the provider's scheme; everything else follows RFC 7009 with the client's credentials.
async fn revoke(
    client: &reqwest::Client,
    url: &reqwest::Url,
    token: &AccessToken,
    endpoint: &TokenEndpoint,
) -> Result<(), AccountError> {
    let request = client.post(url.clone());
    let request = match endpoint.client_auth {
        ClientAuth::JsonBody => {
            request.header(http::header::AUTHORIZATION, token.authorization().clone())
        }
        _ => {
            let mut form = vec![
                ("token", token_value(token)),
                ("token_type_hint", "access_token".to_owned()),
                ("client_id", endpoint.client_id.expose().to_owned()),
            ];
            if let Some(secret) = &endpoint.client_secret {
                form.push(("client_secret", secret.expose().to_owned()));
            }
            request.form(&form)
        }
    };
    let response = request
        .send()
        .await
        .map_err(|error| AccountError::Revoke(describe(error)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(AccountError::Revoke(format!("HTTP {}", response.status())))
    }
}

/// The bare token from an `Authorization` value (`<scheme> <token>`).
fn token_value(token: &AccessToken) -> String {
    token
        .authorization()
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .map(|(_, token)| token.to_owned())
        .unwrap_or_default()
}

/// Crossbeam's `GET /v0.1/users/me` (the provider's `test_path`) with the account's token, below
/// the upstream of a route of that provider: the organizations whose uuid goes in
/// `Xbeam-Organization`.
pub async fn organizations(
    state: &State,
    provider: &str,
    account: &str,
) -> Result<Vec<Organization>, AccountError> {
    let (set, _) = authorization_code(state, provider)?;
    if set.cache(account).await?.is_none() {
        return Err(AccountError::UnknownAccount {
            provider: provider.to_owned(),
            account: account.to_owned(),
        });
    }
    let settings = set.provider();
    let route = state
        .config
        .routes
        .iter()
        .find(|route| route.provider == provider);
    let (Some(path), Some(route)) = (&settings.test_path, route) else {
        return Err(AccountError::NoOrganizations(provider.to_owned()));
    };
    let credential = state
        .credentials
        .credential(provider, Some(account))
        .await
        .map_err(|error| AccountError::Token(error.to_string()))?;
    let token = credential
        .token()
        .await
        .map_err(|error| AccountError::Token(error.to_string()))?;
    let response = set
        .client()
        .http()
        .get(route.upstream.join(path))
        .header(http::header::AUTHORIZATION, token.authorization().clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|error| AccountError::Vendor(describe(error)))?;
    let status = response.status();
    let body = read_capped(response, MAX_ANSWER)
        .await
        .map_err(|failure| match failure {
            ReadFailure::Transport(error) => AccountError::Vendor(describe(error)),
            ReadFailure::TooLarge => {
                AccountError::Vendor(format!("the answer is larger than {MAX_ANSWER} bytes"))
            }
        })?;
    if !status.is_success() {
        return Err(AccountError::Vendor(format!(
            "GET {path} answered HTTP {status}"
        )));
    }
    parse_organizations(&body)
        .ok_or_else(|| AccountError::Vendor(format!("GET {path} answered no organizations")))
}

/// A transport error and its causes, without the URL (its query could carry a token).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `organizations: [{name, uuid}]`, at the top level or under `user`.
fn parse_organizations(body: &[u8]) -> Option<Vec<Organization>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let list = value
        .get("organizations")
        .or_else(|| value.get("user").and_then(|user| user.get("organizations")))?
        .as_array()?;
    Some(
        list.iter()
            .filter_map(|org| {
                Some(Organization {
                    name: org.get("name")?.as_str()?.to_owned(),
                    uuid: org.get("uuid")?.as_str()?.to_owned(),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizations_are_read_from_either_shape() {
        let top = br#"{"organizations":[{"name":"A","uuid":"1"}]}"#;
        let nested = br#"{"user":{"organizations":[{"name":"B","uuid":"2","x":1}]}}"#;
        assert_eq!(parse_organizations(top).unwrap()[0].uuid, "1");
        assert_eq!(parse_organizations(nested).unwrap()[0].name, "B");
        assert!(parse_organizations(b"{}").is_none());
    }

    #[test]
    fn only_plausible_error_codes_are_shown() {
        assert_eq!(oauth_code_text("access_denied"), "access_denied");
        assert_eq!(oauth_code_text("<script>"), "unreadable error code");
    }
}
