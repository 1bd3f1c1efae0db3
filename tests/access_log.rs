//! One access line per request (target `authrelay::access`): route, provider, method, status,
//! upstream latency, retry, bytes; never a path, a query string, a header value or a token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

use std::io;
use std::sync::{Arc, Mutex};

use support::{TestProxy, VENDORS_YAML, assert_relay_error, client, echo, echoed_header, get};
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every event on this thread, as JSON lines, until the guard drops. Tests run on a
/// current-thread runtime, so the proxy's tasks log here too.
fn capture_json_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .finish();
    (
        captured.clone(),
        tracing::subscriber::set_default(subscriber),
    )
}

// A current-thread runtime: the proxy's tasks run on this thread, under this subscriber.
#[tokio::test]
async fn one_access_line_per_request_without_paths_queries_or_tokens() {
    let (captured, _guard) = capture_json_logs();

    let vendor = support::sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let response = client()
        .get(proxy.url("/cross-river/path-marker?api_key=query-marker"))
        .header("x-caller-note", "header-marker")
        .send()
        .await
        .unwrap();
    let echoed = echo(response).await;
    let token = echoed_header(&echoed, "authorization")[0]
        .trim_start_matches("Bearer ")
        .to_string();
    assert_relay_error(&get(&proxy, "/nowhere-marker").await, 404, "no_route");
    vendor.revoke_all_tokens();
    assert_eq!(get(&proxy, "/cross-river/again").await.status(), 200);
    proxy.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["target"] == "authrelay::access")
        .collect();
    assert_eq!(access.len(), 3, "one line per request:\n{log}");

    let forwarded = &access[0]["fields"];
    assert_eq!(forwarded["route"], "cross-river");
    assert_eq!(forwarded["provider"], "cross-river");
    assert_eq!(forwarded["account"], "-");
    // A loopback listener without `callers` serves anonymous requests.
    assert_eq!(forwarded["caller"], "anonymous");
    assert_eq!(forwarded["method"], "GET");
    assert_eq!(forwarded["status"], 200);
    assert_eq!(forwarded["retry"], "none");
    assert!(
        forwarded["upstream_ms"].as_f64().unwrap() > 0.0,
        "{forwarded}"
    );
    assert!(forwarded["bytes"].as_u64().unwrap() > 0, "{forwarded}");

    let refused = &access[1]["fields"];
    assert_eq!(refused["route"], "-");
    assert_eq!(refused["status"], 404);
    assert_eq!(refused["relay_error"], "no_route");
    assert!(refused.get("upstream_ms").is_none(), "{refused}");

    assert_eq!(access[2]["fields"]["retry"], "recovered");

    for needle in [
        token.as_str(),
        "cr-demo-secret",
        "path-marker",
        "query-marker",
        "header-marker",
        "nowhere-marker",
    ] {
        assert!(!log.contains(needle), "`{needle}` in the log");
    }
}

#[tokio::test]
async fn access_lines_name_the_caller_and_never_its_key() {
    let (captured, _guard) = capture_json_logs();

    let key = "billing-key-0123456789abcdef";
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
callers:
  - {{ name: billing, api_key: {key} }}
  - {{ name: crm, api_key: crm-key-0123456789abcdef0123 }}
providers:
  partner: {{ preset: pat, token: pat-demo-token }}
routes:
  - {{ match: {{ path_prefix: /partner }}, strip_prefix: true, upstream: "{{sandbox}}/partner/api", provider: partner, callers: [billing] }}
"#
    );
    let vendor = support::sandbox().await;
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let send = |proxy_authorization: Option<&str>| {
        let mut request = client().get(proxy.url("/partner/x"));
        if let Some(value) = proxy_authorization {
            request = request.header("proxy-authorization", value);
        }
        request.send()
    };
    assert_eq!(
        send(Some(&format!("Bearer {key}"))).await.unwrap().status(),
        200
    );
    assert_relay_error(&send(None).await.unwrap(), 407, "caller_unknown");
    let crm = send(Some("Bearer crm-key-0123456789abcdef0123"))
        .await
        .unwrap();
    assert_relay_error(&crm, 403, "caller_forbidden");
    proxy.shutdown().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let callers: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["target"] == "authrelay::access")
        .map(|line| line["fields"]["caller"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(callers, ["billing", "unknown", "crm"], "{log}");
    for secret in [key, "crm-key-0123456789abcdef0123", "pat-demo-token"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
