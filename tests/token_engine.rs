//! The token engine across restarts: the one-strike guard, stored tokens, rotating refresh tokens
//! (also after SIGKILL), Retry-After, operator reset, and what the store's bytes may hold.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::time::Duration;

use authrelay::sandbox::{CROSSBEAM_CLIENT_ID, Failure};
use support::{
    TestProxy, VENDORS_YAML, assert_relay_error, client, echo, echoed_header, get, sandbox,
};

const CROSS_RIVER: &str = "cr-demo-client";

fn crossbeam_yaml(refresh_token: &str) -> String {
    format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
admin: {{ bind: "127.0.0.1:0" }}
providers:
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    token_url: "{{sandbox}}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    refresh_token: "{refresh_token}"
routes:
  - match: {{ path_prefix: /crossbeam }}
    strip_prefix: true
    upstream: "{{sandbox}}/crossbeam/api"
    provider: crossbeam
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
"#
    )
}

#[tokio::test]
async fn a_rejected_secret_is_tried_once_across_restarts() {
    let vendor = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = VENDORS_YAML.replace(
        "client_secret: cr-demo-secret",
        "client_secret: not-the-secret",
    );
    for _restart in 0..4 {
        let proxy = TestProxy::start_with_store(&yaml, &vendor, store.path()).await;
        for _ in 0..50 / 4 {
            assert_relay_error(
                &get(&proxy, "/cross-river/x").await,
                503,
                "credentials_rejected",
            );
        }
        proxy.shutdown().await;
    }
    assert_eq!(vendor.token_requests(CROSS_RIVER), 1);
    assert!(!vendor.stats().clients[CROSS_RIVER].locked);
}

#[tokio::test]
async fn reset_lets_a_rejected_provider_try_again_and_is_remembered() {
    let vendor = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = VENDORS_YAML.replace(
        "client_secret: cr-demo-secret",
        "client_secret: not-the-secret",
    );
    let proxy = TestProxy::start_with_store(&yaml, &vendor, store.path()).await;
    assert_relay_error(
        &get(&proxy, "/cross-river/x").await,
        503,
        "credentials_rejected",
    );
    let admin = proxy.admin.unwrap();
    let reset = client()
        .post(format!("http://{admin}/providers/cross-river/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    // One more attempt (the operator asked for it), rejected again, then quiet.
    assert_relay_error(
        &get(&proxy, "/cross-river/x").await,
        503,
        "credentials_rejected",
    );
    assert_relay_error(
        &get(&proxy, "/cross-river/x").await,
        503,
        "credentials_rejected",
    );
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
    let unknown = client()
        .post(format!("http://{admin}/providers/nope/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    proxy.shutdown().await;
    // Two strikes so far: the sandbox still has the account unlocked.
    assert!(!vendor.stats().clients[CROSS_RIVER].locked);
}

#[tokio::test]
async fn a_stored_token_is_reused_after_a_restart() {
    let vendor = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for _restart in 0..2 {
        let proxy = TestProxy::start_with_store(VENDORS_YAML, &vendor, store.path()).await;
        seen.push(echoed_header(
            &echo(get(&proxy, "/cultureamp/employees").await).await,
            "authorization",
        ));
        proxy.shutdown().await;
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);
}

#[tokio::test]
async fn the_store_holds_no_token_or_secret_in_plain_text() {
    let vendor = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = crossbeam_yaml(&vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID));
    let proxy = TestProxy::start_with_store(&yaml, &vendor, store.path()).await;
    let token = echoed_header(
        &echo(get(&proxy, "/crossbeam/v1/partners").await).await,
        "authorization",
    )[0]
    .trim_start_matches("Bearer ")
    .to_string();
    let refresh = vendor.stats().clients[CROSSBEAM_CLIENT_ID].clone();
    assert_eq!(refresh.refresh_grants, 1);
    proxy.shutdown().await;
    for entry in std::fs::read_dir(store.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [token.as_str(), "cb-demo-secret"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in the store"
            );
        }
    }
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_token_request() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    vendor.fail_next_token_requests(
        1,
        Failure::RateLimited {
            retry_after: Duration::from_secs(2),
        },
    );
    let started = tokio::time::Instant::now();
    assert_relay_error(
        &get(&proxy, "/cross-river/x").await,
        503,
        "token_unavailable",
    );
    loop {
        let response = get(&proxy, "/cross-river/x").await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(
            vendor.token_requests(CROSS_RIVER),
            1,
            "a second token request inside Retry-After"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "recovered after {:?}",
        started.elapsed()
    );
    assert_eq!(vendor.token_requests(CROSS_RIVER), 2);
}

#[tokio::test]
async fn a_rotated_refresh_token_survives_sigkill() {
    let vendor = sandbox().await;
    vendor.set_token_ttl(Duration::from_secs(2));
    let seed = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    let yaml = crossbeam_yaml(&seed).replace("{sandbox}", &vendor.url())
        + &format!(
            "store: {{ kind: file, path: \"{}\" }}\n",
            dir.path().join("store").display()
        );
    std::fs::write(&config, yaml).unwrap();

    let mut rounds = Vec::new();
    for _ in 0..3 {
        let (mut proxy, addr) = support::spawn_proxy(&config);
        // The access token lives 2 s: each round after the first needs a refresh, which only
        // works with the newest refresh token (reusing a retired one revokes the whole family).
        let response = client()
            .get(format!("http://{addr}/crossbeam/v1/partners"))
            .send()
            .await
            .unwrap();
        rounds.push(response.status());
        proxy.kill().unwrap();
        proxy.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
    }
    assert_eq!(rounds, [200, 200, 200]);
    let stats = vendor.stats().clients[CROSSBEAM_CLIENT_ID].clone();
    assert_eq!(stats.refresh_grants, 3);
    assert_eq!(stats.families_revoked, 0);
}

#[tokio::test]
async fn a_crash_loop_during_unanswered_token_requests_stops_after_two() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    // A token endpoint that takes every request and never answers, like a hung vendor.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = hole.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                std::future::pending::<()>().await;
            });
        }
    });
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
store: {{ kind: file, path: store }}
providers:
  cross-river:
    preset: cross-river
    token_url: "http://{hole_addr}/connect/token"
    client_id: cr-demo-client
    client_secret: cr-demo-secret
