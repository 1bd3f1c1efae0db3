//! The scene of every hostile case: the sandbox vendors, authrelay in front of them with a
//! client-credentials provider (Cross River) and a static PAT provider (partner), a token already
//! issued and cached, and the vendor's counters at that point. Plus a listener that no request
//! may ever reach, and the real binary with its TRACE log for the log cases.

use std::fmt::Debug;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authrelay::sandbox::{SandboxHandle, SandboxStats};
use futures_util::FutureExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::raw::{RawResponse, exchange};
use crate::support::{TestProxy, echoed_header, sandbox};

/// Cross River's client secret in the config: it only ever goes to the token endpoint.
pub const CLIENT_SECRET: &str = "cr-demo-secret";
/// The partner's personal access token.
pub const PAT: &str = "pat-demo-token";
/// A credential the caller tries to slip to the vendor; authrelay owns `Authorization`.
pub const CALLER_TOKEN: &str = "caller-smuggled-token-3f9a61";
/// The caller's key for authrelay itself (`Proxy-Authorization`); never for the vendor.
pub const CALLER_PROXY_KEY: &str = "caller-proxy-key-77c1d0";
/// The header value the Cross River routes inject besides `Authorization`.
pub const ORGANIZATION: &str = "02fde942-c7cd-4f12-9d4e-07ee8a57c8c6";

/// Routes of the hostile suite: `/cross-river` (OAuth, an injected header, bodies buffered for
/// the 401 replay), `/partner` (static PAT, bodies stream), `api.partner.example` for
/// `HTTP_PROXY`-style callers, and `/limited` (OAuth, `max_body: 1KiB`).
pub const HOSTILE_YAML: &str = r#"
listeners:
  - bind: 127.0.0.1:0
providers:
  cross-river:
    preset: cross-river
    token_url: "{sandbox}/cross-river/connect/token"
    client_id: cr-demo-client
    client_secret: cr-demo-secret
    scopes: [payments.read]
  partner:
    grant: static
    token: pat-demo-token
routes:
  - match: { path_prefix: /cross-river }
    upstream: "{sandbox}/cross-river/api"
    strip_prefix: true
    provider: cross-river
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: { path_prefix: /partner }
    upstream: "{sandbox}/partner/api"
    strip_prefix: true
    provider: partner
  - match: { host: api.partner.example }
    upstream: "{sandbox}/partner/api"
    provider: partner
    name: partner-by-host
  - match: { path_prefix: /limited }
    upstream: "{sandbox}/cross-river/api"
    strip_prefix: true
    provider: cross-river
    name: limited
    max_body: 1KiB
"#;

/// authrelay and the sandbox, with one Cross River token issued and cached.
pub struct Hostile {
    pub vendor: SandboxHandle,
    pub proxy: TestProxy,
    /// The access token the sandbox issued for Cross River (without `Bearer `).
    pub token: String,
    /// The vendor's counters once the token was in the cache, or at the start of the variant
    /// being checked (see [`Hostile::each`]).
    baseline: Mutex<SandboxStats>,
}

