//! `providers.NAME` -> [`ProviderConfig`]: the preset fills what the file leaves out, then the
//! grant decides which fields are required and which are out of place.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::super::file::{Ordered, ProviderFile, SecretText};
use super::super::presets::{self, PRESET_NAMES, Preset, ScopeShape};
use super::super::{
    AuthorizationCode, CaBundle, ClientAuth, GrantConfig, ProviderConfig, TokenEndpoint,
};
use super::{Problems, check_name, parse_duration, pem, secret_ref};
use crate::secret::Secret;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Token request parameters the proxy writes itself; `extra_params` may not set them.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "scope",
    "refresh_token",
    "code",
    "code_verifier",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "response_type",
    "state",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Static,
    ClientCredentials,
    RefreshToken,
    AuthorizationCode,
}

/// One provider being checked: its YAML path, what the file says, and the preset behind it.
struct ProviderCheck<'a> {
    path: String,
    file: &'a ProviderFile,
    preset: Option<&'static Preset>,
    base_dir: &'a Path,
}

/// Checks one provider; `None` when it has errors (they are in `problems`).
pub(super) fn provider(
    name: &str,
    file: &ProviderFile,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ProviderConfig> {
    let path = format!("providers.{name}");
    let errors_before = problems.0.len();
    problems.check(&path, check_name(name));

    let mut preset = None;
    let mut preset_unknown = false;
    if let Some(preset_name) = &file.preset {
        preset = presets::find(preset_name);
        if preset.is_none() {
            preset_unknown = true;
            let known = PRESET_NAMES.join(", ");
            let message = format!("unknown preset `{preset_name}` (known: {known})");
            problems.add(format!("{path}.preset"), message);
        }
    }
    let check = ProviderCheck {
        path,
        file,
        preset,
        base_dir,
    };

    // An unknown preset would have filled the grant: one error for it is enough.
    let grant = match (&file.grant, preset) {
        (Some(text), _) => problems.check(check.field("grant"), parse_grant(text)),
        (None, Some(preset)) => problems.check(check.field("grant"), parse_grant(preset.grant)),
        (None, None) if preset_unknown => None,
        (None, None) => {
            let message = "required when there is no preset: static, client_credentials, \
                 refresh_token or authorization_code";
            problems.add(check.field("grant"), message);
            None
        }
    };

    // Checked in the order the fields are documented, so errors read top to bottom.
    let grant = grant.and_then(|grant| match grant {
        Grant::Static => check.static_grant(problems),
        Grant::ClientCredentials => {
            check.out_of_place_tokens(grant, problems);
            let endpoint = check.token_endpoint(grant, problems);
            endpoint.map(GrantConfig::ClientCredentials)
        }
        Grant::RefreshToken => check.refresh_token_grant(problems),
        Grant::AuthorizationCode => check.authorization_code_grant(problems),
    });
    let scheme = check.scheme(problems);
    let refresh_before = check.duration("refresh_before", file.refresh_before.as_ref(), problems);
    let default_ttl = match (&file.default_ttl, preset.and_then(|p| p.default_ttl)) {
        (Some(text), _) => check.duration("default_ttl", Some(text), problems),
        (None, Some(preset_ttl)) => parse_duration(preset_ttl).ok(),
        (None, None) => Some(DEFAULT_TTL),
    };
    let ca = check.ca(problems);
    let lockout_sensitive = file
        .lockout_sensitive
        .or(preset.map(|preset| preset.lockout_sensitive))
        .unwrap_or(false);
    let test_path = match (&file.test_path, preset.and_then(|p| p.test_path)) {
        (Some(text), _) => problems.check(check.field("test_path"), parse_test_path(text)),
        (None, Some(preset_path)) => Some(preset_path.to_string()),
        (None, None) => None,
    };
    let revoke_url = match (&file.revoke_url, preset.and_then(|p| p.revoke_url)) {
        (Some(text), _) => problems.check(check.field("revoke_url"), parse_endpoint_url(text)),
        (None, Some(preset_url)) => parse_endpoint_url(preset_url).ok(),
        (None, None) => None,
    };

    if problems.0.len() > errors_before {
        return None;
    }
    Some(ProviderConfig {
        name: name.to_string(),
        grant: grant?,
        scheme: scheme?,
        refresh_before,
        default_ttl: default_ttl?,
        ca,
        lockout_sensitive,
        test_path,
        revoke_url,
    })
}

fn parse_grant(text: &str) -> Result<Grant, String> {
    match text {
        "static" => Ok(Grant::Static),
        "client_credentials" => Ok(Grant::ClientCredentials),
        "refresh_token" => Ok(Grant::RefreshToken),
        "authorization_code" => Ok(Grant::AuthorizationCode),
        other => Err(format!(
            "unknown grant `{other}` (expected static, client_credentials, refresh_token or \
             authorization_code)"
        )),
    }
}

fn parse_client_auth(text: &str) -> Result<ClientAuth, String> {
    match text {
        "client_secret_basic" => Ok(ClientAuth::ClientSecretBasic),
        "client_secret_post" => Ok(ClientAuth::ClientSecretPost),
        "json_body" => Ok(ClientAuth::JsonBody),
        "none" => Ok(ClientAuth::None),
        other => Err(format!(
            "unknown client_auth `{other}` (expected client_secret_basic, client_secret_post, json_body or none)"
        )),
    }
}

/// A path below the route's upstream, as `check --online` requests it.
fn parse_test_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with /"));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{text}` holds a space or control character; percent-encode it"
        ));
    }
    Ok(text.to_string())
}

