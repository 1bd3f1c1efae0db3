//! The validated, typed configuration: what `proxy.yaml` means once every default, preset and
//! secret reference has been applied. Nothing here can fail at request time.
//!
//! `proxy.yaml` -> [`file`] (serde mirror) -> [`validate`] -> [`Config`].

mod effective;
mod error;
mod file;
mod listener;
mod presets;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue, InvalidHeaderValue};
use http::uri::{Authority, Scheme};
use rustls_pki_types::CertificateDer;

use crate::secret::Secret;

pub use error::{ConfigError, ConfigErrors};
pub use listener::{
    CallerConfig, CallerCredential, CertSubject, Limits, ListenerConfig, ListenerTls,
};
pub use presets::PRESET_NAMES;
pub use validate::check_account_name;

/// The whole configuration of one authrelay process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where callers connect, in file order.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (`/healthz`, `/readyz`); absent when not configured.
    pub admin: Option<AdminConfig>,
    /// Who may call through the listeners; empty means callers are not identified.
    pub callers: Vec<CallerConfig>,
    /// Providers by name.
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    /// Routes in file order; matching picks the most specific, not the first.
    pub routes: Vec<RouteConfig>,
    /// Where tokens, refresh tokens and the lock-out guard state live.
    pub store: StoreConfig,
    /// How long a shutdown waits for in-flight requests before closing them.
    pub shutdown_grace: Duration,
}

/// The token store.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded, encrypted database in directory `path` (the default: `./authrelay-data`
    /// next to the config file).
    File {
        path: PathBuf,
        /// 32-byte AEAD key; `None` means a key file generated in `path` (mode 0600).
        key: Option<Secret>,
    },
    /// Redis, shared by a fleet of replicas.
    Redis(RedisStoreConfig),
}

/// `store: {kind: redis}`: where the fleet's Redis is and how a replica behaves without it.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://` or `rediss://`; may carry a user name and password.
    pub url: Secret,
    /// 32-byte AEAD key; every replica must have the same one.
    pub key: Secret,
    /// Put before every key name, so several fleets can share one Redis.
    pub prefix: String,
    /// PEM file of the CA that signed the Redis server's certificate (`rediss://` only);
    /// without it the system's roots are used.
    pub ca: Option<PathBuf>,
    /// Longest wait for a connection or a command's answer.
    pub timeout: Duration,
    pub when_unreachable: WhenUnreachable,
}

/// Whether a replica that cannot reach Redis may request tokens on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnreachable {
    /// Lockout-sensitive providers and providers with rotating refresh tokens wait for Redis;
    /// others request alone.
    Protect,
    /// Every provider requests alone (each replica then holds its own token).
    Request,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// When set, every endpoint but `/healthz` requires `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// A credential source: how to obtain the token and how to present it.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub grant: GrantConfig,
    /// The word before the token in `Authorization` (`Bearer`, `Token`).
    pub scheme: String,
    /// Renew this long before expiry; `None` means a share of the token's lifetime.
    pub refresh_before: Option<Duration>,
    /// Lifetime of a token whose response states none (no `expires_in`, no JWT `exp`).
    pub default_ttl: Duration,
    /// Extra trusted roots for this provider's token endpoint and upstreams, with their file.
    pub ca: Option<CaBundle>,
    /// The vendor locks the account after a few rejected secrets (Cross River): a replica that
    /// cannot consult the shared store must not make a token request on its own.
    pub lockout_sensitive: bool,
    /// Path (below the provider's route upstream) that `check --online` calls with a fresh token.
    pub test_path: Option<String>,
    /// Deauthorize / RFC 7009 revocation endpoint, used when an account is removed.
    pub revoke_url: Option<reqwest::Url>,
}

/// PEM roots loaded from a provider's `ca` file.
#[derive(Debug, Clone)]
pub struct CaBundle {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
}

