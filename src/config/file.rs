//! The serde mirror of `proxy.yaml`: the file exactly as written, every key known
//! (`deny_unknown_fields`), every value still text. No defaults and no checks live here;
//! [`super::validate`] turns this into a [`super::Config`].

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::error::{ConfigError, ConfigErrors};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listeners: Vec<ListenerFile>,
    pub admin: Option<AdminFile>,
    pub store: Option<StoreFile>,
    pub callers: Option<Vec<CallerFile>>,
    #[serde(default)]
    pub providers: Ordered<ProviderFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// How long a shutdown waits for in-flight requests (`30s`).
    pub shutdown_grace: Option<String>,
}

/// `listeners[i]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub bind: String,
    pub tls: Option<TlsFile>,
    pub allow_anonymous: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub limits: Option<LimitsFile>,
}

/// `listeners[i].tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

/// `listeners[i].limits`: sizes as integers or `32KiB`, durations as `10s`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_connections: Option<String>,
    pub max_headers: Option<String>,
    pub max_header_bytes: Option<String>,
    pub max_target_bytes: Option<String>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
}

/// `callers[i]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerFile {
    pub name: String,
    pub api_key: Option<SecretText>,
    pub cert_subject: Option<String>,
}

/// `admin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub bind: String,
    /// Secret reference; when set, every admin endpoint but `/healthz` wants `Bearer <token>`.
    pub token: Option<String>,
}

/// `store`. `path` belongs to `kind: file`; `url`, `prefix`, `ca`, `timeout` and
/// `when_unreachable` to `kind: redis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub key: Option<SecretText>,
    /// May hold a password, so it is a secret reference like `key`.
    pub url: Option<SecretText>,
    pub prefix: Option<String>,
    pub ca: Option<String>,
    pub timeout: Option<String>,
    pub when_unreachable: Option<String>,
}

/// `providers.NAME`. Every field is optional here: a preset may fill it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub preset: Option<String>,
    pub grant: Option<String>,
    pub token_url: Option<String>,
    pub client_auth: Option<String>,
    pub client_id: Option<SecretText>,
    pub client_secret: Option<SecretText>,
    pub token: Option<SecretText>,
    pub refresh_token: Option<SecretText>,
    pub scopes: Option<Vec<String>>,
    pub extra_params: Option<Ordered<String>>,
    pub scheme: Option<String>,
    pub refresh_before: Option<String>,
    pub default_ttl: Option<String>,
    pub ca: Option<String>,
    pub lockout_sensitive: Option<bool>,
    pub test_path: Option<String>,
    pub revoke_url: Option<String>,
    pub authorize_url: Option<String>,
    pub redirect_uri: Option<String>,
    pub pkce: Option<bool>,
}

/// `routes[i]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<MatchFile>,
    pub strip_prefix: Option<bool>,
    pub upstream: String,
    pub provider: String,
    pub account: Option<String>,
    pub account_header: Option<String>,
    pub headers: Option<Ordered<String>>,
    pub callers: Option<Vec<String>>,
    pub upgrade: Option<bool>,
    /// Integer bytes or `10MiB`; YAML integers arrive as their text.
    pub max_body: Option<String>,
    /// Same syntax as `max_body`.
    pub max_replay_body: Option<String>,
    pub timeout: Option<String>,
}

/// `routes[i].match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub path_prefix: Option<String>,
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// A mapping kept in file order (provider names, extra parameters, headers).
#[derive(Debug)]
pub struct Ordered<T>(pub Vec<(String, T)>);

/// The text of a secret field (`client_secret`): a reference like `${env:NAME}` or a literal.
/// Its `Debug` is redacted because a literal is the secret itself.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

// === impl ConfigFile ===

impl ConfigFile {
    /// Parses YAML text. Syntax errors, unknown keys and wrong types end here, with the line and
    /// column in the message. Snippets are off: the quoted source line could hold a literal secret.
    pub fn parse(text: &str) -> Result<ConfigFile, ConfigErrors> {
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(text, options).map_err(|error| {
            // The user formatter says "duplicate mapping key `a` is not allowed here" where the
            // default one gives advice meant for the programmer (set DuplicateKeyPolicy).
            let message = error.render_with_formatter(&serde_saphyr::UserMessageFormatter);
            ConfigErrors::from(ConfigError::Syntax { message })
        })
    }
}

// === impl Ordered ===

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = Ordered<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, T>()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }

        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

// === impl SecretText ===

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}
