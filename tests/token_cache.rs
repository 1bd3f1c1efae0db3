//! Tokens: request shapes at the vendor, reuse, single flight, lifetimes, renewal and failures.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::time::Duration;

use authrelay::credential::LifetimeSource;
use authrelay::sandbox::{ClientAuth, ExpiresIn, Failure, GENERIC_CLIENT_ID, TokenFormat};
use support::{
    TestProxy, VENDORS_YAML, assert_relay_error, client, echo, echoed_header, get, sandbox,
};

const CROSS_RIVER: &str = "cr-demo-client";

/// One generic-vendor provider and route per client_auth shape.
const CLIENT_AUTH_YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  basic:
    grant: client_credentials
    token_url: "{sandbox}/generic/oauth/token"
    client_auth: client_secret_basic
    client_id: gen-demo-client
    client_secret: gen-demo-secret
    scopes: [read, write]
    extra_params: { audience: "https://api.generic.example" }
  post:
    grant: client_credentials
    token_url: "{sandbox}/generic/oauth/token"
    client_auth: client_secret_post
    client_id: gen-demo-client
    client_secret: gen-demo-secret
  json:
    grant: client_credentials
    token_url: "{sandbox}/generic/oauth/token"
    client_auth: json_body
    client_id: gen-demo-client
    client_secret: gen-demo-secret
    scopes: [read]
routes:
  - { match: { path_prefix: /basic }, upstream: "{sandbox}/generic/api", provider: basic }
  - { match: { path_prefix: /post }, upstream: "{sandbox}/generic/api", provider: post }
  - { match: { path_prefix: /json }, upstream: "{sandbox}/generic/api", provider: json }
"#;

#[tokio::test]
async fn each_client_auth_shape_reaches_the_vendor_as_configured() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(CLIENT_AUTH_YAML, &vendor).await;
    for (path, shape) in [
        ("/basic/x", ClientAuth::Basic),
        ("/post/x", ClientAuth::Post),
        ("/json/x", ClientAuth::Json),
    ] {
        let response = get(&proxy, path).await;
        assert_eq!(response.status(), 200, "{path}");
        let stats = vendor.stats().clients[GENERIC_CLIENT_ID].clone();
        assert_eq!(stats.last_client_auth, Some(shape), "{path}");
        assert!(
            !stats
                .last_params
                .values()
                .any(|v| v.contains("gen-demo-secret"))
        );
        if shape == ClientAuth::Basic {
            assert_eq!(stats.last_scope.as_deref(), Some("read write"));
            assert_eq!(stats.last_params["audience"], "https://api.generic.example");
            assert_eq!(stats.last_params["grant_type"], "client_credentials");
        }
    }
}

#[tokio::test]
async fn a_cached_token_is_reused() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let response = get(&proxy, "/cross-river/payments").await;
        seen.push(echoed_header(&echo(response).await, "authorization"));
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    assert!(
        seen.windows(2).all(|pair| pair[0] == pair[1]),
        "one token for all 20 calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_requests_make_one_token_request() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    // Slow vendor answers keep all 64 callers waiting on the same token request.
    vendor.set_latency(Duration::from_millis(200));
    // One client for all: building a reqwest client loads the OS trust store, which is slow.
    let client = client();
    let calls = (0..64).map(|i| {
        let url = proxy.url(&format!("/cultureamp/employees?i={i}"));
        let client = client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
    });
    // Spawn all before awaiting any.
    let calls: Vec<_> = calls.collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);
}

#[tokio::test]
async fn lifetime_comes_from_expires_in_then_jwt_exp_then_default_ttl() {
    let vendor = sandbox().await;
    let yaml = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  generic:
    grant: client_credentials
    token_url: "{sandbox}/generic/oauth/token"
    client_id: gen-demo-client
    client_secret: gen-demo-secret
    default_ttl: 17m
routes:
  - { match: { path_prefix: /g }, upstream: "{sandbox}/generic/api", provider: generic }
"#;
    let cases = [
        (
            ExpiresIn::Number,
            TokenFormat::Jwt,
            LifetimeSource::ExpiresIn,
            7200,
        ),
        (
            ExpiresIn::String,
            TokenFormat::Jwt,
            LifetimeSource::ExpiresIn,
            7200,
        ),
        (
            ExpiresIn::Omit,
            TokenFormat::Jwt,
            LifetimeSource::JwtExp,
            7200,
        ),
        (
            ExpiresIn::Omit,
            TokenFormat::Opaque,
            LifetimeSource::Default,
            17 * 60,
        ),
    ];
    vendor.set_token_ttl(Duration::from_secs(7200));
    for (expires_in, format, source, secs) in cases {
        vendor.set_expires_in(expires_in);
        vendor.set_token_format(format);
        // A fresh proxy per case, so each starts with an empty cache.
        let proxy = TestProxy::start(yaml, &vendor).await;
        let response = get(&proxy, "/g/x").await;
        assert_eq!(response.status(), 200);
        let token = proxy.state.load().credentials.cached("generic").unwrap();
        assert_eq!(token.lifetime_source, source, "{expires_in:?} {format:?}");
        let lifetime = token.lifetime.as_secs_f64();
        // A JWT's exp is whole seconds of wall clock: allow for the second it was issued in.
        assert!(
            (lifetime - secs as f64).abs() <= 2.0,
            "{expires_in:?} {format:?}: {lifetime}"
        );
    }
}

