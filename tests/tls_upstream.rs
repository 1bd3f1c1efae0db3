//! HTTPS upstreams and token endpoints: verified against the provider's `ca`, HTTP/2 by ALPN,
//! and refused when the certificate is not trusted.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{TestProxy, assert_relay_error, client, echo, echoed_header, get, sandbox};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A TLS terminator for `localhost` in front of the sandbox, recording the ALPN of each connection.
struct TlsFront {
    addr: SocketAddr,
    ca_pem: String,
    alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

async fn tls_front(backend: SocketAddr) -> TlsFront {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alpn = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&alpn);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                // A refused handshake (untrusted certificate on the client side) just ends here.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                seen.lock()
                    .unwrap()
                    .push(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    TlsFront {
        addr,
        ca_pem: ca.pem(),
        alpn,
    }
}

const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  trusted:
    preset: cultureamp
    token_url: "https://localhost:{port}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
    ca: "{ca}"
  static-trusted: { grant: static, token: pat-demo-token, ca: "{ca}" }
  static-untrusted: { grant: static, token: pat-demo-token }
  oauth-untrusted:
    preset: cultureamp
    token_url: "https://localhost:{port}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
routes:
  - match: { path_prefix: /ca }
    strip_prefix: true
    upstream: "https://localhost:{port}/cultureamp/v1"
    provider: trusted
  - match: { path_prefix: /pat }
    strip_prefix: true
    upstream: "https://localhost:{port}/partner/api"
    provider: static-trusted
  - match: { path_prefix: /untrusted-upstream }
    upstream: "https://localhost:{port}/partner/api"
    provider: static-untrusted
  - match: { path_prefix: /untrusted-token }
    upstream: "https://localhost:{port}/cultureamp/v1"
    provider: oauth-untrusted
"#;

async fn setup() -> (
    support::TestProxy,
    TlsFront,
    authrelay::sandbox::SandboxHandle,
    tempfile::TempDir,
) {
    let vendor = sandbox().await;
    let front = tls_front(vendor.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("vendor-ca.pem");
    std::fs::write(&ca_path, &front.ca_pem).unwrap();
    let yaml = YAML
        .replace("{port}", &front.addr.port().to_string())
        .replace("{ca}", ca_path.to_str().unwrap());
    let proxy = TestProxy::start(&yaml, &vendor).await;
    (proxy, front, vendor, dir)
}

#[tokio::test]
async fn https_token_endpoint_and_upstream_are_verified_with_the_providers_ca() {
    let (proxy, front, vendor, _dir) = setup().await;
    let response = get(&proxy, "/ca/employees?x=1").await;
    let echoed = echo(response).await;
    assert_eq!(echoed["path"], "/cultureamp/v1/employees");
    assert!(echoed_header(&echoed, "authorization")[0].starts_with("Bearer "));
    assert_eq!(vendor.token_requests("ca-demo-client"), 1);
    // The upstream offered h2 and the proxy's client took it.
    assert!(
        front
            .alpn
            .lock()
            .unwrap()
            .iter()
            .any(|alpn| alpn.as_deref() == Some(b"h2"))
    );

    let response = client()
        .post(proxy.url("/pat/orders"))
        .body("x".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(echo(response).await["body_len"], 5000);
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_is_refused() {
    let (proxy, _front, vendor, _dir) = setup().await;
    let response = get(&proxy, "/untrusted-upstream/x").await;
    assert_relay_error(&response, 502, "upstream_unreachable");
    let response = get(&proxy, "/untrusted-token/x").await;
    assert_relay_error(&response, 503, "token_unavailable");
    assert_eq!(vendor.stats().api_requests, 0);
    assert_eq!(vendor.stats().token_requests, 0);
}
