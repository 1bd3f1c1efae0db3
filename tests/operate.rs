//! Operator commands through the real binary: `check --online` and `reset`.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::process::{Command, Output};

use support::sandbox;

const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
admin: { bind: "127.0.0.1:0" }
store: { kind: file, path: store }
providers:
  cross-river:
    preset: cross-river
    token_url: "{sandbox}/cross-river/connect/token"
    client_id: cr-demo-client
    client_secret: cr-demo-secret
  broken:
    grant: client_credentials
    token_url: "{sandbox}/generic/oauth/token"
    client_id: gen-demo-client
    client_secret: wrong-secret-value
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /cr }, strip_prefix: true, upstream: "{sandbox}/cross-river", provider: cross-river }
  - { match: { path_prefix: /broken }, upstream: "{sandbox}/generic/api", provider: broken }
  - { match: { path_prefix: /partner }, upstream: "{sandbox}/partner/api", provider: partner }
"#;

fn authrelay(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(args)
        .current_dir(dir)
        .env("AUTHRELAY_LOG", "off")
        .output()
        .unwrap()
}

#[tokio::test]
async fn check_online_mints_one_token_per_provider_and_calls_the_test_path() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy.yaml"),
        YAML.replace("{sandbox}", &vendor.url()),
    )
    .unwrap();
    let args = ["check", "--config", "proxy.yaml", "--online"];
    let output = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || authrelay(&args, &dir)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "a broken provider fails the check: {stdout}"
    );
    assert!(
        stdout.contains("ok     cross-river: client credentials: token obtained; GET /api/SignupCard/TestOauth -> 200 OK"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED broken: credentials rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("ok     partner: static token"), "{stdout}");
    assert!(
        !stdout.contains("wrong-secret-value") && !stdout.contains("cr-demo-secret"),
        "{stdout}"
    );

    // Again: the stored rejection is honoured, no second attempt with the wrong secret.
    let dir_path = dir.path().to_path_buf();
    let again = tokio::task::spawn_blocking(move || authrelay(&args, &dir_path))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stdout).contains("FAILED broken: credentials rejected"));
    assert_eq!(vendor.token_requests("gen-demo-client"), 1);

    // An operator reset (no proxy running: straight in the store) allows exactly one more try.
    let dir_path = dir.path().to_path_buf();
    let reset = tokio::task::spawn_blocking(move || {
        authrelay(&["reset", "broken", "--config", "proxy.yaml"], &dir_path)
    })
    .await
    .unwrap();
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(
        String::from_utf8_lossy(&reset.stdout)
            .contains("broken: reset in the store (1 stored rejection(s) cleared)")
    );
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || authrelay(&args, &dir_path))
        .await
        .unwrap();
    assert_eq!(vendor.token_requests("gen-demo-client"), 2);
}

#[tokio::test]
async fn reset_of_an_unknown_provider_is_an_error() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy.yaml"),
        YAML.replace("{sandbox}", &vendor.url()),
    )
    .unwrap();
    let dir_path = dir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        authrelay(&["reset", "nope", "--config", "proxy.yaml"], &dir_path)
    })
    .await
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown provider `nope`"));
}

#[tokio::test]
async fn reset_goes_through_the_running_proxy_when_it_owns_the_store() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_port = free.local_addr().unwrap().port();
    drop(free);
    let store = dir.path().join("store");
    let yaml = YAML
        .replace(
            "admin: { bind: \"127.0.0.1:0\" }",
            &format!("admin: {{ bind: \"127.0.0.1:{admin_port}\" }}"),
        )
        .replace(
            "store: { kind: file, path: store }",
            &format!("store: {{ kind: file, path: \"{}\" }}", store.display()),
        );
    std::fs::write(
        dir.path().join("proxy.yaml"),
        yaml.replace("{sandbox}", &vendor.url()),
    )
    .unwrap();
    let proxy = support::TestProxy::start_with_store(&yaml, &vendor, &store).await;
    support::assert_relay_error(
        &support::get(&proxy, "/broken/x").await,
        503,
        "credentials_rejected",
    );

    let dir_path = dir.path().to_path_buf();
    let reset = tokio::task::spawn_blocking(move || {
        authrelay(&["reset", "broken", "--config", "proxy.yaml"], &dir_path)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&reset.stdout);
    assert!(
        stdout.contains(&format!(
            "broken: reset by the running authrelay at 127.0.0.1:{admin_port}"
        )),
        "{stdout}"
    );
    support::assert_relay_error(
        &support::get(&proxy, "/broken/x").await,
        503,
        "credentials_rejected",
    );
    assert_eq!(vendor.token_requests("gen-demo-client"), 2);
}
