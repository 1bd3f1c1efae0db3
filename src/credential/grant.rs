//! Token requests as data: one function builds the request a provider's settings describe
//! (form with Basic auth, form with the secret in the body, or JSON) and classifies the answer.
//!
//! The classification decides what the cache may do next: a rejected secret is never retried
//! (Cross River locks an account after three), transient failures back off.

use std::time::{Duration, SystemTime};

use base64::Engine;
use http::StatusCode;

use super::token::{AccessToken, Issued, TokenResponseError};
use crate::config::{ClientAuth, ProviderConfig, TokenEndpoint};
use crate::secret::Secret;

/// Longest wait for a token endpoint's whole answer.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token response read; a token endpoint has no reason to send more.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Which grant a token request uses.
#[derive(Debug, Clone, Copy)]
pub enum GrantRequest<'a> {
    ClientCredentials,
    /// Exchange this refresh token; the answer may rotate it.
    RefreshToken(&'a Secret),
    /// Exchange the code a person's authorization produced (RFC 6749 section 4.1.3).
    AuthorizationCode {
        code: &'a Secret,
        redirect_uri: &'a str,
        /// The PKCE verifier, when the authorize request carried a challenge.
        code_verifier: Option<&'a Secret>,
    },
}

/// RFC 6749 section 5.2 codes that mean the same request can never succeed.
const REJECTING_CODES: [&str; 5] = [
    "invalid_client",
    "unauthorized_client",
    "invalid_grant",
    "invalid_scope",
    "unsupported_grant_type",
];

/// Why no token came back. Never holds a secret or a response body, only codes and statuses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrantError {
    /// The vendor said the credentials are wrong. Retrying could lock the account.
    #[error("{}", rejected_message(*.status, .oauth_error))]
    Rejected {
        status: u16,
        oauth_error: Option<String>,
    },
    /// 429, or 503 with Retry-After: the vendor asked us to wait.
    #[error("the token endpoint is rate limiting (HTTP {status})")]
    RateLimited {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 5xx, a connection failure, a redirect or an unusable answer: worth another try later.
    #[error("the token request failed: {reason}")]
    Transient { reason: String },
    /// The request was sent but no answer came (a timeout, a reset): the vendor may have
    /// counted it as a strike. Retried like a transient failure, but counted as unconfirmed.
    #[error("the token request got no answer: {reason}")]
    NoAnswer { reason: String },
    /// The token store could not be read or written (in a fleet: Redis did not answer), so no
    /// request was sent, or its outcome could not be kept. Retried soon: the vendor is not at
    /// fault, and its backoff does not grow.
    #[error("the token store is unavailable: {reason}")]
    StoreUnavailable { reason: String },
    /// A connected account's tokens are gone for good (`invalid_grant` on refresh, or no
    /// refresh token): only a person connecting it again helps.
    #[error("the account must be connected again: {reason}")]
    ReauthorizationRequired { reason: String },
}

// === impl GrantError ===

impl GrantError {
    /// True when only a person can fix it by connecting the account again.
    pub fn needs_reauthorization(&self) -> bool {
        matches!(self, GrantError::ReauthorizationRequired { .. })
    }

    /// A short code for listings (`invalid_grant`, `http_503`); never a secret.
    pub fn code(&self) -> String {
        match self {
            GrantError::Rejected {
                oauth_error: Some(code),
                ..
            } => code.clone(),
            GrantError::Rejected { status, .. } | GrantError::RateLimited { status, .. } => {
                format!("http_{status}")
            }
            GrantError::Transient { .. } => "transient".into(),
            GrantError::NoAnswer { .. } => "no_answer".into(),
            GrantError::StoreUnavailable { .. } => "store_unavailable".into(),
            GrantError::ReauthorizationRequired { .. } => "reauthorization_required".into(),
        }
    }
}

/// The outbound HTTP client for a provider's token endpoint.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
}

// === impl TokenClient ===

