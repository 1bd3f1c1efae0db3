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
