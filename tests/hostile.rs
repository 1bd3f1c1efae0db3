//! Hostile input, first half: routing and SSRF, header tricks, framing and smuggling, upstream
//! tricks (caller authentication, Host/421, cross-site, size and slowness cases come later).
//!
//! Every case asserts three things:
//! - (a) the exact status, and the `X-Relay-Error` code where authrelay answers itself. Framing
//!   errors may be caught by the HTTP/1 parser before authrelay sees a request: for those only the
//!   status is required, and that the connection closes (no byte after a bad head may be read as
//!   a request of its own).
//! - (b) what the vendor received: nothing at all (the sandbox counts every request, token
//!   endpoint and unknown paths included), or for a forwarded case, through the echo, exactly our
//!   `Authorization` once and none of the caller's smuggled headers.
//! - (c) that no secret is in the response: the client secret, the PAT, the token the sandbox
//!   issued, and the caller's own credentials (which must not have travelled to the vendor and
//!   back). `hostile_requests_leave_no_secret_in_trace_logs` runs the real binary at TRACE and
//!   checks its log for the same secrets.
//!
//! Requests are written byte for byte on a raw socket: HTTP client libraries refuse or repair
//! most of them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is a failed test"
)]

mod support;

#[path = "hostile/fixture.rs"]
mod fixture;
#[path = "hostile/raw.rs"]
mod raw;

use fixture::{CALLER_PROXY_KEY, CALLER_TOKEN, Hostile, LoggedProxy, ORGANIZATION, PAT, Trap};
use raw::{RawConnection, exchange, exchange_all};
use support::{echoed_header, sandbox};

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------------------------------
// Routing and SSRF: only the upstream of a configured route is ever contacted.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn absolute_form_to_cloud_metadata_is_404_and_goes_nowhere() {
    let fx = Hostile::start().await;
    let targets = [
        ("http://169.254.169.254/latest/meta-data/", ""),
        (
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "",
        ),
        ("http://[fd00:ec2::254]/latest/meta-data/", ""),
        (
            "http://metadata.google.internal/computeMetadata/v1/instance/",
            "Metadata-Flavor: Google\r\n",
        ),
        (
            "http://169.254.169.254/metadata/instance",
            "Metadata: true\r\n",
        ),
        // The same address in decimal and hex, as some resolvers accept.
        ("http://2852039166/latest/meta-data/", ""),
        ("http://0xa9fea9fe/latest/meta-data/", ""),
    ];
    fx.each(targets, |(target, extra)| {
        let fx = &fx;
        async move {
            let authority = target.split('/').nth(2).unwrap();
            let request = format!(
                "GET {target} HTTP/1.1\r\nHost: {authority}\r\n{extra}\
                 Authorization: Bearer {CALLER_TOKEN}\r\n\r\n"
            );
            let response = fx.refused(request, 404, "no_route").await;
            assert_eq!(response.json()["error"], "no_route");
        }
    })
    .await;
}

#[tokio::test]
async fn absolute_form_to_a_host_no_route_names_is_404_even_on_a_routed_path() {
    let fx = Hostile::start().await;
    // `/partner/...` and `/cross-river/...` match prefix routes in origin form; in absolute form
    // only a route naming the host may take the request.
    let targets = [
        "http://evil.example/",
        "http://evil.example/partner/x",
        "http://evil.example/cross-river/payments",
        "https://evil.example/partner/x",
        "http://API.PARTNER.EXAMPLE.evil.example/projects",
    ];
    fx.each(targets, |target| {
        absolute_form_is_404(&fx, target.to_owned())
    })
    .await;
}

/// `GET {target}` in absolute form, with the matching `Host`: 404 `no_route`, nothing sent.
async fn absolute_form_is_404(fx: &Hostile, target: String) {
    let authority = target.split('/').nth(2).unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    fx.refused(request, 404, "no_route").await;
}

#[tokio::test]
async fn absolute_form_to_loopback_is_404_and_nothing_connects() {
    let fx = Hostile::start().await;
    let trap = Trap::start("127.0.0.1:0").await.unwrap();
    let port = trap.addr.port();
    let mut targets = vec![
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/partner/x"),
        format!("http://127.1:{port}/"),
    ];
    // `[::1]` names the v6 loopback; a trap listens there too when this host has IPv6.
    let trap6 = Trap::start("[::1]:0").await;
    let port6 = trap6.as_ref().map_or(port, |trap| trap.addr.port());
    targets.push(format!("http://[::1]:{port6}/"));
    targets.push(format!("http://[::1]:{port6}/partner/x"));
    fx.each(targets, |target| absolute_form_is_404(&fx, target))
        .await;
    assert_eq!(trap.connections(), 0, "authrelay connected to the trap");
    assert_eq!(trap6.map_or(0, |trap| trap.connections()), 0);
}

