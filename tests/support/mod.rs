//! Test harness: authrelay on port 0 with a YAML config, the sandbox vendors as upstream, and an
//! HTTP client that never uses an environment proxy; `browser` drives a headless Chromium, `redis`
//! runs a real `redis-server`.
#![allow(dead_code)] // each test file uses a different part of the harness
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test harness: a panic is a failed test"
)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;

use authrelay::sandbox::{Sandbox, SandboxHandle};
use authrelay::state::SharedState;
use authrelay::{Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod browser;
pub mod fleet;
pub mod redis;

/// A running proxy; dropping it stops the server.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// The token store's directory (a temporary one unless the test chose it).
    pub store_dir: std::path::PathBuf,
    _temp_store: Option<tempfile::TempDir>,
    pub admin: Option<SocketAddr>,
    pub state: SharedState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestProxy {
    /// Starts authrelay on `yaml` (`{sandbox}` stands for the sandbox's base URL), with the
    /// token store in a fresh temporary directory.
    pub async fn start(yaml: &str, sandbox: &SandboxHandle) -> TestProxy {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut proxy = Self::start_with_store(yaml, sandbox, temp.path()).await;
        proxy._temp_store = Some(temp);
        proxy
    }

    /// Starts with the token store in `store_dir`, so a test can restart on the same store.
    pub async fn start_with_store(
        yaml: &str,
        sandbox: &SandboxHandle,
        store_dir: &Path,
    ) -> TestProxy {
        let mut yaml = yaml.replace("{sandbox}", &sandbox.url());
        if !yaml.contains("\nstore:") {
            yaml.push_str(&format!(
                "\nstore: {{ kind: file, path: \"{}\" }}\n",
                store_dir.display()
            ));
        }
        let config =
            Config::from_yaml(&yaml, Path::new(".")).unwrap_or_else(|e| panic!("test config: {e}"));
        Self::start_config(config, store_dir).await
    }

    /// Starts authrelay on a config the test built itself (the demo's, say), whose token store
    /// is in `store_dir`; the caller keeps that directory alive.
    pub async fn start_config(config: Config, store_dir: &Path) -> TestProxy {
        let server = Server::bind(config).await.expect("bind");
        let addr = server.local_addrs()[0];
        let admin = server.admin_addr();
        let state = server.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        TestProxy {
            addr,
            admin,
            state,
            store_dir: store_dir.to_path_buf(),
            _temp_store: None,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops accepting and waits for in-flight requests to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task");
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn sandbox() -> SandboxHandle {
    Sandbox::new().start(loopback()).await.expect("sandbox")
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback address whose port was free a moment ago (bound to port 0, then released): for a
/// listener whose address must be known before it binds, such as an admin named in `redirect_uri`.
pub fn free_loopback() -> SocketAddr {
    let listener = std::net::TcpListener::bind(loopback()).expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// A client that talks to the proxy directly, never through `HTTP_PROXY`.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The sandbox echo of a request, as JSON.
pub async fn echo(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 200, "expected an echo");
    response.json().await.expect("echo JSON")
}

/// All values of header `name` in an echo, in order.
pub fn echoed_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A proxy config fronting the sandbox's vendors with the demo credentials.
pub const VENDORS_YAML: &str = r#"
listeners:
  - bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
providers:
  cross-river:
    preset: cross-river
    token_url: {sandbox}/cross-river/connect/token
    client_id: cr-demo-client
    client_secret: cr-demo-secret
    scopes: [payments.read]
  cultureamp:
    preset: cultureamp
    token_url: {sandbox}/cultureamp/v1/oauth2/token
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  partner:
    grant: static
    token: pat-demo-token
routes:
  - match: { path_prefix: /cross-river }
    upstream: {sandbox}/cross-river/api
    strip_prefix: true
    provider: cross-river
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: { path_prefix: /cultureamp }
    upstream: {sandbox}/cultureamp/v1
    strip_prefix: true
    provider: cultureamp
    # Above the 10 MiB default: tests/forwarding.rs streams a 64 MiB upload through it.
    max_body: 128MiB
  - match: { path_prefix: /partner }
    upstream: {sandbox}/partner/api
    strip_prefix: true
    provider: partner
  - match: { host: api.partner.example }
    upstream: {sandbox}/partner/api
    provider: partner
    name: partner-by-host
"#;

/// `GET` through the proxy.
pub async fn get(proxy: &TestProxy, path: &str) -> reqwest::Response {
    client()
        .get(proxy.url(path))
        .send()
        .await
        .expect("request to the proxy")
}

/// Asserts an answer made by authrelay itself: its status and `X-Relay-Error` code.
pub fn assert_relay_error(response: &reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "{response:?}");
    assert_eq!(response.headers()["x-relay-error"], code, "{response:?}");
}

/// A token endpoint that gives the same raw HTTP answer to every request and counts them: for
/// vendor misbehaviour the sandbox does not simulate.
pub async fn canned_token_endpoint(
    answer: &'static str,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, requests)
}

/// `authrelay run` as a child process; returns it and its listener address (from its log).
pub fn spawn_proxy(config: &std::path::Path) -> (std::process::Child, SocketAddr) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authrelay"))
        .args(["run", "--config"])
        .arg(config)
        .env("AUTHRELAY_LOG", "authrelay=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("proxy exited before listening")
            .unwrap();
        if line.contains("listening") && !line.contains("admin") {
            let addr = line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            break addr.parse().unwrap();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}