/// A vendor endpoint (`token_url`, `revoke_url`): `https`, or `http` to a loopback host; no
/// credentials in the URL. The URL is never quoted back: its userinfo could hold a password.
fn parse_endpoint_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a valid URL: {error}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry credentials (user:password@); use client_id and client_secret".into(),
        );
    }
    let host = match url.host_str() {
        None | Some("") => return Err("needs a host".into()),
        Some(host) => host,
    };
    // The URL parser has already normalised the host: lower case, IPv6 in brackets.
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || unbracketed
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err("must use https (plain http is allowed only to a loopback host)".into());
        }
        other => return Err(format!("must use https, not {other}")),
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    Ok(url)
}

/// The vendor's authorize page: an endpoint URL once its `{client_id}` placeholder is filled.
fn parse_authorize_url(text: &str) -> Result<String, String> {
    parse_endpoint_url(&text.replace("{client_id}", "client"))?;
    if text.replace("{client_id}", "").contains(['{', '}']) {
        return Err("the only placeholder an authorize_url may hold is {client_id}".into());
    }
    Ok(text.to_string())
}

/// The callback the vendor sends the person back to. It may be any host (a public name in front
/// of the admin listener), but its path must end where the admin listener serves the callback.
fn parse_redirect_uri(text: &str, provider: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|error| format!("not a valid URL: {error}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none_or(str::is_empty) {
        return Err("must be an absolute http(s) URL".into());
    }
    if url.fragment().is_some() || url.query().is_some() {
        return Err("must have neither a ?query nor a #fragment".into());
    }
    let expected = format!("/callback/{provider}");
    if !url.path().ends_with(&expected) {
        return Err(format!(
            "its path must end in {expected}, where the admin listener receives the code"
        ));
    }
    Ok(url)
}

/// Culture Amp's `target-entity:<uuid>:<permission>[,<permission>...]`.
fn check_target_entity_scope(scope: &str) -> Result<(), String> {
    let shape = || {
        format!(
            "`{scope}` does not have the shape target-entity:<uuid>:<permission>[,<permission>...] \
             (preset cultureamp)"
        )
    };
    let rest = scope.strip_prefix("target-entity:").ok_or_else(shape)?;
    let (entity, permissions) = rest.split_once(':').ok_or_else(shape)?;
    let groups: Vec<&str> = entity.split('-').collect();
    let uuid = groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.chars().all(|c| c.is_ascii_hexdigit()));
    let permission_ok = |permission: &str| {
        !permission.is_empty()
            && permission
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    if uuid && permissions.split(',').all(permission_ok) {
        Ok(())
    } else {
        Err(shape())
    }
}

/// The word before the token: an RFC 9110 token (letters, digits and ``!#$%&'*+-.^_`|~``).
fn parse_scheme(text: &str) -> Result<String, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if text.is_empty() || !text.chars().all(tchar) {
        return Err(format!(
            "`{text}` is not a single word like Bearer or Token (no spaces or separators)"
        ));
    }
    Ok(text.to_string())
}

