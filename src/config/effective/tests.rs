use std::path::Path;

use super::*;

/// Base64 of the 32 bytes `donotprintdonotprintdonotprint!!`.
const STORE_KEY: &str = "ZG9ub3RwcmludGRvbm90cHJpbnRkb25vdHByaW50ISE=";

fn yaml() -> String {
    format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
store: {{ path: data, key: "{STORE_KEY}" }}
providers:
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    client_id: crossbeam-id-SECRET1
    client_secret: crossbeam-secret-SECRET2
    refresh_token: crossbeam-refresh-SECRET3
  cultureamp:
    preset: cultureamp
    client_id: ca-id-SECRET4
    client_secret: ca-secret-SECRET5
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  internal:
    preset: pat
    token: pat-SECRET6
routes:
  - match: {{ path_prefix: /crossbeam, methods: [GET] }}
    strip_prefix: true
    upstream: https://api.getcrossbeam.com
    provider: crossbeam
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
      X-Braces: "{{{{literal}}}} {{token}}"
    max_replay_body: 64KiB
  - upstream: https://api.partner.example/v2
    provider: internal
"#
    )
}

fn effective() -> String {
    let dir = Path::new("/etc/authrelay");
    Config::from_yaml(&yaml(), dir).unwrap().effective()
}

#[test]
fn no_secret_value_appears() {
    let text = effective();
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!text.contains(STORE_KEY), "{text}");
    // client_id and client_secret twice, refresh_token, token, store key.
    assert_eq!(text.matches(REDACTED).count(), 7, "{text}");
}

#[test]
fn preset_filled_fields_and_defaults_are_shown() {
    let text = effective();
    for expected in [
        "  path: /etc/authrelay/data\n",
        "    grant: refresh_token\n",
        "    token_url: https://auth.crossbeam.com/oauth/token\n",
        "    client_auth: client_secret_post\n",
        "      audience: https://api.getcrossbeam.com\n",
        "    default_ttl: 1d\n",
        "    test_path: /v0.1/users/me\n",
        "    client_auth: client_secret_basic\n",
        "    grant: static\n",
        "    token: [redacted]\n",
        "    max_replay_body: 64KiB\n",
        "    max_replay_body: 1MiB\n",
        "    timeout: 30s\n",
        "      x-braces: \"{{literal}} {token}\"\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn output_reads_back_as_yaml() {
    let text = effective();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(value["providers"]["internal"]["scheme"], "Bearer");
    let header = &value["routes"][0]["headers"]["xbeam-organization"];
    assert_eq!(header, "02fde942-c7cd-4f12-9d4e-07ee8a57c8c6");
}

#[test]
fn durations_and_sizes_use_config_units() {
    assert_eq!(duration_text(Duration::from_secs(365 * 86_400)), "365d");
    assert_eq!(duration_text(Duration::from_secs(5_400)), "1h30m");
    assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
    assert_eq!(duration_text(Duration::ZERO), "0ms");
    assert_eq!(size_text(1 << 20), "1MiB");
    assert_eq!(size_text(1_000_000), "1000000");
    assert_eq!(size_text(0), "0");
}

#[test]
fn scalars_are_quoted_only_when_yaml_would_misread_them() {
    assert_eq!(scalar("https://x.example/a"), "https://x.example/a");
    assert_eq!(scalar("openid"), "openid");
    assert_eq!(scalar("{token}"), "\"{token}\"");
    assert_eq!(scalar("a: b"), "\"a: b\"");
    assert_eq!(scalar(""), "\"\"");
    assert_eq!(scalar("true"), "\"true\"");
}
