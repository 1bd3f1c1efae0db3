//! The vendor presets as data. A preset fills provider fields the file leaves out; every field
//! written by hand wins. Adding a vendor means adding a [`Preset`] here, never a code path.

/// Names accepted by `preset:`.
pub const PRESET_NAMES: &[&str] = &["crossbeam", "cross-river", "xref", "cultureamp", "pat"];

/// Provider field values a preset supplies, spelled as they would be in `proxy.yaml`, so that a
/// preset value and a hand-written one go through the same checks. `None` leaves the field to
/// the file or to the general default.
#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    pub grant: &'static str,
    pub token_url: Option<&'static str>,
    pub client_auth: Option<&'static str>,
    pub scheme: &'static str,
    pub scopes: &'static [&'static str],
    pub extra_params: &'static [(&'static str, &'static str)],
    pub default_ttl: Option<&'static str>,
    pub lockout_sensitive: bool,
    pub test_path: Option<&'static str>,
    pub revoke_url: Option<&'static str>,
    /// The authorize page of `authorization_code`; `{client_id}` is replaced.
    pub authorize_url: Option<&'static str>,
    /// PKCE on authorization requests; `None` leaves the general default.
    pub pkce: Option<bool>,
    /// The shape every scope must have, whether written or filled in.
    pub scope_shape: Option<ScopeShape>,
    /// Headers every route using this provider must set, with why.
    pub route_headers: &'static [RequiredHeader],
}

/// A vendor's structured scope syntax, checked at load instead of by a 400 from the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeShape {
    /// Culture Amp: `target-entity:<uuid>:<permission>[,<permission>...]`.
    TargetEntity,
}

/// A header the vendor requires on every API call, which the proxy cannot know by itself.
#[derive(Debug)]
pub struct RequiredHeader {
    pub name: &'static str,
    pub why: &'static str,
}

/// Crossbeam: Auth0-style authorization code with an `audience` and PKCE, 24-hour tokens renewed
/// with a rotating refresh token, and an organization header on every call. A config may instead
/// write `grant: refresh_token` with a refresh token obtained elsewhere.
const CROSSBEAM: Preset = Preset {
    name: "crossbeam",
    grant: "authorization_code",
    token_url: Some("https://auth.crossbeam.com/oauth/token"),
    client_auth: Some("client_secret_post"),
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[("audience", "https://api.getcrossbeam.com")],
    default_ttl: Some("24h"),
    lockout_sensitive: false,
    test_path: Some("/v0.1/users/me"),
    revoke_url: None,
    authorize_url: Some("https://auth.crossbeam.com/authorize"),
    pkce: None,
    scope_shape: None,
    route_headers: &[RequiredHeader {
        name: "Xbeam-Organization",
        why: "Crossbeam needs the organization uuid on every call (GET /v0.1/users/me lists them)",
    }],
};

/// Cross River: client credentials with the secret in the form body. The token host is per
/// customer, so `token_url` is a placeholder that a real config overrides. Three rejected
/// secrets lock the account.
const CROSS_RIVER: Preset = Preset {
    name: "cross-river",
    grant: "client_credentials",
    token_url: Some("https://auth.crossriver.example/connect/token"),
    client_auth: Some("client_secret_post"),
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[],
    default_ttl: None,
    lockout_sensitive: true,
    test_path: Some("/api/SignupCard/TestOauth"),
    revoke_url: None,
    authorize_url: None,
    pkce: None,
    scope_shape: None,
    route_headers: &[],
};

/// Xref: account-level authorization code with a JSON token exchange, the `Token` scheme, and
/// tokens that never expire until deauthorized.
const XREF: Preset = Preset {
    name: "xref",
    grant: "authorization_code",
    token_url: Some("https://api-open.xref.com/oauth/tokens"),
    client_auth: Some("json_body"),
    scheme: "Token",
    scopes: &[],
    extra_params: &[],
    default_ttl: Some("365d"),
    lockout_sensitive: false,
    test_path: None,
    revoke_url: Some("https://api-open.xref.com/oauth/deauthorize"),
    authorize_url: Some("https://login.xref.com/oauth/open-api/{client_id}"),
    pkce: Some(false),
    scope_shape: None,
    route_headers: &[],
};

/// Culture Amp: client credentials, HTTP Basic client authentication, short-lived JWTs, and
/// scopes naming a target entity.
const CULTUREAMP: Preset = Preset {
    name: "cultureamp",
    grant: "client_credentials",
    token_url: Some("https://api.cultureamp.com/v1/oauth2/token"),
    client_auth: Some("client_secret_basic"),
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[],
    default_ttl: None,
    lockout_sensitive: false,
    test_path: None,
    revoke_url: None,
    authorize_url: None,
    pkce: None,
    scope_shape: Some(ScopeShape::TargetEntity),
    route_headers: &[],
};

/// A personal access token sent as `Bearer`.
const PAT: Preset = Preset {
    name: "pat",
    grant: "static",
    token_url: None,
    client_auth: None,
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[],
    default_ttl: None,
    lockout_sensitive: false,
    test_path: None,
    revoke_url: None,
    authorize_url: None,
    pkce: None,
    scope_shape: None,
    route_headers: &[],
};

const PRESETS: &[Preset] = &[CROSSBEAM, CROSS_RIVER, XREF, CULTUREAMP, PAT];

/// The preset called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|preset| preset.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_has_a_preset_and_back() {
        for name in PRESET_NAMES {
            assert_eq!(find(name).map(|preset| preset.name), Some(*name));
        }
        assert_eq!(PRESETS.len(), PRESET_NAMES.len());
    }
}
