//! The front door: callers by API key and by client certificate, route allow-lists, TLS
//! listeners and their reload, and the checks on anonymous requests (DNS rebinding 421,
//! cross-site 403). Every refusal also checks that the vendor received nothing.
#![allow(clippy::unwrap_used, reason = "tests: a panic is a failed test")]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use authrelay::sandbox::SandboxHandle;
use authrelay::{Config, Server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use support::{TestProxy, assert_relay_error, client, echo, echoed_header, sandbox};
use tokio_util::sync::CancellationToken;

const BILLING_KEY: &str = "billing-key-0123456789abcdef";
const CRM_KEY: &str = "crm-key-0123456789abcdef0123";
const PAT: &str = "pat-demo-token";

/// Two callers by key; `/partner` open to both, `/billing-only` to billing alone.
const KEYED_YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
admin: { bind: "127.0.0.1:0" }
callers:
  - { name: billing, api_key: billing-key-0123456789abcdef }
  - { name: crm, api_key: crm-key-0123456789abcdef0123 }
providers:
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }
  - { name: billing-only, match: { path_prefix: /billing-only }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner, callers: [billing] }
"#;

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn get_as(
    proxy: &TestProxy,
    path: &str,
    proxy_authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = client().get(proxy.url(path));
    if let Some(value) = proxy_authorization {
        request = request.header("proxy-authorization", value);
    }
    request.send().await.unwrap()
}

fn assert_no_secret(text: &str) {
    for secret in [BILLING_KEY, CRM_KEY, PAT] {
        assert!(!text.contains(secret), "a secret in: {text}");
    }
}

#[tokio::test]
async fn api_key_callers_authenticate_and_their_key_never_reaches_the_vendor() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(KEYED_YAML, &vendor).await;

    for presented in [
        None,
        Some(bearer("wrong-key-0123456789abcdef")),
        Some("Basic Zm9vOmJhcg==".into()),
        Some(bearer("")),
    ] {
        let response = get_as(&proxy, "/partner/x", presented.as_deref()).await;
        assert_relay_error(&response, 407, "caller_unknown");
        assert_eq!(
            response.headers()["proxy-authenticate"],
            "Bearer realm=\"authrelay\""
        );
        assert_no_secret(&format!("{:?}", response.headers()));
        assert_no_secret(&response.text().await.unwrap());
    }
    assert_eq!(
        vendor.stats().api_requests,
        0,
        "a refused caller reached the vendor"
    );

    let echo = echo(get_as(&proxy, "/partner/x", Some(&bearer(BILLING_KEY))).await).await;
    assert_eq!(
        echoed_header(&echo, "authorization"),
        [format!("Bearer {PAT}")]
    );
    assert!(
        echoed_header(&echo, "proxy-authorization").is_empty(),
        "{echo}"
    );
    assert_no_secret(&echo["headers"].to_string().replace(PAT, ""));
    assert_eq!(vendor.stats().api_requests, 1);
}

