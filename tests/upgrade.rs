//! `Upgrade` pass-through for a route that opts in: WebSocket over HTTP/1.1 only, after the
//! usual checks and with credentials on the upgrade request; every other upgrade is refused.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::time::Duration;

use support::{TestProxy, sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { name: ws, match: { path_prefix: /ws }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner, upgrade: true }
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }
"#;

/// Sends `head` and reads the answer's head (up to the blank line).
async fn send_head(stream: &mut TcpStream, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read, 1, "closed after {}", String::from_utf8_lossy(&answer));
        answer.push(byte[0]);
    }
    String::from_utf8(answer).unwrap()
}

fn upgrade_head(path: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

#[tokio::test]
async fn a_websocket_upgrade_on_an_opted_in_route_becomes_a_tunnel() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(YAML, &vendor).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = send_head(&mut stream, &upgrade_head("/ws/_upgrade", "websocket")).await;
    // The sandbox answers 101 only to a request carrying the partner's token.
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert!(!head.contains("pat-demo-token"), "{head}");

    for message in ["hello", "second frame"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    assert_eq!(vendor.stats().api_requests, 1);
}

#[tokio::test]
async fn upgrades_are_refused_without_the_opt_in_and_h2c_always() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(YAML, &vendor).await;
    for (path, protocol) in [
        ("/partner/_upgrade", "websocket"),
        ("/ws/_upgrade", "h2c"),
        ("/ws/_upgrade", "websocket, h2c"),
    ] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let head = send_head(&mut stream, &upgrade_head(path, protocol)).await;
        assert!(
            head.starts_with("HTTP/1.1 400"),
            "{path} {protocol}: {head}"
        );
        assert!(head.contains("x-relay-error: upgrade_refused"), "{head}");
    }
    // A POST asking to upgrade is not a WebSocket handshake.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let post = upgrade_head("/ws/_upgrade", "websocket").replacen("GET", "POST", 1);
    let head = send_head(&mut stream, &post).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        vendor.stats().api_requests,
        0,
        "a refused upgrade reached the vendor"
    );
}

#[tokio::test]
async fn a_tunnel_keeps_its_connection_slot() {
    let vendor = sandbox().await;
    let yaml = YAML.replace(
        r#"listeners: [{ bind: "127.0.0.1:0" }]"#,
        r#"listeners: [{ bind: "127.0.0.1:0", limits: { max_connections: 1, idle_timeout: 1s } }]"#,
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let mut tunnel = TcpStream::connect(proxy.addr).await.unwrap();
    let head = send_head(&mut tunnel, &upgrade_head("/ws/_upgrade", "websocket")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // The HTTP connection has become a tunnel: it still holds the listener's only slot...
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    let head = send_head(
        &mut second,
        "GET /partner/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.contains("x-relay-error: too_many_connections"),
        "{head}"
    );

    // ...and still works, idle timeout or not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tunnel.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");

    // Once it closes, the slot is free again.
    drop(tunnel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut next = TcpStream::connect(proxy.addr).await.unwrap();
        let head = send_head(
            &mut next,
            "GET /partner/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        )
        .await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never freed: {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
