//! Hostile input, size and slowness: heads with too many or too large fields, long targets,
//! bodies over `max_body` (declared, chunked, or a chunk that claims 2^64 bytes), bodies that
//! trickle or stall, slowloris heads, idle connections, too many connections, and an HTTP/2
//! header list over the listener's limit.
//!
//! Every case asserts, as in tests/hostile.rs:
//! - (a) the exact status, and the `X-Relay-Error` code where authrelay answers itself. Some
//!   limits are enforced by hyper's HTTP/1 parser before authrelay sees a request (more fields
//!   than `max_headers`, a head larger than the read buffer): hyper's answer has no
//!   `X-Relay-Error`, so only the status is required there (and, should authrelay ever answer
//!   those itself, the code it would use).
//! - (b) what the vendor received: nothing at all (the sandbox counts every request, token
//!   endpoint included; a recording upstream counts what reaches a streaming route), or, where
//!   the body streams and the head may already have left, at most that one request and never a
//!   complete one.
//! - (c) that no secret is in the response: the client secret, the PATs, the issued token.
//!
//! The listener's limits are small (`LIMITS`) so that the slow cases take about a second. No
//! case measures time: waits are for an event, with `PATIENCE` as the upper bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

#[allow(
    dead_code,
    reason = "shared with tests/hostile.rs, which uses all of it"
)]
#[path = "hostile/raw.rs"]
mod raw;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authrelay::sandbox::{SandboxHandle, SandboxStats};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use raw::{RawConnection, RawResponse};
use support::{TestProxy, echoed_header, sandbox};

/// The longest wait for any event (an answer, a close): a safety net so that a broken case
/// fails instead of hanging, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(10);

/// Small limits, so that the slow cases are quick.
const LIMITS: &str = "{ max_headers: 20, max_header_bytes: 4KiB, max_target_bytes: 1KiB, \
    header_read_timeout: 1s, body_read_timeout: 1s, idle_timeout: 1s, max_connections: 8 }";

/// Cross River's client secret: it only ever goes to the token endpoint.
const CLIENT_SECRET: &str = "cr-demo-secret";
/// The partner's personal access token.
const PAT: &str = "pat-demo-token";
/// The static token of the route to the recording upstream.
const RECORDED_PAT: &str = "recorded-pat-5e1c0b9d";

/// `/cross-river`: client credentials, so bodies are buffered for the 401 replay (nothing is
/// sent before the whole body is in). `/partner` and `/recorded`: static tokens, so bodies
/// stream (the head leaves before the body is in); `/recorded` goes to a [`Recorder`], which
/// tells complete requests from cut ones. All take at most 1 KiB of body.
fn config(limits: &str, recorder: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - bind: 127.0.0.1:0
    limits: {limits}
providers:
  cross-river:
    preset: cross-river
    token_url: "{{sandbox}}/cross-river/connect/token"
    client_id: cr-demo-client
    client_secret: {CLIENT_SECRET}
    scopes: [payments.read]
  partner: {{ grant: static, token: {PAT} }}
  recorded: {{ grant: static, token: {RECORDED_PAT} }}
routes:
  - match: {{ path_prefix: /cross-river }}
    upstream: "{{sandbox}}/cross-river/api"
    strip_prefix: true
    provider: cross-river
    max_body: 1KiB
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: {{ path_prefix: /partner }}
    upstream: "{{sandbox}}/partner/api"
    strip_prefix: true
    provider: partner
    max_body: 1KiB
  - match: {{ path_prefix: /recorded }}
    upstream: "http://{recorder}"
    strip_prefix: true
    provider: recorded
    max_body: 1KiB
"#
    )
}

// ------------------------------------------------------------------------------------------
// The scene: sandbox, recording upstream, authrelay with small limits.
// ------------------------------------------------------------------------------------------

struct Limited {
    vendor: SandboxHandle,
    recorder: Recorder,
    proxy: TestProxy,
    /// The Cross River token issued at the warm-up, if there was one.
    token: Option<String>,
    /// The vendor's counters after the warm-up.
    baseline: SandboxStats,
}

impl Limited {
    /// [`LIMITS`], and one Cross River token issued and cached (so that (c) can look for it).
    async fn start() -> Limited {
        let mut fx = Limited::cold(LIMITS).await;
        let warm = fx.get("/cross-river/warm-up").await;
        assert_eq!(warm.status, 200, "warm-up: {}", warm.text());
        let authorization = echoed_header(&warm.json(), "authorization");
        let token = authorization[0]
            .strip_prefix("Bearer ")
            .expect("a Bearer token");
        fx.token = Some(token.to_owned());
        fx.baseline = fx.vendor.stats();
        assert_eq!(
            (fx.baseline.token_requests, fx.baseline.api_requests),
            (1, 1),
            "warm-up"
        );
        fx
    }

