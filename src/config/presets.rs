//! The vendor presets as data. A preset fills provider fields the file leaves out; every field
//! written by hand wins. Adding a vendor means adding a [`Preset`] here, never a code path.

/// Names accepted by `preset:`.
pub const PRESET_NAMES: &[&str] = &["cross-river", "cultureamp"];

/// Provider field values a preset supplies, spelled as they would be in `proxy.yaml`, so that a
/// preset value and a hand-written one go through the same checks.
#[derive(Debug)]
pub struct Preset {
    pub name: &'static str,
    pub grant: &'static str,
    pub token_url: &'static str,
    pub client_auth: &'static str,
    pub scheme: &'static str,
    pub scopes: &'static [&'static str],
    pub extra_params: &'static [(&'static str, &'static str)],
}

/// Cross River: client credentials with the secret in the form body. The token host is per
/// customer, so `token_url` is a placeholder that a real config overrides.
const CROSS_RIVER: Preset = Preset {
    name: "cross-river",
    grant: "client_credentials",
    token_url: "https://auth.crossriver.example/connect/token",
    client_auth: "client_secret_post",
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[],
};

/// Culture Amp: client credentials, HTTP Basic client authentication, short-lived JWTs.
const CULTUREAMP: Preset = Preset {
    name: "cultureamp",
    grant: "client_credentials",
    token_url: "https://api.cultureamp.com/v1/oauth2/token",
    client_auth: "client_secret_basic",
    scheme: "Bearer",
    scopes: &[],
    extra_params: &[],
};

const PRESETS: &[Preset] = &[CROSS_RIVER, CULTUREAMP];

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
