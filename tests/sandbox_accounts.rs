//! The sandbox's connected-account vendors over real sockets: Crossbeam's code flow with PKCE,
//! rotating refresh tokens and organization header, the generic vendor's code flow with required
//! PKCE and rotation, the "Deny" click on every authorize page, Xref's JSON exchange, `Token`
//! scheme and deauthorize, and Cross River's scope check on its API.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![allow(clippy::unwrap_used, reason = "a panic in a test is a failed test")]

use std::collections::HashMap;

use authrelay::sandbox::{
    CROSS_RIVER_CLIENT_ID, CROSS_RIVER_CLIENT_SECRET, CROSSBEAM_CLIENT_ID, CROSSBEAM_CLIENT_SECRET,
    CROSSBEAM_ORGS, CROSSBEAM_USER_EMAIL, ClientAuth, GENERIC_CLIENT_ID, GENERIC_CLIENT_SECRET,
    Sandbox, SandboxHandle, Vendor, XREF_ACCOUNT_ID, XREF_CLIENT_ID, XREF_CLIENT_SECRET,
};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

/// RFC 7636 appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const CALLBACK: &str = "http://127.0.0.1:9/callback";
const AUDIENCE: &str = "https://api.getcrossbeam.com";

async fn start() -> SandboxHandle {
    Sandbox::new()
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Follows an authorize URL and returns where the redirect back points.
async fn authorize_location(url: String) -> Url {
    let response = client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

/// Follows an authorize URL and returns the query of the redirect back.
async fn authorize(url: String) -> HashMap<String, String> {
    let location = authorize_location(url).await;
    location.query_pairs().into_owned().collect()
}

fn crossbeam_authorize_url(sandbox: &SandboxHandle, scope: &str, pkce: bool) -> String {
    let mut url = Url::parse(&format!("{}/crossbeam/authorize", sandbox.url())).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CROSSBEAM_CLIENT_ID)
        .append_pair("redirect_uri", CALLBACK)
        .append_pair("state", "st-1")
        .append_pair("scope", scope)
        .append_pair("audience", AUDIENCE);
    if pkce {
        url.query_pairs_mut()
            .append_pair("code_challenge", CHALLENGE)
            .append_pair("code_challenge_method", "S256");
    }
    url.into()
}

async fn crossbeam_token_request(
    sandbox: &SandboxHandle,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut body = vec![
        ("client_id", CROSSBEAM_CLIENT_ID),
        ("client_secret", CROSSBEAM_CLIENT_SECRET),
    ];
    body.extend_from_slice(form);
    client()
        .post(format!("{}/crossbeam/oauth/token", sandbox.url()))
        .form(&body)
        .send()
        .await
        .unwrap()
}

async fn exchange_code(
    sandbox: &SandboxHandle,
    code: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
    ];
    if let Some(verifier) = verifier {
        form.push(("code_verifier", verifier));
    }
    crossbeam_token_request(sandbox, &form).await
}