    /// No token yet: the vendor has seen nothing at all.
    async fn cold(limits: &str) -> Limited {
        let vendor = sandbox().await;
        let recorder = Recorder::start().await;
        let proxy = TestProxy::start(&config(limits, recorder.addr), &vendor).await;
        let baseline = vendor.stats();
        Limited {
            vendor,
            recorder,
            proxy,
            token: None,
            baseline,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    fn host(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// `GET {path}` on a connection of its own.
    async fn get(&self, path: &str) -> RawResponse {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host());
        raw::exchange(self.addr(), request).await
    }

    fn secrets(&self) -> Vec<&str> {
        let mut secrets = vec![CLIENT_SECRET, PAT, RECORDED_PAT];
        secrets.extend(self.token.as_deref());
        secrets
    }

    /// (c) No secret anywhere in `text` (a response authrelay made, or one without an echo).
    fn assert_no_secret(&self, text: &str) {
        for secret in self.secrets() {
            assert!(!text.contains(secret), "`{secret}` in the response: {text}");
        }
    }

    /// (b) Nothing reached any vendor since the warm-up: no API, token or other request at
    /// the sandbox, not even a request head at the recorder.
    fn assert_vendor_untouched(&self) {
        self.assert_sandbox_saw(0, 0);
        assert_eq!(self.recorder.heads(), 0, "request heads at the recorder");
    }

    /// (b) Exactly `api` API requests and `token` token requests since the warm-up.
    fn assert_sandbox_saw(&self, api: u64, token: u64) {
        let now = self.vendor.stats();
        assert_eq!(
            (
                now.api_requests - self.baseline.api_requests,
                now.token_requests - self.baseline.token_requests,
                now.requests - self.baseline.requests,
            ),
            (api, token, api + token),
            "(API, token, all) requests the sandbox received"
        );
    }

    /// (a), (b), (c) for an answer authrelay made itself without forwarding anything.
    fn assert_refused(&self, response: &RawResponse, status: u16, code: &str) {
        assert_relay_error(response, status, code);
        self.assert_vendor_untouched();
        self.assert_no_secret(&response.text());
    }

    /// Sends `request` on a fresh connection: `status` and `code` from authrelay, nothing
    /// forwarded, no secret. Returns the connection as the answer left it.
    async fn refused(
        &self,
        request: impl AsRef<[u8]>,
        status: u16,
        code: &str,
    ) -> (RawResponse, RawConnection) {
        let mut connection = RawConnection::open(self.addr()).await;
        connection.send(request.as_ref()).await;
        let response = connection
            .response()
            .await
            .expect("an answer before the connection closes");
        self.assert_refused(&response, status, code);
        (response, connection)
    }

    /// As [`Limited::refused`], for a request after which the connection cannot be trusted
    /// (a body left unread, a head too large): the answer says `Connection: close`, and the
    /// connection is closed.
    async fn refused_and_closed(&self, request: impl AsRef<[u8]>, status: u16, code: &str) {
        let (response, mut connection) = self.refused(request, status, code).await;
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "{}",
            response.text()
        );
        assert!(
            connection.closed().await,
            "the connection must close after {status}"
        );
    }

    /// As [`Limited::refused`], for an answer hyper's HTTP/1 parser gives before authrelay sees
    /// a request: the status only (hyper sends no `X-Relay-Error`; if authrelay ever answers
    /// itself, its code must be `code`).
    async fn refused_by_parser(&self, request: impl AsRef<[u8]>, status: u16, code: &str) {
        let mut connection = RawConnection::open(self.addr()).await;
        connection.send(request.as_ref()).await;
        let response = connection
            .response()
            .await
            .expect("an answer before the connection closes");
        assert_eq!(response.status, status, "{}", response.text());
        if let Some(relay_error) = response.header("x-relay-error") {
            assert_eq!(relay_error, code, "{}", response.text());
        }
        assert!(
            connection.closed().await,
            "the connection must close after {status}"
        );
        self.assert_vendor_untouched();
        self.assert_no_secret(&response.text());
    }

    /// A request `path` with `fields` (each `Name: value\r\n`) must be forwarded: 200 from the
    /// sandbox, exactly one more API request. A control for the limit cases.
    async fn forwarded(&self, path: &str, fields: &str) {
        let before = self.vendor.stats();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{fields}\r\n",
            self.host()
        );
        let response = raw::exchange(self.addr(), request).await;
        assert_eq!(response.status, 200, "{}", response.text());
        // The echo holds our Authorization as the vendor received it; the head holds no secret.
        self.assert_no_secret(&response.head);
        let after = self.vendor.stats();
        assert_eq!(after.api_requests - before.api_requests, 1);
        assert_eq!(after.token_requests, before.token_requests);
    }