impl TokenClient {
    /// A client that never follows redirects (a 307 would re-post the secret) and ignores
    /// `HTTP(S)_PROXY` (the secret must go to the configured host only).
    /// The underlying client, for the other calls to the vendor's auth endpoints (revocation,
    /// `users/me`): the same trusted roots, no redirects, no environment proxy, 10 s.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn new(tls: rustls::ClientConfig) -> Result<TokenClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(TokenClient { http })
    }

    /// One token request to `endpoint` for `grant`, shaped by the endpoint's `client_auth`.
    pub async fn request(
        &self,
        provider: &ProviderConfig,
        endpoint: &TokenEndpoint,
        grant: GrantRequest<'_>,
    ) -> Result<Issued, GrantError> {
        let params = token_params(grant, endpoint);
        let request = self
            .http
            .post(endpoint.token_url.clone())
            .header(http::header::ACCEPT, "application/json");
        let request = match endpoint.client_auth {
            ClientAuth::JsonBody => {
                request.json(&params.into_iter().collect::<serde_json::Map<_, _>>())
            }
            ClientAuth::ClientSecretBasic => request
                .header(http::header::AUTHORIZATION, basic_authorization(endpoint))
                .form(&form_pairs(&params)),
            ClientAuth::ClientSecretPost | ClientAuth::None => request.form(&form_pairs(&params)),
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match read_limited(response).await {
            Ok(body) => body,
            // The status already says the request was refused; an unreadable or oversized body
            // (an HTML error page, a reset mid-body) must not turn a strike into a retry.
            Err(_) if rejects_credentials(status) => Vec::new(),
            Err(error) => return Err(error),
        };
        classify(status, retry_after, &body, provider)
    }
}

/// The parameters of a token request, the client's credentials placed as `client_auth` says.
fn token_params(
    grant: GrantRequest<'_>,
    endpoint: &TokenEndpoint,
) -> Vec<(String, serde_json::Value)> {
    let mut params = Vec::new();
    match grant {
        GrantRequest::ClientCredentials => {
            params.push(("grant_type".to_string(), "client_credentials".into()));
            if !endpoint.scopes.is_empty() {
                params.push(("scope".into(), endpoint.scopes.join(" ").into()));
            }
        }
        // No scope: a refresh keeps the scope of the original grant (RFC 6749 section 6).
        GrantRequest::RefreshToken(refresh_token) => {
            params.push(("grant_type".to_string(), "refresh_token".into()));
            params.push(("refresh_token".into(), refresh_token.expose().into()));
        }
        GrantRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            params.push(("grant_type".to_string(), "authorization_code".into()));
            params.push(("code".into(), code.expose().into()));
            params.push(("redirect_uri".into(), redirect_uri.into()));
            if let Some(verifier) = code_verifier {
                params.push(("code_verifier".into(), verifier.expose().into()));
            }
        }
    }
    for (name, value) in &endpoint.extra_params {
        params.push((name.clone(), value.as_str().into()));
    }
    match endpoint.client_auth {
        ClientAuth::ClientSecretBasic => {}
        ClientAuth::None => params.push(("client_id".into(), endpoint.client_id.expose().into())),
        ClientAuth::ClientSecretPost | ClientAuth::JsonBody => {
            params.push(("client_id".into(), endpoint.client_id.expose().into()));
            if let Some(secret) = &endpoint.client_secret {
                params.push(("client_secret".into(), secret.expose().into()));
            }
        }
    }
    params
}

fn form_pairs(params: &[(String, serde_json::Value)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str().unwrap_or_default()))
        .collect()
}