/// How a provider's token is obtained.
#[derive(Debug, Clone)]
pub enum GrantConfig {
    /// A personal access token, used as is.
    Static { token: Secret },
    /// OAuth 2.0 client credentials (RFC 6749 section 4.4).
    ClientCredentials(TokenEndpoint),
    /// OAuth 2.0 refresh token grant (RFC 6749 section 6), bootstrapped from a refresh token
    /// obtained elsewhere; rotated refresh tokens replace it in the store.
    RefreshToken {
        endpoint: TokenEndpoint,
        refresh_token: Secret,
    },
    /// OAuth 2.0 authorization code (RFC 6749 section 4.1): a person connects each account once
    /// through the admin listener; its refresh token (when the vendor issues one) renews it.
    AuthorizationCode(AuthorizationCode),
}

/// Where a person authorizes an account, and how the code comes back.
#[derive(Debug, Clone)]
pub struct AuthorizationCode {
    /// Exchanges codes and refreshes tokens.
    pub endpoint: TokenEndpoint,
    /// The vendor's authorize page; `{client_id}` in it is replaced (Xref puts the id in the path).
    pub authorize_url: String,
    /// The callback registered at the vendor; its path ends in `/callback/<provider>`.
    pub redirect_uri: reqwest::Url,
    /// Send an S256 PKCE challenge (RFC 7636).
    pub pkce: bool,
}

/// A token endpoint and the client's credentials for it.
#[derive(Debug, Clone)]
pub struct TokenEndpoint {
    /// `https`, or `http` on a loopback host.
    pub token_url: reqwest::Url,
    pub client_auth: ClientAuth,
    pub client_id: Secret,
    /// Absent only with [`ClientAuth::None`].
    pub client_secret: Option<Secret>,
    /// Sent space-joined as `scope`; empty means the parameter is omitted.
    pub scopes: Vec<String>,
    /// Extra parameters for the token request (`audience`), in file order.
    pub extra_params: Vec<(String, String)>,
}

/// Where the client credentials go in a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` of the form-urlencoded id and secret (RFC 6749 section 2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JSON body carrying `client_id` and `client_secret`.
    JsonBody,
    /// Only `client_id` in the form body (public clients).
    None,
}

/// One route: which requests it takes and where they go.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Used in logs and metric labels.
    pub name: String,
    pub matcher: RouteMatch,
    /// Remove `matcher.path_prefix` before appending the path to the upstream's base path.
    pub strip_prefix: bool,
    pub upstream: UpstreamUrl,
    /// Name of an entry in [`Config::providers`] (checked at load).
    pub provider: String,
    /// Which connected account's token, for `authorization_code` providers.
    pub account: RouteAccount,
    /// Headers injected after the proxy's own hop-by-hop stripping, in file order.
    pub headers: Vec<(HeaderName, HeaderTemplate)>,
    /// Caller names allowed on this route; `None` lets every caller the listener admits.
    pub callers: Option<Vec<String>>,
    /// WebSocket upgrades pass through (every other upgrade is refused).
    pub upgrade: bool,
    /// Largest request body accepted (413 past it).
    pub max_body: u64,
    /// Bodies up to this size are buffered so a request can be replayed after a 401.
    pub max_replay_body: u64,
    /// Time allowed for the upstream's response headers (504 past it).
    pub timeout: Duration,
}

/// How a route picks the connected account whose token it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAccount {
    /// The provider has one credential, not accounts.
    None,
    /// Always this account.
    Fixed(String),
    /// The caller names the account in this header, which is removed before forwarding.
    FromHeader(HeaderName),
}

/// What a request must look like to take a route. Every present part must match.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// Normalized: starts with `/`, no trailing `/` (except the root `/` itself).
    pub path_prefix: String,
    /// Lower-case host name without port; absolute-form requests need it to match.
    pub host: Option<String>,
    /// `None` accepts every method (but CONNECT and TRACE, which never route).
    pub methods: Option<Vec<Method>>,
}

/// The upstream a route forwards to.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Prepended to the forwarded path; empty or `/base` without a trailing `/`.
    pub base_path: String,
}

