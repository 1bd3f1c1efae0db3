//! The effective configuration as text, for `authrelay check --print-effective`: every value
//! after defaults and presets, in the shape of `proxy.yaml`. Secrets print as `[redacted]`; the
//! only way to a secret's text, [`Secret::expose`], is never called here.

use std::fmt::Write;
use std::time::Duration;

use super::{
    CallerCredential, ClientAuth, Config, GrantConfig, HeaderTemplate, ListenerConfig,
    ProviderConfig, RouteAccount, RouteConfig, StoreConfig, TemplatePart, TokenEndpoint,
    WhenUnreachable,
};
use crate::secret::Secret;

/// What every secret field prints.
const REDACTED: &str = "[redacted]";

/// Lines of YAML-like text with two-space indentation.
#[derive(Default)]
struct Effective {
    text: String,
}

// === impl Config ===

impl Config {
    /// The resolved configuration in a readable YAML-like form: listeners, admin, store, every
    /// provider with all its fields (preset-filled ones included), routes. Secret values are
    /// never shown, only `[redacted]`.
    pub fn effective(&self) -> String {
        let mut out = Effective::default();
        out.line(0, "listeners:");
        for listener in &self.listeners {
            out.listener(listener);
        }
        if self.callers.is_empty() {
            out.line(0, "callers: []  # callers are not identified");
        } else {
            out.line(0, "callers:");
        }
        for caller in &self.callers {
            out.line(1, format!("- name: {}", caller.name));
            match &caller.credential {
                CallerCredential::ApiKey(_) => out.field(2, "api_key", REDACTED),
                CallerCredential::CertSubject(subject) => {
                    out.field(2, "cert_subject", scalar(&subject.to_string()));
                }
            }
        }
        match &self.admin {
            Some(admin) => {
                out.line(0, "admin:");
                out.field(1, "bind", admin.bind);
                if admin.token.is_some() {
                    out.field(1, "token", "[redacted]");
                }
            }
            None => out.line(0, "admin: none"),
        }
        out.store(&self.store);
        out.line(
            0,
            format!(
                "shutdown_grace: {}",
                humantime::format_duration(self.shutdown_grace)
            ),
        );
        if self.providers.is_empty() {
            out.line(0, "providers: {}");
        } else {
            out.line(0, "providers:");
        }
        for provider in self.providers.values() {
            out.provider(provider);
        }
        if self.routes.is_empty() {
            out.line(0, "routes: []");
        } else {
            out.line(0, "routes:");
        }
        for route in &self.routes {
            out.route(route);
        }
        out.text
    }
}

// === impl Effective ===

impl Effective {
    fn line(&mut self, depth: usize, text: impl std::fmt::Display) {
        let _ = writeln!(self.text, "{:width$}{text}", "", width = depth * 2);
    }

    fn field(&mut self, depth: usize, name: &str, value: impl std::fmt::Display) {
        self.line(depth, format_args!("{name}: {value}"));
    }

    /// A secret field: whether it is set, never what it holds.
    fn secret(&mut self, depth: usize, name: &str, _secret: &Secret) {
        self.field(depth, name, REDACTED);
    }

    fn store(&mut self, store: &StoreConfig) {
        self.line(0, "store:");
        match store {
            StoreConfig::File { path, key } => {
                self.field(1, "kind", "file");
                self.field(1, "path", scalar(&path.display().to_string()));
                match key {
                    Some(key) => self.secret(1, "key", key),
                    None => self.field(1, "key", "none  # a key file generated in path"),
                }
            }
            StoreConfig::Redis(redis) => {
                self.field(1, "kind", "redis");
                // The URL may carry a password.
                self.secret(1, "url", &redis.url);
                self.secret(1, "key", &redis.key);
                self.field(1, "prefix", scalar(&redis.prefix));
                if let Some(ca) = &redis.ca {
                    self.field(1, "ca", scalar(&ca.display().to_string()));
                }
                self.field(1, "timeout", duration_text(redis.timeout));
                let when = match redis.when_unreachable {
                    WhenUnreachable::Protect => "protect",
                    WhenUnreachable::Request => "request",
                };
                self.field(1, "when_unreachable", when);
            }
        }
    }

