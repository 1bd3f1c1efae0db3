//! `providers.NAME` -> [`ProviderConfig`]: the preset fills what the file leaves out, then the
//! grant decides which fields are required and which are out of place.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::super::file::{Ordered, ProviderFile, SecretText};
use super::super::presets::{self, PRESET_NAMES, Preset};
use super::super::{CaBundle, ClientAuth, GrantConfig, ProviderConfig, TokenEndpoint};
use super::{Problems, check_name, parse_duration, secret_ref};
use crate::secret::Secret;

const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Token request parameters the proxy writes itself; `extra_params` may not set them.
const RESERVED_PARAMS: &[&str] = &["grant_type", "client_id", "client_secret", "scope"];

/// The grants this milestone builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Static,
    ClientCredentials,
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
        (None, Some(preset)) => parse_grant(preset.grant).ok(),
        (None, None) if preset_unknown => None,
        (None, None) => {
            let message = "required when there is no preset: static or client_credentials";
            problems.add(check.field("grant"), message);
            None
        }
    };

    // Checked in the order the fields are documented, so errors read top to bottom.
    let grant = grant.and_then(|grant| match grant {
        Grant::Static => check.static_grant(problems),
        Grant::ClientCredentials => check.client_credentials(problems),
    });
    let scheme = check.scheme(problems);
    let refresh_before = check.duration("refresh_before", file.refresh_before.as_ref(), problems);
    let default_ttl = check.duration("default_ttl", file.default_ttl.as_ref(), problems);
    let ca = check.ca(problems);

    if problems.0.len() > errors_before {
        return None;
    }
    Some(ProviderConfig {
        name: name.to_string(),
        grant: grant?,
        scheme: scheme?,
        refresh_before,
        default_ttl: default_ttl.unwrap_or(DEFAULT_TTL),
        ca,
        lockout_sensitive: false,
        test_path: None,
        revoke_url: None,
    })
}

fn parse_grant(text: &str) -> Result<Grant, String> {
    match text {
        "static" => Ok(Grant::Static),
        "client_credentials" => Ok(Grant::ClientCredentials),
        "refresh_token" | "authorization_code" => Err(format!(
            "grant {text} is not supported yet (supported: static, client_credentials)"
        )),
        other => Err(format!(
            "unknown grant `{other}` (expected static or client_credentials)"
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

/// `https`, or `http` to a loopback host; no credentials in the URL. The URL is never quoted
/// back: its userinfo could hold a password.
fn parse_token_url(text: &str) -> Result<reqwest::Url, String> {
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
        let path = self.base_dir.join(written);
        let shown = if Path::new(written).is_absolute() {
            written.clone()
        } else {
            format!("{written} ({})", path.display())
        };
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|error| match error {
                rustls_pki_types::pem::Error::Io(error) => format!("cannot read {shown}: {error}"),
                error => format!("{shown} is not valid PEM: {error}"),
            })
            .and_then(|certs| match certs.is_empty() {
                true => Err(format!("{shown} holds no PEM certificate")),
                false => Ok(certs),
            });
        let certs = problems.check(self.field("ca"), certs)?;
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

    fn client_credentials(&self, problems: &mut Problems) -> Option<GrantConfig> {
        let file = self.file;
        let preset = self.preset;
        if file.token.is_some() {
            let message = "not used by grant client_credentials (it is for grant static)";
            problems.add(self.field("token"), message);
        }

        let token_url = match (&file.token_url, preset) {
            (Some(text), _) => problems.check(self.field("token_url"), parse_token_url(text)),
            (None, Some(preset)) => parse_token_url(preset.token_url).ok(),
            (None, None) => {
                problems.add(
                    self.field("token_url"),
                    "required by grant client_credentials",
                );
                None
            }
        };

        let client_auth = match (&file.client_auth, preset) {
            (Some(text), _) => problems.check(self.field("client_auth"), parse_client_auth(text)),
            (None, Some(preset)) => parse_client_auth(preset.client_auth).ok(),
            (None, None) => Some(ClientAuth::ClientSecretBasic),
        };

        if file.client_id.is_none() {
            problems.add(
                self.field("client_id"),
                "required by grant client_credentials",
            );
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
            (Some(scopes), _) => {
                for (i, scope) in scopes.iter().enumerate() {
                    problems.check(format!("{}.scopes[{i}]", self.path), check_scope(scope));
                }
                scopes.clone()
            }
            (None, Some(preset)) => preset.scopes.iter().map(|s| s.to_string()).collect(),
            (None, None) => Vec::new(),
        };

        let extra_params = match (&file.extra_params, preset) {
            (Some(params), _) => self.extra_params(params, problems),
            (None, Some(preset)) => preset
                .extra_params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            (None, None) => Vec::new(),
        };

        Some(GrantConfig::ClientCredentials(TokenEndpoint {
            token_url: token_url?,
            client_auth: client_auth?,
            client_id: client_id?,
            client_secret,
            scopes,
            extra_params,
        }))
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
mod tests {
    use super::*;

    #[test]
    fn token_url_needs_https_unless_loopback() {
        assert!(parse_token_url("https://auth.example.com/token").is_ok());
        assert!(parse_token_url("http://127.0.0.1:8081/token").is_ok());
        assert!(parse_token_url("http://127.8.9.10/token").is_ok());
        assert!(parse_token_url("http://[::1]:8081/token").is_ok());
        assert!(parse_token_url("http://localhost:8081/token").is_ok());
        assert!(parse_token_url("http://auth.example.com/token").is_err());
        assert!(parse_token_url("http://10.0.0.1/token").is_err());
        assert!(parse_token_url("ftp://auth.example.com/token").is_err());
        assert!(parse_token_url("https://id:pw@auth.example.com/token").is_err());
        assert!(parse_token_url("https://auth.example.com/token#x").is_err());
        assert!(parse_token_url("auth.example.com/token").is_err());
    }

    #[test]
    fn scheme_is_one_word() {
        assert_eq!(parse_scheme("Token"), Ok("Token".into()));
        assert!(parse_scheme("Bearer token").is_err());
        assert!(parse_scheme("").is_err());
        assert!(parse_scheme("a:b").is_err());
    }

    #[test]
    fn every_preset_passes_its_own_checks() {
        for name in PRESET_NAMES {
            let preset = presets::find(name).unwrap();
            assert!(parse_grant(preset.grant).is_ok(), "{name}");
            assert!(parse_token_url(preset.token_url).is_ok(), "{name}");
            assert!(parse_client_auth(preset.client_auth).is_ok(), "{name}");
            assert!(parse_scheme(preset.scheme).is_ok(), "{name}");
            assert!(
                preset.scopes.iter().all(|s| check_scope(s).is_ok()),
                "{name}"
            );
        }
    }
}