#[tokio::test]
async fn a_caller_off_the_routes_list_is_forbidden_and_metrics_name_the_caller() {
    let vendor = sandbox().await;
    let proxy = TestProxy::start(KEYED_YAML, &vendor).await;

    let response = get_as(&proxy, "/billing-only/x", Some(&bearer(CRM_KEY))).await;
    assert_relay_error(&response, 403, "caller_forbidden");
    assert_eq!(vendor.stats().api_requests, 0);
    let response = get_as(&proxy, "/billing-only/x", None).await;
    assert_relay_error(&response, 407, "caller_unknown");
    assert_eq!(vendor.stats().api_requests, 0);

    let response = get_as(&proxy, "/billing-only/x", Some(&bearer(BILLING_KEY))).await;
    assert_eq!(response.status(), 200);
    let response = get_as(&proxy, "/partner/x", Some(&bearer(CRM_KEY))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(vendor.stats().api_requests, 2);

    let metrics = client()
        .get(format!("http://{}/metrics", proxy.admin.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"authrelay_caller_requests_total{caller="crm",route="billing-only",status_class="4xx"} 1"#,
        r#"authrelay_caller_requests_total{caller="unknown",route="",status_class="4xx"} 1"#,
        r#"authrelay_caller_requests_total{caller="billing",route="billing-only",status_class="2xx"} 1"#,
        r#"authrelay_caller_requests_total{caller="crm",route="partner",status_class="2xx"} 1"#,
        r#"authrelay_relay_errors_total{code="caller_forbidden"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    assert_no_secret(&metrics);
}

#[tokio::test]
async fn an_anonymous_listener_beside_callers_serves_without_a_key_but_not_with_a_wrong_one() {
    let vendor = sandbox().await;
    let yaml = KEYED_YAML.replace(
        r#"listeners: [{ bind: "127.0.0.1:0" }]"#,
        r#"listeners: [{ bind: "127.0.0.1:0", allow_anonymous: true }]"#,
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    assert_eq!(get_as(&proxy, "/partner/x", None).await.status(), 200);
    // A key that names nobody is a mistake worth telling, even where no key is needed.
    let response = get_as(
        &proxy,
        "/partner/x",
        Some(&bearer("wrong-key-0123456789abcdef")),
    )
    .await;
    assert_relay_error(&response, 407, "caller_unknown");
    // An allow-list still wants to know who is calling.
    let response = get_as(&proxy, "/billing-only/x", None).await;
    assert_relay_error(&response, 407, "caller_unknown");
    assert_eq!(vendor.stats().api_requests, 1);
}

#[tokio::test]
async fn dns_rebinding_hosts_are_misdirected_and_loopback_or_route_hosts_served() {
    let vendor = sandbox().await;
    let yaml = format!(
        "{}  - {{ match: {{ host: api.partner.example }}, upstream: \"{{sandbox}}/partner/api\", provider: partner, name: by-host }}\n",
        KEYED_YAML
            .replace("callers:\n  - { name: billing, api_key: billing-key-0123456789abcdef }\n  - { name: crm, api_key: crm-key-0123456789abcdef0123 }\n", "")
            .replace(", callers: [billing]", "")
    );
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let port = proxy.addr.port();
    let raw = |host: String| {
        let addr = proxy.addr;
        async move { support_raw_get(addr, "/partner/x", &host).await }
    };
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "169.254.169.254".into(),
        "10.0.0.1".into(),
        "localhost.evil.example".into(),
    ] {
        let answer = raw(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(
            answer.contains("x-relay-error: misdirected_host"),
            "{answer}"
        );
    }
    assert_eq!(vendor.stats().api_requests, 0);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "app.localhost".into(),
        format!("[::1]:{port}"),
        "api.partner.example".into(),
    ] {
        let answer = raw(host.clone()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
    assert_eq!(vendor.stats().api_requests, 5);
}

#[tokio::test]
async fn a_wildcard_listener_reached_over_loopback_checks_the_host_too() {
    let vendor = sandbox().await;
    // 0.0.0.0 is bound but only ever reached through 127.0.0.1 here.
    let yaml = KEYED_YAML
        .replace(
            r#"listeners: [{ bind: "127.0.0.1:0" }]"#,
            r#"listeners: [{ bind: "0.0.0.0:0", allow_anonymous: true }]"#,
        )
        .replace("callers:\n  - { name: billing, api_key: billing-key-0123456789abcdef }\n  - { name: crm, api_key: crm-key-0123456789abcdef0123 }\n", "")
        .replace(", callers: [billing]", "");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let local = SocketAddr::from(([127, 0, 0, 1], proxy.addr.port()));
    let answer = support_raw_get(local, "/partner/x", "evil.example").await;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let answer = support_raw_get(local, "/partner/x", "localhost").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(vendor.stats().api_requests, 1);
}

#[tokio::test]
async fn browser_cross_site_requests_are_refused_unless_their_origin_is_configured() {
    let vendor = sandbox().await;
    let yaml = KEYED_YAML
        .replace(
            r#"listeners: [{ bind: "127.0.0.1:0" }]"#,
            r#"listeners: [{ bind: "127.0.0.1:0", allowed_origins: ["https://app.example.com"] }]"#,
        )
        .replace("callers:\n  - { name: billing, api_key: billing-key-0123456789abcdef }\n  - { name: crm, api_key: crm-key-0123456789abcdef0123 }\n", "")
        .replace(", callers: [billing]", "");
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let mut request = client().post(proxy.url("/partner/x")).body("amount=100");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
        &[
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "same-site"),
        ],
    ] {
        let response = send(headers).await.unwrap();
        assert_relay_error(&response, 403, "cross_site");
    }
    assert_eq!(
        vendor.stats().api_requests,
        0,
        "a cross-site request reached the vendor"
    );
    for headers in [
        &[][..],
        &[("sec-fetch-site", "none")],
        &[("sec-fetch-site", "same-origin")],
        &[
            ("origin", "https://app.example.com"),
            ("sec-fetch-site", "cross-site"),
        ],
        &[("origin", "HTTPS://APP.EXAMPLE.COM")],
    ] {
        assert_eq!(send(headers).await.unwrap().status(), 200, "{headers:?}");
    }
    assert_eq!(vendor.stats().api_requests, 5);
}

/// `GET path` with exactly `Host: host`, over a fresh connection; the raw answer.
async fn support_raw_get(addr: SocketAddr, path: &str, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

// ------------------------------------------------------------------------------------------
// TLS and mTLS listeners
// ------------------------------------------------------------------------------------------

/// A CA, and PEM files it signed, written under a directory.
struct Pki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            ca_pem: issuer.pem(),
            issuer,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (cert PEM, key PEM).
    fn server(&self) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate with subject `CN=cn`: (cert PEM, key PEM).
    fn client(&self, cn: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A client trusting `ca_pem`, presenting `identity` (cert and key PEM) when given, with
/// `localhost` resolved to `addr`.
fn tls_client(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve("localhost", addr);
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

const TLS_YAML: &str = r#"
listeners:
  - bind: "127.0.0.1:0"
    tls: { cert: "{dir}/server.crt", key: "{dir}/server.key", client_ca: "{dir}/callers-ca.crt" }
callers:
  - { name: crm, cert_subject: "CN=crm" }
  - { name: billing, api_key: billing-key-0123456789abcdef }
providers:
  partner: { preset: pat, token: pat-demo-token }
routes:
  - { match: { path_prefix: /partner }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner }
  - { name: crm-only, match: { path_prefix: /crm-only }, strip_prefix: true, upstream: "{sandbox}/partner/api", provider: partner, callers: [crm] }
"#;

#[tokio::test]
async fn mtls_callers_are_known_by_their_certificate_subject() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new("server CA");
    let callers = Pki::new("callers CA");
    let strangers = Pki::new("strangers CA");
    let (cert, key) = servers.server();
    write(dir.path(), "server.crt", &cert);
    write(dir.path(), "server.key", &key);
    write(dir.path(), "callers-ca.crt", &callers.ca_pem);
    let yaml = TLS_YAML.replace("{dir}", &dir.path().display().to_string());
    let proxy = TestProxy::start(&yaml, &vendor).await;
    let url = |path: &str| format!("https://localhost:{}{path}", proxy.addr.port());

    let crm = tls_client(proxy.addr, &servers.ca_pem, Some(&callers.client("crm")));
    let response = crm.get(url("/crm-only/x")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    let echo = echo(response).await;
    assert_eq!(
        echoed_header(&echo, "authorization"),
        [format!("Bearer {PAT}")]
    );
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["https"]);

    // A browser holding the certificate presents it on any page's requests: cross-site refused.
    let response = crm
        .get(url("/crm-only/x"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_relay_error(&response, 403, "cross_site");

    // A certificate from the callers' CA whose subject names no caller: known CA, unknown caller.
    let other = tls_client(
        proxy.addr,
        &servers.ca_pem,
        Some(&callers.client("intruder")),
    );
    let response = other.get(url("/partner/x")).send().await.unwrap();
    assert_relay_error(&response, 407, "caller_unknown");
    // The API-key caller, on the same listener, with a certificate that carries no caller.
    let response = other
        .get(url("/crm-only/x"))
        .header("proxy-authorization", bearer(BILLING_KEY))
        .send()
        .await
        .unwrap();
    assert_relay_error(&response, 403, "caller_forbidden");

    // No certificate, or one from another CA: the handshake itself fails.
    let anonymous = tls_client(proxy.addr, &servers.ca_pem, None);
    assert!(anonymous.get(url("/partner/x")).send().await.is_err());
    let stranger = tls_client(proxy.addr, &servers.ca_pem, Some(&strangers.client("crm")));
    assert!(stranger.get(url("/partner/x")).send().await.is_err());
    assert_eq!(
        vendor.stats().api_requests,
        1,
        "only the crm request was forwarded"
    );
}

#[tokio::test]
async fn listener_certificates_are_reloaded_with_the_config() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::new("first CA");
    let second = Pki::new("second CA");
    let (cert, key) = first.server();
    write(dir.path(), "server.crt", &cert);
    write(dir.path(), "server.key", &key);
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {{ cert: server.crt, key: server.key }}\n\
         providers:\n  partner: {{ preset: pat, token: pat-demo-token }}\n\
         routes:\n  - {{ match: {{ path_prefix: /partner }}, strip_prefix: true, upstream: \"{}/partner/api\", provider: partner }}\n\
         store: {{ kind: file, path: store }}\n",
        vendor.url()
    );
    let config_path = Path::new(&write(dir.path(), "proxy.yaml", &yaml)).to_path_buf();
    let (addr, reloader, stop) = serve_file(&config_path, &vendor).await;
    let url = format!("https://localhost:{}/partner/x", addr.port());

    let trusts_first = tls_client(addr, &first.ca_pem, None);
    assert_eq!(trusts_first.get(&url).send().await.unwrap().status(), 200);

    // A renewed certificate from another CA, then a reload (SIGHUP or a config write).
    let (cert, key) = second.server();
    write(dir.path(), "server.crt", &cert);
    write(dir.path(), "server.key", &key);
    reloader.reload().await.unwrap();
    let trusts_second = tls_client(addr, &second.ca_pem, None);
    assert_eq!(trusts_second.get(&url).send().await.unwrap().status(), 200);
    let fresh_first = tls_client(addr, &first.ca_pem, None);
    assert!(
        fresh_first.get(&url).send().await.is_err(),
        "old certificate still served"
    );

    // A broken key file keeps the running certificate.
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    assert!(reloader.reload().await.is_err());
    let again = tls_client(addr, &second.ca_pem, None);
    assert_eq!(again.get(&url).send().await.unwrap().status(), 200);
    stop.cancel();
}

#[tokio::test]
async fn a_reload_that_would_leave_a_network_listener_open_to_anyone_is_refused() {
    let vendor = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    // 0.0.0.0 is bound but only ever reached through 127.0.0.1 here.
    let guarded = format!(
        "listeners:\n  - bind: \"0.0.0.0:0\"\n\
         callers:\n  - {{ name: billing, api_key: {BILLING_KEY} }}\n\
         providers:\n  partner: {{ preset: pat, token: pat-demo-token }}\n\
         routes:\n  - {{ match: {{ path_prefix: /partner }}, strip_prefix: true, upstream: \"{}/partner/api\", provider: partner }}\n\
         store: {{ kind: file, path: store }}\n",
        vendor.url()
    );
    let config_path = Path::new(&write(dir.path(), "proxy.yaml", &guarded)).to_path_buf();
    let (addr, reloader, stop) = serve_file(&config_path, &vendor).await;
    let local = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let url = format!("http://{local}/partner/x");

    let open_to_anyone = guarded.replace(
        &format!("callers:\n  - {{ name: billing, api_key: {BILLING_KEY} }}\n"),
        "",
    );
    write(dir.path(), "proxy.yaml", &open_to_anyone);
    let error = reloader.reload().await.unwrap_err().to_string();
    assert!(error.contains("listeners[0].bind"), "{error}");
    assert!(error.contains("allow_anonymous"), "{error}");

    let response = client().get(&url).send().await.unwrap();
    assert_relay_error(&response, 407, "caller_unknown");
    let response = client()
        .get(&url)
        .header("proxy-authorization", bearer(BILLING_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(vendor.stats().api_requests, 1);
    stop.cancel();
}

/// Serves the config at `path` (relative paths resolve beside it); its first listener's
/// address, a reloader for it, and the token that stops it.
async fn serve_file(
    path: &Path,
    _vendor: &SandboxHandle,
) -> (SocketAddr, authrelay::reload::Reloader, CancellationToken) {
    let server = Server::bind(Config::load(path).unwrap()).await.unwrap();
    let addr = server.local_addrs()[0];
    let reloader = server.reloader(path);
    let stop = CancellationToken::new();
    let serving = stop.clone();
    tokio::spawn(server.serve(async move { serving.cancelled().await }));
    (addr, reloader, stop)
}