#[tokio::test]
async fn absolute_form_naming_the_sandbox_itself_is_404() {
    // The sandbox is a route's upstream, but no route names `127.0.0.1:<port>` as its host: an
    // absolute-form request there must not become a credential-less (or credentialed) open proxy
    // to the vendor's own address.
    let fx = Hostile::start().await;
    let vendor = fx.vendor.addr();
    let paths = [
        "/partner/api/projects",
        "/cross-river/api/payments",
        "/cross-river/connect/token",
        "/_sandbox/stats",
        "/latest/meta-data/",
    ];
    fx.each(paths, |path| {
        absolute_form_is_404(&fx, format!("http://{vendor}{path}"))
    })
    .await;
}

#[tokio::test]
async fn absolute_form_to_metadata_with_a_routed_host_header_is_404() {
    // RFC 9112 3.2.2: the target's authority wins over `Host`. A route host in `Host` must not
    // pull a request for another authority onto that route.
    let fx = Hostile::start().await;
    let request = "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\
                   Host: api.partner.example\r\n\r\n";
    fx.refused(request, 404, "no_route").await;
}

#[tokio::test]
async fn metadata_host_header_on_a_routed_path_is_misdirected() {
    // Origin form with `Host: 169.254.169.254` and a path under `/partner`: on a loopback
    // listener serving anonymous callers, a Host that is neither a loopback name nor a route
    // host is what DNS rebinding looks like. 421, and nothing forwarded.
    let fx = Hostile::start().await;
    let request =
        "GET /partner/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".to_string();
    fx.refused(request, 421, "misdirected_host").await;
}

#[tokio::test]
async fn userinfo_cannot_disguise_the_absolute_form_host() {
    // `http://api.partner.example@169.254.169.254/` names 169.254.169.254: no route.
    let fx = Hostile::start().await;
    let request = "GET http://api.partner.example@169.254.169.254/latest/meta-data/ HTTP/1.1\r\n\
                   Host: 169.254.169.254\r\n\r\n";
    // Userinfo in the target is refused before routing (absolute_form_with_userinfo_is_400).
    fx.refused(request, 400, "bad_request").await;
}

#[tokio::test]
async fn absolute_form_with_userinfo_is_400() {
    // Beyond the list: RFC 9110 4.2.4 asks recipients to treat userinfo in an http(s)
    // URI as an error, since it mostly serves to disguise the authority. A route host after the
    // `@` must not make `169.254.169.254@` look harmless.
    let fx = Hostile::start().await;
    let request = "GET http://169.254.169.254@api.partner.example/projects HTTP/1.1\r\n\
                   Host: api.partner.example\r\n\r\n";
    fx.refused(request, 400, "bad_request").await;
}

