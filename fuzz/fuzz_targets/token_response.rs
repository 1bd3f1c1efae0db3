//! A token endpoint's answer (status, `Retry-After`, body) -> `credential::retry_after` and the
//! grant's classification, `AccessToken::from_response` included, then the token's life in the
//! cache and the store (`renew_before`, `to_stored`, `from_stored`).
//!
//! Never panics (no overflow with huge `expires_in`, JWT `exp` far in the past or future); a token
//! comes only from a 2xx; its lifetime is in [1 s, 366 d] and comes from `expires_in` only when
//! that is a positive number; its `Authorization` is `<scheme> <token>`; the refresh token never
//! becomes a template field; no error message and no `Debug` shows a token value that holds
//! `do-not-print`.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use authrelay::config::{GrantConfig, ProviderConfig};
use authrelay::credential::{AccessToken, GrantError, LifetimeSource, retry_after};
use authrelay::fuzzing::classify_token_response;
use authrelay::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Planted in the seeds' tokens; never in what the proxy shows.
const MARKER: &str = "do-not-print";
const MIN_LIFETIME: Duration = Duration::from_secs(1);
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// The input as text:
///
/// ```text
/// 200 Bearer 3600 60          status, scheme, default_ttl and refresh_before (s), the last optional
/// Thu, 01 Jan 2099 00:00:00 GMT   Retry-After (an empty line: none)
/// {"access_token":"JWT<{"exp":NOW}>"}   the body, to the end (substituted before JSON parsing)
/// ```
///
/// In the body, `JWT<payload>` becomes a JWT whose payload is base64url(payload) and `NOW` the
/// current Unix time in seconds (`NOW0` is far future, `-NOW` far past).
struct Input {
    status: u16,
    scheme: String,
    default_ttl: Duration,
    refresh_before: Option<Duration>,
    retry_after: Option<Vec<u8>>,
    body: Vec<u8>,
}

impl Input {
    fn read(data: &[u8]) -> Option<Input> {
        let mut lines = data.splitn(3, |&b| b == b'\n');
        let first = std::str::from_utf8(lines.next()?).ok()?;
        let mut words = first.split(' ');
        let status = words.next()?.parse().ok()?;
        let scheme = match words.next() {
            Some("Token") => "Token",
            _ => "Bearer",
        };
        let default_ttl = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(3600)
            .max(1);
        let refresh_before = words.next().and_then(|w| w.parse().ok());
        let retry_after = lines
            .next()
            .filter(|line| !line.is_empty())
            .map(<[u8]>::to_vec);
        let body = expand(lines.next().unwrap_or_default());
        Some(Input {
            status,
            scheme: scheme.to_string(),
            default_ttl: Duration::from_secs(default_ttl),
            refresh_before: refresh_before.map(Duration::from_secs),
            retry_after,
            body,
        })
    }
}

/// `NOW` and `JWT<...>` in the body; bytes that are not UTF-8 stay as they are.
fn expand(body: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(body) else {
        return body.to_vec();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = text.replace("NOW", &now.to_string());
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("JWT<") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 4..];
        let Some(end) = after.find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let payload = URL_SAFE_NO_PAD.encode(&after[..end]);
        out.push_str(&format!("eyJhbGciOiJIUzI1NiJ9.{payload}.sig-{MARKER}"));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out.into_bytes()
}

fn provider(
    scheme: &str,
    default_ttl: Duration,
    refresh_before: Option<Duration>,
) -> ProviderConfig {
    ProviderConfig {
        name: "p".into(),
        grant: GrantConfig::Static {
            token: Secret::new("unused"),
        },
        scheme: scheme.into(),
        refresh_before,
        default_ttl,
        ca: None,
        lockout_sensitive: false,
        test_path: None,
        revoke_url: None,
    }
}

fn check_token(token: &AccessToken, scheme: &str, body: &[u8]) {
    assert!(
        (MIN_LIFETIME..=MAX_LIFETIME).contains(&token.lifetime),
        "{:?}",
        token.lifetime
    );
    let value = token.field("token").expect("the token is a field");
    assert!(!value.is_empty());
    assert_eq!(
        token.authorization().as_bytes(),
        format!("{scheme} {value}").as_bytes()
    );
    assert!(token.authorization().is_sensitive());
    assert_eq!(token.field("refresh_token"), None);
    assert_eq!(token.field("access_token"), None);
    let now = tokio::time::Instant::now();
    assert!(token.remaining(now) <= token.lifetime);
    // `expires_in` decides when it is a positive number (or numeric string).
    if token.lifetime_source == LifetimeSource::ExpiresIn {
        let object: Value = serde_json::from_slice(body).unwrap();
        let secs = match &object["expires_in"] {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::String(s) => s.trim().parse::<f64>().unwrap(),
            other => panic!("lifetime from expires_in {other}"),
        };
        assert!(secs.is_finite() && secs > 0.0);
    }
    if value.contains(MARKER) {
        let debug = format!("{token:?}");
        assert!(!debug.contains(value), "{debug}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::read(data) else {
        return;
    };
    let Ok(status) = StatusCode::from_u16(input.status) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(raw) = &input.retry_after
        && let Ok(value) = HeaderValue::from_bytes(raw)
    {
        headers.insert(http::header::RETRY_AFTER, value);
    }
    let wait = retry_after(&headers);
    let scheme = input.scheme.as_str();
    let refresh_before = input.refresh_before;
    let provider = provider(scheme, input.default_ttl, refresh_before);
    let body = input.body;

    let result = classify_token_response(status, wait, &body, &provider);
    let issued = match result {
        Ok(issued) => issued,
        Err(error) => {
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(MARKER), "{shown}");
            match &error {
                GrantError::Rejected {
                    status: code,
                    oauth_error,
                } => {
                    assert_eq!(*code, status.as_u16());
                    if let Some(code) = oauth_error {
                        assert!(code.len() <= 64);
                        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
                    }
                }
                GrantError::RateLimited { status: code, .. } => {
                    assert!(*code == 429 || *code == 503);
                }
                GrantError::Transient { .. } | GrantError::NoAnswer { .. } => {}
            }
            return;
        }
    };
    assert!(status.is_success(), "a token from HTTP {status}");
    let mut token = issued.token;
    check_token(&token, scheme, &body);
    if let Some(refresh) = &issued.refresh_token {
        assert!(!refresh.expose().is_empty());
    }

    // The cache's renewal point and the store's round trip must not overflow either.
    token.renew_before(refresh_before.unwrap_or(token.lifetime / 10));
    let _ = token.fresh(tokio::time::Instant::now());
    let stored = token.to_stored();
    if let Some(back) = AccessToken::from_stored(&stored, scheme) {
        check_token(&back, scheme, &body);
        assert!(back.same_token(&token));
    }
});