routes:
  - {{ match: {{ path_prefix: /cr }}, upstream: "{}/cross-river/api", provider: cross-river }}
"#,
        vendor.url()
    );
    std::fs::write(&config, yaml).unwrap();

    let mut answers = Vec::new();
    for round in 0..4 {
        let (mut proxy, addr) = support::spawn_proxy(&config);
        let request = tokio::spawn(async move {
            client()
                .get(format!("http://{addr}/cr/x"))
                .send()
                .await
                .map(|r| r.status())
        });
        // Wait for the token request to reach the vendor, or for the proxy to refuse to send it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if requests.load(Ordering::SeqCst) > round || request.is_finished() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: nothing happened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if request.is_finished() {
            answers.push(request.await.unwrap().unwrap().as_u16());
        }
        // The process dies before any answer could be written.
        proxy.kill().unwrap();
        proxy.wait().unwrap();
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "at most two unanswered attempts, ever"
    );
    assert_eq!(answers, [503, 503], "later starts refuse at once");
}

#[tokio::test]
async fn a_restart_with_new_credential_settings_keeps_the_newest_refresh_token() {
    let vendor = sandbox().await;
    let store = tempfile::tempdir().unwrap();
    let yaml = crossbeam_yaml(&vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID));
    let proxy = TestProxy::start_with_store(&yaml, &vendor, store.path()).await;
    assert_eq!(get(&proxy, "/crossbeam/v1/partners").await.status(), 200);
    proxy.shutdown().await;
    // Restart with other credential settings (scopes are in the fingerprint): no stored token
    // for them, so a refresh, which must use the newest refresh token, not the configured one
    // that the vendor retired at the first rotation.
    let changed = yaml.replace(
        "    grant: refresh_token",
        "    grant: refresh_token\n    scopes: [openid, offline_access]",
    );
    let proxy = TestProxy::start_with_store(&changed, &vendor, store.path()).await;
    assert_eq!(get(&proxy, "/crossbeam/v1/partners").await.status(), 200);
    proxy.shutdown().await;
    let stats = vendor.stats().clients[CROSSBEAM_CLIENT_ID].clone();
    assert_eq!(stats.refresh_grants, 2);
    assert_eq!(stats.families_revoked, 0);
}
