//! The admin listener: health always open, everything else behind `admin.token` when set.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use support::{TestProxy, client, sandbox};

const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
admin: { bind: "127.0.0.1:0", token: admin-secret-token }
shutdown_grace: 5s
providers:
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }
"#;

#[tokio::test]
async fn admin_token_guards_everything_but_healthz() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(YAML, &vendor).await;
    let admin = proxy.admin.unwrap();
    let url = |path: &str| format!("http://{admin}{path}");

    assert_eq!(
        client().get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    let refused = client().get(url("/readyz")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let wrong = client()
        .get(url("/readyz"))
        .bearer_auth("admin-secret-tokeN")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .get(url("/readyz"))
        .bearer_auth("admin-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let reset = client()
        .post(url("/providers/partner/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 401);
    let reset = client()
        .post(url("/providers/partner/reset"))
        .bearer_auth("admin-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(
        proxy.state.load().config.shutdown_grace,
        std::time::Duration::from_secs(5)
    );
}

#[tokio::test]
async fn readyz_shows_each_providers_state() {
    let vendor = sandbox().await;
    let yaml =
        support::VENDORS_YAML.replace("client_secret: cr-demo-secret", "client_secret: wrong-one");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let admin = proxy.admin.unwrap();
    let readyz = || async {
        let response = client()
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        body["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["provider"].as_str().unwrap().to_string(), p.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = readyz().await;
    assert_eq!(before["cultureamp"]["state"], "not_yet_used");
    assert_eq!(support::get(&proxy, "/cross-river/x").await.status(), 503);
    assert_eq!(
        support::get(&proxy, "/cultureamp/employees").await.status(),
        200
    );
    let after = readyz().await;
    assert_eq!(after["cross-river"]["state"], "credentials_rejected");
    assert!(
        after["cross-river"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_client")
    );
    assert_eq!(after["cultureamp"]["state"], "ok");
    let expires = after["cultureamp"]["expires_in_seconds"].as_u64().unwrap();
    assert!((3500..=3599).contains(&expires), "{expires}");
    assert_eq!(after["partner"]["state"], "ok");
    assert!(!after.values().any(|p| p.to_string().contains("wrong-one")));
}