    fn provider(&mut self, provider: &ProviderConfig) {
        self.line(1, format_args!("{}:", scalar(&provider.name)));
        match &provider.grant {
            GrantConfig::Static { token } => {
                self.field(2, "grant", "static");
                self.secret(2, "token", token);
            }
            GrantConfig::ClientCredentials(endpoint) => {
                self.field(2, "grant", "client_credentials");
                self.endpoint(endpoint);
            }
            GrantConfig::RefreshToken {
                endpoint,
                refresh_token,
            } => {
                self.field(2, "grant", "refresh_token");
                self.endpoint(endpoint);
                self.secret(2, "refresh_token", refresh_token);
            }
            GrantConfig::AuthorizationCode(code) => {
                self.field(2, "grant", "authorization_code");
                self.endpoint(&code.endpoint);
                self.field(2, "authorize_url", scalar(&code.authorize_url));
                self.field(2, "redirect_uri", scalar(code.redirect_uri.as_str()));
                self.field(2, "pkce", code.pkce);
            }
        }
        self.field(2, "scheme", scalar(&provider.scheme));
        match provider.refresh_before {
            Some(duration) => self.field(2, "refresh_before", duration_text(duration)),
            None => self.field(
                2,
                "refresh_before",
                "auto  # a share of each token's lifetime",
            ),
        }
        self.field(2, "default_ttl", duration_text(provider.default_ttl));
        match &provider.ca {
            Some(ca) => self.field(
                2,
                "ca",
                format_args!(
                    "{}  # {} certificates",
                    scalar(&ca.path.display().to_string()),
                    ca.certs.len()
                ),
            ),
            None => self.field(2, "ca", "none  # the OS trust store only"),
        }
        self.field(2, "lockout_sensitive", provider.lockout_sensitive);
        self.optional(2, "test_path", provider.test_path.as_deref());
        self.optional(
            2,
            "revoke_url",
            provider.revoke_url.as_ref().map(|u| u.as_str()),
        );
    }

    fn endpoint(&mut self, endpoint: &TokenEndpoint) {
        self.field(2, "token_url", scalar(endpoint.token_url.as_str()));
        let client_auth = match endpoint.client_auth {
            ClientAuth::ClientSecretBasic => "client_secret_basic",
            ClientAuth::ClientSecretPost => "client_secret_post",
            ClientAuth::JsonBody => "json_body",
            ClientAuth::None => "none",
        };
        self.field(2, "client_auth", client_auth);
        self.secret(2, "client_id", &endpoint.client_id);
        match &endpoint.client_secret {
            Some(secret) => self.secret(2, "client_secret", secret),
            None => self.field(2, "client_secret", "none"),
        }
        let scopes: Vec<String> = endpoint.scopes.iter().map(|s| scalar(s)).collect();
        self.field(2, "scopes", format_args!("[{}]", scopes.join(", ")));
        if endpoint.extra_params.is_empty() {
            self.field(2, "extra_params", "{}");
        } else {
            self.line(2, "extra_params:");
            for (name, value) in &endpoint.extra_params {
                self.field(3, &scalar(name), scalar(value));
            }
        }
    }