// === impl UpstreamUrl ===

impl UpstreamUrl {
    /// The URL of `path` (starting with `/`) below this upstream's base path.
    pub fn join(&self, path: &str) -> String {
        format!(
            "{}://{}{}{path}",
            self.scheme, self.authority, self.base_path
        )
    }
}

/// A header value that may refer to `{token}` or a field of the token response (`{xref_account_id}`).
#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    parts: Vec<TemplatePart>,
    /// The value, when the template refers to no field.
    fixed: Option<HeaderValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    Field(String),
}

// === impl Config ===

impl Config {
    /// Reads, parses and validates `path`. All problems found are returned together.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors::from(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            })
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base_dir)
    }

    /// Parses and validates YAML text; relative `${file:...}` and `ca` paths resolve against `base_dir`.
    pub fn from_yaml(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let file = file::ConfigFile::parse(text)?;
        validate::validate(file, base_dir)
    }
}

// === impl HeaderTemplate ===

impl HeaderTemplate {
    /// The fields the template refers to, `token` included.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Field(name) => Some(name.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The value when it does not depend on the token.
    pub fn fixed(&self) -> Option<&HeaderValue> {
        self.fixed.as_ref()
    }

    /// Reads `text`, where `{name}` refers to a field; `{{` and `}}` are literal braces.
    /// Fails on CR, LF or other bytes a header value cannot hold, and on an unclosed `{`.
    pub fn parse(text: &str) -> Result<HeaderTemplate, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    let valid = closed
                        && !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !valid {
                        return Err(format!(
                            "`{{{name}` is not a field reference like {{token}}"
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Field(name));
                }
                '}' => return Err("a lone `}` (write `}}` for a literal brace)".into()),
                c if c.is_control() => {
                    return Err("control characters (CR, LF, ...) are not allowed".into());
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        let fixed = match parts.as_slice() {
            [] => Some(HeaderValue::from_static("")),
            [TemplatePart::Literal(text)] => Some(
                HeaderValue::from_str(text).map_err(|_| "not a valid header value".to_string())?,
            ),
            _ => None,
        };
        Ok(HeaderTemplate { parts, fixed })
    }

    /// Fills in the fields; `lookup("token")` gives the access token. A missing field renders empty.
    pub fn render<'v>(
        &self,
        lookup: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<HeaderValue, InvalidHeaderValue> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let mut value = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => value.push_str(text),
                TemplatePart::Field(name) => value.push_str(lookup(name).unwrap_or_default()),
            }
        }
        // from_str rejects CR, LF and other controls a token response might smuggle in.
        let mut value = HeaderValue::from_str(&value)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_with_only_text_is_fixed() {
        let template = HeaderTemplate::parse("02fde942-c7cd").unwrap();
        assert_eq!(template.fixed().unwrap(), "02fde942-c7cd");
        assert_eq!(template.fields().count(), 0);
    }

    #[test]
    fn template_fields_render_from_the_token_response() {
        let template = HeaderTemplate::parse("acct-{xref_account_id}/{{x}}").unwrap();
        assert_eq!(template.fields().collect::<Vec<_>>(), ["xref_account_id"]);
        let value = template
            .render(|name| (name == "xref_account_id").then_some("42"))
            .unwrap();
        assert_eq!(value, "acct-42/{x}");
        assert!(value.is_sensitive());
    }

    #[test]
    fn template_rejects_line_breaks_and_bad_references() {
        assert!(HeaderTemplate::parse("a\r\nX-Evil: 1").is_err());
        assert!(HeaderTemplate::parse("{unclosed").is_err());
        assert!(HeaderTemplate::parse("{bad-name}").is_err());
        assert!(HeaderTemplate::parse("lone }").is_err());
    }

    #[test]
    fn rendered_field_with_line_break_is_refused() {
        let template = HeaderTemplate::parse("{token}").unwrap();
        assert!(template.render(|_| Some("abc\r\nX-Evil: 1")).is_err());
    }
}
