//! Logs at TRACE, ours and every dependency's, never show a secret, a token or a refresh token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authrelay::sandbox::CROSSBEAM_CLIENT_ID;
use support::redis::{RedisOptions, RedisServer};
use support::{client, echo, echoed_header, sandbox};

#[tokio::test]
async fn trace_logs_hold_no_secret_or_token() {
    trace_logs_hold_no_secret_with("{ kind: file, path: store }", None, Vec::new()).await;
}

/// The same with a fleet store whose URL holds a password, and Redis dying mid-run (so the
/// errors of a lost connection are logged too).
#[tokio::test]
async fn trace_logs_of_a_fleet_replica_hold_no_secret_or_token() {
    let password = "redis-pw-never-logged";
    let mut redis = RedisServer::start_with(RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    });
    let store = format!(
        "{{ kind: redis, url: \"{}\", key: \"{}\", timeout: 500ms }}",
        redis.url(),
        support::fleet::KEY
    );
    let secrets = vec![password.to_owned(), support::fleet::KEY.to_owned()];
    trace_logs_hold_no_secret_with(&store, Some(&mut redis), secrets).await;
}

async fn trace_logs_hold_no_secret_with(
    store: &str,
    redis: Option<&mut RedisServer>,
    mut secrets: Vec<String>,
) {
    let vendor = sandbox().await;
    let refresh_seed = vendor.crossbeam_refresh_token(CROSSBEAM_CLIENT_ID);
    let dir = tempfile::tempdir().unwrap();
    // The admin port is named by xref's redirect_uri, so it is chosen before the proxy starts.
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
admin: {{ bind: "{admin}" }}
store: {store}
providers:
  xref:
    preset: xref
    authorize_url: "{sandbox}/xref/oauth/open-api/{{client_id}}"
    token_url: "{sandbox}/xref/oauth/tokens"
    client_id: xref-demo-client
    client_secret: xref-demo-secret
    redirect_uri: "http://{admin}/callback/xref"
  cultureamp:
    preset: cultureamp
    token_url: "{sandbox}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  rejected:
    preset: cross-river
    token_url: "{sandbox}/cross-river/connect/token"
    client_id: cr-demo-client
    client_secret: wrong-secret-value-123
  crossbeam:
    preset: crossbeam
    grant: refresh_token
    token_url: "{sandbox}/crossbeam/oauth/token"
    client_id: cb-demo-client
    client_secret: cb-demo-secret
    refresh_token: "{refresh_seed}"
  partner: {{ preset: pat, token: pat-demo-token }}
routes:
  - {{ match: {{ path_prefix: /ca }}, strip_prefix: true, upstream: "{sandbox}/cultureamp/v1", provider: cultureamp }}
  - {{ match: {{ path_prefix: /cr }}, strip_prefix: true, upstream: "{sandbox}/cross-river/api", provider: rejected }}
  - match: {{ path_prefix: /cb }}
    strip_prefix: true
    upstream: "{sandbox}/crossbeam/api"
    provider: crossbeam
    headers: {{ Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6 }}
  - {{ match: {{ path_prefix: /partner }}, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }}
  - {{ match: {{ path_prefix: /xref }}, strip_prefix: true, upstream: "{sandbox}/xref/api", provider: xref, account: main }}
"#,
        sandbox = vendor.url()
    );
    std::fs::write(dir.path().join("proxy.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(["run", "--config", "proxy.yaml"])
        .current_dir(dir.path())
        .env("AUTHRELAY_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let collected = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("listening") && line.contains("addr=") {
                let addr = line
                    .split("addr=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap();
                let _ = addr_tx.send(addr.parse().unwrap());
            }
            collected.lock().unwrap().push(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("proxy listening");
    let url = |path: &str| format!("http://{addr}{path}");

    // Connect an Xref account step by step, keeping the state and the code it carried.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location =
        |response: reqwest::Response| response.headers()["location"].to_str().unwrap().to_owned();
    let authorize = location(
        no_redirects
            .get(format!("http://{admin}/connect/xref?account=main"))
            .send()
            .await
            .unwrap(),
    );
    let back = location(no_redirects.get(&authorize).send().await.unwrap());
    let back = reqwest::Url::parse(&back).unwrap();
    let flow_values: Vec<String> = back
        .query_pairs()
        .map(|(_, value)| value.into_owned())
        .collect();
    let connected = no_redirects.get(back.as_str()).send().await.unwrap();
    assert_eq!(connected.status(), 200);

    let mut tokens = Vec::new();
    for path in [
        "/ca/employees",
        "/cb/v1/partners",
        "/partner/projects",
        "/xref/x",
    ] {
        let echoed = echo(
            client()
                .get(url(path))
                .header("authorization", "Bearer caller-own-token")
                .send()
                .await
                .unwrap(),
        )
        .await;
        tokens.push(
            echoed_header(&echoed, "authorization")[0]
                .split_once(' ')
                .unwrap()
                .1
                .to_string(),
        );
    }
    let rejected = client().get(url("/cr/x")).send().await.unwrap();
    assert_eq!(rejected.status(), 503);
    if let Some(redis) = redis {
        redis.kill();
        // The probe notices within a second; a token request without Redis logs why it waits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        vendor.revoke_access_tokens();
        let without_redis = client().get(url("/cb/v1/partners")).send().await.unwrap();
        assert_ne!(without_redis.status(), 200);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let log = log.lock().unwrap().join("\n");
    assert!(
        log.contains("credentials rejected"),
        "the log says what happened, without the secret"
    );
    assert!(log.lines().count() > 20, "TRACE logging was on");
    if store.contains("redis") {
        assert!(
            log.contains("Redis is unreachable"),
            "the outage was logged"
        );
    }
    secrets.extend([
        "ca-demo-secret".to_string(),
        "wrong-secret-value-123".to_string(),
        "cb-demo-secret".to_string(),
        refresh_seed,
        "caller-own-token".to_string(),
        "xref-demo-secret".to_string(),
    ]);
    secrets.extend(tokens);
    // The authorization's state and code.
    assert_eq!(flow_values.len(), 2, "{flow_values:?}");
    secrets.extend(flow_values);
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "`{secret}` appears in the log"
        );
    }
}