#[tokio::test]
async fn connect_is_405_and_never_opens_a_tunnel() {
    let fx = Hostile::start().await;
    let trap = Trap::start("127.0.0.1:0").await.unwrap();
    let vendor = fx.vendor.addr();
    let authorities = [
        "169.254.169.254:80".to_string(),
        "api.partner.example:443".to_string(),
        vendor.to_string(),
    ];
    fx.each(authorities, |authority| {
        let fx = &fx;
        async move {
            let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
            let response = fx.refused(request, 405, "method_not_allowed").await;
            assert!(response.header("allow").is_some(), "{}", response.text());
        }
    })
    .await;
    // What a tunnel client sends right after CONNECT is read, if at all, as a request to
    // authrelay itself; it never reaches the CONNECT target.
    let mut connection = RawConnection::open(fx.addr()).await;
    let target = trap.addr;
    connection
        .send(
            format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let refused = connection.response().await.unwrap();
    fx.assert_refused(&refused, 405, "method_not_allowed");
    if let Some(next) = connection.response().await {
        assert!(
            next.header("x-relay-error").is_some(),
            "the bytes after CONNECT were answered by someone else: {}",
            next.text()
        );
        fx.assert_no_secret(&next);
    }
    assert_eq!(trap.connections(), 0, "CONNECT reached its target");
    fx.assert_vendor_untouched();
}

#[tokio::test]
async fn trace_is_405_and_reflects_nothing() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let targets = [
        ("/partner/x", host.as_str()),
        ("http://api.partner.example/x", "api.partner.example"),
        ("*", host.as_str()),
    ];
    fx.each(targets, |(target, host)| {
        let fx = &fx;
        async move {
            let request = format!(
                "TRACE {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\
                 Cookie: session=caller-cookie-5e1\r\nMax-Forwards: 0\r\n\r\n"
            );
            let response = fx.refused(request, 405, "method_not_allowed").await;
            assert!(
                !response.text().contains("caller-cookie-5e1"),
                "{}",
                response.text()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn trace_and_connect_in_other_letter_cases_and_track_are_405() {
    // Beyond the list: methods are case-sensitive in HTTP, but IIS and other servers
    // take `trace`/`TRACK` as TRACE and would echo our injected `Authorization` back.
    let fx = Hostile::start().await;
    let host = fx.host();
    let requests = [
        format!("trace /partner/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("Trace /partner/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("TRACK /partner/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("track /partner/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        "connect 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n".to_string(),
    ];
    fx.each(requests, |request| {
        fx.refused_discarding(request, 405, "method_not_allowed")
    })
    .await;
}

/// Sends `GET {path}` for each path and expects `400 bad_request` and nothing forwarded.
async fn paths_are_refused(fx: &Hostile, paths: &[&str]) {
    let host = fx.host();
    fx.each(paths, |path| {
        fx.refused_discarding(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            400,
            "bad_request",
        )
    })
    .await;
}

#[tokio::test]
async fn encoded_slash_in_the_path_is_400() {
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &[
            "/partner/..%2F..%2Fcross-river%2Fapi%2Fx",
            "/partner%2f..%2fcross-river/x",
            "/partner/a%2Fb",
        ],
    )
    .await;
}

#[tokio::test]
async fn encoded_or_raw_backslash_in_the_path_is_400() {
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &[
            "/partner/%5c..%5ccross-river",
            "/partner/..%5C..%5Cadmin",
            "/partner/..\\..\\admin",
        ],
    )
    .await;
}

#[tokio::test]
async fn encoded_nul_in_the_path_is_400() {
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &["/partner/x%00.json", "/partner/%00/../cross-river/x"],
    )
    .await;
}

#[tokio::test]
async fn encoded_dot_segments_are_400() {
    // An upstream that decodes once more would resolve them where authrelay did not route.
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &[
            "/partner/%2e%2e/cross-river/x",
            "/partner/%2E%2E/cross-river/x",
            "/partner/.%2e/cross-river/x",
            "/partner/%2e./cross-river/x",
            "/partner/%2e/x",
        ],
    )
    .await;
}

#[tokio::test]
async fn dot_dot_escaping_a_route_prefix_is_400() {
    // `/partner/../cross-river/x` reads as a `/partner` request to anything that looks at it
    // literally (a WAF, a log reader) but lands on another route once resolved: refused, not
    // re-routed. A `..` that leads nowhere routed is the usual 404 (tests/forwarding.rs
    // `unknown_route_is_404_json`: `/partner/../nowhere`).
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &[
            "/partner/../cross-river/x",
            "/partner/a/../../cross-river/x",
            "/cross-river/../partner/x",
        ],
    )
    .await;
    fx.refused(
        format!(
            "GET /partner/../nowhere HTTP/1.1\r\nHost: {}\r\n\r\n",
            fx.host()
        ),
        404,
        "no_route",
    )
    .await;
}

#[tokio::test]
async fn dot_dot_above_the_root_is_400() {
    let fx = Hostile::start().await;
    paths_are_refused(&fx, &["/../partner/x", "/partner/../../etc/passwd"]).await;
}

#[tokio::test]
async fn dot_segments_with_semicolon_parameters_are_400() {
    // Tomcat reads `..;` as `..`.
    let fx = Hostile::start().await;
    paths_are_refused(
        &fx,
        &[
            "/partner/..;/cross-river/x",
            "/partner/..;foo=bar/cross-river/x",
            "/partner/.;/x",
        ],
    )
    .await;
}

#[tokio::test]
async fn dot_segments_inside_a_prefix_are_resolved_and_the_resolved_path_is_forwarded() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/a/./b/../c HTTP/1.1\r\nHost: {}\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &format!("Bearer {PAT}"));
    assert_eq!(echo["path"], "/partner/api/a/c");
    fx.assert_vendor_saw(1, 0);
}

// ------------------------------------------------------------------------------------------
// Header tricks: the pipeline is framing checks -> hop-by-hop and Connection-named headers
// stripped -> the caller's credential and forwarding headers stripped -> route -> inject.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_naming_authorization_cannot_remove_ours() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\nConnection: Authorization\r\n\
         Authorization: Bearer {CALLER_TOKEN}\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    fx.assert_clean_echo(&response, &fx.bearer());
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn connection_naming_injected_or_proxy_set_headers_cannot_remove_them() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\n\
         Connection: keep-alive, Xbeam-Organization, X-Forwarded-For, X-Forwarded-Proto, Host\r\n\
         Connection: authorization\r\n\
         Xbeam-Organization: 00000000-0000-0000-0000-000000000000\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &fx.bearer());
    assert_eq!(echoed_header(&echo, "xbeam-organization"), [ORGANIZATION]);
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed_header(&echo, "host"), [fx.vendor.addr().to_string()]);
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn duplicate_authorization_headers_become_exactly_ours() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\
         authorization: Basic Y2FsbGVyOnNtdWdnbGVk\r\nAUTHORIZATION: Token {CALLER_TOKEN}-2\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    fx.assert_clean_echo(&response, &fx.bearer());
    // The static PAT route too.
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\
         Authorization: Bearer {CALLER_TOKEN}\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    fx.assert_clean_echo(&response, &format!("Bearer {PAT}"));
    fx.assert_vendor_saw(2, 0);
}