/// RFC 6749 section 2.3.1: id and secret are form-urlencoded first, then joined and Base64'd.
fn basic_authorization(endpoint: &TokenEndpoint) -> http::HeaderValue {
    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let secret = endpoint
        .client_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or_default();
    let pair = format!("{}:{}", encode(endpoint.client_id.expose()), encode(secret));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = http::HeaderValue::from_str(&format!("Basic {encoded}"))
        .unwrap_or_else(|_| http::HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

async fn read_limited(response: reqwest::Response) -> Result<Vec<u8>, GrantError> {
    read_capped(response, MAX_TOKEN_RESPONSE)
        .await
        .map_err(|failure| match failure {
            ReadFailure::Transport(error) => transport_error(error),
            ReadFailure::TooLarge => GrantError::Transient {
                reason: format!("the token response is larger than {MAX_TOKEN_RESPONSE} bytes"),
            },
        })
}

/// Why a vendor's answer could not be read whole.
#[derive(Debug)]
pub enum ReadFailure {
    Transport(reqwest::Error),
    /// Longer than the cap: a vendor endpoint has no reason to send that much.
    TooLarge,
}

/// A vendor's whole answer, refused past `cap` bytes (read as it arrives, never buffered beyond).
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadFailure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadFailure::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(ReadFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Any 4xx but 429: the same request, with the same secret, would fail again.
fn rejects_credentials(status: StatusCode) -> bool {
    status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS
}

pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    provider: &ProviderConfig,
) -> Result<Issued, GrantError> {
    // An OAuth error code that says the credentials are wrong decides, whatever the status:
    // some vendors send `invalid_client` with a 500 or even a 200, and each retry is a strike.
    if let Some(code) = oauth_error_code(body)
        && REJECTING_CODES.contains(&code.as_str())
    {
        return Err(GrantError::Rejected {
            status: status.as_u16(),
            oauth_error: Some(code),
        });
    }
    match status.as_u16() {
        200..=299 => AccessToken::from_response(body, &provider.scheme, provider.default_ttl)
            .map_err(|error: TokenResponseError| GrantError::Transient {
                reason: error.to_string(),
            }),
        300..=399 => Err(GrantError::Transient {
            reason: format!(
                "the token endpoint answered a redirect (HTTP {status}), which is never followed"
            ),
        }),
        429 => Err(GrantError::RateLimited {
            status: 429,
            retry_after,
        }),
        _ if rejects_credentials(status) => Err(GrantError::Rejected {
            status: status.as_u16(),
            oauth_error: oauth_error_code(body),
        }),
        503 if retry_after.is_some() => Err(GrantError::RateLimited {
            status: 503,
            retry_after,
        }),
        _ => Err(GrantError::Transient {
            reason: format!("the token endpoint answered HTTP {status}"),
        }),
    }
}

/// The RFC 6749 `error` code, only when it looks like one: it ends up in logs and error bodies.
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plausible = code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plausible.then(|| code.to_string())
}

fn rejected_message(status: u16, code: &Option<String>) -> String {
    // Status 0: no vendor answer, but earlier requests went unanswered (see the token cache).
    if status == 0 {
        return "earlier token requests got no answer and may each have counted as a rejected \
                secret at the vendor; not retried until an operator resets the provider"
            .to_string();
    }
    format!(
        "the token endpoint rejected the credentials (HTTP {status}{})",
        oauth_suffix(code)
    )
}

fn oauth_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(", {c}")).unwrap_or_default()
}

fn transport_error(error: reqwest::Error) -> GrantError {
    // reqwest's Display names the URL, never the body; strip the URL anyway (it may carry a query).
    if error.is_connect() {
        // Nothing was sent: certainly not a strike.
        return GrantError::Transient {
            reason: "cannot connect to the token endpoint".to_string(),
        };
    }
    let reason = if error.is_timeout() {
        "the token endpoint timed out".to_string()
    } else {
        format!("{}", error.without_url())
    };
    GrantError::NoAnswer { reason }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(client_auth: ClientAuth) -> TokenEndpoint {
        TokenEndpoint {
            token_url: "https://auth.example/token".parse().unwrap(),
            client_auth,
            client_id: Secret::new("id with space"),
            client_secret: Some(Secret::new("s3cr:t&")),
            scopes: vec!["a".into(), "b".into()],
            extra_params: vec![("audience".into(), "https://api".into())],
        }
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let value = basic_authorization(&endpoint(ClientAuth::ClientSecretBasic));
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "id+with+space:s3cr%3At%26"
        );
        assert!(value.is_sensitive());
    }

    #[test]
    fn params_place_credentials_by_client_auth() {
        let names = |auth| {
            token_params(GrantRequest::ClientCredentials, &endpoint(auth))
                .into_iter()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(ClientAuth::ClientSecretBasic),
            ["grant_type", "scope", "audience"]
        );
        assert_eq!(
            names(ClientAuth::ClientSecretPost),
            [
                "grant_type",
                "scope",
                "audience",
                "client_id",
                "client_secret"
            ]
        );
        assert_eq!(
            names(ClientAuth::None),
            ["grant_type", "scope", "audience", "client_id"]
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(http::header::RETRY_AFTER, later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
    }

    #[test]
    fn oauth_error_code_is_kept_only_when_plausible() {
        assert_eq!(
            oauth_error_code(br#"{"error":"invalid_client"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(
            oauth_error_code(br#"{"error":"Secret abc123 is wrong"}"#),
            None
        );
        assert_eq!(oauth_error_code(b"<html>"), None);
    }
}
