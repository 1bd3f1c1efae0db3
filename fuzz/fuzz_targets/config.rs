//! `proxy.yaml` text -> `Config::from_yaml` (parse and validate), then `Config::effective`.
//!
//! Never panics; no error message and no effective config shows a secret the harness planted
//! (environment variables and fixture files, all holding `do-not-print`); and what validates keeps
//! the rules the request path relies on: listeners off loopback only with callers or
//! `allow_anonymous`, route allow-lists that name known callers, routes that name a known provider,
//! path prefixes a normalized request path can equal, no refused header names, no two routes that
//! take the same requests.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use authrelay::Config;
use authrelay::config::GrantConfig;
use authrelay::route::normalize_path;
use libfuzzer_sys::fuzz_target;

/// Every planted secret holds this (as the fixture secrets in `tests/fixtures/secrets` do).
const MARKER: &str = "do-not-print";
/// `AUTHRELAY_STORE_KEY`: base64 of 32 bytes cannot hold the marker's dashes, so it is its own marker.
const STORE_KEY: &str = "ZnV6ei1zdG9yZS1rZXktZG8tbm90LXByaW50LTMyYiE=";
/// The variables `proxy.yaml` and the fixtures refer to.
const ENV_SECRETS: &[&str] = &[
    "CA_CLIENT_ID",
    "CA_CLIENT_SECRET",
    "CROSSBEAM_CLIENT_ID",
    "CROSSBEAM_CLIENT_SECRET",
    "CROSSBEAM_REFRESH_TOKEN",
    "CR_CLIENT_ID",
    "CR_CLIENT_SECRET",
    "INTERNAL_PAT",
    "XREF_CLIENT_ID",
    "XREF_CLIENT_SECRET",
    "FUZZ_SECRET",
];

const REFUSED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
    "proxy-authorization",
];

/// `tests/fixtures/valid`, so the fixtures' `${file:../secrets/...}` references resolve.
fn base_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        for name in ENV_SECRETS {
            // SAFETY: runs once, before the fuzzer's first input, on its only thread.
            unsafe { std::env::set_var(name, format!("env-{name}-{MARKER}")) };
        }
        // SAFETY: as above.
        unsafe { std::env::set_var("AUTHRELAY_STORE_KEY", STORE_KEY) };
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/valid")
    })
}

fn assert_no_planted_secret(input: &str, output: &str, what: &str) {
    for planted in [MARKER, STORE_KEY] {
        if !input.contains(planted) {
            assert!(
                !output.contains(planted),
                "{what} shows a planted secret:\n{output}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_yaml(text, base_dir()) {
        Ok(config) => config,
        Err(errors) => {
            assert!(errors.iter().next().is_some(), "an error without problems");
            assert_no_planted_secret(text, &errors.to_string(), "an error message");
            return;
        }
    };
    assert_no_planted_secret(text, &config.effective(), "the effective config");

    assert!(!config.listeners.is_empty());
    // Off loopback only with callers to authenticate or anonymity written on the listener.
    for listener in &config.listeners {
        assert!(
            listener.bind.ip().is_loopback() || !config.callers.is_empty() || listener.anonymous,
            "{}",
            listener.bind
        );
    }
    for route in &config.routes {
        for name in route.callers.iter().flatten() {
            assert!(config.callers.iter().any(|caller| &caller.name == name), "{name}");
        }
    }
    if let Some(admin) = &config.admin {
        assert!(admin.bind.ip().is_loopback(), "{}", admin.bind);
    }
    for (i, route) in config.routes.iter().enumerate() {
        let provider = config
            .providers
            .get(&route.provider)
            .unwrap_or_else(|| panic!("routes[{i}]: unknown provider {}", route.provider));
        let prefix = &route.matcher.path_prefix;
        // A prefix that normalization would change can never equal a request's path.
        assert_eq!(
            normalize_path(prefix).as_deref(),
            Some(prefix.as_str()),
            "routes[{i}]: path_prefix {prefix:?} can never match a normalized path"
        );
        assert!(prefix == "/" || !prefix.ends_with('/'), "{prefix:?}");
        if let Some(host) = &route.matcher.host {
            assert!(!host.is_empty());
            assert_eq!(host, &host.to_ascii_lowercase());
        }
        if let Some(methods) = &route.matcher.methods {
            assert!(!methods.is_empty());
            assert!(
                !methods
                    .iter()
                    .any(|m| *m == http::Method::CONNECT || *m == http::Method::TRACE)
            );
        }
        let is_static = matches!(provider.grant, GrantConfig::Static { .. });
        for (name, template) in &route.headers {
            assert!(!REFUSED_HEADERS.contains(&name.as_str()), "{name}");
            if is_static {
                assert!(template.fields().all(|field| field == "token"));
            }
        }
        // Two routes that take the same requests are refused at load.
        for (j, earlier) in config.routes[..i].iter().enumerate() {
            let (a, b) = (&earlier.matcher, &route.matcher);
            if a.path_prefix == b.path_prefix && a.host == b.host {
                let overlap = match (&a.methods, &b.methods) {
                    (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
                    _ => true,
                };
                assert!(
                    !overlap,
                    "routes[{j}] and routes[{i}] take the same requests"
                );
            }
        }
    }
});