    /// (b) for a streaming route: the recorder got at most one request head, and no request
    /// with its body complete; the sandbox got nothing.
    async fn assert_no_complete_request(&self) {
        let seen = self.recorder.settled().await;
        assert!(seen.heads <= 1, "request heads at the recorder: {seen:?}");
        assert_eq!(
            seen.complete, 0,
            "a complete request was forwarded: {seen:?}"
        );
        self.assert_sandbox_saw(0, 0);
    }
}

fn assert_relay_error(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.header("x-relay-error"),
        Some(code),
        "{}",
        response.text()
    );
}

/// A plain HTTP/1 upstream that reads every request body to its end and counts the request
/// heads it received, the bodies that arrived whole and those cut short.
struct Recorder {
    addr: SocketAddr,
    counts: Arc<RecorderCounts>,
}

#[derive(Default)]
struct RecorderCounts {
    connections: AtomicUsize,
    closed: AtomicUsize,
    heads: AtomicUsize,
    complete: AtomicUsize,
    cut: AtomicUsize,
}

#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug in failure messages")]
struct Seen {
    heads: usize,
    complete: usize,
    cut: usize,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind(support::loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(RecorderCounts::default());
        let shared = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counts = Arc::clone(&shared);
                tokio::spawn(async move {
                    let per_request = Arc::clone(&counts);
                    let service = service_fn(move |request: Request<Incoming>| {
                        let counts = Arc::clone(&per_request);
                        async move {
                            counts.heads.fetch_add(1, Ordering::SeqCst);
                            let mut body = request.into_body();
                            let mut length = 0;
                            loop {
                                match body.frame().await {
                                    None => break,
                                    Some(Ok(frame)) => {
                                        length += frame.data_ref().map_or(0, Bytes::len);
                                    }
                                    Some(Err(_)) => {
                                        counts.cut.fetch_add(1, Ordering::SeqCst);
                                        let mut response = Response::new(Full::new(Bytes::new()));
                                        *response.status_mut() = StatusCode::BAD_REQUEST;
                                        return Ok::<_, Infallible>(response);
                                    }
                                }
                            }
                            counts.complete.fetch_add(1, Ordering::SeqCst);
                            let text = format!("recorded {length} bytes");
                            Ok(Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Recorder { addr, counts }
    }

    fn heads(&self) -> usize {
        self.counts.heads.load(Ordering::SeqCst)
    }

    /// The counts once every connection authrelay opened here has closed and every request
    /// that arrived has ended, complete or cut.
    async fn settled(&self) -> Seen {
        let counts = &self.counts;
        let load = |n: &AtomicUsize| n.load(Ordering::SeqCst);
        // A complete request is reason enough to stop waiting (the case has failed); else wait
        // for every request to end, and every connection (a cut request's is dropped) to close.
        eventually("the recorder's connections to close", || {
            load(&counts.complete) > 0
                || (load(&counts.connections) == load(&counts.closed)
                    && load(&counts.heads) == load(&counts.complete) + load(&counts.cut))
        })
        .await;
        Seen {
            heads: load(&counts.heads),
            complete: load(&counts.complete),
            cut: load(&counts.cut),
        }
    }
}

/// Waits until `done` holds, at most [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP/2 prior-knowledge connection to authrelay, and the task driving it: the task ends
/// when the server closes the connection.
async fn h2_connect<B>(addr: SocketAddr) -> (SendRequest<B>, JoinHandle<Result<(), hyper::Error>>)
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

/// An HTTP/2 response as text (status, headers, body), for (c) and failure messages.
async fn h2_text(response: Response<Incoming>) -> (StatusCode, Option<String>, String) {
    let (parts, body) = response.into_parts();
    let relay_error = parts
        .headers
        .get("x-relay-error")
        .map(|value| value.to_str().unwrap().to_owned());
    let body = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the response body in time")
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let text = format!(
        "{:?} {:?} {}",
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body)
    );
    (parts.status, relay_error, text)
}

fn h2_request(addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::get(format!("http://{addr}{path}"))
}

// ------------------------------------------------------------------------------------------
// Header fields: how many, how large.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn more_header_fields_than_max_headers_is_431() {
    let fx = Limited::start().await;
    // Host and 20 more against max_headers: 20, a few bytes each. hyper's HTTP/1 parser has
    // room for exactly max_headers fields and answers 431 itself, without X-Relay-Error.
    let fields: String = (0..20).map(|i| format!("X-F{i}: v\r\n")).collect();
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\n{fields}\r\n",
        fx.host()
    );
    fx.refused_by_parser(request, 431, "headers_too_large")
        .await;
    // Control: Host and 19 more is exactly the limit, and forwarded.
    let fields: String = (0..19).map(|i| format!("X-F{i}: v\r\n")).collect();
    fx.forwarded("/partner/x", &fields).await;
}

#[tokio::test]
async fn more_header_fields_than_max_headers_over_http2_is_431_headers_too_large() {
    // HTTP/2 has no field count of its own: authrelay counts, and answers with its code.
    let fx = Limited::start().await;
    let (mut h2, _connection) = h2_connect::<Empty<Bytes>>(fx.addr()).await;
    let mut request = h2_request(fx.addr(), "/partner/x");
    for i in 0..21 {
        request = request.header(format!("x-f{i}"), "v");
    }
    let response = h2.send_request(request.body(Empty::new()).unwrap()).await;
    let (status, relay_error, text) = h2_text(response.expect("an answer")).await;
    assert_eq!(status, 431, "{text}");
    assert_eq!(relay_error.as_deref(), Some("headers_too_large"), "{text}");
    fx.assert_vendor_untouched();
    fx.assert_no_secret(&text);
}

#[tokio::test]
async fn one_header_over_max_header_bytes_is_431_headers_too_large() {
    let fx = Limited::start().await;
    // 5000 bytes against max_header_bytes: 4KiB, within hyper's read buffer: authrelay answers.
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nX-Huge: {}\r\n\r\n",
        fx.host(),
        "h".repeat(5000)
    );
    fx.refused_and_closed(request, 431, "headers_too_large")
        .await;
}

#[tokio::test]
async fn many_medium_headers_over_max_header_bytes_are_431_headers_too_large() {
    let fx = Limited::start().await;
    let medium = |count: usize| -> String {
        (0..count)
            .map(|i| format!("X-M{i}: {}\r\n", "m".repeat(500)))
            .collect()
    };
    // 10 fields of ~510 bytes: each small, together over 4 KiB, and under max_headers.
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\n{}\r\n",
        fx.host(),
        medium(10)
    );
    fx.refused_and_closed(request, 431, "headers_too_large")
        .await;
    // The same on the buffered route: no token request either.
    let request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n{}\r\nhi",
        fx.host(),
        medium(10)
    );
    fx.refused_and_closed(request, 431, "headers_too_large")
        .await;
    // Control: 6 of them (~3 KiB) pass.
    fx.forwarded("/partner/x", &medium(6)).await;
}

