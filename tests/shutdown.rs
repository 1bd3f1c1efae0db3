//! SIGTERM: stop accepting, let slow in-flight requests finish, exit 0.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::time::Duration;

use support::{client, sandbox};

#[tokio::test]
async fn sigterm_drains_slow_requests_then_exits_zero() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    let yaml = r#"
listeners: [{ bind: "127.0.0.1:0" }]
store: { kind: file, path: store }
providers:
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "SANDBOX/partner/api", provider: partner }
"#;
    std::fs::write(&config, yaml.replace("SANDBOX", &vendor.url())).unwrap();
    let (mut proxy, addr) = support::spawn_proxy(&config);
    vendor.set_latency(Duration::from_millis(1500));
    let calls: Vec<_> = (0..5)
        .map(|i| {
            let url = format!("http://{addr}/partner/slow?i={i}");
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while vendor.stats().api_requests < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never reached the vendor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &proxy.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    let status = tokio::task::spawn_blocking(move || proxy.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
