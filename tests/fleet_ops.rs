//! Operating a fleet: replicas on a real `redis-server` and the sandbox vendors. A TLS Redis with
//! an ACL user (and a replica with the wrong password, which starts degraded and keeps both
//! passwords out of `/readyz` and `/metrics`), an operator reset on one replica that the other
//! replicas see, and a connected account removed on one replica that another does not write back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::time::Duration;

use authrelay::sandbox::GENERIC_CLIENT_ID;
use reqwest::{StatusCode, Url};
use support::fleet::{
    KEY, admin_json, admin_post, admin_text, admin_url, fleet_yaml, fleet_yaml_at, replicas,
    wait_for_status,
};
use support::redis::{RedisOptions, RedisServer};
use support::{TestProxy, VENDORS_YAML, assert_relay_error, client, echo, get, sandbox};
use tokio::task::JoinSet;

const CROSS_RIVER: &str = "cr-demo-client";
/// How often a test polls for something the fleet does in the background.
const POLL: Duration = Duration::from_millis(200);

/// Sends `count` concurrent GETs of `path`, spread over `proxies`; returns each status and its
/// `X-Relay-Error` (empty when the vendor answered).
async fn spread(proxies: &[TestProxy], path: &str, count: usize) -> Vec<(u16, String)> {
    let mut requests = JoinSet::new();
    for index in 0..count {
        let url = proxies[index % proxies.len()].url(path);
        requests.spawn(async move {
            let response = client().get(url).send().await.expect("request");
            let code = response
                .headers()
                .get("x-relay-error")
                .map(|code| code.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (response.status().as_u16(), code)
        });
    }
    requests.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_an_acl_user_work_and_the_password_never_shows() {
    const PASSWORD: &str = "s3cret-redis-pw";
    const WRONG: &str = "wr0ng-redis-pw";
    let vendor = sandbox().await;
    let redis = RedisServer::start_with(RedisOptions {
        acl_user: Some(("relay".into(), PASSWORD.into())),
        tls: true,
        ..RedisOptions::default()
    });
    let url = redis.url();
    assert!(
        url.starts_with("rediss://relay:") && url.contains(PASSWORD),
        "{url}"
    );
    let ca = redis.ca_pem_path().expect("CA of a TLS server");
    let ca = format!(", ca: \"{}\"", ca.display());

    let proxy = TestProxy::start(&fleet_yaml_at(VENDORS_YAML, &url, KEY, &ca), &vendor).await;
    let response = get(&proxy, "/cross-river/payments").await;
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    let readyz = wait_for_status(&proxy, "ready", Duration::from_secs(3)).await;
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(readyz["store"]["reachable"], true, "{readyz}");
    for path in ["/readyz", "/metrics"] {
        let body = admin_text(&proxy, path).await;
        assert!(
            !body.contains(PASSWORD),
            "{path} shows the password: {body}"
        );
    }

    // The same server, the wrong password: Redis refuses the replica, which still starts.
    let wrong_url = url.replace(PASSWORD, WRONG);
    assert_ne!(wrong_url, url);
    let wrong = TestProxy::start(&fleet_yaml_at(VENDORS_YAML, &wrong_url, KEY, &ca), &vendor).await;
    let readyz = wait_for_status(&wrong, "degraded", Duration::from_secs(3)).await;
    assert_eq!(readyz["status"], "degraded", "{readyz}");
    assert_eq!(readyz["store"]["reachable"], false, "{readyz}");
    let last_error = readyz["store"]["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no store.last_error: {readyz}"));
    assert!(last_error.contains("Authentication"), "{last_error}");
    for password in [PASSWORD, WRONG] {
        assert!(
            !last_error.contains(password),
            "last_error shows a password: {last_error}"
        );
    }
    // Cross River is lockout-sensitive: no token request without the fleet store.
    let refused = get(&wrong, "/cross-river/payments").await;
    assert_relay_error(&refused, 503, "store_unavailable");
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    for path in ["/readyz", "/metrics"] {
        let body = admin_text(&wrong, path).await;
        for password in [PASSWORD, WRONG] {
            assert!(
                !body.contains(password),
                "{path} of the refused replica shows a password: {body}"
            );
        }
    }
    // The refused replica did not disturb the one that got in.
    assert_eq!(get(&proxy, "/cross-river/payments").await.status(), 200);
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reset_on_one_replica_reaches_the_others() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let wrong = VENDORS_YAML.replace(
        "client_secret: cr-demo-secret",
        "client_secret: not-the-secret",
    );
    assert_ne!(wrong, VENDORS_YAML);
    let proxies = replicas(2, &fleet_yaml(&wrong, &redis, KEY, ""), &vendor).await;
    let (a, b) = (&proxies[0], &proxies[1]);

    assert_relay_error(
        &get(a, "/cross-river/payments").await,
        503,
        "credentials_rejected",
    );
    assert_relay_error(
        &get(b, "/cross-river/payments").await,
        503,
        "credentials_rejected",
    );
    let outcomes = spread(&proxies, "/cross-river/payments", 10).await;
    assert!(
        outcomes
            .iter()
            .all(|outcome| *outcome == (503, "credentials_rejected".to_owned())),
        "{outcomes:?}"
    );
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1, "one for the fleet");

    // The operator resets through A; nothing was fixed at the vendor.
    let reset = admin_post(a, "/providers/cross-river/reset").await;
    assert_eq!(reset.status(), 200);
    let reset: serde_json::Value = reset.json().await.unwrap();
    assert_eq!(reset["stored_rejections_cleared"], 1, "{reset}");

    // B, blocked on the shared rejection, re-reads the store (every 5 s) and tries again; the
    // deadline leaves a loaded machine 3 s over that period.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while vendor.token_requests(CROSS_RIVER) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica B never saw the reset made through A"
        );
        assert_relay_error(
            &get(b, "/cross-river/payments").await,
            503,
            "credentials_rejected",
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);

    // The new rejection is shared: neither replica tries again.
    for _ in 0..3 {
        let outcomes = spread(&proxies, "/cross-river/payments", 10).await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| *outcome == (503, "credentials_rejected".to_owned())),
            "{outcomes:?}"
        );
    }
    for proxy in &proxies {
        let readyz = admin_json(proxy, "/readyz").await;
        let state = readyz["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == "cross-river")
            .map(|p| p["state"].clone());
        assert_eq!(
            state,
            Some(serde_json::json!("credentials_rejected")),
            "{readyz}"
        );
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
    assert!(!vendor.stats().clients[CROSS_RIVER].locked);
}

/// A provider whose accounts people connect, and a route that uses account `acme` (from
/// tests/accounts.rs).
const ACCOUNTS_YAML: &str = r#"
listeners:
  - bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
providers:
  generic:
    grant: authorization_code
    authorize_url: "{sandbox}/generic/authorize"
    token_url: "{sandbox}/generic/oauth/token"
    client_id: gen-demo-client
    client_secret: gen-demo-secret
    scopes: [read]
    redirect_uri: https://relay.example.com/callback/generic
routes:
  - match: { path_prefix: /generic }
    upstream: "{sandbox}/generic/api"
    strip_prefix: true
    provider: generic
    account: acme
"#;

/// Where the vendor sends the person back; the test calls the admin's callback itself.
const CALLBACK_BASE: &str = "https://relay.example.com";

/// A client that does not follow redirects (the connect flow reads them).
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The connect flow through `proxy`'s admin listener: the vendor's authorize URL, the person's
/// approval, and the vendor's redirect delivered to the callback.
async fn connect(proxy: &TestProxy, provider: &str, account: &str) {
    let response = no_redirects()
        .get(admin_url(
            proxy,
            &format!("/connect/{provider}?account={account}"),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    let authorize = location(&response);
    let response = no_redirects().get(&authorize).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    let back = location(&response);
    assert!(back.starts_with(CALLBACK_BASE), "{back}");
    let query = Url::parse(&back).unwrap().query().unwrap().to_owned();
    let response = no_redirects()
        .get(admin_url(proxy, &format!("/callback/{provider}?{query}")))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let page = response.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(
            "Account {account} of provider {provider} is connected"
        )),
        "{page}"
    );
}

/// Every `(provider, account)` that `GET /accounts` lists.
async fn listed_accounts(proxy: &TestProxy) -> Vec<(String, String)> {
    admin_json(proxy, "/accounts").await["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_owned(),
                a["account"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The record names in the fleet's index that belong to `account` of `provider`.
fn stored_names(redis: &RedisServer, provider: &str, account: &str) -> Vec<String> {
    let prefix = format!("cred/{provider}/{account}/");
    redis
        .command_bytes(&[b"SMEMBERS", b"authrelay:index"])
        .into_iter()
        .map(|name| String::from_utf8(name).unwrap())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// The keys under the fleet's prefix that hold a record of `account` of `provider`.
fn stored_keys(redis: &RedisServer, provider: &str, account: &str) -> Vec<String> {
    let pattern = format!("authrelay:cred/{provider}/{account}/*");
    redis
        .command_bytes(&[b"KEYS", pattern.as_bytes()])
        .into_iter()
        .map(|key| String::from_utf8(key).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_removed_on_one_replica_is_not_written_back_by_another() {
    let vendor = sandbox().await;
    let redis = RedisServer::start();
    let proxies = replicas(2, &fleet_yaml(ACCOUNTS_YAML, &redis, KEY, ""), &vendor).await;
    let (a, b) = (&proxies[0], &proxies[1]);

    connect(a, "generic", "acme").await;
    assert_eq!(stored_names(&redis, "generic", "acme").len(), 1);
    // B finds the account in Redis and uses the token A got.
    let echoed = echo(get(b, "/generic/items").await).await;
    assert_eq!(
        support::echoed_header(&echoed, "authorization").len(),
        1,
        "{echoed}"
    );
    assert_eq!(
        vendor.token_requests(GENERIC_CLIENT_ID),
        1,
        "the code exchange only"
    );

    let removed = client()
        .post(admin_url(a, "/accounts/generic/acme/remove?force=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let removed: serde_json::Value = removed.json().await.unwrap();
    assert_eq!(removed["account"], "acme", "{removed}");
    assert!(stored_names(&redis, "generic", "acme").is_empty());
    assert!(stored_keys(&redis, "generic", "acme").is_empty());

    // B still holds the account's token: the vendor refuses it, and B needs a new one.
    vendor.revoke_access_tokens();
    let response = get(b, "/generic/items").await;
    let status = response.status();
    let code = response
        .headers()
        .get("x-relay-error")
        .map(|code| code.to_str().unwrap().to_owned());
    assert_ne!(status, 200, "a removed account served a request");
    assert_eq!(status, 403, "{response:?}");
    assert!(
        matches!(
            code.as_deref(),
            Some("reauthorization_required" | "no_account")
        ),
        "{response:?}"
    );
    // And from now on it is not connected.
    assert_relay_error(&get(b, "/generic/items").await, 403, "no_account");
    assert_relay_error(&get(a, "/generic/items").await, 403, "no_account");

    assert_eq!(
        stored_names(&redis, "generic", "acme"),
        Vec::<String>::new(),
        "the removed account was written back to the index"
    );
    assert_eq!(
        stored_keys(&redis, "generic", "acme"),
        Vec::<String>::new(),
        "the removed account's record was written back"
    );
    assert_eq!(
        vendor.token_requests(GENERIC_CLIENT_ID),
        1,
        "the removed account's refresh token was used"
    );
    assert!(listed_accounts(a).await.is_empty());
    assert!(listed_accounts(b).await.is_empty());
}