#[tokio::test]
async fn a_head_over_the_read_buffer_is_431_from_hyper() {
    // 100 KiB of header: more than hyper's read buffer (8 KiB here), so hyper's parser gives up
    // before authrelay sees a request, and answers 431 itself (status only).
    let fx = Limited::start().await;
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nX-Flood: {}\r\n\r\n",
        fx.host(),
        "f".repeat(100 * 1024)
    );
    fx.refused_by_parser(request, 431, "headers_too_large")
        .await;
}

#[tokio::test]
async fn http2_header_list_over_max_header_bytes_is_refused_and_the_connection_serves_on() {
    // max_header_bytes is also the HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE: the h2 library answers
    // 431 itself (without X-Relay-Error) and refuses the stream, or resets it outright.
    let fx = Limited::start().await;
    let (mut h2, _connection) = h2_connect::<Empty<Bytes>>(fx.addr()).await;
    let request = h2_request(fx.addr(), "/partner/x")
        .header("x-huge", "h".repeat(6000))
        .body(Empty::new())
        .unwrap();
    match h2.send_request(request).await {
        Ok(response) => {
            let (status, relay_error, text) = h2_text(response).await;
            assert_eq!(status, 431, "{text}");
            if let Some(code) = relay_error {
                assert_eq!(code, "headers_too_large", "{text}");
            }
            fx.assert_no_secret(&text);
        }
        Err(error) => {
            // A reset stream carries no data at all, so no secret either.
            let text = format!("{error:?}");
            assert!(
                text.contains("REFUSED_STREAM") || text.contains("PROTOCOL_ERROR"),
                "{text}"
            );
        }
    }
    fx.assert_vendor_untouched();
    // One refused stream does not end the connection for the others.
    h2.ready().await.expect("the connection is still open");
    let response = h2
        .send_request(
            h2_request(fx.addr(), "/partner/after")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    fx.assert_sandbox_saw(1, 0);
}

// ------------------------------------------------------------------------------------------
// The request target.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_long_path_is_414_target_too_long() {
    let fx = Limited::start().await;
    let request = format!(
        "GET /partner/{} HTTP/1.1\r\nHost: {}\r\n\r\n",
        "p".repeat(2000),
        fx.host()
    );
    fx.refused(request, 414, "target_too_long").await;
    // A target longer than hyper's read buffer (8 KiB here) never reaches authrelay's check:
    // hyper answers 431 for the whole head (status only).
    let request = format!(
        "GET /partner/{} HTTP/1.1\r\nHost: {}\r\n\r\n",
        "p".repeat(20 * 1024),
        fx.host()
    );
    fx.refused_by_parser(request, 431, "target_too_long").await;
    // Control: a 900-byte target is under max_target_bytes (1 KiB).
    fx.forwarded(&format!("/partner/{}", "p".repeat(890)), "")
        .await;
}

