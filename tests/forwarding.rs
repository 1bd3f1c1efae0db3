//! Forwarding: what the vendor receives and what the caller gets back, through real sockets.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{
    TestProxy, VENDORS_YAML, assert_relay_error, client, echo, echoed_header, get, sandbox,
};

#[tokio::test]
async fn forwards_method_path_query_and_body_byte_for_byte() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let body = vec![7u8; 300_000];
    let response = client()
        .put(proxy.url("/partner/items/42?b=%20x&a=1&a=2&empty="))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let echo = echo(response).await;
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/partner/api/items/42");
    assert_eq!(echo["query"], "b=%20x&a=1&a=2&empty=");
    assert_eq!(echo["body_len"], 300_000);
    let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let hex: String = sha.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(echo["body_sha256"], hex);
}

#[tokio::test]
async fn injects_credentials_and_replaces_the_callers_own() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let response = client()
        .get(proxy.url("/cross-river/payments"))
        .header("authorization", "Bearer caller-supplied")
        .header("proxy-authorization", "Basic Y2FsbGVyOmtleQ==")
        .send()
        .await
        .unwrap();
    let echo = echo(response).await;
    let authorization = echoed_header(&echo, "authorization");
    assert_eq!(authorization.len(), 1, "{authorization:?}");
    assert!(
        authorization[0].starts_with("Bearer ey"),
        "a sandbox JWT, got {authorization:?}"
    );
    assert!(echoed_header(&echo, "proxy-authorization").is_empty());
    assert_eq!(
        echoed_header(&echo, "xbeam-organization"),
        ["02fde942-c7cd-4f12-9d4e-07ee8a57c8c6"]
    );
}

#[tokio::test]
async fn strips_hop_by_hop_headers_before_injecting_credentials() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    // reqwest would not send a raw `Connection` list; write the request by hand. (`Upgrade` is
    // refused outright: tests/hostile.rs.)
    let request = "GET /cross-river/hop HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Connection: keep-alive, Authorization, Xbeam-Organization, X-Private\r\n\
        X-Private: hop-only\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n\
        Proxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n";
    let echo = raw_exchange(proxy.addr, request).await;
    let echo: serde_json::Value = serde_json::from_str(body_of(&echo)).unwrap();
    let authorization = echoed_header(&echo, "authorization");
    assert!(
        authorization.len() == 1 && authorization[0].starts_with("Bearer "),
        "{echo}"
    );
    assert_eq!(
        echoed_header(&echo, "xbeam-organization"),
        ["02fde942-c7cd-4f12-9d4e-07ee8a57c8c6"]
    );
    assert_eq!(echoed_header(&echo, "x-end-to-end"), ["kept"]);
    for gone in ["x-private", "keep-alive", "te", "proxy-connection"] {
        assert!(
            echoed_header(&echo, gone).is_empty(),
            "{gone} was forwarded: {echo}"
        );
    }
    // The upstream connection's own `connection` header (if any) is hyper's, not the caller's list.
    assert!(
        !echoed_header(&echo, "connection")
            .iter()
            .any(|v| v.contains("Authorization"))
    );
}

#[tokio::test]
async fn sets_forwarded_headers_and_the_upstream_host() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let response = client()
        .get(proxy.url("/partner/x"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let echo = echo(response).await;
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-host"),
        [proxy.addr.to_string()]
    );
    assert!(echoed_header(&echo, "forwarded").is_empty());
    assert_eq!(echoed_header(&echo, "host"), [vendor.addr().to_string()]);
}

#[tokio::test]
async fn streams_a_100_mib_response_without_buffering_it() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let size: u64 = 100 * 1024 * 1024;
    let peak_before = peak_rss_kib();
    let mut response = get(&proxy, &format!("/partner/big/_bytes?n={size}")).await;
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, size);
    let growth_mib = (peak_rss_kib() - peak_before) / 1024;
    // Buffering anywhere (sandbox, proxy, client) would add at least 100 MiB to the peak.
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB while streaming 100 MiB"
    );
}

#[tokio::test]
async fn absolute_form_to_an_unknown_host_is_refused_and_nothing_is_forwarded() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let via_proxy = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(proxy.url("")).unwrap())
        .build()
        .unwrap();
    let response = via_proxy
        .get("http://elsewhere.example/partner/x")
        .send()
        .await
        .unwrap();
    assert_relay_error(&response, 404, "no_route");
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "no_route"
    );
    assert_eq!(vendor.stats().api_requests, 0);

    // The configured vendor host routes, as for an app using authrelay as HTTP_PROXY.
    let response = via_proxy
        .get("http://api.partner.example/projects?x=1")
        .send()
        .await
        .unwrap();
    let echo = echo(response).await;
    assert_eq!(echo["path"], "/partner/api/projects");
    assert_eq!(
        echoed_header(&echo, "authorization"),
        ["Bearer pat-demo-token"]
    );
}

#[tokio::test]
async fn connect_and_trace_are_refused_without_forwarding() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let connect = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", vendor.addr());
    let answer = raw_exchange(proxy.addr, &connect).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-relay-error: method_not_allowed")
    );
    let trace = "TRACE /partner/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let answer = raw_exchange(proxy.addr, trace).await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert_eq!(vendor.stats().api_requests, 0);
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let response = get(&proxy, "/nowhere/at/all").await;
    assert_relay_error(&response, 404, "no_route");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "no_route");
    // Dot segments are resolved before matching (sent raw: HTTP clients resolve them first).
    let answer = raw_exchange(
        proxy.addr,
        "GET /partner/../nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(vendor.stats().api_requests, 0);
}