async fn refresh(sandbox: &SandboxHandle, refresh_token: &str) -> reqwest::Response {
    crossbeam_token_request(
        sandbox,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn assert_oauth_error(response: reqwest::Response, status: StatusCode, error: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
}

async fn crossbeam_api(
    sandbox: &SandboxHandle,
    path: &str,
    token: &str,
    org: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .get(format!("{}/crossbeam/api{path}", sandbox.url()))
        .bearer_auth(token);
    if let Some(org) = org {
        request = request.header("Xbeam-Organization", org);
    }
    request.send().await.unwrap()
}

fn field(body: &Value, name: &str) -> String {
    body[name].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn crossbeam_code_exchange_checks_pkce_and_is_single_use() {
    let sandbox = start().await;
    let scope = "openid read:partnerships offline_access";
    let back = authorize(crossbeam_authorize_url(&sandbox, scope, true)).await;
    assert_eq!(back["state"], "st-1");

    let granted = exchange_code(&sandbox, &back["code"], Some(VERIFIER)).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let body: Value = granted.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    assert_eq!(body["scope"], scope);
    assert_eq!(field(&body, "access_token").split('.').count(), 3);
    assert!(body["refresh_token"].is_string());

    let reused = exchange_code(&sandbox, &back["code"], Some(VERIFIER)).await;
    assert_oauth_error(reused, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let code = sandbox.crossbeam_authorization_code(CROSSBEAM_CLIENT_ID, CALLBACK, Some(CHALLENGE));
    let wrong = exchange_code(&sandbox, &code, Some(&VERIFIER.replace('d', "e"))).await;
    assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let code = sandbox.crossbeam_authorization_code(CROSSBEAM_CLIENT_ID, CALLBACK, Some(CHALLENGE));
    let missing = exchange_code(&sandbox, &code, None).await;
    assert_oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let code = sandbox.crossbeam_authorization_code(CROSSBEAM_CLIENT_ID, CALLBACK, None);
    let other_redirect = crossbeam_token_request(
        &sandbox,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ],
    )
    .await;
    assert_oauth_error(other_redirect, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let code = sandbox.crossbeam_authorization_code(CROSSBEAM_CLIENT_ID, CALLBACK, None);
    let wrong_secret = client()
        .post(format!("{}/crossbeam/oauth/token", sandbox.url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", CROSSBEAM_CLIENT_ID),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(wrong_secret, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A refused client does not burn the code.
    assert_eq!(
        exchange_code(&sandbox, &code, None).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn crossbeam_authorize_refuses_bad_requests_with_400() {
    let sandbox = start().await;
    let good = crossbeam_authorize_url(&sandbox, "openid", false);
    for (from, to) in [
        ("audience=https", "audience=http"),
        ("scope=openid", "scope=read%3Areports"),
        ("client_id=cb-demo-client", "client_id=unknown"),
        ("response_type=code", "response_type=token"),
        ("redirect_uri=http", "redirect_uri=ftp"),
    ] {
        let url = good.replace(from, to);
        assert_ne!(url, good);
        let response = client().get(url).send().await.unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let plain_pkce = format!("{good}&code_challenge={CHALLENGE}&code_challenge_method=plain");
    let response = client().get(plain_pkce).send().await.unwrap();
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn crossbeam_refresh_rotates_and_reuse_revokes_the_family() {
    let sandbox = start().await;
    let org = Some(CROSSBEAM_ORGS[0].1);
    let first = sandbox.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);

    let response = refresh(&sandbox, &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let (access_1, second) = (field(&body, "access_token"), field(&body, "refresh_token"));
    assert_ne!(second, first);
    assert_eq!(
        crossbeam_api(&sandbox, "/v1/partners", &access_1, org)
            .await
            .status(),
        StatusCode::OK
    );

    let body: Value = refresh(&sandbox, &second).await.json().await.unwrap();
    let (access_2, third) = (field(&body, "access_token"), field(&body, "refresh_token"));
    assert_eq!(
        crossbeam_api(&sandbox, "/v1/partners", &access_2, org)
            .await
            .status(),
        StatusCode::OK
    );

    // The first refresh token was retired: presenting it again is theft.
    assert_oauth_error(
        refresh(&sandbox, &first).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    for access in [&access_1, &access_2] {
        let response = crossbeam_api(&sandbox, "/v1/partners", access, org).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_oauth_error(
        refresh(&sandbox, &third).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;

    // Another family is untouched.
    let other = sandbox.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    assert_eq!(refresh(&sandbox, &other).await.status(), StatusCode::OK);

    let stats = sandbox.stats();
    let client_stats = &stats.clients[CROSSBEAM_CLIENT_ID];
    assert_eq!(client_stats.refresh_grants, 3);
    assert_eq!(client_stats.families_revoked, 1);
    assert_eq!(client_stats.token_requests, 5);
    assert_eq!(client_stats.last_params["refresh_token"], "[redacted]");
    let served = client()
        .get(format!("{}/_sandbox/stats", sandbox.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!served.contains(&other) && !served.contains(&first));
}

#[tokio::test]
async fn crossbeam_answers_no_refresh_token_without_offline_access() {
    let sandbox = start().await;
    let back = authorize(crossbeam_authorize_url(
        &sandbox,
        "openid read:partnerships",
        false,
    ))
    .await;
    let response = exchange_code(&sandbox, &back["code"], None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "openid read:partnerships");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(
        refresh(&sandbox, "made-up").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn crossbeam_api_requires_one_of_the_users_organizations() {
    let sandbox = start().await;
    let code = sandbox.crossbeam_authorization_code(CROSSBEAM_CLIENT_ID, CALLBACK, None);
    let body: Value = exchange_code(&sandbox, &code, None)
        .await
        .json()
        .await
        .unwrap();
    let token = field(&body, "access_token");

    for org in [None, Some("00000000-0000-4000-8000-000000000000")] {
        let response = crossbeam_api(&sandbox, "/v1/partners", &token, org).await;
        assert_oauth_error(response, StatusCode::FORBIDDEN, "organization_required").await;
    }
    let response = crossbeam_api(&sandbox, "/v1/partners", &token, Some(CROSSBEAM_ORGS[1].1)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["vendor"], "crossbeam");
    // A token problem is still a 401, organization or not.
    let forged = crossbeam_api(
        &sandbox,
        "/v1/partners",
        "forged",
        Some(CROSSBEAM_ORGS[0].1),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let me = crossbeam_api(&sandbox, "/v0.1/users/me", &token, None).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["user"]["email"], CROSSBEAM_USER_EMAIL);
    let organizations: Vec<Value> = CROSSBEAM_ORGS
        .iter()
        .map(|(name, uuid)| json!({"name": name, "uuid": uuid}))
        .collect();
    assert_eq!(me["organizations"], Value::Array(organizations));
    let anonymous = client()
        .get(format!("{}/crossbeam/api/v0.1/users/me", sandbox.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

async fn xref_exchange(sandbox: &SandboxHandle, code: &str) -> reqwest::Response {
    client()
        .post(format!("{}/xref/oauth/tokens", sandbox.url()))
        .json(&json!({
            "client_id": XREF_CLIENT_ID,
            "client_secret": XREF_CLIENT_SECRET,
            "code": code,
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn xref_exchanges_a_code_by_json_and_takes_only_the_token_scheme() {
    let sandbox = start().await;
    let back = authorize(format!(
        "{}/xref/oauth/open-api/{XREF_CLIENT_ID}?state=csrf-1&redirect_url={}",
        sandbox.url(),
        "https://app.example/xref"
    ))
    .await;
    assert_eq!(back["state"], "csrf-1");

    let response = xref_exchange(&sandbox, &back["code"]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = field(&body, "access_token");
    assert_eq!(
        body,
        json!({"access_token": token, "xref_account_id": XREF_ACCOUNT_ID})
    );
    let reused = xref_exchange(&sandbox, &back["code"]).await;
    assert_oauth_error(reused, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let api_url = format!("{}/xref/api/auth", sandbox.url());
    let with_token = client()
        .post(&api_url)
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), StatusCode::OK);
    let echo: Value = with_token.json().await.unwrap();
    assert_eq!(echo["vendor"], "xref");
    let with_bearer = client()
        .post(&api_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(with_bearer.status(), StatusCode::UNAUTHORIZED);
    let body: Value = with_bearer.json().await.unwrap();
    assert_eq!(
        body["error_description"],
        "Authorization scheme must be Token"
    );
}

#[tokio::test]
async fn xref_deauthorize_revokes_the_token() {
    let sandbox = start().await;
    let body: Value = xref_exchange(&sandbox, &sandbox.xref_code(XREF_CLIENT_ID))
        .await
        .json()
        .await
        .unwrap();
    let token = field(&body, "access_token");
    let deauthorize = |scheme: &'static str| {
        client()
            .post(format!("{}/xref/oauth/deauthorize", sandbox.url()))
            .header("authorization", format!("{scheme} {token}"))
            .send()
    };
    let deauthorizations = || sandbox.stats().clients[XREF_CLIENT_ID].deauthorizations;
    assert_eq!(
        deauthorize("Bearer").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(deauthorizations(), 0);
    let done = deauthorize("Token").await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(
        done.json::<Value>().await.unwrap(),
        json!({"deauthorized": true})
    );
    assert_eq!(deauthorizations(), 1);
    assert_eq!(
        deauthorize("Token").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Only a call that revoked something counts.
    assert_eq!(deauthorizations(), 1);
    assert_eq!(sandbox.stats().clients[XREF_CLIENT_ID].code_grants, 1);
    let after = client()
        .get(format!("{}/xref/api/auth", sandbox.url()))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn xref_refuses_form_bodies_and_plain_http_redirects() {
    let sandbox = start().await;
    let code = sandbox.xref_code(XREF_CLIENT_ID);
    let form = client()
        .post(format!("{}/xref/oauth/tokens", sandbox.url()))
        .form(&[
            ("client_id", XREF_CLIENT_ID),
            ("client_secret", XREF_CLIENT_SECRET),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(form, StatusCode::BAD_REQUEST, "invalid_request").await;
    // The refused request never reached the code.
    assert_eq!(
        xref_exchange(&sandbox, &code).await.status(),
        StatusCode::OK
    );

    let plain_http = client()
        .get(format!(
            "{}/xref/oauth/open-api/{XREF_CLIENT_ID}?state=s&redirect_url=http://app.example/xref",
            sandbox.url()
        ))
        .send()
        .await
        .unwrap();
    assert_oauth_error(plain_http, StatusCode::BAD_REQUEST, "invalid_request").await;
}

#[tokio::test]
async fn cross_river_payments_call_outside_the_scope_is_forbidden() {
    let sandbox = start().await;
    let token_for = |scope: &'static str| {
        client()
            .post(format!("{}/cross-river/connect/token", sandbox.url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("client_id", CROSS_RIVER_CLIENT_ID),
                ("client_secret", CROSS_RIVER_CLIENT_SECRET),
            ])
            .send()
    };
    let body: Value = token_for("payments.read")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_only = field(&body, "access_token");
    let payment_url = format!("{}/cross-river/api/payments/123", sandbox.url());

    let read = client()
        .get(&payment_url)
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let write = client()
        .post(&payment_url)
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
    assert!(
        write.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("payments.write")
    );
    assert_oauth_error(write, StatusCode::FORBIDDEN, "insufficient_scope").await;

    let body: Value = token_for("payments.read payments.write")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read_write = field(&body, "access_token");
    let write = client()
        .post(&payment_url)
        .bearer_auth(&read_write)
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), StatusCode::OK);
    // Outside payments/ no scope is needed.
    let elsewhere = client()
        .post(format!("{}/cross-river/api/other", sandbox.url()))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

const GENERIC_SCOPE: &str = "read:things write:things";

/// A generic authorize request as a standard client sends it, with PKCE and an extra parameter.
fn generic_authorize_params() -> Vec<(&'static str, &'static str)> {
    vec![
        ("response_type", "code"),
        ("client_id", GENERIC_CLIENT_ID),
        ("redirect_uri", CALLBACK),
        ("state", "st-g"),
        ("scope", GENERIC_SCOPE),
        ("audience", "https://api.example"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
}

fn url_with(base: String, params: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&base).unwrap();
    url.query_pairs_mut().extend_pairs(params);
    url.into()
}

fn generic_authorize_url(sandbox: &SandboxHandle, params: &[(&str, &str)]) -> String {
    url_with(format!("{}/generic/authorize", sandbox.url()), params)
}

/// A token request to the generic vendor, the client authenticated in the shape `auth`.
async fn generic_token_request(
    sandbox: &SandboxHandle,
    auth: ClientAuth,
    params: &[(&str, &str)],
) -> reqwest::Response {
    let request = client().post(format!("{}/generic/oauth/token", sandbox.url()));
    let mut body: Vec<(&str, &str)> = params.to_vec();
    let request = match auth {
        ClientAuth::Basic => request
            .basic_auth(GENERIC_CLIENT_ID, Some(GENERIC_CLIENT_SECRET))
            .form(&body),
        ClientAuth::Post | ClientAuth::Json => {
            body.push(("client_id", GENERIC_CLIENT_ID));
            body.push(("client_secret", GENERIC_CLIENT_SECRET));
            if auth == ClientAuth::Post {
                request.form(&body)
            } else {
                request.json(&body.into_iter().collect::<HashMap<_, _>>())
            }
        }
    };
    request.send().await.unwrap()
}

async fn generic_exchange(
    sandbox: &SandboxHandle,
    code: &str,
    verifier: Option<&str>,
) -> reqwest::Response {
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
    ];
    if let Some(verifier) = verifier {
        params.push(("code_verifier", verifier));
    }
    generic_token_request(sandbox, ClientAuth::Basic, &params).await
}

async fn generic_refresh(
    sandbox: &SandboxHandle,
    auth: ClientAuth,
    refresh_token: &str,
) -> reqwest::Response {
    let params = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    generic_token_request(sandbox, auth, &params).await
}

async fn generic_api(sandbox: &SandboxHandle, token: &str) -> StatusCode {
    client()
        .get(format!("{}/generic/api/things", sandbox.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// The access and refresh tokens of a successful answer.
async fn token_pair(response: reqwest::Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    (field(&body, "access_token"), field(&body, "refresh_token"))
}

#[tokio::test]
async fn generic_code_flow_with_pkce_then_refresh_rotates_and_reuse_revokes_the_family() {
    let sandbox = start().await;
    let back = authorize(generic_authorize_url(&sandbox, &generic_authorize_params())).await;
    assert_eq!(back["state"], "st-g");
    assert!(!back.contains_key("error"), "{back:?}");

    let response = generic_exchange(&sandbox, &back["code"], Some(VERIFIER)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], GENERIC_SCOPE);
    let (access_1, first) = (field(&body, "access_token"), field(&body, "refresh_token"));
    assert_eq!(generic_api(&sandbox, &access_1).await, StatusCode::OK);
    let echo: Value = client()
        .get(format!("{}/generic/api/things", sandbox.url()))
        .bearer_auth(&access_1)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["vendor"], "generic");
    let reused_code = generic_exchange(&sandbox, &back["code"], Some(VERIFIER)).await;
    assert_oauth_error(reused_code, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let refreshed = generic_refresh(&sandbox, ClientAuth::Post, &first).await;
    let (access_2, second) = token_pair(refreshed).await;
    assert_ne!(second, first);
    assert_eq!(generic_api(&sandbox, &access_2).await, StatusCode::OK);
    let refreshed = generic_refresh(&sandbox, ClientAuth::Json, &second).await;
    let (access_3, third) = token_pair(refreshed).await;
    assert_ne!(third, second);

    // The first refresh token was retired: presenting it again is theft.
    let stolen = generic_refresh(&sandbox, ClientAuth::Basic, &first).await;
    assert_oauth_error(stolen, StatusCode::BAD_REQUEST, "invalid_grant").await;
    for access in [&access_1, &access_2, &access_3] {
        assert_eq!(
            generic_api(&sandbox, access).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let after_theft = generic_refresh(&sandbox, ClientAuth::Basic, &third).await;
    assert_oauth_error(after_theft, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let stats = sandbox.stats();
    let client_stats = &stats.clients[GENERIC_CLIENT_ID];
    assert_eq!(client_stats.code_grants, 1);
    assert_eq!(client_stats.refresh_grants, 2);
    assert_eq!(client_stats.families_revoked, 1);
    assert_eq!(client_stats.last_params["refresh_token"], "[redacted]");
    let served = client()
        .get(format!("{}/_sandbox/stats", sandbox.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [&first, &third, &back["code"], &VERIFIER.to_owned()] {
        assert!(!served.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn generic_authorize_requires_pkce_and_the_token_request_its_verifier() {
    let sandbox = start().await;
    let without = |names: &[&str]| -> Vec<(&'static str, &'static str)> {
        generic_authorize_params()
            .into_iter()
            .filter(|(name, _)| !names.contains(name))
            .collect()
    };
    let mut plain = without(&["code_challenge_method"]);
    plain.push(("code_challenge_method", "plain"));
    let mut short = without(&["code_challenge"]);
    short.push(("code_challenge", "too-short"));
    let mut unknown_client = without(&["client_id"]);
    unknown_client.push(("client_id", CROSSBEAM_CLIENT_ID));
    for params in [
        without(&["code_challenge", "code_challenge_method"]),
        without(&["code_challenge_method"]),
        without(&["code_challenge"]),
        without(&["redirect_uri"]),
        plain,
        short,
        unknown_client,
    ] {
        let response = client()
            .get(generic_authorize_url(&sandbox, &params))
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let code = || sandbox.generic_authorization_code(GENERIC_CLIENT_ID, CALLBACK, CHALLENGE, None);
    let missing = generic_exchange(&sandbox, &code(), None).await;
    assert_oauth_error(missing, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let wrong_verifier = VERIFIER.replace('d', "e");
    let wrong = generic_exchange(&sandbox, &code(), Some(&wrong_verifier)).await;
    assert_oauth_error(wrong, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let elsewhere = generic_token_request(
        &sandbox,
        ClientAuth::Post,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code()),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_oauth_error(elsewhere, StatusCode::BAD_REQUEST, "invalid_grant").await;
    assert_eq!(sandbox.stats().clients[GENERIC_CLIENT_ID].code_grants, 0);

    let granted = generic_exchange(&sandbox, &code(), Some(VERIFIER)).await;
    assert_eq!(granted.status(), StatusCode::OK);
    let body: Value = granted.json().await.unwrap();
    // Nothing asked, nothing echoed; a refresh token all the same.
    assert!(body.get("scope").is_none(), "{body}");
    assert!(body["refresh_token"].is_string(), "{body}");
    assert_eq!(sandbox.stats().clients[GENERIC_CLIENT_ID].code_grants, 1);
}

#[tokio::test]
async fn generic_refresh_token_is_honoured_by_the_generic_vendor_only() {
    // The same client_id at Crossbeam must not refresh, nor burn, a generic refresh token.
    let sandbox = Sandbox::new()
        .client(Vendor::Crossbeam, GENERIC_CLIENT_ID, GENERIC_CLIENT_SECRET)
        .start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let first = sandbox.generic_refresh_token(GENERIC_CLIENT_ID, Some("read:things"));
    let at_crossbeam = client()
        .post(format!("{}/crossbeam/oauth/token", sandbox.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first.as_str()),
            ("client_id", GENERIC_CLIENT_ID),
            ("client_secret", GENERIC_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(at_crossbeam, StatusCode::BAD_REQUEST, "invalid_grant").await;

    let response = generic_refresh(&sandbox, ClientAuth::Basic, &first).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["scope"], "read:things");
    assert_eq!(
        generic_api(&sandbox, &field(&body, "access_token")).await,
        StatusCode::OK
    );
    let client_stats = &sandbox.stats().clients[GENERIC_CLIENT_ID];
    assert_eq!(client_stats.refresh_grants, 1);
    assert_eq!(client_stats.families_revoked, 0);
}

fn xref_authorize_url(sandbox: &SandboxHandle, params: &[(&str, &str)]) -> String {
    let base = format!("{}/xref/oauth/open-api/{XREF_CLIENT_ID}", sandbox.url());
    url_with(base, params)
}

#[tokio::test]
async fn every_authorize_page_redirects_access_denied_when_the_user_denies() {
    let sandbox = start().await;
    let deny = ("sandbox_decision", "deny");
    let mut generic = generic_authorize_params();
    generic.push(deny);
    let crossbeam = format!(
        "{}&sandbox_decision=deny",
        crossbeam_authorize_url(&sandbox, "openid offline_access", true)
    );
    let xref_target = "https://app.example/xref";
    let pages = [
        (generic_authorize_url(&sandbox, &generic), CALLBACK, "st-g"),
        (crossbeam, CALLBACK, "st-1"),
        (
            xref_authorize_url(
                &sandbox,
                &[("state", "st-x"), ("redirect_url", xref_target), deny],
            ),
            xref_target,
            "st-x",
        ),
    ];
    for (url, target, state) in pages {
        let location = authorize_location(url).await;
        assert!(location.as_str().starts_with(target), "{location}");
        let back: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(back["error"], "access_denied", "{location}");
        assert_eq!(back["state"], state);
        assert!(!back.contains_key("code"), "{location}");
    }

    // Without state, none comes back; the default and an explicit approve both issue a code.
    let stateless = authorize(xref_authorize_url(
        &sandbox,
        &[("redirect_url", xref_target), deny],
    ))
    .await;
    assert_eq!(
        stateless.get("error").map(String::as_str),
        Some("access_denied")
    );
    assert!(!stateless.contains_key("state"));
    let mut approve = generic_authorize_params();
    approve.push(("sandbox_decision", "approve"));
    let approved = authorize(generic_authorize_url(&sandbox, &approve)).await;
    assert!(approved.contains_key("code") && !approved.contains_key("error"));

    // A typo is refused rather than approved, and a denial still checks the request first.
    let mut typo = generic_authorize_params();
    typo.push(("sandbox_decision", "Deny"));
    let mut no_pkce: Vec<_> = generic_authorize_params()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("code_challenge"))
        .collect();
    no_pkce.push(deny);
    for params in [typo, no_pkce] {
        let response = client()
            .get(generic_authorize_url(&sandbox, &params))
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
}

#[tokio::test]
async fn xref_takes_redirect_uri_and_a_standard_clients_extra_token_fields() {
    let sandbox = start().await;
    let target = "https://app.example/xref/callback";
    let location = authorize_location(xref_authorize_url(
        &sandbox,
        &[("state", "st-x"), ("redirect_uri", target)],
    ))
    .await;
    assert_eq!(location.path(), "/xref/callback");
    assert_eq!(location.host_str(), Some("app.example"));
    let back: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(back["state"], "st-x");

    let same_twice = xref_authorize_url(
        &sandbox,
        &[("redirect_url", target), ("redirect_uri", target)],
    );
    assert!(authorize(same_twice).await.contains_key("code"));
    for params in [
        vec![
            ("redirect_url", target),
            ("redirect_uri", "https://app.example/other"),
        ],
        vec![("state", "st-x")],
        vec![("redirect_uri", "http://app.example/xref")],
    ] {
        let response = client()
            .get(xref_authorize_url(&sandbox, &params))
            .send()
            .await
            .unwrap();
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }

    let exchanged = client()
        .post(format!("{}/xref/oauth/tokens", sandbox.url()))
        .json(&json!({
            "grant_type": "authorization_code",
            "client_id": XREF_CLIENT_ID,
            "client_secret": XREF_CLIENT_SECRET,
            "code": back["code"],
            "redirect_uri": target,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(exchanged.status(), StatusCode::OK);
    let body: Value = exchanged.json().await.unwrap();
    assert_eq!(body["xref_account_id"], XREF_ACCOUNT_ID);
    assert_eq!(sandbox.stats().clients[XREF_CLIENT_ID].code_grants, 1);
}