#[tokio::test]
async fn a_long_query_is_414_target_too_long() {
    let fx = Limited::start().await;
    let request = format!(
        "GET /cross-river/x?q={} HTTP/1.1\r\nHost: {}\r\n\r\n",
        "q".repeat(2000),
        fx.host()
    );
    fx.refused(request, 414, "target_too_long").await;
    // And over HTTP/2, where the target is the :path pseudo-header.
    let (mut h2, _connection) = h2_connect::<Empty<Bytes>>(fx.addr()).await;
    let path = format!("/partner/x?q={}", "q".repeat(2000));
    let response = h2
        .send_request(h2_request(fx.addr(), &path).body(Empty::new()).unwrap())
        .await;
    let (status, relay_error, text) = h2_text(response.expect("an answer")).await;
    assert_eq!(status, 414, "{text}");
    assert_eq!(relay_error.as_deref(), Some("target_too_long"), "{text}");
    fx.assert_vendor_untouched();
    fx.assert_no_secret(&text);
}

// ------------------------------------------------------------------------------------------
// Bodies over max_body.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn declared_length_over_max_body_is_413_before_the_body_is_sent() {
    // Only the head goes out: the answer must come without waiting for a body that the caller
    // is still holding back.
    let fx = Limited::start().await;
    for path in ["/cross-river/x", "/partner/x", "/recorded/x"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n",
            fx.host()
        );
        fx.refused_and_closed(request, 413, "body_too_large").await;
    }
}

#[tokio::test]
async fn declared_length_over_max_body_with_expect_100_continue_is_413_without_100() {
    // A caller that waits for 100 Continue is told 413 instead: no interim answer first.
    let fx = Limited::start().await;
    let mut stream = TcpStream::connect(fx.addr()).await.unwrap();
    let request = format!(
        "POST /recorded/x HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\
         Expect: 100-continue\r\n\r\n",
        fx.host()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer, then the close")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.contains("x-relay-error: body_too_large\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("HTTP/1.1 100"), "{answer}");
    fx.assert_vendor_untouched();
    fx.assert_no_secret(&answer);
}

/// `POST {path}` chunked, with `body` (chunks, not necessarily ending).
fn chunked(fx: &Limited, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        fx.host()
    )
}

#[tokio::test]
async fn chunked_body_growing_past_max_body_is_413_on_a_buffered_route() {
    // Two 600-byte chunks against max_body: 1KiB, and the caller keeps going (no last chunk).
    // The body is read before anything is sent: nothing reaches the vendor, no token request.
    let fx = Limited::start().await;
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600));
    let request = chunked(&fx, "/cross-river/x", &chunk.repeat(2));
    fx.refused_and_closed(request, 413, "body_too_large").await;
}

#[tokio::test]
async fn chunked_body_growing_past_max_body_is_413_on_a_streaming_route() {
    // The head and the first chunk may already be on their way upstream when the second chunk
    // crosses max_body: authrelay cuts the upstream request short (never a complete one) and
    // the caller, still connected, is told 413.
    let fx = Limited::start().await;
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600));
    let request = chunked(&fx, "/recorded/x", &chunk.repeat(2));
    let mut connection = RawConnection::open(fx.addr()).await;
    connection.send(request.as_bytes()).await;
    let response = connection.response().await.expect("an answer");
    assert_relay_error(&response, 413, "body_too_large");
    fx.assert_no_secret(&response.text());
    assert!(connection.closed().await, "the connection must close");
    fx.assert_no_complete_request().await;
}

#[tokio::test]
async fn a_chunk_claiming_u64_max_bytes_is_413() {
    // `ffffffffffffffff` (u64::MAX, still a valid size): read like any body, 413 once past
    // max_body, without waiting for the rest of the chunk.
    let fx = Limited::start().await;
    let huge = format!("ffffffffffffffff\r\n{}", "a".repeat(2000));
    let request = chunked(&fx, "/cross-river/x", &huge);
    fx.refused_and_closed(request, 413, "body_too_large").await;
    let request = chunked(&fx, "/recorded/x", &huge);
    let response = raw::exchange(fx.addr(), request).await;
    assert_relay_error(&response, 413, "body_too_large");
    fx.assert_no_secret(&response.text());
    fx.assert_no_complete_request().await;
}

