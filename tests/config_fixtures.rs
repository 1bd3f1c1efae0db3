//! The config contract, file by file: every `tests/fixtures/valid/*.yaml` loads, and every
//! `tests/fixtures/invalid/NAME.yaml` fails with exactly the text in its sibling `NAME.err`.
//!
//! In `.err` files the absolute path of `tests/fixtures` is written `$FIXTURES`. After changing
//! messages on purpose, `AUTHRELAY_BLESS=1 cargo test --test config_fixtures` rewrites them;
//! review the diff.

// The helpers outside #[test] fns unwrap too: a panic here is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use authrelay::config::{ClientAuth, Config, ConfigError, GrantConfig, StoreConfig};

/// Every fake secret in the fixtures contains this, so one search proves none was printed.
const SECRET_MARKER: &str = "do-not-print";

/// The store key of the valid fixtures (base64 cannot hold the marker's dashes).
const STORE_KEY: &str = "ZG9ub3RwcmludGRvbm90cHJpbnRkb25vdHByaW50ISE=";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

fn load_valid(name: &str) -> Config {
    let path = fixtures().join("valid").join(name);
    Config::load(&path).unwrap_or_else(|errors| panic!("{name}:\n{errors}"))
}

/// The full error output, as `authrelay check` would print it, with the fixture dir made portable.
fn error_text(path: &Path) -> String {
    match Config::load(path) {
        Ok(_) => "(loaded without error)".to_string(),
        Err(errors) => errors
            .to_string()
            .replace(&fixtures().display().to_string(), "$FIXTURES"),
    }
}