#[tokio::test]
async fn proxy_authorization_is_never_forwarded() {
    let fx = Hostile::start().await;
    let routes = [
        ("/cross-river/x", fx.bearer()),
        ("/partner/x", format!("Bearer {PAT}")),
    ];
    fx.each(routes, |(path, authorization)| {
        let fx = &fx;
        async move {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: Bearer {CALLER_PROXY_KEY}\r\n\
                 proxy-authorization: Basic {CALLER_PROXY_KEY}\r\nProxy-Connection: keep-alive\r\n\r\n",
                fx.host()
            );
            let response = exchange(fx.addr(), request).await;
            let echo = fx.assert_clean_echo(&response, &authorization);
            assert!(echoed_header(&echo, "proxy-connection").is_empty(), "{echo}");
            fx.assert_vendor_saw(1, 0);
        }
    })
    .await;
}

#[tokio::test]
async fn forwarding_headers_from_the_caller_are_replaced() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-For: 169.254.169.254, 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 443\r\n\
         Forwarded: for=6.6.6.6;host=evil.example;proto=https\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &format!("Bearer {PAT}"));
    assert_eq!(echoed_header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), [fx.host()]);
    for gone in ["forwarded", "x-real-ip", "x-forwarded-port"] {
        assert!(echoed_header(&echo, gone).is_empty(), "{gone}: {echo}");
    }
    assert!(!echo.to_string().contains("6.6.6.6"), "{echo}");
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn underscore_x_forwarded_for_is_400() {
    // CGI, PHP, Django and nginx with `underscores_in_headers` read `X_Forwarded_For` as
    // `X-Forwarded-For`: it would stand beside (or in front of) the value authrelay sets.
    let fx = Hostile::start().await;
    let host = fx.host();
    let names = ["X_Forwarded_For", "x_forwarded_for", "X-Forwarded_For"];
    fx.each(names, |name| {
        fx.refused_discarding(
            format!("GET /partner/x HTTP/1.1\r\nHost: {host}\r\n{name}: 6.6.6.6\r\n\r\n"),
            400,
            "bad_header",
        )
    })
    .await;
}

#[tokio::test]
async fn underscore_proxy_authorization_is_400() {
    // Would carry the caller's key to the vendor under a name the strip list does not know.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\nProxy_Authorization: Bearer {CALLER_PROXY_KEY}\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "bad_header").await;
}

#[tokio::test]
async fn underscore_variant_of_an_injected_route_header_is_400() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\n\
         Xbeam_Organization: 00000000-0000-0000-0000-000000000000\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "bad_header").await;
}

#[tokio::test]
async fn httpoxy_proxy_header_is_not_forwarded() {
    // Beyond the list (httpoxy, CVE-2016-5385 and friends): CGI-style upstreams turn a
    // `Proxy` request header into HTTP_PROXY and send their own outbound calls through it.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nProxy: http://evil.example:8080\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &format!("Bearer {PAT}"));
    assert!(echoed_header(&echo, "proxy").is_empty(), "{echo}");
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn cr_or_nul_inside_a_header_value_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let values = [
        format!("a\rAuthorization: Bearer {CALLER_TOKEN}"),
        format!("a\r Authorization: Bearer {CALLER_TOKEN}"),
        "a\0b".to_string(),
    ];
    fx.each(values, |value| {
        fx.refused_framing_discarding(format!(
            "GET /cross-river/x HTTP/1.1\r\nHost: {host}\r\nX-Note: {value}\r\n\r\n"
        ))
    })
    .await;
}

#[tokio::test]
async fn bare_lf_line_ends_cannot_smuggle_an_authorization_header() {
    // RFC 9112 2.2 lets a server take a lone LF as a line end; then the line is a header like
    // any other, and the caller's `Authorization` is replaced like any other.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\nHost: {}\nX-Note: a\nAuthorization: Bearer {CALLER_TOKEN}\n\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    fx.assert_clean_echo(&response, &fx.bearer());
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn obs_fold_continuation_line_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    fx.each([" ", "\t"], |fold| {
        fx.refused_framing_discarding(format!(
            "GET /cross-river/x HTTP/1.1\r\nHost: {host}\r\nX-Note: a\r\n\
             {fold}Authorization: Bearer {CALLER_TOKEN}\r\n\r\n"
        ))
    })
    .await;
}