#[tokio::test]
async fn a_chunk_size_over_64_bits_is_400() {
    // One more digit overflows the size: a broken body, the caller's fault on either route.
    let fx = Limited::start().await;
    let overflow = "fffffffffffffffff\r\nhello\r\n0\r\n\r\n";
    let (_, mut connection) = fx
        .refused(chunked(&fx, "/cross-river/x", overflow), 400, "bad_request")
        .await;
    assert!(
        connection.closed().await,
        "a broken body ends the connection"
    );
    let response = raw::exchange(fx.addr(), chunked(&fx, "/recorded/x", overflow)).await;
    assert_relay_error(&response, 400, "bad_request");
    fx.assert_no_secret(&response.text());
    fx.assert_no_complete_request().await;
}

// ------------------------------------------------------------------------------------------
// Bodies slower than body_read_timeout.
// ------------------------------------------------------------------------------------------

/// `POST {path}` declaring 100 bytes of body and sending the first 10, then nothing.
fn stalled_body(fx: &Limited, path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{}",
        fx.host(),
        "s".repeat(10)
    )
}

#[tokio::test]
async fn a_stalled_body_on_a_buffered_route_is_408() {
    // Client credentials: the body is held for a replay, so nothing leaves before it is whole.
    // From a cold start: not even a token is requested for a body that never came.
    let fx = Limited::cold(LIMITS).await;
    fx.refused_and_closed(stalled_body(&fx, "/cross-river/x"), 408, "body_timeout")
        .await;
}

#[tokio::test]
async fn a_stalled_body_on_a_streaming_route_is_408() {
    // Static token: the head (and 10 bytes) stream upstream at once; when the body deadline
    // passes, the upstream request is cut short and the caller gets 408.
    let fx = Limited::start().await;
    let mut connection = RawConnection::open(fx.addr()).await;
    connection
        .send(stalled_body(&fx, "/recorded/x").as_bytes())
        .await;
    let response = connection.response().await.expect("an answer");
    assert_relay_error(&response, 408, "body_timeout");
    fx.assert_no_secret(&response.text());
    assert!(connection.closed().await, "the connection must close");
    fx.assert_no_complete_request().await;

    // The same towards the sandbox: at most the head arrived there.
    let mut connection = RawConnection::open(fx.addr()).await;
    connection
        .send(stalled_body(&fx, "/partner/x").as_bytes())
        .await;
    let response = connection.response().await.expect("an answer");
    assert_relay_error(&response, 408, "body_timeout");
    fx.assert_no_secret(&response.text());
    let seen = fx.vendor.stats();
    assert!(
        seen.api_requests - fx.baseline.api_requests <= 1,
        "{seen:?}"
    );
    assert_eq!(seen.token_requests, fx.baseline.token_requests);
}

#[tokio::test]
async fn a_trickled_body_is_408_however_steady_the_trickle() {
    // A byte every 100 ms never stalls for long, but the whole body must be in within
    // body_read_timeout (1 s): 100 bytes at that pace would take 10 s.
    let fx = Limited::start().await;
    for path in ["/cross-river/x", "/recorded/x"] {
        let mut stream = TcpStream::connect(fx.addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n",
            fx.host()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..100 {
                if writer.write_all(b"t").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer))
            .await
            .expect("an answer, then the close")
            .expect("read");
        trickle.abort();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{path}: {answer}");
        assert!(
            answer.contains("x-relay-error: body_timeout\r\n"),
            "{path}: {answer}"
        );
        fx.assert_no_secret(&answer);
    }
    fx.assert_no_complete_request().await;
}

#[tokio::test]
async fn a_stalled_body_over_http2_is_408() {
    // 10 of 100 declared bytes, then a stream that never ends, on both kinds of route.
    let fx = Limited::start().await;
    for path in ["/cross-river/x", "/recorded/x"] {
        type Frames = futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;
        let (mut h2, _connection) = h2_connect::<StreamBody<Frames>>(fx.addr()).await;
        let frames: Frames = Box::pin(futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(b"0123456789")))]),
            futures_util::stream::pending(),
        ));
        let request = Request::post(format!("http://{}{path}", fx.addr()))
            .header("content-length", "100")
            .body(StreamBody::new(frames))
            .unwrap();
        let response = tokio::time::timeout(PATIENCE, h2.send_request(request))
            .await
            .expect("an answer in time")
            .expect("an answer");
        let (status, relay_error, text) = h2_text(response).await;
        assert_eq!(status, 408, "{path}: {text}");
        assert_eq!(
            relay_error.as_deref(),
            Some("body_timeout"),
            "{path}: {text}"
        );
        fx.assert_no_secret(&text);
    }
    fx.assert_no_complete_request().await;
}

