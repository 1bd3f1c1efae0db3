//! Hot reload of proxy.yaml: new routes are served, a bad file keeps the running config, tokens
//! of unchanged providers stay warm, a changed secret gets exactly one new token request.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::path::Path;
use std::time::Duration;

use authrelay::Server;
use authrelay::config::Config;
use support::{client, sandbox};
use tokio_util::sync::CancellationToken;

const BASE: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
store: { kind: file, path: store }
providers:
  cultureamp:
    preset: cultureamp
    token_url: "{sandbox}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /ca }, strip_prefix: true, upstream: "{sandbox}/cultureamp/v1", provider: cultureamp }
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }
"#;

/// A proxy serving `dir/proxy.yaml` with its reloader watching the file.
struct Running {
    base: String,
    state: authrelay::state::SharedState,
    stop: CancellationToken,
}

async fn start(dir: &Path) -> Running {
    let path = dir.join("proxy.yaml");
    let server = Server::bind(Config::load(&path).unwrap()).await.unwrap();
    let base = format!("http://{}", server.local_addrs()[0]);
    let state = server.state();
    let stop = CancellationToken::new();
    tokio::spawn(server.reloader(&path).run(stop.clone()));
    let serving = stop.clone();
    tokio::spawn(server.serve(async move { serving.cancelled().await }));
    Running { base, state, stop }
}

/// Polls `path` until it answers `status`, for at most 2 s (the promise for a reload).
async fn answers_within_2s(base: &str, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let got = client()
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replaces the file the way editors do: write a sibling, then rename over it.
fn write_config(dir: &Path, yaml: &str) {
    let temp = dir.join(".proxy.yaml.tmp");
    std::fs::write(&temp, yaml).unwrap();
    std::fs::rename(&temp, dir.join("proxy.yaml")).unwrap();
}

#[tokio::test]
async fn reloads_keep_warm_tokens_apply_changes_and_refuse_bad_files() {
    let vendor = authrelay::sandbox::Sandbox::new()
        .client(
            authrelay::sandbox::Vendor::CultureAmp,
            "ca-second-client",
            "ca-second-secret",
        )
        .start(support::loopback())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base_yaml = BASE.replace("{sandbox}", &vendor.url());
    write_config(dir.path(), &base_yaml);
    let proxy = start(dir.path()).await;
    answers_within_2s(&proxy.base, "/ca/employees", 200).await;
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);

    // A new route is served.
    let added = base_yaml.clone()
        + "  - { match: { path_prefix: /extra }, strip_prefix: true, upstream: \"URL/partner/api\", provider: partner }\n";
    write_config(dir.path(), &added.replace("URL", &vendor.url()));
    answers_within_2s(&proxy.base, "/extra/x", 200).await;
    // The unrelated change kept the Culture Amp token.
    answers_within_2s(&proxy.base, "/ca/employees", 200).await;
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);

    // Invalid YAML: the running config stays.
    write_config(dir.path(), "listeners: [ this is not yaml");
    tokio::time::sleep(Duration::from_millis(800)).await;
    answers_within_2s(&proxy.base, "/extra/x", 200).await;
    answers_within_2s(&proxy.base, "/ca/employees", 200).await;

    // A valid file that drops the extra route: it stops being served.
    write_config(dir.path(), &base_yaml);
    answers_within_2s(&proxy.base, "/extra/x", 404).await;

    // A setting that is not a credential (refresh_before) changes: the same cache, with its
    // token in memory, carries on; no new token request.
    let before = proxy.state.load().credentials.cached("cultureamp").unwrap();
    write_config(
        dir.path(),
        &base_yaml.replace(
            "preset: cultureamp",
            "preset: cultureamp\n    refresh_before: 61s",
        ),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while proxy.state.load().config.providers["cultureamp"]
        .refresh_before
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = proxy.state.load().credentials.cached("cultureamp").unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&before, &after),
        "the cache was rebuilt"
    );
    answers_within_2s(&proxy.base, "/ca/employees", 200).await;
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);

    // New credentials (the secret was rotated to a new client at the vendor): exactly one new
    // token request, with the new ones.
    let rotated = base_yaml
        .replace("client_id: ca-demo-client", "client_id: ca-second-client")
        .replace(
            "client_secret: ca-demo-secret",
            "client_secret: \"${file:ca-secret.txt}\"",
        );
    std::fs::write(dir.path().join("ca-secret.txt"), "ca-second-secret\n").unwrap();
    write_config(dir.path(), &rotated);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while vendor.token_requests("ca-second-client") < 1 {
        let _ = client()
            .get(format!("{}/ca/employees", proxy.base))
            .send()
            .await
            .unwrap();
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new token after the credentials changed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        answers_within_2s(&proxy.base, "/ca/employees", 200).await;
    }
    assert_eq!(vendor.token_requests("ca-second-client"), 1);
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);
    proxy.stop.cancel();
}

#[tokio::test]
async fn a_changed_secret_leaves_credentials_rejected() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = BASE
        .replace("{sandbox}", &vendor.url())
        .replace("client_secret: ca-demo-secret", "client_secret: wrong-one");
    write_config(dir.path(), &wrong);
    let proxy = start(dir.path()).await;
    answers_within_2s(&proxy.base, "/ca/employees", 503).await;
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);
    // The operator fixes the secret: the provider leaves credentials_rejected by itself.
    write_config(dir.path(), &BASE.replace("{sandbox}", &vendor.url()));
    answers_within_2s(&proxy.base, "/ca/employees", 200).await;
    assert_eq!(vendor.token_requests("ca-demo-client"), 2);
    proxy.stop.cancel();
}

#[tokio::test]
async fn new_credentials_keep_the_newest_rotated_refresh_token() {
    use authrelay::sandbox::CROSSBEAM_CLIENT_ID;
    let vendor = sandbox().await;
    vendor.set_token_ttl(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
store: {{ kind: file, path: store }}
providers:
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    token_url: "{url}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    refresh_token: "{seed}"
routes:
  - match: {{ path_prefix: /cb }}
    strip_prefix: true
    upstream: "{url}/crossbeam/api"
    provider: crossbeam
    headers: {{ Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6 }}
"#,
        url = vendor.url(),
        seed = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID),
    );
    write_config(dir.path(), &yaml);
    let proxy = start(dir.path()).await;
    answers_within_2s(&proxy.base, "/cb/v1/partners", 200).await;
    // The credential settings change (scopes are part of the fingerprint): a new cache, which
    // must not fall back to the configured refresh token the vendor retired at the first refresh.
    let changed = yaml.replace(
        "    grant: refresh_token",
        "    grant: refresh_token\n    scopes: [openid, offline_access]",
    );
    write_config(dir.path(), &changed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let scopes = |state: &authrelay::state::State| match &state.config.providers["crossbeam"].grant
    {
        authrelay::config::GrantConfig::RefreshToken { endpoint, .. } => endpoint.scopes.len(),
        _ => 0,
    };
    while scopes(&proxy.state.load()) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload was not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the 2 s lifetime: the next request needs a refresh.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    answers_within_2s(&proxy.base, "/cb/v1/partners", 200).await;
    let stats = vendor.stats().clients[CROSSBEAM_CLIENT_ID].clone();
    assert_eq!(stats.refresh_grants, 2);
    assert_eq!(stats.families_revoked, 0);
    proxy.stop.cancel();
}