#[test]
fn every_valid_fixture_loads() {
    let failures: Vec<String> = yaml_files("valid")
        .iter()
        .filter_map(|path| {
            let errors = Config::load(path).err()?;
            Some(format!("{}:\n{errors}", path.display()))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_invalid_fixture_fails_with_its_expected_errors() {
    let bless = std::env::var_os("AUTHRELAY_BLESS").is_some();
    let mut mismatches = Vec::new();
    for path in yaml_files("invalid") {
        let actual = error_text(&path);
        let err_path = path.with_extension("err");
        if bless {
            std::fs::write(&err_path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&err_path).unwrap_or_default();
        if actual != expected.trim_end() {
            mismatches.push(format!(
                "{}\n--- expected\n{}\n--- actual\n{actual}",
                path.display(),
                expected.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "\n{}", mismatches.join("\n\n"));
}

#[test]
fn every_err_file_has_its_fixture() {
    let dir = fixtures().join("invalid");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "err") {
            assert!(
                path.with_extension("yaml").exists(),
                "{} is orphaned",
                path.display()
            );
        }
    }
}

#[test]
fn no_error_ever_shows_a_secret() {
    for path in yaml_files("invalid") {
        let text = error_text(&path);
        assert!(!text.contains(SECRET_MARKER), "{}:\n{text}", path.display());
        let debug = format!("{:?}", Config::load(&path).err());
        assert!(
            !debug.contains(SECRET_MARKER),
            "{}:\n{debug}",
            path.display()
        );
    }
}

#[test]
fn loaded_config_debug_never_shows_a_secret() {
    for path in yaml_files("valid") {
        let debug = format!("{:?}", Config::load(&path).unwrap());
        assert!(
            !debug.contains(SECRET_MARKER),
            "{}:\n{debug}",
            path.display()
        );
    }
}

#[test]
fn effective_config_never_shows_a_secret() {
    for path in yaml_files("valid") {
        let text = Config::load(&path).unwrap().effective();
        for secret in [SECRET_MARKER, STORE_KEY] {
            assert!(!text.contains(secret), "{}:\n{text}", path.display());
        }
    }
}

#[test]
fn syntax_and_unknown_key_errors_carry_line_and_column() {
    let path = fixtures().join("invalid/unknown_key_insecure_skip_verify.yaml");
    let errors = Config::load(&path).unwrap_err();
    let [ConfigError::Syntax { message }] = errors.0.as_slice() else {
        panic!("{errors:?}");
    };
    assert!(
        message.contains("unknown field `insecure_skip_verify`"),
        "{message}"
    );
    assert!(message.contains("line 7, column 5"), "{message}");
}

#[test]
fn semantic_errors_name_their_yaml_path() {
    let path = fixtures().join("invalid/many_errors_reported_together.yaml");
    let errors = Config::load(&path).unwrap_err();
    let paths: Vec<&str> = errors
        .iter()
        .map(|error| match error {
            ConfigError::Invalid { path, .. } => path.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        [
            "listeners[0].bind",
            "providers.cross-river.token_url",
            "providers.cross-river.refresh_before",
            "providers.internal.token",
            "routes[0].headers.Authorization",
            "routes[1].provider",
        ]
    );
}

#[test]
fn presets_fill_fields_and_written_fields_win() {
    let config = load_valid("presets_with_overrides.yaml");
    let cross_river = &config.providers["cross-river"];
    let GrantConfig::ClientCredentials(endpoint) = &cross_river.grant else {
        panic!("{cross_river:?}");
    };
    assert_eq!(
        endpoint.token_url.as_str(),
        "https://auth.customer.crossriver.example/connect/token"
    );
    assert_eq!(endpoint.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(endpoint.client_id.expose(), "cr-client-id-do-not-print");
    let secret = endpoint.client_secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "cr-client-secret-do-not-print");
    assert_eq!(endpoint.scopes, ["payments.read", "payments.write"]);
    assert_eq!(cross_river.scheme, "Bearer");
    assert_eq!(cross_river.refresh_before, Some(Duration::from_secs(60)));
    assert_eq!(cross_river.default_ttl, Duration::from_secs(3600));

    let cultureamp = &config.providers["cultureamp"];
    let GrantConfig::ClientCredentials(endpoint) = &cultureamp.grant else {
        panic!("{cultureamp:?}");
    };
    assert_eq!(
        endpoint.token_url.as_str(),
        "https://api.cultureamp.com/v1/oauth2/token"
    );
    assert_eq!(endpoint.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(cultureamp.default_ttl, Duration::from_secs(50 * 60));

    assert_eq!(config.routes[0].matcher.path_prefix, "/cross-river");
    assert_eq!(config.routes[1].upstream.base_path, "");
}

#[test]
fn static_token_file_loses_its_line_ending() {
    let config = load_valid("static_token_with_headers.yaml");
    let GrantConfig::Static { token } = &config.providers["internal"].grant else {
        panic!("not static");
    };
    assert_eq!(token.expose(), "internal-pat-do-not-print");
    let headers = &config.routes[0].headers;
    let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["x-api-key", "x-source", "x-literal-braces"]);
    assert_eq!(headers[0].1.fields().collect::<Vec<_>>(), ["token"]);
    assert_eq!(headers[2].1.fixed().unwrap(), "{not a field}");
}

#[test]
fn routes_get_defaults_and_normalised_matches() {
    let config = load_valid("client_credentials_by_hand.yaml");
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sandbox", "sandbox-2", "sandbox-3", "public"]);

    let first = &config.routes[0];
    assert_eq!(first.matcher.host.as_deref(), Some("api.sandbox.example"));
    assert_eq!(first.matcher.methods.as_ref().unwrap().len(), 2);
    assert_eq!(first.upstream.authority, "127.0.0.1:9998");
    assert_eq!(first.upstream.base_path, "/base");
    assert_eq!(first.max_body, 10 * 1024 * 1024);
    assert_eq!(first.timeout, Duration::from_secs(120));
    assert!(!first.strip_prefix);
    assert_eq!(config.routes[1].max_body, 1_048_576);
    assert_eq!(config.routes[1].timeout, Duration::from_secs(30));
    assert_eq!(config.routes[2].max_body, 512 * 1024);
    // Unwritten: the documented default.
    assert_eq!(config.routes[3].max_body, 10 * 1024 * 1024);

    let sandbox = &config.providers["sandbox"];
    assert_eq!(sandbox.scheme, "Token");
    assert_eq!(sandbox.ca.as_ref().unwrap().certs.len(), 1);
    let GrantConfig::ClientCredentials(endpoint) = &sandbox.grant else {
        panic!("not client_credentials");
    };
    assert_eq!(endpoint.client_auth, ClientAuth::JsonBody);
    let params: Vec<(&str, &str)> = endpoint
        .extra_params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            ("audience", "https://api.example.com"),
            ("resource", "urn:example")
        ]
    );

    let GrantConfig::ClientCredentials(public) = &config.providers["public-client"].grant else {
        panic!("not client_credentials");
    };
    assert_eq!(public.client_auth, ClientAuth::None);
    assert!(public.client_secret.is_none());
}

/// CI runs `authrelay check --config proxy.yaml` with dummy values exported; without them the
/// shipped file may fail only because those variables are unset.
#[test]
fn shipped_proxy_yaml_reports_only_missing_env_refs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.yaml");
    let errors = match Config::load(&path) {
        Ok(config) => {
            let providers: Vec<&str> = config.providers.keys().map(String::as_str).collect();
            assert_eq!(
                providers,
                ["cross-river", "crossbeam", "cultureamp", "internal"]
            );
            let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(
                routes,
                [
                    "crossbeam",
                    "cross-river",
                    "cultureamp",
                    "cultureamp-by-host",
                    "internal"
                ]
            );
            let StoreConfig::File { key, .. } = &config.store else {
                panic!("proxy.yaml uses the file store: {:?}", config.store);
            };
            assert!(key.is_some(), "proxy.yaml sets store.key");
            return;
        }
        Err(errors) => errors,
    };
    for error in errors.iter() {
        let text = error.to_string();
        let only_unset = matches!(error, ConfigError::Invalid { message, .. }
            if message.starts_with("${env:") && message.ends_with("} is not set"));
        assert!(only_unset, "proxy.yaml: {text}");
    }
}

#[test]
fn store_defaults_next_to_the_config_file() {
    let config = load_valid("minimal.yaml");
    let StoreConfig::File { path, key } = &config.store else {
        panic!("{:?}", config.store);
    };
    assert_eq!(*path, fixtures().join("valid").join("./authrelay-data"));
    assert!(key.is_none());
}

#[test]
fn crossbeam_preset_works_with_grant_refresh_token() {
    let config = load_valid("crossbeam_refresh_token_with_store.yaml");
    let StoreConfig::File { path, key } = &config.store else {
        panic!("{:?}", config.store);
    };
    assert_eq!(*path, fixtures().join("valid").join("../data/authrelay"));
    assert_eq!(key.as_ref().unwrap().expose(), STORE_KEY);

    let crossbeam = &config.providers["crossbeam"];
    let GrantConfig::RefreshToken {
        endpoint,
        refresh_token,
    } = &crossbeam.grant
    else {
        panic!("{crossbeam:?}");
    };
    assert_eq!(refresh_token.expose(), "crossbeam-refresh-do-not-print");
    assert_eq!(
        endpoint.token_url.as_str(),
        "https://auth.crossbeam.com/oauth/token"
    );
    assert_eq!(endpoint.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(
        endpoint.extra_params,
        [(
            "audience".to_string(),
            "https://api.getcrossbeam.com".to_string()
        )]
    );
    assert_eq!(
        endpoint.scopes,
        ["openid", "read:partnerships", "offline_access"]
    );
    assert_eq!(crossbeam.scheme, "Bearer");
    assert_eq!(crossbeam.default_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(crossbeam.test_path.as_deref(), Some("/v0.1/users/me"));
    assert!(!crossbeam.lockout_sensitive);
    assert!(crossbeam.revoke_url.is_none());
    assert_eq!(config.routes[0].max_replay_body, 256 * 1024);
}

#[test]
fn every_preset_fills_its_vendor_quirks() {
    let config = load_valid("all_presets.yaml");
    let cross_river = &config.providers["cross-river"];
    assert!(cross_river.lockout_sensitive);
    assert_eq!(
        cross_river.test_path.as_deref(),
        Some("/api/SignupCard/TestOauth")
    );

    let xref = &config.providers["xref"];
    assert!(matches!(xref.grant, GrantConfig::Static { .. }));
    assert_eq!(xref.scheme, "Token");
    assert_eq!(xref.default_ttl, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(
        xref.revoke_url.as_ref().unwrap().as_str(),
        "https://api-open.xref.com/oauth/deauthorize"
    );

    let cultureamp = &config.providers["cultureamp"];
    let GrantConfig::ClientCredentials(endpoint) = &cultureamp.grant else {
        panic!("{cultureamp:?}");
    };
    assert_eq!(endpoint.client_auth, ClientAuth::ClientSecretBasic);
    assert_eq!(endpoint.scopes.len(), 2);

    let internal = &config.providers["internal"];
    let GrantConfig::Static { token } = &internal.grant else {
        panic!("{internal:?}");
    };
    assert_eq!(token.expose(), "internal-pat-do-not-print");
    assert_eq!(internal.scheme, "Bearer");
    assert!(config.routes.iter().all(|r| r.max_replay_body == 1 << 20));
}

#[test]
fn token_engine_fields_can_be_written_by_hand() {
    let config = load_valid("provider_fields_by_hand.yaml");
    let vendor = &config.providers["vendor"];
    let GrantConfig::RefreshToken { endpoint, .. } = &vendor.grant else {
        panic!("{vendor:?}");
    };
    assert_eq!(endpoint.client_auth, ClientAuth::None);
    assert!(vendor.lockout_sensitive);
    assert_eq!(vendor.test_path.as_deref(), Some("/api/me?verbose=1"));
    assert_eq!(
        vendor.revoke_url.as_ref().unwrap().as_str(),
        "http://[::1]:9999/oauth/revoke"
    );
    // Written fields win over the preset's.
    let cross_river = &config.providers["cross-river"];
    assert!(!cross_river.lockout_sensitive);
    assert_eq!(cross_river.test_path.as_deref(), Some("/health"));
    assert_eq!(config.routes[0].max_replay_body, 0);
    assert_eq!(config.routes[1].max_replay_body, 2 << 20);
}

#[test]
fn fleet_store_settings_are_read() {
    let config = load_valid("fleet.yaml");
    let StoreConfig::Redis(redis) = &config.store else {
        panic!("{:?}", config.store);
    };
    assert_eq!(
        redis.url.expose(),
        "rediss://relay:not-a-real-password@redis.internal:6380/2"
    );
    assert_eq!(redis.prefix, "payments-fleet:");
    assert_eq!(redis.timeout, Duration::from_millis(80));
    assert_eq!(
        redis.when_unreachable,
        authrelay::config::WhenUnreachable::Request
    );
    assert!(redis.ca.as_ref().unwrap().ends_with("certs/ca.crt"));
    // Debug output (logs, panics) never shows the URL's password or the key.
    let debug = format!("{:?}", config.store);
    assert!(!debug.contains("not-a-real-password"), "{debug}");
    assert!(!debug.contains("BwcHBwcH"), "{debug}");
}