// ------------------------------------------------------------------------------------------
// Slow heads, idle connections, too many connections.
// ------------------------------------------------------------------------------------------

/// Reads until the server closes the connection: true on EOF or a reset, false if it stayed
/// open for [`PATIENCE`]. Whatever the server sent before closing is returned as well.
async fn closed_by_server(stream: &mut tokio::net::tcp::OwnedReadHalf) -> (bool, String) {
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (closed, String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn slowloris_heads_are_closed_while_other_callers_are_served() {
    // 50 connections each send a request head a byte at a time and never finish it. The
    // header_read_timeout (1 s) closes them; idle_timeout is long here so that only the
    // header timer can. Meanwhile another caller's requests are served.
    let fx = Limited::cold(
        "{ header_read_timeout: 1s, idle_timeout: 60s, body_read_timeout: 1s, \
         max_connections: 100 }",
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let stream = TcpStream::connect(fx.addr()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "GET /partner/slow HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
            fx.host()
        );
        let drip = tokio::spawn(async move {
            for byte in head.bytes().chain(std::iter::repeat(b'z')) {
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        slow.push(tokio::spawn(async move {
            let closed = closed_by_server(&mut reader).await;
            drip.abort();
            closed
        }));
    }
    let served = Arc::new(AtomicUsize::new(0));
    let legitimate = {
        let (client, url, served) = (
            support::client(),
            fx.proxy.url("/partner/fine"),
            Arc::clone(&served),
        );
        tokio::spawn(async move {
            loop {
                let response = client.get(&url).send().await.expect("legitimate request");
                assert_eq!(response.status(), 200);
                served.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for (i, connection) in slow.into_iter().enumerate() {
        let (closed, sent) = connection.await.unwrap();
        assert!(closed, "slow connection {i} still open after {PATIENCE:?}");
        // hyper closes on its header timer without an answer; if anything came, it is no
        // response to the unfinished request.
        assert!(!sent.contains(" 200 "), "slow connection {i} got: {sent}");
        fx.assert_no_secret(&sent);
    }
    if legitimate.is_finished() {
        panic!("the legitimate caller failed: {:?}", legitimate.await);
    }
    legitimate.abort();
    let _ = legitimate.await;
    let served = served.load(Ordering::SeqCst) as u64;
    assert!(served > 0, "no legitimate request was served meanwhile");
    // The vendor saw the legitimate requests and nothing of the slow ones.
    let stats = fx.vendor.stats();
    assert!(
        stats.api_requests == served || stats.api_requests == served + 1,
        "{stats:?}, {served} served"
    );
    assert_eq!(stats.token_requests, 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_header_read_timeout() {
    // The cheapest slowloris: connect and send nothing. No request head arrives within
    // header_read_timeout (1 s); idle_timeout is long here, so only the header timer counts.
    // Also an HTTP/2 preface that never completes.
    let fx = Limited::cold(
        "{ header_read_timeout: 1s, idle_timeout: 60s, body_read_timeout: 1s, \
         max_connections: 100 }",
    )
    .await;
    let silent = TcpStream::connect(fx.addr()).await.unwrap();
    let mut preface = TcpStream::connect(fx.addr()).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A whole preface and an empty SETTINGS frame, then silence: the GOAWAY's PING is never
    // answered, so a graceful close alone would wait forever.
    let mut deaf = TcpStream::connect(fx.addr()).await.unwrap();
    deaf.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    for (name, stream) in [
        ("silent", silent),
        ("partial h2 preface", preface),
        ("h2 that never answers", deaf),
    ] {
        let (mut reader, _writer) = stream.into_split();
        let (closed, sent) = closed_by_server(&mut reader).await;
        assert!(closed, "{name} connection still open after {PATIENCE:?}");
        fx.assert_no_secret(&sent);
    }
    fx.assert_vendor_untouched();
}

/// Writes `GET {path}` on an open keep-alive connection and reads the answer.
async fn keep_alive_get(connection: &mut RawConnection, host: &str, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    connection.send(request.as_bytes()).await;
    connection.response().await.expect("an answer")
}

/// Idle timeout 1 s; the header timer (which hyper also runs between HTTP/1.1 requests) long,
/// so that only the idle timer can close these connections.
const IDLE_LIMITS: &str = "{ header_read_timeout: 60s, idle_timeout: 1s, body_read_timeout: 5s }";

#[tokio::test]
async fn an_idle_http1_connection_is_closed_but_not_while_a_request_is_in_flight() {
    let fx = Limited::cold(IDLE_LIMITS).await;
    let host = fx.host();
    // Idle after one exchange: closed.
    let mut connection = RawConnection::open(fx.addr()).await;
    let response = keep_alive_get(&mut connection, &host, "/partner/one").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        connection.closed().await,
        "an idle keep-alive connection must be closed"
    );
    // A request the vendor takes 2.5 s to answer (idle_timeout is 1 s): answered, not closed.
    fx.vendor.set_latency(Duration::from_millis(2500));
    let mut connection = RawConnection::open(fx.addr()).await;
    let response = keep_alive_get(&mut connection, &host, "/partner/slow").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("connection"), None, "{}", response.text());
    // Idle from then on: closed.
    assert!(connection.closed().await, "idle after the slow request");
    assert_eq!(fx.vendor.stats().api_requests, 2);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_but_not_while_a_request_is_in_flight() {
    let fx = Limited::cold(IDLE_LIMITS).await;
    // Idle after one exchange: the server ends the connection (GOAWAY, close).
    let (mut h2, connection) = h2_connect::<Empty<Bytes>>(fx.addr()).await;
    let response = h2
        .send_request(
            h2_request(fx.addr(), "/partner/one")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    drop(response);
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("an idle HTTP/2 connection must be closed")
        .unwrap()
        .expect("a clean close");

    // A request the vendor holds for 2.5 s (idle_timeout is 1 s). HTTP/2 closes gracefully
    // (GOAWAY, streams in flight finish), so an idle timer firing during the request would not
    // show in its answer: a second request, sent once the first has been in flight longer than
    // the idle timeout, shows it, since a connection that said GOAWAY takes no new streams.
    fx.vendor.set_latency(Duration::from_millis(2500));
    let (h2, connection) = h2_connect::<Empty<Bytes>>(fx.addr()).await;
    let send = |path: &'static str| {
        let mut h2 = h2.clone();
        let request = h2_request(fx.addr(), path).body(Empty::new()).unwrap();
        tokio::spawn(async move { h2.send_request(request).await })
    };
    let first = send("/partner/slow");
    eventually("the slow request to reach the vendor", || {
        fx.vendor.stats().api_requests == 2
    })
    .await;
    // The vendor holds it for 2.5 s from here: 1.5 s on, it is still in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = send("/partner/also-slow");
    for (name, answer) in [("first", first), ("second", second)] {
        let response = answer
            .await
            .unwrap()
            .unwrap_or_else(|error| panic!("{name} request: {error:?}"));
        let (status, _, text) = h2_text(response).await;
        assert_eq!(status, 200, "{name}: {text}");
    }
    // Idle from then on: closed.
    tokio::time::timeout(PATIENCE, connection)
        .await
        .expect("idle after the slow requests")
        .unwrap()
        .expect("a clean close");
    assert_eq!(fx.vendor.stats().api_requests, 3);
}

#[tokio::test]
async fn connections_over_max_connections_get_503_and_room_frees_up() {
    // max_connections: 8, timers long so that nothing closes on its own.
    let fx =
        Limited::cold("{ max_connections: 8, header_read_timeout: 60s, idle_timeout: 60s }").await;
    let host = fx.host();
    // Eight connections, each proven open (and counted) by one answered request, kept idle.
    let mut open = Vec::new();
    for i in 0..8 {
        let mut connection = RawConnection::open(fx.addr()).await;
        let response = keep_alive_get(&mut connection, &host, &format!("/partner/{i}")).await;
        assert_eq!(response.status, 200, "{}", response.text());
        open.push(connection);
    }
    // The ninth is told 503 before it sends anything, then closed.
    let mut ninth = RawConnection::open(fx.addr()).await;
    let response = ninth.response().await.expect("a 503 before the close");
    assert_relay_error(&response, 503, "too_many_connections");
    assert_eq!(response.header("retry-after"), Some("1"));
    fx.assert_no_secret(&response.text());
    assert!(ninth.closed().await, "the ninth connection must be closed");
    assert_eq!(fx.vendor.stats().api_requests, 8);
    // The eight are still served.
    let response = keep_alive_get(&mut open[0], &host, "/partner/still").await;
    assert_eq!(response.status, 200, "{}", response.text());

    // Two leave; a new connection is served once the server has seen them go.
    open.truncate(6);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut connection = RawConnection::open(fx.addr()).await;
        connection
            .send(format!("GET /partner/new HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        // A refused connection may be reset before the 503 is read: our request was unread.
        if let Some(response) = connection.response().await {
            if response.status == 200 {
                break;
            }
            assert_relay_error(&response, 503, "too_many_connections");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after two connections closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fx.vendor.stats().api_requests, 10);
    assert_eq!(fx.vendor.stats().token_requests, 0);
}