#[tokio::test]
async fn redirects_and_vendor_errors_pass_through_unchanged() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(proxy.url("/partner/_redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "http://redirect-target.invalid/elsewhere"
    );
    assert!(response.headers().get("x-relay-error").is_none());
    let response = get(&proxy, "/partner/_status/418").await;
    assert_eq!(response.status(), 418);
    assert!(response.headers().get("x-relay-error").is_none());
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let vendor = sandbox().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let yaml = format!(
        r#"
listeners: [{{ bind: "127.0.0.1:0" }}]
providers:
  partner: {{ grant: static, token: pat-demo-token }}
routes:
  - match: {{ path_prefix: /dead }}
    upstream: http://{dead}
    provider: partner
  - match: {{ path_prefix: /slow }}
    upstream: "{{sandbox}}/partner/api"
    provider: partner
    timeout: 300ms
"#
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let response = get(&proxy, "/dead/x").await;
    assert_relay_error(&response, 502, "upstream_unreachable");
    vendor.set_latency(Duration::from_secs(3));
    let response = get(&proxy, "/slow/x").await;
    assert_relay_error(&response, 504, "upstream_timeout");
}

#[tokio::test]
async fn body_over_the_route_limit_is_413_before_reaching_the_vendor() {
    let vendor = sandbox().await;
    let yaml = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  partner: { grant: static, token: pat-demo-token }
routes:
  - match: { path_prefix: /partner }
    strip_prefix: true
    upstream: "{sandbox}/partner/api"
    provider: partner
    max_body: 1KiB
"#;
    let proxy = TestProxy::start(yaml, &vendor).await;
    let response = client()
        .post(proxy.url("/partner/x"))
        .body(vec![0u8; 2048])
        .send()
        .await
        .unwrap();
    assert_relay_error(&response, 413, "body_too_large");
    assert_eq!(vendor.stats().api_requests, 0);
    let response = client()
        .post(proxy.url("/partner/x"))
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(echo(response).await["body_len"], 1024);
}

#[tokio::test]
async fn http2_callers_are_served_over_h2c() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(proxy.url("/partner/h2?q=1")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echo = echo(response).await;
    assert_eq!(echo["query"], "q=1");
    assert_eq!(
        echoed_header(&echo, "authorization"),
        ["Bearer pat-demo-token"]
    );
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    vendor.set_latency(Duration::from_millis(500));
    let url = proxy.url("/partner/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    // Wait until the request reached the vendor, then stop the proxy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while vendor.stats().api_requests == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "request never reached the vendor"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.shutdown().await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
}

/// Sends raw bytes over HTTP/1.1 (closing the write side) and returns everything read back.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let request = request.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

fn body_of(response: &str) -> &str {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // A chunked answer: take the JSON between the first chunk size line and the end.
    match (body.find('{'), body.rfind('}')) {
        (Some(start), Some(end)) => &body[start..=end],
        _ => body,
    }
}

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn paths_an_upstream_could_read_differently_are_refused() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    for path in [
        "/partner/..%2F..%2Fcross-river%2Fapi%2Fx",
        "/partner/..\\..\\admin",
        "/partner/%5c..%5cadmin",
        "/partner/..;/admin",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let answer = raw_exchange(proxy.addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("x-relay-error: bad_request"),
            "{path}: {answer}"
        );
    }
    assert_eq!(vendor.stats().api_requests, 0);
}

#[tokio::test]
async fn headers_that_rewrite_path_or_method_upstream_are_dropped() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let mut request = client().get(proxy.url("/partner/x"));
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-method-override",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        request = request.header(name, "/admin");
    }
    let echoed = echo(request.send().await.unwrap()).await;
    let names: Vec<&str> = echoed["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("x-original") || n.starts_with("x-rewrite")),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.contains("method") || *n == "x-real-ip"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"x-forwarded-port") && !names.contains(&"x-forwarded-prefix"),
        "{names:?}"
    );
}

#[tokio::test]
async fn http2_cookie_fields_reach_an_http1_upstream_as_one() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(proxy.url("/partner/c"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed_header(&echo(response).await, "cookie"), ["a=1; b=2"]);
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_limit_is_413() {
    let vendor = sandbox().await;
    let yaml = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  partner: { grant: static, token: pat-demo-token }
routes:
  - match: { path_prefix: /partner }
    strip_prefix: true
    upstream: "{sandbox}/partner/api"
    provider: partner
    max_body: 1KiB
"#;
    let proxy = TestProxy::start(yaml, &vendor).await;
    let chunk = "a".repeat(600);
    let request = format!(
        "POST /partner/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n\
         258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(proxy.addr, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_large_request_body_streams_without_being_buffered() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(VENDORS_YAML, &vendor).await;
    let size: usize = 64 * 1024 * 1024;
    let peak_before = peak_rss_kib();
    let addr = proxy.addr;
    // Chunked, from a small buffer, so that the test itself holds no copy of the body.
    let answer = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = "POST /cultureamp/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).unwrap();
            stream.write_all(&chunk).unwrap();
            stream.write_all(b"\r\n").unwrap();
        }
        stream.write_all(b"0\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let echoed: serde_json::Value = serde_json::from_str(body_of(&answer)).unwrap();
    assert_eq!(echoed["body_len"], size);
    let growth_mib = (peak_rss_kib() - peak_before) / 1024;
    // An OAuth route keeps bodies up to max_replay_body (1 MiB) for a replay, never more.
    assert!(
        growth_mib < 40,
        "peak RSS grew by {growth_mib} MiB while streaming 64 MiB up"
    );
}