/// A listener that no request may ever reach: it counts connections and answers `stolen`.
pub struct Trap {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

/// `authrelay run` as a child process at `AUTHRELAY_LOG=trace`, its log collected.
pub struct LoggedProxy {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

// === impl Hostile ===

impl Hostile {
    pub async fn start() -> Hostile {
        let vendor = sandbox().await;
        let proxy = TestProxy::start(HOSTILE_YAML, &vendor).await;
        let host = proxy.addr.to_string();
        let warm = exchange(
            proxy.addr,
            format!("GET /cross-river/warm-up HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        assert_eq!(warm.status, 200, "warm-up: {}", warm.text());
        let authorization = echoed_header(&warm.json(), "authorization");
        let token = authorization[0]
            .strip_prefix("Bearer ")
            .expect("a Bearer token")
            .to_owned();
        let baseline = vendor.stats();
        assert_eq!(
            (baseline.token_requests, baseline.api_requests),
            (1, 1),
            "warm-up"
        );
        Hostile {
            vendor,
            proxy,
            token,
            baseline: Mutex::new(baseline),
        }
    }

    /// Runs `check` on every variant in turn, each counting the vendor's traffic from its own
    /// start, and fails once at the end naming every variant that failed (not just the first).
    pub async fn each<V, F, Fut>(&self, variants: impl IntoIterator<Item = V>, mut check: F)
    where
        V: Debug,
        F: FnMut(V) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut failed = Vec::new();
        for variant in variants {
            *self.baseline.lock().expect("baseline") = self.vendor.stats();
            let name = format!("{variant:?}");
            if let Err(panic) = AssertUnwindSafe(check(variant)).catch_unwind().await {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                failed.push(format!("- {name}: {message}"));
            }
        }
        assert!(
            failed.is_empty(),
            "{} variant(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// authrelay's own address, for the `Host` header of origin-form requests.
    pub fn host(&self) -> String {
        self.proxy.addr.to_string()
    }

    /// Everything that must never reach a caller: the client secret, the PAT, the issued token,
    /// and the caller credentials that must not have travelled to the vendor and back.
    pub fn secrets(&self) -> Vec<&str> {
        vec![
            CLIENT_SECRET,
            PAT,
            &self.token,
            CALLER_TOKEN,
            CALLER_PROXY_KEY,
        ]
    }

    /// (b) for refused requests: not one request of any kind reached the sandbox since the
    /// warm-up (token endpoint, APIs, unknown paths alike).
    pub fn assert_vendor_untouched(&self) {
        self.assert_vendor_saw(0, 0);
    }

    /// (b) for forwarded requests: exactly `api` more API requests and `token` more token
    /// requests than at the warm-up, and nothing else.
    pub fn assert_vendor_saw(&self, api: u64, token: u64) {
        let now = self.vendor.stats();
        let baseline = self.baseline.lock().expect("baseline").clone();
        assert_eq!(
            (
                now.api_requests - baseline.api_requests,
                now.token_requests - baseline.token_requests,
                now.requests - baseline.requests,
            ),
            (api, token, api + token),
            "(API, token, all) requests the vendor received"
        );
    }

    /// (c) No secret anywhere in a response that authrelay made or that carries no echo.
    pub fn assert_no_secret(&self, response: &RawResponse) {
        let text = response.text();
        for secret in self.secrets() {
            assert!(!text.contains(secret), "`{secret}` in the response: {text}");
        }
    }

    /// (a) An answer authrelay made itself, (b) nothing sent anywhere, (c) no secret in it.
    pub fn assert_refused(&self, response: &RawResponse, status: u16, code: &str) {
        assert_eq!(response.status, status, "{}", response.text());
        assert_eq!(
            response.header("x-relay-error"),
            Some(code),
            "{}",
            response.text()
        );
        self.assert_vendor_untouched();
        self.assert_no_secret(response);
    }

    /// Sends `request` on a fresh connection and checks it was refused with `status` and `code`.
    pub async fn refused(&self, request: impl AsRef<[u8]>, status: u16, code: &str) -> RawResponse {
        let response = exchange(self.addr(), request).await;
        self.assert_refused(&response, status, code);
        response
    }

    /// [`Hostile::refused`] for [`Hostile::each`], which needs `()` futures.
    pub async fn refused_discarding(&self, request: String, status: u16, code: &str) {
        self.refused(request, status, code).await;
    }

    /// [`Hostile::refused_framing`] with status 400, for [`Hostile::each`].
    pub async fn refused_framing_discarding(&self, request: String) {
        self.refused_framing(request, 400).await;
    }

    /// A request whose framing cannot be trusted: `status` (from the HTTP/1 parser or from
    /// authrelay, so no `X-Relay-Error` is required), nothing forwarded, no secret, and the
    /// connection closed afterwards so that no byte after the bad head is read as a request.
    pub async fn refused_framing(&self, request: impl AsRef<[u8]>, status: u16) -> RawResponse {
        let mut connection = crate::raw::RawConnection::open(self.addr()).await;
        connection.send(request.as_ref()).await;
        let response = connection
            .response()
            .await
            .expect("an answer before the connection closes");
        assert_eq!(response.status, status, "{}", response.text());
        assert!(
            connection.closed().await,
            "the connection must close after a framing error"
        );
        self.assert_vendor_untouched();
        self.assert_no_secret(&response);
        response
    }

    /// (b) and (c) for a forwarded request answered by the echo: the vendor got exactly
    /// `authorization` once and none of the caller's credentials; the response head holds no
    /// secret, and the body holds one only where the vendor echoed our own `Authorization`
    /// (see `a_vendor_echoing_our_authorization_is_the_vendors_doing`). Returns the echo.
    pub fn assert_clean_echo(&self, response: &RawResponse, authorization: &str) -> Value {
        assert_eq!(response.status, 200, "{}", response.text());
        for secret in self.secrets() {
            assert!(
                !response.head.contains(secret),
                "`{secret}` in the response head: {}",
                response.head
            );
        }
        let echo = response.json();
        assert_eq!(
            echoed_header(&echo, "authorization"),
            [authorization],
            "the vendor's Authorization: {echo}"
        );
        assert!(
            echoed_header(&echo, "proxy-authorization").is_empty(),
            "{echo}"
        );
        let mut without_ours = echo.clone();
        without_ours["headers"]
            .as_array_mut()
            .expect("headers")
            .retain(|pair| pair[0] != "authorization");
        let rest = without_ours.to_string();
        for secret in self.secrets() {
            assert!(
                !rest.contains(secret),
                "`{secret}` reached the vendor or came back: {echo}"
            );
        }
        echo
    }

    /// The `Authorization` the Cross River routes must carry.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

// === impl Trap ===

impl Trap {
    /// Binds `bind` (port 0); `None` when the address family is not available here.
    pub async fn start(bind: &str) -> Option<Trap> {
        let listener = tokio::net::TcpListener::bind(bind).await.ok()?;
        let addr = listener.local_addr().ok()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nstolen",
                        )
                        .await;
                });
            }
        });
        Some(Trap { addr, connections })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

// === impl LoggedProxy ===

impl LoggedProxy {
    /// Runs the binary on [`HOSTILE_YAML`] against `vendor`, logging everything at TRACE.
    pub fn spawn(vendor: &SandboxHandle) -> LoggedProxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let yaml = HOSTILE_YAML.replace("{sandbox}", &vendor.url())
            + "store: { kind: file, path: store }\n";
        std::fs::write(dir.path().join("proxy.yaml"), yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_authrelay"))
            .args(["run", "--config", "proxy.yaml"])
            .current_dir(dir.path())
            .env("AUTHRELAY_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run authrelay");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let collected = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("listening") && line.contains("addr=") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|addr| addr.parse().ok());
                    if let Some(addr) = addr {
                        let _ = addr_tx.send(addr);
                    }
                }
                collected.lock().expect("log").push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("authrelay listening");
        LoggedProxy {
            child,
            addr,
            log,
            reader: Some(reader),
            _dir: dir,
        }
    }

    /// Stops the process and returns its whole log.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe is closed now: the reader ends once it has drained what was left in it.
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for LoggedProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
