//! The sandbox vendors over real sockets: each test starts its own sandbox on port 0 and talks to
//! it with reqwest, as the proxy will.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![allow(clippy::unwrap_used, reason = "a panic in a test is a failed test")]

use std::time::Duration;

use authrelay::sandbox::{
    CROSS_RIVER_CLIENT_ID, CROSS_RIVER_CLIENT_SECRET, CULTURE_AMP_CLIENT_ID,
    CULTURE_AMP_CLIENT_SECRET, ClientAuth, ExpiresIn, Failure, GENERIC_CLIENT_ID,
    GENERIC_CLIENT_SECRET, PARTNER_PAT, Sandbox, SandboxHandle, SandboxStats, TokenFormat, Vendor,
};
use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CA_SCOPE: &str = "target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read,performance-evaluations-read";

async fn start(sandbox: Sandbox) -> SandboxHandle {
    sandbox.start("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn cross_river_token_request(sandbox: &SandboxHandle, secret: &str) -> reqwest::Response {
    client()
        .post(format!("{}/cross-river/connect/token", sandbox.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments.read"),
            ("client_id", CROSS_RIVER_CLIENT_ID),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap()
}

async fn cross_river_token(sandbox: &SandboxHandle) -> String {
    let response = cross_river_token_request(sandbox, CROSS_RIVER_CLIENT_SECRET).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn get_with_token(url: String, token: &str) -> reqwest::Response {
    client().get(url).bearer_auth(token).send().await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn cross_river_token_passes_test_oauth_and_missing_token_fails() {
    let sandbox = start(Sandbox::new()).await;
    let response = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "payments.read");
    assert_eq!(body["expires_in"], 3600);
    let token = body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], CROSS_RIVER_CLIENT_ID);
    assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());

    let test_url = format!("{}/cross-river/api/SignupCard/TestOauth", sandbox.url());
    assert_eq!(
        get_with_token(test_url.clone(), token).await.status(),
        StatusCode::OK
    );
    // The scheme is case-insensitive.
    let lower = client()
        .get(&test_url)
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);

    let missing = client().get(&test_url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(
        get_with_token(test_url, "forged").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn cross_river_omitted_scope_means_all_and_unknown_scope_is_refused() {
    let sandbox = start(Sandbox::new()).await;
    let token_url = format!("{}/cross-river/connect/token", sandbox.url());
    let credentials = [
        ("client_id", CROSS_RIVER_CLIENT_ID),
        ("client_secret", CROSS_RIVER_CLIENT_SECRET),
    ];
    let all = client()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            credentials[0],
            credentials[1],
        ])
        .send()
        .await
        .unwrap();
    let body: Value = all.json().await.unwrap();
    assert_eq!(body["scope"], "payments.read payments.write");

    let unknown = client()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments.delete"),
            credentials[0],
            credentials[1],
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn three_wrong_secrets_lock_cross_river_client_for_good() {
    let sandbox = start(Sandbox::new()).await;
    for _ in 0..3 {
        let response = cross_river_token_request(&sandbox, "wrong-secret").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
        assert_ne!(body["error_description"], "account locked");
    }
    for _ in 0..2 {
        let response = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_client", "error_description": "account locked"})
        );
    }
    assert_eq!(sandbox.token_requests(CROSS_RIVER_CLIENT_ID), 5);
    assert!(sandbox.stats().clients[CROSS_RIVER_CLIENT_ID].locked);
}

#[tokio::test]
async fn culture_amp_accepts_basic_and_body_auth_and_refuses_bad_scope() {
    // A secret that needs form-urlencoding inside the Basic header (RFC 6749 §2.3.1).
    let odd_secret = "s3cr:t/+ü &=";
    let sandbox =
        start(Sandbox::new().client(Vendor::CultureAmp, "ca:odd client", odd_secret)).await;
    let token_url = format!("{}/cultureamp/v1/oauth2/token", sandbox.url());
    let form = [("grant_type", "client_credentials"), ("scope", CA_SCOPE)];

    let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
    let basic = STANDARD.encode(format!(
        "{}:{}",
        encode("ca:odd client"),
        encode(odd_secret)
    ));
    let by_basic = client()
        .post(&token_url)
        .header("authorization", format!("Basic {basic}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.status(), StatusCode::OK);
    let body: Value = by_basic.json().await.unwrap();
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["scope"], CA_SCOPE);
    let token = body["access_token"].as_str().unwrap().to_owned();

    let by_body = client()
        .post(&token_url)
        .form(&[
            form[0],
            form[1],
            ("client_id", CULTURE_AMP_CLIENT_ID),
            ("client_secret", CULTURE_AMP_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(by_body.status(), StatusCode::OK);

    let wrong_basic = client()
        .post(&token_url)
        .basic_auth(CULTURE_AMP_CLIENT_ID, Some("nope"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_basic.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong_basic.headers().contains_key("www-authenticate"));

    let bad_scope = client()
        .post(&token_url)
        .basic_auth(CULTURE_AMP_CLIENT_ID, Some(CULTURE_AMP_CLIENT_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "employees-read"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_scope.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad_scope.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");

    let employees =
        get_with_token(format!("{}/cultureamp/v1/employees", sandbox.url()), &token).await;
    assert_eq!(employees.status(), StatusCode::OK);
    let echo: Value = employees.json().await.unwrap();
    assert_eq!(echo["vendor"], "cultureamp");
    // A Culture Amp token is no good at another vendor.
    let elsewhere = get_with_token(format!("{}/generic/api/x", sandbox.url()), &token).await;
    assert_eq!(elsewhere.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn generic_vendor_records_auth_shapes_and_never_the_secret() {
    let sandbox = start(Sandbox::new()).await;
    let token_url = format!("{}/generic/oauth/token", sandbox.url());

    let basic = client()
        .post(&token_url)
        .basic_auth(GENERIC_CLIENT_ID, Some(GENERIC_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert_eq!(
        sandbox.stats().clients[GENERIC_CLIENT_ID].last_client_auth,
        Some(ClientAuth::Basic)
    );

    let post = client()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", GENERIC_CLIENT_ID),
            ("client_secret", GENERIC_CLIENT_SECRET),
            ("audience", "https://api.example"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::OK);
    let stats = sandbox.stats().clients[GENERIC_CLIENT_ID].clone();
    assert_eq!(stats.last_client_auth, Some(ClientAuth::Post));
    assert_eq!(stats.last_params["audience"], "https://api.example");

    let json_body = json!({
        "grant_type": "client_credentials",
        "client_id": GENERIC_CLIENT_ID,
        "client_secret": GENERIC_CLIENT_SECRET,
        "scope": "read:things",
    });
    let by_json = client()
        .post(&token_url)
        .json(&json_body)
        .send()
        .await
        .unwrap();
    assert_eq!(by_json.status(), StatusCode::OK);
    let body: Value = by_json.json().await.unwrap();
    assert_eq!(body["scope"], "read:things");
    let token = body["access_token"].as_str().unwrap().to_owned();

    let stats = sandbox.stats();
    let client_stats = &stats.clients[GENERIC_CLIENT_ID];
    assert_eq!(client_stats.last_client_auth, Some(ClientAuth::Json));
    assert_eq!(client_stats.last_scope.as_deref(), Some("read:things"));
    assert_eq!(client_stats.token_requests, 3);
    assert!(!client_stats.last_params.contains_key("client_secret"));
    let served_stats = client()
        .get(format!("{}/_sandbox/stats", sandbox.url()))
        .send()
        .await
        .unwrap();
    let served_text = served_stats.text().await.unwrap();
    assert!(!served_text.contains(GENERIC_CLIENT_SECRET));
    assert!(!format!("{stats:?}").contains(GENERIC_CLIENT_SECRET));

    let wrong_post = client()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", GENERIC_CLIENT_ID),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_post.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        get_with_token(format!("{}/generic/api/things", sandbox.url()), &token)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn echo_reports_raw_query_headers_body_length_and_sha256() {
    let sandbox = start(Sandbox::new()).await;
    let token = cross_river_token(&sandbox).await;
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|index| (index % 251) as u8)
        .collect();
    let response = client()
        .post(format!("{}/cross-river/api/x?a=1&b=%20", sandbox.url()))
        .bearer_auth(&token)
        .header("x-dup", "one")
        .header("x-dup", "two")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["vendor"], "cross-river");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/cross-river/api/x");
    assert_eq!(echo["query"], "a=1&b=%20");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_sha256"], sha256_hex(&body));
    let headers = echo["headers"].as_array().unwrap();
    let duplicates: Vec<&Value> = headers
        .iter()
        .filter(|pair| pair[0] == "x-dup")
        .map(|pair| &pair[1])
        .collect();
    assert_eq!(duplicates, [&json!("one"), &json!("two")]);

    let no_query = get_with_token(format!("{}/cross-river/api/y", sandbox.url()), &token).await;
    let echo: Value = no_query.json().await.unwrap();
    assert_eq!(echo["query"], Value::Null);
    assert_eq!(echo["body_sha256"], sha256_hex(b""));
}

#[tokio::test]
async fn special_paths_stream_bytes_answer_status_and_redirect() {
    let sandbox = start(Sandbox::new()).await;
    let n = 5 * 64 * 1024 + 123;
    let bytes = client()
        .get(format!("{}/partner/api/_bytes?n={n}", sandbox.url()))
        .bearer_auth(PARTNER_PAT)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.status(), StatusCode::OK);
    assert_eq!(bytes.headers()["content-length"], n.to_string().as_str());
    assert_eq!(bytes.bytes().await.unwrap().len(), n);

    let token = cross_river_token(&sandbox).await;
    let status = get_with_token(
        format!("{}/cross-river/api/_status/503", sandbox.url()),
        &token,
    )
    .await;
    assert_eq!(status.status(), StatusCode::SERVICE_UNAVAILABLE);
    let redirect = get_with_token(
        format!("{}/cross-river/api/_redirect", sandbox.url()),
        &token,
    )
    .await;
    assert_eq!(redirect.status(), StatusCode::FOUND);
    assert_eq!(
        redirect.headers()["location"],
        "http://redirect-target.invalid/elsewhere"
    );
    let chosen = get_with_token(
        format!(
            "{}/cross-river/api/_redirect?to=http%3A%2F%2F127.0.0.1%3A9%2Fx%3Fa%3D1&status=307",
            sandbox.url()
        ),
        &token,
    )
    .await;
    assert_eq!(chosen.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(chosen.headers()["location"], "http://127.0.0.1:9/x?a=1");
    let bad = get_with_token(
        format!("{}/cross-river/api/_redirect?status=200", sandbox.url()),
        &token,
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Special paths still need the token; the partner API only knows its PATs.
    let anonymous = client()
        .get(format!("{}/cross-river/api/_status/200", sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong_pat = get_with_token(format!("{}/partner/api/me", sandbox.url()), "pat-other").await;
    assert_eq!(wrong_pat.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_and_revoked_tokens_are_rejected() {
    let sandbox = start(Sandbox::new().token_ttl(Duration::ZERO)).await;
    let test_url = format!("{}/cross-river/api/SignupCard/TestOauth", sandbox.url());
    let expired = cross_river_token(&sandbox).await;
    let response = get_with_token(test_url.clone(), &expired).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_description"], "token expired");

    sandbox.set_token_ttl(Duration::from_secs(60));
    let live = cross_river_token(&sandbox).await;
    assert_eq!(
        get_with_token(test_url.clone(), &live).await.status(),
        StatusCode::OK
    );
    sandbox.revoke_all_tokens();
    assert_eq!(
        get_with_token(test_url, &live).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn injected_rate_limit_carries_retry_after_then_clears() {
    let sandbox = start(Sandbox::new()).await;
    sandbox.fail_next_token_requests(
        1,
        Failure::RateLimited {
            retry_after: Duration::from_secs(7),
        },
    );
    let limited = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(
        cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(sandbox.token_requests(CROSS_RIVER_CLIENT_ID), 2);

    sandbox.fail_next_token_requests(1, Failure::ServerError);
    let failed = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn knob_setters_shape_token_responses() {
    let sandbox = start(Sandbox::new()).await;
    sandbox.set_expires_in(ExpiresIn::String);
    let body: Value = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], "3600");

    sandbox.set_expires_in(ExpiresIn::Omit);
    sandbox.set_token_format(TokenFormat::Opaque);
    let body: Value = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert!(body.get("expires_in").is_none());
    let token = body["access_token"].as_str().unwrap();
    assert!(!token.contains('.'));
    let test_url = format!("{}/cross-river/api/SignupCard/TestOauth", sandbox.url());
    assert_eq!(
        get_with_token(test_url, token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn knobs_and_revoke_work_over_http() {
    let sandbox = start(Sandbox::new()).await;
    let knobs = json!({
        "token_ttl_secs": 5,
        "expires_in": "string",
        "token_format": "jwt",
        "fail_next": {"count": 1, "status": 429, "retry_after_secs": 3},
        "latency_ms": 1,
    });
    let set = client()
        .post(format!("{}/_sandbox/knobs", sandbox.url()))
        .json(&knobs)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);

    let limited = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "3");
    let body: Value = cross_river_token_request(&sandbox, CROSS_RIVER_CLIENT_SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["expires_in"], "5");
    let token = body["access_token"].as_str().unwrap();

    let revoke = client()
        .post(format!("{}/_sandbox/revoke", sandbox.url()))
        .send()
        .await
        .unwrap();
    let revoked: Value = revoke.json().await.unwrap();
    assert_eq!(revoked["revoked"], 1);
    let test_url = format!("{}/cross-river/api/SignupCard/TestOauth", sandbox.url());
    assert_eq!(
        get_with_token(test_url, token).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let typo = client()
        .post(format!("{}/_sandbox/knobs", sandbox.url()))
        .json(&json!({"token_tll_secs": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(typo.status(), StatusCode::BAD_REQUEST);

    let stats: SandboxStats = client()
        .get(format!("{}/_sandbox/stats", sandbox.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.token_requests, 2);
    assert_eq!(stats.api_requests, 1);
    assert_eq!(stats.requests, 3, "/_sandbox/ requests are not counted");
    assert_eq!(
        stats.clients[CROSS_RIVER_CLIENT_ID].last_client_auth,
        Some(ClientAuth::Post)
    );
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let sandbox = start(Sandbox::new()).await;
    let addr = sandbox.addr();
    sandbox.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn speaks_h2c_and_delays_answers_by_the_latency_knob() {
    let sandbox = start(Sandbox::new()).await;
    let latency = Duration::from_millis(50);
    sandbox.set_latency(latency);
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let response = h2
        .get(format!("{}/partner/api/me", sandbox.url()))
        .bearer_auth(PARTNER_PAT)
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= latency);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["vendor"], "partner");
}
