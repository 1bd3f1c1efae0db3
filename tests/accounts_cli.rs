//! `authrelay connect` and `authrelay accounts list|remove|orgs` as a person runs them: the real
//! binary, with no proxy running (it opens the store and serves the callback itself) and with one
//! running (it acts through the admin listener, since the store has one owner).

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a failed test"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use authrelay::sandbox::{CROSSBEAM_ORGS, SandboxHandle, XREF_CLIENT_ID};
use support::sandbox;

/// A port free right now on loopback, for an admin listener that `redirect_uri` must name.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn write_config(dir: &Path, sandbox: &SandboxHandle, admin: SocketAddr) -> std::path::PathBuf {
    let yaml = format!(
        r#"
listeners:
  - bind: 127.0.0.1:0
admin:
  bind: {admin}
store:
  kind: file
  path: "{store}"
providers:
  xref:
    preset: xref
    authorize_url: "{sandbox}/xref/oauth/open-api/{{client_id}}"
    token_url: {sandbox}/xref/oauth/tokens
    revoke_url: {sandbox}/xref/oauth/deauthorize
    client_id: xref-demo-client
    client_secret: xref-demo-secret
    redirect_uri: http://{admin}/callback/xref
  crossbeam:
    preset: crossbeam
    authorize_url: {sandbox}/crossbeam/authorize
    token_url: {sandbox}/crossbeam/oauth/token
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    scopes: [openid, offline_access, read:partnerships]
    redirect_uri: http://{admin}/callback/crossbeam
routes:
  - match: {{ path_prefix: /xref }}
    strip_prefix: true
    upstream: {sandbox}/xref/api
    provider: xref
    account: main
  - match: {{ path_prefix: /crossbeam }}
    strip_prefix: true
    upstream: {sandbox}/crossbeam/api
    provider: crossbeam
    account_header: X-Relay-Account
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
"#,
        store = dir.join("store").display(),
        sandbox = sandbox.url(),
    );
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Runs the binary to completion off the test's runtime thread, which serves the sandbox.
async fn authrelay(config: &Path, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authrelay"));
    command.args(args).arg("--config").arg(config);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Runs `authrelay connect`, opens the URL it prints as a browser would (following the vendor's
/// redirect back to the callback), and returns the command's whole output.
async fn connect(config: &Path, provider: &str, account: &str) -> String {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_authrelay"))
            .args(["connect", provider, "--account", account, "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let (url, lines) = tokio::task::spawn_blocking(move || {
        let url = loop {
            let line = lines.next().expect("connect printed no URL").unwrap();
            if let Some(url) = line.trim().strip_prefix("http") {
                break format!("http{url}");
            }
        };
        (url, lines)
    })
    .await
    .unwrap();
    let page = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "{url}");
    let rest: Vec<String> =
        tokio::task::spawn_blocking(move || lines.map(Result::unwrap).collect())
            .await
            .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success());
    rest.join("\n")
}

#[tokio::test]
async fn without_a_running_proxy_the_commands_open_the_store() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sandbox, free_port());

    let said = connect(&config, "xref", "main").await;
    assert!(
        said.contains("Account main of provider xref is connected"),
        "{said}"
    );

    let listed = stdout(&authrelay(&config, &["accounts", "list"]).await);
    let row = listed.lines().find(|l| l.starts_with("xref")).unwrap();
    assert!(row.contains("main") && row.contains(" ok "), "{listed}");

    let removed = stdout(&authrelay(&config, &["accounts", "remove", "xref", "main"]).await);
    assert!(removed.contains("revoked at the vendor"), "{removed}");
    assert_eq!(sandbox.stats().clients[XREF_CLIENT_ID].deauthorizations, 1);
    let listed = stdout(&authrelay(&config, &["accounts", "list"]).await);
    assert!(listed.contains("no connected accounts"), "{listed}");

    let odd = authrelay(&config, &["accounts", "remove", "xref", "a&b"]).await;
    assert!(!odd.status.success());
    let error = String::from_utf8_lossy(&odd.stderr);
    assert!(error.contains("not a valid account name"), "{error}");

    let unknown = authrelay(&config, &["accounts", "remove", "xref", "main"]).await;
    assert!(!unknown.status.success());
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(error.contains("no connected account main"), "{error}");
}

#[tokio::test]
async fn with_a_running_proxy_the_commands_go_through_its_admin_listener() {
    let sandbox = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = write_config(dir.path(), &sandbox, admin);
    let (proxy, proxy_addr) = support::spawn_proxy(&config);
    let proxy = KillOnDrop(proxy);

    let said = connect(&config, "crossbeam", "acme").await;
    assert!(
        said.contains("The running authrelay receives the callback"),
        "{said}"
    );

    let response = as_acme(proxy_addr).await;
    assert_eq!(response.status(), 200);

    let listed = stdout(&authrelay(&config, &["accounts", "list"]).await);
    let row = listed.lines().find(|l| l.starts_with("crossbeam")).unwrap();
    assert!(row.contains("acme") && row.contains(" ok "), "{listed}");
    assert!(row.contains("read:partnerships"), "{listed}");

    let orgs = stdout(&authrelay(&config, &["accounts", "orgs", "crossbeam", "acme"]).await);
    for (name, uuid) in CROSSBEAM_ORGS {
        assert!(orgs.contains(uuid) && orgs.contains(name), "{orgs}");
    }

    let removed = stdout(&authrelay(&config, &["accounts", "remove", "crossbeam", "acme"]).await);
    assert!(removed.contains("no revocation endpoint"), "{removed}");
    let response = as_acme(proxy_addr).await;
    assert_eq!(response.status(), 403);
    drop(proxy);
}

/// A Crossbeam call through the proxy for account `acme`.
async fn as_acme(proxy: SocketAddr) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{proxy}/crossbeam/v1/partners"))
        .header("X-Relay-Account", "acme")
        .send()
        .await
        .unwrap()
}

/// A child process stopped when the test ends, passed or panicked.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
