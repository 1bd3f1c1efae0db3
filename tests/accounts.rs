//! Connected accounts end to end, over real sockets against the sandbox vendors: the connect
//! flow through the admin listener (Xref, Crossbeam, a generic OAuth vendor), routes that pick
//! the account, rotation across expiries, restarts, removal, and the refusals (forged or replayed
//! `state`, a denied authorization, an unknown account).

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![allow(clippy::unwrap_used, reason = "a panic in a test is a failed test")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use authrelay::sandbox::{
    CROSSBEAM_CLIENT_ID, CROSSBEAM_ORGS, GENERIC_CLIENT_ID, SandboxHandle, XREF_ACCOUNT_ID,
    XREF_CLIENT_ID,
};
use reqwest::{StatusCode, Url};
use support::{TestProxy, assert_relay_error, echo, echoed_header, sandbox};

/// Where the vendors send the person back. The host is never contacted by the test: it reads the
/// vendor's redirect and calls the admin listener's callback itself, as a front proxy would.
const CALLBACK_BASE: &str = "https://relay.example.com";

const ACCOUNTS_YAML: &str = r#"
listeners:
  - bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
providers:
  xref:
    preset: xref
    authorize_url: "{sandbox}/xref/oauth/open-api/{client_id}"
    token_url: "{sandbox}/xref/oauth/tokens"
    revoke_url: "{sandbox}/xref/oauth/deauthorize"
    client_id: xref-demo-client
    client_secret: xref-demo-secret
    redirect_uri: https://relay.example.com/callback/xref
  crossbeam:
    preset: crossbeam
    authorize_url: "{sandbox}/crossbeam/authorize"
    token_url: "{sandbox}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    scopes: [openid, offline_access, read:partnerships]
    redirect_uri: https://relay.example.com/callback/crossbeam
  generic:
    grant: authorization_code
    authorize_url: "{sandbox}/generic/authorize"
    token_url: "{sandbox}/generic/oauth/token"
    client_id: gen-demo-client
    client_secret: gen-demo-secret
    scopes: [read]
    redirect_uri: https://relay.example.com/callback/generic
routes:
  - match: { path_prefix: /xref }
    upstream: "{sandbox}/xref/api"
    strip_prefix: true
    provider: xref
    account: main
    headers:
      X-Xref-Account: "{xref_account_id}"
  - match: { path_prefix: /xref-any }
    upstream: "{sandbox}/xref/api"
    strip_prefix: true
    provider: xref
    account_header: X-Relay-Account
  - match: { path_prefix: /crossbeam }
    upstream: "{sandbox}/crossbeam/api"
    strip_prefix: true
    provider: crossbeam
    account_header: X-Relay-Account
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: { path_prefix: /generic }
    upstream: "{sandbox}/generic/api"
    strip_prefix: true
    provider: generic
    account: acme
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn admin_url(proxy: &TestProxy, path: &str) -> String {
    format!("http://{}{path}", proxy.admin.unwrap())
}

fn query(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// `GET /connect/{provider}?account=`: the vendor's authorize URL.
async fn start_connect(proxy: &TestProxy, provider: &str, account: &str) -> String {
    let response = client()
        .get(admin_url(
            proxy,
            &format!("/connect/{provider}?account={account}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    location(&response)
}

/// The person approves at the vendor: its redirect back to the callback, as a query string.
async fn approve(authorize_url: &str) -> String {
    let response = client().get(authorize_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    let back = location(&response);
    assert!(back.starts_with(CALLBACK_BASE), "{back}");
    Url::parse(&back)
        .unwrap()
        .query()
        .unwrap_or_default()
        .to_owned()
}

/// The vendor's redirect reaches the admin listener's callback.
async fn callback(proxy: &TestProxy, provider: &str, query: &str) -> (StatusCode, String) {
    let response = client()
        .get(admin_url(proxy, &format!("/callback/{provider}?{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_eq!(response.headers()["cache-control"], "no-store");
    (status, response.text().await.unwrap())
}

/// The whole flow for one account; returns the callback query (holding the used code).
async fn connect(proxy: &TestProxy, provider: &str, account: &str) -> String {
    let authorize = start_connect(proxy, provider, account).await;
    let back = approve(&authorize).await;
    let (status, page) = callback(proxy, provider, &back).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(
            "Account {account} of provider {provider} is connected"
        )),
        "{page}"
    );
    back
}

async fn proxied(proxy: &TestProxy, path: &str, account: Option<&str>) -> reqwest::Response {
    let mut request = client().get(proxy.url(path));
    if let Some(account) = account {
        request = request.header("X-Relay-Account", account);
    }
    request.send().await.unwrap()
}

async fn accounts(proxy: &TestProxy) -> Vec<serde_json::Value> {
    let listing: serde_json::Value = client()
        .get(admin_url(proxy, "/accounts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["accounts"].as_array().unwrap().clone()
}

/// The `state` `/readyz` reports for `account`.
async fn ready_state(proxy: &TestProxy, account: &str) -> String {
    let ready: serde_json::Value = client()
        .get(admin_url(proxy, "/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let providers = ready["providers"].as_array().unwrap();
    let entry = providers.iter().find(|p| p["account"] == account).unwrap();
    entry["state"].as_str().unwrap().to_owned()
}

fn code_grants(sandbox: &SandboxHandle, client_id: &str) -> u64 {
    sandbox
        .stats()
        .clients
        .get(client_id)
        .map_or(0, |client| client.code_grants)
}

#[tokio::test]
async fn xref_account_connects_and_its_token_goes_out_with_the_token_scheme() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;

    let authorize = start_connect(&proxy, "xref", "main").await;
    assert!(authorize.starts_with(&format!(
        "{}/xref/oauth/open-api/{XREF_CLIENT_ID}?",
        sandbox.url()
    )));
    let params = query(&authorize);
    assert_eq!(
        params["redirect_uri"],
        "https://relay.example.com/callback/xref"
    );
    assert!(params["state"].len() >= 43, "state too short: {params:?}");
    assert!(!params.contains_key("code_challenge"), "Xref takes no PKCE");

    let back = approve(&authorize).await;
    let code = query(&format!("http://x/?{back}"))["code"].clone();
    let (status, page) = callback(&proxy, "xref", &back).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("Account main of provider xref is connected"),
        "{page}"
    );
    assert!(!page.contains(&code), "the page must not show the code");
    assert_eq!(code_grants(&sandbox, XREF_CLIENT_ID), 1);

    let response = proxied(&proxy, "/xref/accounts/42", None).await;
    let echoed = echo(response).await;
    let authorization = echoed_header(&echoed, "authorization");
    assert!(authorization[0].starts_with("Token "), "{authorization:?}");
    assert!(!page.contains(authorization[0].trim_start_matches("Token ")));
    assert_eq!(echoed_header(&echoed, "x-xref-account"), [XREF_ACCOUNT_ID]);

    let listed = accounts(&proxy).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0]["connected_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(listed[0]["provider"], "xref");
    assert_eq!(listed[0]["account"], "main");
    assert_eq!(listed[0]["state"], "ok");
    // No expiry stated and no refresh token: good until deauthorized, no countdown.
    assert!(listed[0]["expires_in_seconds"].is_null(), "{listed:?}");
    let listing = serde_json::to_string(&listed).unwrap();
    assert!(!listing.contains(authorization[0].trim_start_matches("Token ")));

    // The same callback again (a reload, a replay): the state was used up.
    let (status, page) = callback(&proxy, "xref", &back).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(code_grants(&sandbox, XREF_CLIENT_ID), 1);
    assert_eq!(sandbox.stats().token_requests, 1);
}

#[tokio::test]
async fn forged_denied_and_misrouted_callbacks_make_no_token_request() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;

    // A state no one issued, with a real code.
    let code = sandbox.xref_code(XREF_CLIENT_ID);
    let (status, _) = callback(&proxy, "xref", &format!("state=forged&code={code}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = callback(&proxy, "xref", &format!("code={code}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A real state presented at another provider's callback is spent, not honoured.
    let authorize = start_connect(&proxy, "xref", "main").await;
    let back = approve(&authorize).await;
    let (status, _) = callback(&proxy, "crossbeam", &back).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = callback(&proxy, "xref", &back).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a state is single use");

    // The person clicks Deny at the vendor.
    let authorize = start_connect(&proxy, "generic", "acme").await;
    let back = approve(&format!("{authorize}&sandbox_decision=deny")).await;
    assert_eq!(
        query(&format!("http://x/?{back}"))["error"],
        "access_denied"
    );
    let (status, page) = callback(&proxy, "generic", &back).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("access_denied"), "{page}");

    assert_eq!(sandbox.stats().token_requests, 0);
    assert!(accounts(&proxy).await.is_empty());
    let response = proxied(&proxy, "/xref/x", None).await;
    assert_relay_error(&response, 403, "no_account");
    assert_eq!(sandbox.stats().api_requests, 0);
}

#[tokio::test]
async fn crossbeam_account_uses_pkce_audience_and_rotates_across_expiries() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;
    // Short-lived tokens from the start, so that the loop below crosses several expiries.
    sandbox.set_token_ttl(Duration::from_secs(2));

    let authorize = start_connect(&proxy, "crossbeam", "acme").await;
    let params = query(&authorize);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["code_challenge"].len(), 43);
    assert_eq!(params["audience"], "https://api.getcrossbeam.com");
    assert_eq!(params["scope"], "openid offline_access read:partnerships");
    assert_eq!(params["client_id"], CROSSBEAM_CLIENT_ID);
    let back = approve(&authorize).await;
    let (status, page) = callback(&proxy, "crossbeam", &back).await;
    assert_eq!(status, StatusCode::OK, "{page}");

    // The caller names the account; the header does not travel on.
    let echoed = echo(proxied(&proxy, "/crossbeam/v1/partners", Some("acme")).await).await;
    assert!(echoed_header(&echoed, "authorization")[0].starts_with("Bearer "));
    assert!(echoed_header(&echoed, "x-relay-account").is_empty());
    assert_eq!(
        echoed_header(&echoed, "xbeam-organization"),
        ["02fde942-c7cd-4f12-9d4e-07ee8a57c8c6"]
    );

    let response = proxied(&proxy, "/crossbeam/v1/partners", Some("other")).await;
    assert_relay_error(&response, 403, "no_account");
    let response = proxied(&proxy, "/crossbeam/v1/partners", None).await;
    assert_relay_error(&response, 403, "no_account");
    let response = proxied(&proxy, "/crossbeam/v1/partners", Some("bad name")).await;
    assert_relay_error(&response, 403, "no_account");

    // Three expiries, three refreshes; a refresh token used twice would revoke the family.
    for _ in 0..3 {
        let response = proxied(&proxy, "/crossbeam/v1/partners", Some("acme")).await;
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(2_100)).await;
    }
    let response = proxied(&proxy, "/crossbeam/v1/partners", Some("acme")).await;
    assert_eq!(response.status(), 200);
    let stats = sandbox.stats().clients[CROSSBEAM_CLIENT_ID].clone();
    assert!(stats.refresh_grants >= 3, "{stats:?}");
    assert_eq!(stats.families_revoked, 0, "{stats:?}");
    assert_eq!(stats.code_grants, 1);

    // Crossbeam's organizations, for Xbeam-Organization.
    let orgs: serde_json::Value = client()
        .get(admin_url(&proxy, "/accounts/crossbeam/acme/orgs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uuids: Vec<&str> = orgs["organizations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|org| org["uuid"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = CROSSBEAM_ORGS.iter().map(|(_, uuid)| *uuid).collect();
    assert_eq!(uuids, expected);
}

#[tokio::test]
async fn a_restarted_proxy_keeps_the_account_and_the_store_holds_no_plain_token() {
    let sandbox = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_with_store(ACCOUNTS_YAML, &sandbox, store.path()).await;
    connect(&proxy, "generic", "acme").await;
    let echoed = echo(proxied(&proxy, "/generic/items", None).await).await;
    let token = echoed_header(&echoed, "authorization")[0]
        .trim_start_matches("Bearer ")
        .to_owned();
    proxy.shutdown().await;

    let refresh_tokens = sandbox.current_refresh_tokens(GENERIC_CLIENT_ID);
    assert_eq!(refresh_tokens.len(), 1);
    for entry in std::fs::read_dir(store.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for secret in refresh_tokens.iter().chain([&token]) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a token is in the store in plain text"
            );
        }
    }

    let proxy = TestProxy::start_with_store(ACCOUNTS_YAML, &sandbox, store.path()).await;
    let echoed = echo(proxied(&proxy, "/generic/items", None).await).await;
    assert_eq!(
        echoed_header(&echoed, "authorization")[0],
        format!("Bearer {token}")
    );
    assert_eq!(code_grants(&sandbox, GENERIC_CLIENT_ID), 1, "no new login");
    let listed = accounts(&proxy).await;
    assert_eq!(listed[0]["account"], "acme");
    assert_eq!(listed[0]["scopes"], serde_json::json!(["read"]));
    assert!(listed[0]["expires_in_seconds"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn two_accounts_of_one_provider_never_share_a_token() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;
    connect(&proxy, "xref", "main").await;
    connect(&proxy, "xref", "second").await;

    let token_of = |echoed: &serde_json::Value| echoed_header(echoed, "authorization")[0].clone();
    let main = token_of(&echo(proxied(&proxy, "/xref/x", None).await).await);
    let main_by_header = token_of(&echo(proxied(&proxy, "/xref-any/x", Some("main")).await).await);
    let second = token_of(&echo(proxied(&proxy, "/xref-any/x", Some("second")).await).await);
    assert_eq!(main, main_by_header);
    assert_ne!(main, second);
    for _ in 0..5 {
        let again = token_of(&echo(proxied(&proxy, "/xref-any/x", Some("second")).await).await);
        assert_eq!(again, second);
    }
    let names: Vec<String> = accounts(&proxy)
        .await
        .iter()
        .map(|a| a["account"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["main", "second"]);
}

#[tokio::test]
async fn removing_an_account_deauthorizes_it_at_the_vendor() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;
    connect(&proxy, "xref", "main").await;
    assert_eq!(proxied(&proxy, "/xref/x", None).await.status(), 200);

    let response = client()
        .post(admin_url(&proxy, "/accounts/xref/main/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let removed: serde_json::Value = response.json().await.unwrap();
    assert_eq!(removed["revocation"], "revoked");
    assert_eq!(sandbox.stats().clients[XREF_CLIENT_ID].deauthorizations, 1);

    let response = proxied(&proxy, "/xref/x", None).await;
    assert_relay_error(&response, 403, "no_account");
    assert!(accounts(&proxy).await.is_empty());
    let response = client()
        .post(admin_url(&proxy, "/accounts/xref/main/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_refused_refresh_token_asks_for_reauthorization() {
    let sandbox = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_with_store(ACCOUNTS_YAML, &sandbox, store.path()).await;
    connect(&proxy, "crossbeam", "acme").await;
    assert_eq!(
        proxied(&proxy, "/crossbeam/x", Some("acme")).await.status(),
        200
    );

    // The vendor forgets everything: the API says 401, the refresh says invalid_grant.
    sandbox.revoke_all_tokens();
    let response = proxied(&proxy, "/crossbeam/x", Some("acme")).await;
    assert_relay_error(&response, 403, "reauthorization_required");
    let requests = sandbox.stats().token_requests;
    let response = proxied(&proxy, "/crossbeam/x", Some("acme")).await;
    assert_relay_error(&response, 403, "reauthorization_required");
    assert_eq!(sandbox.stats().token_requests, requests, "never retried");

    let listed = accounts(&proxy).await;
    assert_eq!(listed[0]["state"], "reauthorization_required");
    assert_eq!(
        ready_state(&proxy, "acme").await,
        "reauthorization_required"
    );
    let metrics = client()
        .get(admin_url(&proxy, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "authrelay_provider_state{account=\"acme\",provider=\"crossbeam\",state=\"reauthorization_required\"} 1"
        ),
        "{metrics}"
    );

    // After a restart the state is known before any request, and still no token request.
    proxy.shutdown().await;
    let proxy = TestProxy::start_with_store(ACCOUNTS_YAML, &sandbox, store.path()).await;
    assert_eq!(
        ready_state(&proxy, "acme").await,
        "reauthorization_required"
    );
    let response = proxied(&proxy, "/crossbeam/x", Some("acme")).await;
    assert_relay_error(&response, 403, "reauthorization_required");
    assert_eq!(sandbox.stats().token_requests, requests);

    // Connecting again brings it back.
    connect(&proxy, "crossbeam", "acme").await;
    assert_eq!(
        proxied(&proxy, "/crossbeam/x", Some("acme")).await.status(),
        200
    );
    assert_eq!(accounts(&proxy).await[0]["state"], "ok");
}

#[tokio::test]
async fn a_401_for_an_account_without_refresh_token_keeps_its_token() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;
    connect(&proxy, "xref", "main").await;
    let token_of = |echoed: &serde_json::Value| echoed_header(echoed, "authorization")[0].clone();
    let before = token_of(&echo(proxied(&proxy, "/xref/x", None).await).await);

    // One endpoint refusing the token (a permission, a bad path) is the vendor's answer to
    // pass on; Xref issued no refresh token, so forgetting the token would disconnect the account.
    let refused = proxied(&proxy, "/xref/_status/401", None).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("x-relay-error").is_none());
    let after = token_of(&echo(proxied(&proxy, "/xref/x", None).await).await);
    assert_eq!(before, after);
    assert_eq!(sandbox.stats().token_requests, 1, "only the code exchange");
    assert_eq!(accounts(&proxy).await[0]["state"], "ok");
}

#[tokio::test]
async fn the_public_callback_name_opens_only_the_callback() {
    let sandbox = sandbox().await;
    let proxy = TestProxy::start(ACCOUNTS_YAML, &sandbox).await;
    let with_host = |path: &str| {
        client()
            .get(admin_url(&proxy, path))
            .header("host", "relay.example.com")
    };
    let response = with_host("/accounts").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    let response = with_host("/").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    // The callback answers through that name (here: a state no one issued).
    let response = with_host("/callback/xref?state=x&code=y")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = client()
        .get(admin_url(&proxy, "/connect/xref?account=main"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);

    // Organizations of an account that is not connected: 404, no vendor call.
    let response = client()
        .get(admin_url(&proxy, "/accounts/crossbeam/nobody/orgs"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(sandbox.stats().requests, 0);
}