    fn route(&mut self, route: &RouteConfig) {
        self.line(1, format_args!("- name: {}", scalar(&route.name)));
        let matcher = &route.matcher;
        self.line(2, "match:");
        self.field(3, "path_prefix", scalar(&matcher.path_prefix));
        self.optional(3, "host", matcher.host.as_deref());
        match &matcher.methods {
            Some(methods) => {
                let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                self.field(3, "methods", format_args!("[{}]", names.join(", ")));
            }
            None => self.field(3, "methods", "all"),
        }
        self.field(2, "strip_prefix", route.strip_prefix);
        let upstream = &route.upstream;
        let url = format!(
            "{}://{}{}",
            upstream.scheme, upstream.authority, upstream.base_path
        );
        self.field(2, "upstream", scalar(&url));
        self.field(2, "provider", scalar(&route.provider));
        match &route.account {
            RouteAccount::None => {}
            RouteAccount::Fixed(account) => self.field(2, "account", scalar(account)),
            RouteAccount::FromHeader(header) => {
                self.field(2, "account_header", scalar(header.as_str()))
            }
        }
        if route.headers.is_empty() {
            self.field(2, "headers", "{}");
        } else {
            self.line(2, "headers:");
            for (name, template) in &route.headers {
                self.field(3, name.as_str(), scalar(&template_text(template)));
            }
        }
        match &route.callers {
            Some(names) => self.field(2, "callers", format!("[{}]", names.join(", "))),
            None => self.field(2, "callers", "all"),
        }
        self.field(2, "upgrade", route.upgrade);
        self.field(2, "max_body", size_text(route.max_body));
        self.field(2, "max_replay_body", size_text(route.max_replay_body));
        self.field(2, "timeout", duration_text(route.timeout));
    }

    fn listener(&mut self, listener: &ListenerConfig) {
        self.line(1, format!("- bind: {}", listener.bind));
        match &listener.tls {
            None => self.field(2, "tls", "none  # plain HTTP"),
            Some(tls) => {
                self.line(2, "tls:");
                self.field(3, "cert", scalar(&tls.cert.display().to_string()));
                self.field(3, "key", scalar(&tls.key.display().to_string()));
                match &tls.client_ca {
                    Some(ca) => self.field(3, "client_ca", scalar(&ca.display().to_string())),
                    None => self.field(3, "client_ca", "none  # no caller certificates"),
                }
            }
        }
        self.field(2, "allow_anonymous", listener.anonymous);
        let origins: Vec<String> = listener.allowed_origins.iter().map(|o| scalar(o)).collect();
        self.field(2, "allowed_origins", format!("[{}]", origins.join(", ")));
        let limits = &listener.limits;
        self.line(2, "limits:");
        self.field(3, "max_connections", limits.max_connections);
        self.field(3, "max_headers", limits.max_headers);
        self.field(
            3,
            "max_header_bytes",
            size_text(limits.max_header_bytes as u64),
        );
        self.field(
            3,
            "max_target_bytes",
            size_text(limits.max_target_bytes as u64),
        );
        self.field(
            3,
            "header_read_timeout",
            duration_text(limits.header_read_timeout),
        );
        self.field(
            3,
            "body_read_timeout",
            duration_text(limits.body_read_timeout),
        );
        self.field(3, "idle_timeout", duration_text(limits.idle_timeout));
    }

    fn optional(&mut self, depth: usize, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.field(depth, name, scalar(value)),
            None => self.field(depth, name, "none"),
        }
    }
}

/// A string as a YAML plain scalar when it reads back the same, double-quoted otherwise.
fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && !text.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.contains(|c: char| c.is_control() || ",[]{}".contains(c))
        && !matches!(text, "true" | "false" | "null" | "none" | "yes" | "no");
    if plain {
        text.to_string()
    } else {
        serde_json::Value::from(text).to_string()
    }
}

/// The template as it would be written: `{field}` references, `{{`/`}}` for literal braces.
fn template_text(template: &HeaderTemplate) -> String {
    let mut text = String::new();
    for part in &template.parts {
        match part {
            TemplatePart::Literal(literal) => {
                text.push_str(&literal.replace('{', "{{").replace('}', "}}"));
            }
            TemplatePart::Field(name) => {
                let _ = write!(text, "{{{name}}}");
            }
        }
    }
    text
}

/// `365d`, `1h30m`, `250ms`: the units `proxy.yaml` accepts.
fn duration_text(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    let mut text = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            let _ = write!(text, "{}{unit}", secs / size);
            secs %= size;
        }
    }
    let millis = duration.subsec_millis();
    if millis > 0 || text.is_empty() {
        let _ = write!(text, "{millis}ms");
    }
    text
}

/// `1MiB` when the size is a whole number of a binary unit, bytes otherwise.
fn size_text(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests;