#[tokio::test]
async fn a_token_near_expiry_is_renewed_in_the_background_while_it_keeps_being_served() {
    let vendor = sandbox().await;
    vendor.set_token_ttl(Duration::from_secs(4));
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let first = echoed_header(
        &echo(get(&proxy, "/cross-river/x").await).await,
        "authorization",
    );
    // The renewal will fail: a caller that had to wait for it would get 503. With background
    // renewal every caller keeps getting the still-valid token.
    vendor.fail_next_token_requests(1, Failure::ServerError);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while vendor.token_requests(CROSS_RIVER) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal started within 10 s"
        );
        let response = get(&proxy, "/cross-river/x").await;
        assert_eq!(echoed_header(&echo(response).await, "authorization"), first);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn continuous_traffic_over_three_lifetimes_sees_one_renewal_per_lifetime() {
    let vendor = sandbox().await;
    vendor.set_token_ttl(Duration::from_secs(2));
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let end = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut tokens = Vec::new();
    while tokio::time::Instant::now() < end {
        let response = get(&proxy, "/cross-river/x").await;
        let token = echoed_header(&echo(response).await, "authorization");
        if tokens.last() != Some(&token) {
            tokens.push(token);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = vendor.token_requests(CROSS_RIVER);
    // 6 s of 2 s tokens renewed 0.5 s early (a quarter of the lifetime): the first token, then
    // one renewal every 1.5 s. Never more than one per lifetime and a spare.
    assert!(
        (3..=5).contains(&requests),
        "{requests} token requests for 3 lifetimes"
    );
    assert_eq!(
        tokens.len() as u64,
        requests,
        "every token obtained was used"
    );
}

#[tokio::test]
async fn token_endpoint_failure_is_503_with_retry_after_and_no_secret() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    vendor.fail_next_token_requests(1, Failure::ServerError);
    let response = get(&proxy, "/cross-river/x").await;
    assert_relay_error(&response, 503, "token_unavailable");
    assert!(response.headers().contains_key("retry-after"));
    let body = response.text().await.unwrap();
    assert!(body.contains("\"provider\":\"cross-river\""), "{body}");
    assert!(!body.contains("cr-demo-secret"), "{body}");
    // While backing off, callers are answered at once and the vendor sees no new request.
    let response = get(&proxy, "/cross-river/x").await;
    assert_eq!(response.status(), 503);
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
}

#[tokio::test]
async fn rate_limited_token_endpoint_passes_its_retry_after_on() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    vendor.fail_next_token_requests(
        1,
        Failure::RateLimited {
            retry_after: Duration::from_secs(7),
        },
    );
    let response = get(&proxy, "/cross-river/x").await;
    assert_eq!(response.status(), 503);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((7..=8).contains(&wait), "Retry-After {wait}");
}

#[tokio::test]
async fn a_rejected_secret_is_never_tried_again() {
    let vendor = sandbox().await;
    let yaml = VENDORS_YAML.replace(
        "client_secret: cr-demo-secret",
        "client_secret: wrong-secret-value",
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    for _ in 0..5 {
        let response = get(&proxy, "/cross-river/x").await;
        assert_relay_error(&response, 503, "credentials_rejected");
        let body = response.text().await.unwrap();
        assert!(
            body.contains("invalid_client") && !body.contains("wrong-secret-value"),
            "{body}"
        );
    }
    // One strike: Cross River locks after three, so the account must stay unlocked.
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    assert!(!vendor.stats().clients[CROSS_RIVER].locked);
}

#[tokio::test]
async fn unreachable_token_endpoint_is_503() {
    let vendor = sandbox().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let yaml = VENDORS_YAML.replace(
        "{sandbox}/cross-river/connect/token",
        &format!("http://{dead}/connect/token"),
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let response = get(&proxy, "/cross-river/x").await;
    assert_relay_error(&response, 503, "token_unavailable");
    assert_eq!(vendor.stats().api_requests, 0);
}

#[tokio::test]
async fn invalid_client_counts_as_rejection_whatever_the_status() {
    for answer in [
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 26\r\nconnection: close\r\n\r\n{\"error\":\"invalid_client\"}",
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 26\r\nconnection: close\r\n\r\n{\"error\":\"invalid_client\"}",
        // A refusal whose body is too large to read (an HTML error page) is still a refusal.
        &*Box::leak(
            format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/html\r\ncontent-length: 70000\r\nconnection: close\r\n\r\n{}",
                "x".repeat(70_000)
            )
            .into_boxed_str(),
        ),
    ] {
        let vendor = sandbox().await;
        let (endpoint, requests) = support::canned_token_endpoint(answer).await;
        let yaml = VENDORS_YAML.replace(
            "{sandbox}/cross-river/connect/token",
            &format!("http://{endpoint}/connect/token"),
        );
        let proxy = TestProxy::start(&yaml, &vendor).await;
        for _ in 0..5 {
            assert_relay_error(
                &get(&proxy, "/cross-river/x").await,
                503,
                "credentials_rejected",
            );
        }
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{answer}"
        );
    }
}

#[tokio::test]
async fn an_absurd_retry_after_is_capped_and_does_not_wedge_the_provider() {
    let vendor = sandbox().await;
    let answer = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 9223372036854775807\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let (endpoint, requests) = support::canned_token_endpoint(answer).await;
    let yaml = VENDORS_YAML.replace(
        "{sandbox}/cross-river/connect/token",
        &format!("http://{endpoint}/connect/token"),
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    for _ in 0..3 {
        let response = get(&proxy, "/cross-river/x").await;
        assert_relay_error(&response, 503, "token_unavailable");
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait <= 3600, "Retry-After {wait}");
    }
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}