#[tokio::test]
async fn whitespace_between_header_name_and_colon_is_400() {
    // RFC 9112 5.1: a server MUST reject it; some parsers drop the space and read `Authorization`.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/x HTTP/1.1\r\nHost: {}\r\nAuthorization : Bearer {CALLER_TOKEN}\r\n\r\n",
        fx.host()
    );
    fx.refused_framing(request, 400).await;
}

// ------------------------------------------------------------------------------------------
// Framing and smuggling: authrelay and the vendor must agree on where every request ends.
// ------------------------------------------------------------------------------------------

/// A request hidden after a `0` chunk, for CL.TE/TE.CL attempts.
fn hidden_request() -> String {
    format!(
        "GET /partner/smuggled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\r\n"
    )
}

#[tokio::test]
async fn duplicate_content_length_with_different_values_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let lengths = [
        "Content-Length: 5\r\nContent-Length: 6\r\n",
        "Content-Length: 5, 6\r\n",
        "Content-Length: 6\r\nContent-Length: 5\r\n",
    ];
    fx.each(lengths, |lengths| {
        fx.refused_framing_discarding(format!(
            "POST /cross-river/x HTTP/1.1\r\nHost: {host}\r\n{lengths}\r\nhello!"
        ))
    })
    .await;
}

#[tokio::test]
async fn signed_content_length_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    fx.each(["+5", "-1", "0x5", "5 5"], |length| {
        fx.refused_framing_discarding(format!(
            "POST /cross-river/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\nhello"
        ))
    })
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let body = format!("0\r\n\r\n{}", hidden_request());
    let framings = [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
        format!(
            "Transfer-Encoding: chunked\r\nContent-Length: {}\r\n",
            body.len()
        ),
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n".to_string(),
    ];
    fx.each(framings, |framing| {
        fx.refused_framing_discarding(format!(
            "POST /partner/x HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n{body}"
        ))
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_not_ending_in_chunked_is_400() {
    // RFC 9112 6.3: the body length cannot be known; 400 and close.
    let fx = Hostile::start().await;
    let host = fx.host();
    let codings = [
        "chunked, identity",
        "identity",
        "chunked\r\nTransfer-Encoding: identity",
    ];
    fx.each(codings, |coding| {
        fx.refused_framing_discarding(format!(
            "POST /partner/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: {coding}\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        ))
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_xchunked_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    fx.each(
        ["xchunked", "chunked-x", "chunk", "\"chunked\""],
        |coding| {
            fx.refused_framing_discarding(format!(
                "POST /partner/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: {coding}\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
            ))
        },
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_with_space_before_colon_or_folded_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let headers = [
        "Transfer-Encoding : chunked\r\n",
        "X-Note: a\r\n Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding:\r\n chunked\r\n",
        "Transfer-Encoding: \x0bchunked\r\n",
    ];
    fx.each(headers, |header| {
        fx.refused_framing_discarding(format!(
            "POST /partner/x HTTP/1.1\r\nHost: {host}\r\n{header}Content-Length: 5\r\n\r\nhello"
        ))
    })
    .await;
}

#[tokio::test]
async fn tab_before_chunked_is_plain_chunked_and_framed_once() {
    // HTAB is optional whitespace: `Transfer-Encoding:\tchunked` is chunked. The vendor gets the
    // decoded body exactly, in one request, and the bytes after the last chunk are read as the
    // next request on the caller's connection, never as part of this one.
    let fx = Hostile::start().await;
    let host = fx.host();
    let request = format!(
        "POST /partner/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding:\tchunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n"
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &format!("Bearer {PAT}"));
    assert_eq!(echo["body_len"], 5);
    assert_eq!(echo["body_sha256"], sha256_hex(b"hello"));
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn tab_before_chunked_with_content_length_is_400() {
    let fx = Hostile::start().await;
    let host = fx.host();
    let body = format!("0\r\n\r\n{}", hidden_request());
    let framings = [
        format!(
            "Content-Length: {}\r\nTransfer-Encoding:\tchunked\r\n",
            body.len()
        ),
        format!(
            "Transfer-Encoding:\tchunked\t\r\nContent-Length: {}\r\n",
            body.len()
        ),
    ];
    fx.each(framings, |framing| {
        fx.refused_framing_discarding(format!(
            "POST /partner/x HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n{body}"
        ))
    })
    .await;
}

#[tokio::test]
async fn transfer_encoding_on_http_1_0_is_400() {
    let fx = Hostile::start().await;
    let request = format!(
        "POST /partner/x HTTP/1.0\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
        fx.host()
    );
    fx.refused_framing(request, 400).await;
}

#[tokio::test]
async fn transfer_coding_authrelay_cannot_pass_on_is_501() {
    // Beyond the list: `gzip, chunked` ends in chunked, so the parser accepts it, but
    // `Transfer-Encoding` is hop-by-hop: forwarding the de-chunked bytes without it hands the
    // vendor a gzip stream it reads as plain content. RFC 9112 6.1: 501 for a transfer coding
    // the server does not understand.
    let fx = Hostile::start().await;
    let request = format!(
        "POST /partner/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    assert_eq!(response.status, 501, "{}", response.text());
    fx.assert_vendor_untouched();
    fx.assert_no_secret(&response);
}

#[tokio::test]
async fn chunk_size_overflowing_64_bits_is_400() {
    // On an OAuth route the body is read before anything is sent, so nothing reaches the vendor.
    let fx = Hostile::start().await;
    let request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "bad_request").await;
}

#[tokio::test]
async fn broken_chunked_body_on_a_streaming_route_is_400_not_502() {
    // A static-token route streams the body: the head may already be on its way to the vendor
    // when the caller's chunk framing breaks. The vendor then gets at most that one request,
    // cut short (it cannot act on a body that never ended), and the caller is told the fault is
    // its own: 400, not an upstream error.
    let fx = Hostile::start().await;
    let host = fx.host();
    let bodies = [
        "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5;ext\nhello\r\n0\r\n\r\n",
    ];
    fx.each(bodies, |body| {
        let (fx, host) = (&fx, &host);
        async move {
            let before = fx.vendor.stats();
            let request = format!(
                "POST /partner/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            );
            let response = exchange(fx.addr(), request).await;
            assert_eq!(response.status, 400, "{}", response.text());
            assert_eq!(response.header("x-relay-error"), Some("bad_request"));
            fx.assert_no_secret(&response);
            let after = fx.vendor.stats();
            assert!(after.api_requests - before.api_requests <= 1, "{after:?}");
            assert_eq!(after.token_requests, before.token_requests);
        }
    })
    .await;
}

#[tokio::test]
async fn huge_declared_chunk_stops_at_max_body() {
    // A chunk that claims 2^63 bytes is read like any body: past `max_body` (1 KiB) it is 413,
    // without waiting for the rest.
    let fx = Hostile::start().await;
    let request = format!(
        "POST /limited/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         7fffffffffffffff\r\n{}",
        fx.host(),
        "a".repeat(2048)
    );
    fx.refused(request, 413, "body_too_large").await;
}

#[tokio::test]
async fn chunk_extension_with_bare_lf_is_400() {
    let fx = Hostile::start().await;
    let request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext\nhello\r\n0\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "bad_request").await;
}

#[tokio::test]
async fn chunk_lines_ending_in_bare_lf_are_400() {
    let fx = Hostile::start().await;
    let request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\nhello\n0\n\n",
        fx.host()
    );
    fx.refused(request, 400, "bad_request").await;
}

#[tokio::test]
async fn chunk_extensions_are_dropped_and_the_body_arrives_intact() {
    let fx = Hostile::start().await;
    let mut request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        fx.host()
    )
    .into_bytes();
    request.extend_from_slice(
        b"5;name=value;q=\"a b;c\"\r\nhello\r\n6;\x01\x7f\xff\r\n world\r\n0;last\r\n\r\n",
    );
    let response = exchange(fx.addr(), request).await;
    let echo = fx.assert_clean_echo(&response, &fx.bearer());
    assert_eq!(echo["body_len"], 11);
    assert_eq!(echo["body_sha256"], sha256_hex(b"hello world"));
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn a_request_hidden_in_a_body_stays_body() {
    let fx = Hostile::start().await;
    let hidden = hidden_request();
    let request = format!(
        "POST /cross-river/x HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{hidden}",
        fx.host(),
        hidden.len()
    );
    let responses = exchange_all(fx.addr(), request).await;
    assert_eq!(responses.len(), 1, "{responses:?}");
    let echo = fx.assert_clean_echo(&responses[0], &fx.bearer());
    assert_eq!(echo["path"], "/cross-river/api/x");
    assert_eq!(echo["body_sha256"], sha256_hex(hidden.as_bytes()));
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_each_forwarded_once() {
    // Two requests back to back in one write: each is routed and credentialed on its own; the
    // second one's caller `Authorization` is replaced like the first's.
    let fx = Hostile::start().await;
    let host = fx.host();
    let request = format!(
        "POST /cross-river/one HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello\
         GET /partner/two HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    let responses = exchange_all(fx.addr(), request).await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    let first = fx.assert_clean_echo(&responses[0], &fx.bearer());
    assert_eq!(first["path"], "/cross-river/api/one");
    let second = fx.assert_clean_echo(&responses[1], &format!("Bearer {PAT}"));
    assert_eq!(second["path"], "/partner/api/two");
    fx.assert_vendor_saw(2, 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_pipelined_behind_a_clean_request_is_400() {
    // The sniffer follows framing, so the second head of one write is judged too: the clean
    // GET is forwarded, the CL+TE POST behind it is refused and never reaches the vendor.
    let fx = Hostile::start().await;
    let host = fx.host();
    let request = format!(
        "GET /partner/first HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /partner/second HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\
         Content-Length: 5\r\n\r\n0\r\n\r\n"
    );
    let responses = exchange_all(fx.addr(), request).await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    let first = fx.assert_clean_echo(&responses[0], &format!("Bearer {PAT}"));
    assert_eq!(first["path"], "/partner/api/first");
    assert_eq!(responses[1].status, 400, "{}", responses[1].text());
    assert_eq!(responses[1].header("x-relay-error"), Some("bad_framing"));
    fx.assert_no_secret(&responses[1]);
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn a_body_shaped_like_a_smuggled_head_does_not_taint_the_next_request() {
    // A body that reads like a CL+TE head is body: the next request on the connection is clean.
    let fx = Hostile::start().await;
    let host = fx.host();
    let body = "X / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let request = format!(
        "POST /partner/first HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{body}\
         GET /partner/second HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let responses = exchange_all(fx.addr(), request).await;
    assert_eq!(responses.len(), 2, "{responses:?}");
    fx.assert_clean_echo(&responses[0], &format!("Bearer {PAT}"));
    let second = fx.assert_clean_echo(&responses[1], &format!("Bearer {PAT}"));
    assert_eq!(second["path"], "/partner/api/second");
    fx.assert_vendor_saw(2, 0);
}

#[tokio::test]
async fn websocket_upgrade_is_refused() {
    // No route opts in to upgrades: a protocol switch would leave a credentialed tunnel that
    // authrelay no longer sees into.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "upgrade_refused").await;
}

#[tokio::test]
async fn h2c_upgrade_is_refused() {
    // h2c smuggling: a vendor that switches to HTTP/2 on `Upgrade: h2c` opens a channel whose
    // later requests authrelay never routes.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/x HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        fx.host()
    );
    fx.refused(request, 400, "upgrade_refused").await;
}

// ------------------------------------------------------------------------------------------
// Upstream tricks: the vendor's answers pass back as they are, and never make authrelay send
// credentials anywhere else or ask for tokens without bound.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn redirect_to_another_host_is_passed_back_and_not_followed() {
    let fx = Hostile::start().await;
    let trap = Trap::start("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/steal?from=vendor", trap.addr);
    let encoded: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
    let variants = [301, 302, 303, 307, 308]
        .into_iter()
        .flat_map(|status| [("/cross-river", status), ("/partner", status)]);
    fx.each(variants, |(route, status)| {
        let (fx, target, encoded) = (&fx, &target, &encoded);
        async move {
            let request = format!(
                "POST {route}/_redirect?to={encoded}&status={status} HTTP/1.1\r\nHost: {}\r\n\
                 Content-Length: 5\r\n\r\nhello",
                fx.host()
            );
            let response = exchange(fx.addr(), request).await;
            assert_eq!(response.status, status, "{}", response.text());
            assert_eq!(response.header("location"), Some(target.as_str()));
            assert_eq!(response.header("x-relay-error"), None);
            fx.assert_no_secret(&response);
            fx.assert_vendor_saw(1, 0);
        }
    })
    .await;
    assert_eq!(trap.connections(), 0, "a redirect was followed");
}

#[tokio::test]
async fn relative_redirect_to_the_same_vendor_is_not_followed() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/_redirect?to=%2Fcross-river%2Fapi%2Felsewhere&status=307 HTTP/1.1\r\n\
         Host: {}\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    assert_eq!(response.status, 307, "{}", response.text());
    assert_eq!(
        response.header("location"),
        Some("/cross-river/api/elsewhere"),
        "passed back as is, not rewritten"
    );
    fx.assert_no_secret(&response);
    fx.assert_vendor_saw(1, 0);
}

#[tokio::test]
async fn a_401_storm_gets_one_replay_then_401s_pass_back_without_token_requests() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/_status/401 HTTP/1.1\r\nHost: {}\r\n\r\n",
        fx.host()
    );
    // The first 401: the used token is dropped, one fresh token, one replay, then the 401.
    let response = exchange(fx.addr(), &request).await;
    assert_eq!(response.status, 401, "{}", response.text());
    assert_eq!(response.header("x-relay-error"), None);
    fx.assert_no_secret(&response);
    fx.assert_vendor_saw(2, 1);
    // A storm after that: every request is sent once and its 401 goes back; no token request.
    let storm: Vec<_> = (0..20)
        .map(|_| tokio::spawn(exchange(fx.addr(), request.clone())))
        .collect();
    for call in storm {
        let response = call.await.unwrap();
        assert_eq!(response.status, 401, "{}", response.text());
        assert_eq!(response.header("x-relay-error"), None);
        fx.assert_no_secret(&response);
    }
    fx.assert_vendor_saw(22, 1);
}

#[tokio::test]
async fn a_401_storm_on_a_static_token_is_never_replayed() {
    let fx = Hostile::start().await;
    let request = format!(
        "GET /partner/_status/401 HTTP/1.1\r\nHost: {}\r\n\r\n",
        fx.host()
    );
    let storm: Vec<_> = (0..10)
        .map(|_| tokio::spawn(exchange(fx.addr(), request.clone())))
        .collect();
    for call in storm {
        let response = call.await.unwrap();
        assert_eq!(response.status, 401, "{}", response.text());
        fx.assert_no_secret(&response);
    }
    fx.assert_vendor_saw(10, 0);
}

#[tokio::test]
async fn a_vendor_echoing_our_authorization_is_the_vendors_doing() {
    // What authrelay guarantees, and what it cannot:
    // - it adds no secret to any response, its own answers hold none, and the response head it
    //   passes back holds none unless the vendor put it there;
    // - the client secret and refresh tokens only ever go to the token endpoint, so no API
    //   answer can reflect them;
    // - it refuses what lets a caller make any server reflect the request (TRACE, TRACK);
    // - it does not read or rewrite vendor bodies (they stream): a vendor endpoint that echoes
    //   request headers (as the sandbox's does) shows the caller the token authrelay injected.
    //   That is the vendor's doing; scrubbing it would need buffering every body, and would
    //   still miss encoded forms. Routes should not expose such endpoints.
    let fx = Hostile::start().await;
    let request = format!(
        "GET /cross-river/debug/echo HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {CALLER_TOKEN}\r\n\r\n",
        fx.host()
    );
    let response = exchange(fx.addr(), request).await;
    // The token is in the body exactly where the vendor echoed our header, nowhere else.
    let echo = fx.assert_clean_echo(&response, &fx.bearer());
    assert_eq!(echo["vendor"], "cross-river");
    fx.assert_vendor_saw(1, 0);
}

// ------------------------------------------------------------------------------------------
// Logs: the real binary at TRACE, every dependency included.
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_requests_leave_no_secret_in_trace_logs() {
    let vendor = sandbox().await;
    let proxy = LoggedProxy::spawn(&vendor);
    let addr = proxy.addr;
    let host = addr.to_string();
    let hidden = hidden_request();
    let mut tokens = Vec::new();
    let hostile = [
        format!(
            "GET /cross-river/x HTTP/1.1\r\nHost: {host}\r\nConnection: Authorization\r\n\
             Authorization: Bearer {CALLER_TOKEN}\r\nProxy-Authorization: Bearer {CALLER_PROXY_KEY}\r\n\r\n"
        ),
        format!(
            "GET /cross-river/x HTTP/1.1\r\nHost: {host}\r\nProxy_Authorization: Bearer {CALLER_PROXY_KEY}\r\n\r\n"
        ),
        format!(
            "POST /partner/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
            hidden.len() + 5
        ),
        format!(
            "GET /cross-river/x HTTP/1.1\r\nHost: {host}\r\nX-Note: a\rAuthorization: Bearer {CALLER_TOKEN}\r\n\r\n"
        ),
        format!(
            "POST /cross-river/x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n\
             ffffffffffffffffff\r\n{CALLER_TOKEN}\r\n0\r\n\r\n"
        ),
        format!(
            "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\
             Authorization: Bearer {CALLER_TOKEN}\r\n\r\n"
        ),
        format!(
            "GET /partner/a/../../cross-river/x?access_token={CALLER_TOKEN} HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ),
        format!("GET /cross-river/_status/401 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /cross-river/_status/401 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /cross-river/_redirect HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!(
            "GET /partner/x HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        ),
        // The replay after the 401s used a fresh token: see it too.
        format!("GET /cross-river/y HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ];
    for request in &hostile {
        let mut connection = RawConnection::open(addr).await;
        connection.send(request.as_bytes()).await;
        let Some(response) = connection.response().await else {
            continue;
        };
        let echo = serde_json::from_slice::<serde_json::Value>(&response.body);
        if let (200, Ok(echo)) = (response.status, echo) {
            for value in echoed_header(&echo, "authorization") {
                if let Some(token) = value.strip_prefix("Bearer ") {
                    tokens.push(token.to_owned());
                }
            }
        }
    }
    let log = proxy.stop();
    assert!(log.lines().count() > 50, "TRACE logging was on:\n{log}");
    let mut secrets = vec![
        fixture::CLIENT_SECRET.to_owned(),
        PAT.to_owned(),
        CALLER_TOKEN.to_owned(),
        CALLER_PROXY_KEY.to_owned(),
    ];
    secrets.extend(tokens);
    assert!(secrets.len() >= 6, "tokens seen by the vendor: {secrets:?}");
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "`{secret}` in the log");
    }
}
