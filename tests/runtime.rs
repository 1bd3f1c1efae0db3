//! The binary on one worker thread (`AUTHRELAY_WORKER_THREADS=1`, or one usable core): the
//! single-threaded scheduler must still obtain tokens, write the store (blocking tasks), proxy,
//! and stop cleanly on SIGTERM. A bad value is refused with a clear error.

// clippy's allow-unwrap-in-tests covers `#[test]` functions only, not the helpers below.
#![allow(clippy::unwrap_used, reason = "a panic in a test is a failed test")]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use authrelay::sandbox::CULTURE_AMP_CLIENT_ID;
use support::{echo, echoed_header, sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_obtains_tokens_proxies_and_stops() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
store: {{ kind: file, path: store }}
providers:
  cultureamp:
    preset: cultureamp
    token_url: "{sandbox}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
routes:
  - {{ match: {{ path_prefix: /ca }}, strip_prefix: true, upstream: "{sandbox}/cultureamp/v1", provider: cultureamp }}
"#,
        sandbox = vendor.url()
    );
    std::fs::write(dir.path().join("proxy.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(["run", "--config", "proxy.yaml"])
        .current_dir(dir.path())
        .env("AUTHRELAY_WORKER_THREADS", "1")
        .env("AUTHRELAY_LOG", "authrelay=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("listening") && line.contains("addr=") {
            let addr = line.split("addr=").nth(1).unwrap().split_whitespace();
            break addr.clone().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));

    let client = support::client();
    let responses = futures_util::future::join_all(
        (0..20).map(|_| client.get(format!("http://{addr}/ca/employees")).send()),
    )
    .await;
    let mut tokens = Vec::new();
    for response in responses {
        let echoed = echo(response.unwrap()).await;
        tokens.push(echoed_header(&echoed, "authorization")[0].clone());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "one token for every request");
    assert_eq!(vendor.token_requests(CULTURE_AMP_CLIENT_ID), 1);

    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "no exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    // The token written through a blocking store task survived the exit.
    assert!(dir.path().join("store").join("tokens.redb").exists());
}

#[test]
fn a_bad_worker_count_is_refused_with_its_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(["sandbox", "--bind", "127.0.0.1:0"])
        .env("AUTHRELAY_WORKER_THREADS", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("AUTHRELAY_WORKER_THREADS"), "{error}");

    // tokio's own variable is honoured (and checked) when authrelay's is absent.
    let output = Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(["sandbox", "--bind", "127.0.0.1:0"])
        .env_remove("AUTHRELAY_WORKER_THREADS")
        .env("TOKIO_WORKER_THREADS", "many")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("TOKIO_WORKER_THREADS"), "{error}");
}