/// A scope is sent space-joined, so it may hold no space (RFC 6749 section 3.3).
fn check_scope(scope: &str) -> Result<(), String> {
    let valid = !scope.is_empty()
        && scope
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{scope}` is not a scope: no spaces, quotes or backslashes, not empty"
        ))
    }
}

// === impl Grant ===

impl Grant {
    fn name(self) -> &'static str {
        match self {
            Grant::Static => "static",
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken => "refresh_token",
            Grant::AuthorizationCode => "authorization_code",
        }
    }
}

// === impl ProviderCheck ===

impl ProviderCheck<'_> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    fn scheme(&self, problems: &mut Problems) -> Option<String> {
        match (&self.file.scheme, self.preset) {
            (Some(text), _) => problems.check(self.field("scheme"), parse_scheme(text)),
            (None, Some(preset)) => Some(preset.scheme.to_string()),
            (None, None) => Some("Bearer".to_string()),
        }
    }

    fn duration(
        &self,
        name: &str,
        text: Option<&String>,
        problems: &mut Problems,
    ) -> Option<Duration> {
        problems.check(self.field(name), parse_duration(text?))
    }

    fn ca(&self, problems: &mut Problems) -> Option<CaBundle> {
        let written = self.file.ca.as_ref()?;
        let (path, certs) =
            problems.check(self.field("ca"), pem::certificates(written, self.base_dir))?;
        Some(CaBundle { path, certs })
    }

    /// The secret in `field`, resolved; `None` when absent or on error (recorded).
    fn secret(
        &self,
        name: &str,
        text: Option<&SecretText>,
        problems: &mut Problems,
    ) -> Option<Secret> {
        let text = text?;
        problems.check(
            self.field(name),
            secret_ref::resolve(&text.0, self.base_dir),
        )
    }

    fn static_grant(&self, problems: &mut Problems) -> Option<GrantConfig> {
        let file = self.file;
        let unused = [
            ("token_url", file.token_url.is_some()),
            ("client_auth", file.client_auth.is_some()),
            ("client_id", file.client_id.is_some()),
            ("client_secret", file.client_secret.is_some()),
            ("scopes", file.scopes.is_some()),
            ("extra_params", file.extra_params.is_some()),
            ("refresh_token", file.refresh_token.is_some()),
            ("authorize_url", file.authorize_url.is_some()),
            ("redirect_uri", file.redirect_uri.is_some()),
            ("pkce", file.pkce.is_some()),
        ];
        for (name, _) in unused.iter().filter(|(_, written)| *written) {
            problems.add(self.field(name), "not used by grant static");
        }
        if file.token.is_none() {
            problems.add(self.field("token"), "required by grant static");
        }
        let token = self.secret("token", file.token.as_ref(), problems)?;
        Some(GrantConfig::Static { token })
    }

    /// `token` and `refresh_token` each belong to one grant; written for another, they are errors.
    fn out_of_place_tokens(&self, grant: Grant, problems: &mut Problems) {
        let file = self.file;
        let grant_name = grant.name();
        if file.token.is_some() && grant != Grant::Static {
            let message = format!("not used by grant {grant_name} (it is for grant static)");
            problems.add(self.field("token"), message);
        }
        if file.refresh_token.is_some() && grant != Grant::RefreshToken {
            let message = format!("not used by grant {grant_name} (it is for grant refresh_token)");
            problems.add(self.field("refresh_token"), message);
        }
        if grant != Grant::AuthorizationCode {
            let code_fields = [
                ("authorize_url", file.authorize_url.is_some()),
                ("redirect_uri", file.redirect_uri.is_some()),
                ("pkce", file.pkce.is_some()),
            ];
            for (name, _) in code_fields.iter().filter(|(_, written)| *written) {
                let message =
                    format!("not used by grant {grant_name} (it is for grant authorization_code)");
                problems.add(self.field(name), message);
            }
        }
    }

    /// Connected accounts: the token endpoint, plus where a person authorizes and comes back.
    fn authorization_code_grant(&self, problems: &mut Problems) -> Option<GrantConfig> {
        self.out_of_place_tokens(Grant::AuthorizationCode, problems);
        let endpoint = self.token_endpoint(Grant::AuthorizationCode, problems);
        let file = self.file;
        let authorize_url = match (
            &file.authorize_url,
            self.preset.and_then(|p| p.authorize_url),
        ) {
            (Some(text), _) => {
                problems.check(self.field("authorize_url"), parse_authorize_url(text))
            }
            (None, Some(preset_url)) => Some(preset_url.to_string()),
            (None, None) => {
                let message = "required by grant authorization_code: the vendor's authorize page";
                problems.add(self.field("authorize_url"), message);
                None
            }
        };
        let redirect_uri = match &file.redirect_uri {
            Some(text) => {
                let provider = self.path.trim_start_matches("providers.");
                problems.check(
                    self.field("redirect_uri"),
                    parse_redirect_uri(text, provider),
                )
            }
            None => {
                let message = "required by grant authorization_code: the callback URL registered \
                     at the vendor, reaching the admin listener's /callback/<provider>";
                problems.add(self.field("redirect_uri"), message);
                None
            }
        };
        let pkce = file
            .pkce
            .or(self.preset.and_then(|preset| preset.pkce))
            .unwrap_or(true);
        Some(GrantConfig::AuthorizationCode(AuthorizationCode {
            endpoint: endpoint?,
            authorize_url: authorize_url?,
            redirect_uri: redirect_uri?,
            pkce,
        }))
    }

    fn refresh_token_grant(&self, problems: &mut Problems) -> Option<GrantConfig> {
        self.out_of_place_tokens(Grant::RefreshToken, problems);
        let endpoint = self.token_endpoint(Grant::RefreshToken, problems);
        let refresh_token = self.file.refresh_token.as_ref();
        if refresh_token.is_none() {
            let message =
                "required by grant refresh_token: the refresh token obtained from the vendor";
            problems.add(self.field("refresh_token"), message);
        }
        let refresh_token = self.secret("refresh_token", refresh_token, problems);
        Some(GrantConfig::RefreshToken {
            endpoint: endpoint?,
            refresh_token: refresh_token?,
        })
    }

    /// The token endpoint fields shared by the grants that make token requests.
    fn token_endpoint(&self, grant: Grant, problems: &mut Problems) -> Option<TokenEndpoint> {
        let file = self.file;
        let preset = self.preset;
        let required = format!("required by grant {}", grant.name());

        let token_url = match (&file.token_url, preset.and_then(|p| p.token_url)) {
            (Some(text), _) => problems.check(self.field("token_url"), parse_endpoint_url(text)),
            (None, Some(preset_url)) => parse_endpoint_url(preset_url).ok(),
            (None, None) => {
                problems.add(self.field("token_url"), &required);
                None
            }
        };

        let client_auth = match (&file.client_auth, preset.and_then(|p| p.client_auth)) {
            (Some(text), _) => problems.check(self.field("client_auth"), parse_client_auth(text)),
            (None, Some(preset_auth)) => parse_client_auth(preset_auth).ok(),
            (None, None) => Some(ClientAuth::ClientSecretBasic),
        };

        if file.client_id.is_none() {
            problems.add(self.field("client_id"), &required);
        }
        let client_id = self.secret("client_id", file.client_id.as_ref(), problems);

        let client_secret = match (client_auth, &file.client_secret) {
            (Some(ClientAuth::None), Some(_)) => {
                problems.add(
                    self.field("client_secret"),
                    "not used with client_auth none",
                );
                None
            }
            (Some(ClientAuth::None) | None, None) => None,
            (Some(_), None) => {
                let message = "required unless client_auth is none";
                problems.add(self.field("client_secret"), message);
                None
            }
            (_, Some(text)) => self.secret("client_secret", Some(text), problems),
        };

        let scopes = match (&file.scopes, preset) {
            (Some(scopes), _) => scopes.clone(),
            (None, Some(preset)) => preset.scopes.iter().map(|s| s.to_string()).collect(),
            (None, None) => Vec::new(),
        };
        let shape = preset.and_then(|preset| preset.scope_shape);
        for (i, scope) in scopes.iter().enumerate() {
            let checked = check_scope(scope).and_then(|()| match shape {
                Some(ScopeShape::TargetEntity) => check_target_entity_scope(scope),
                None => Ok(()),
            });
            problems.check(format!("{}.scopes[{i}]", self.path), checked);
        }

        let extra_params = match (&file.extra_params, preset) {
            (Some(params), _) => self.extra_params(params, problems),
            (None, Some(preset)) => preset
                .extra_params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            (None, None) => Vec::new(),
        };

        Some(TokenEndpoint {
            token_url: token_url?,
            client_auth: client_auth?,
            client_id: client_id?,
            client_secret,
            scopes,
            extra_params,
        })
    }

    fn extra_params(
        &self,
        params: &Ordered<String>,
        problems: &mut Problems,
    ) -> Vec<(String, String)> {
        for (key, _) in &params.0 {
            let path = format!("{}.extra_params.{key}", self.path);
            if key.is_empty() {
                problems.add(path, "a parameter needs a name");
            } else if RESERVED_PARAMS.contains(&key.as_str()) {
                let hint = if key == "scope" { "; use scopes" } else { "" };
                problems.add(path, format!("`{key}` is set by the proxy{hint}"));
            }
        }
        params.0.clone()
    }
}

#[cfg(test)]
mod tests;
