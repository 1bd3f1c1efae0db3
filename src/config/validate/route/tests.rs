use super::*;

#[test]
fn path_prefixes_are_normalised() {
    assert_eq!(normalize_path_prefix("/"), Ok("/".into()));
    assert_eq!(normalize_path_prefix("/crossbeam"), Ok("/crossbeam".into()));
    assert_eq!(
        normalize_path_prefix("/crossbeam/"),
        Ok("/crossbeam".into())
    );
    assert_eq!(
        normalize_path_prefix("/api/v1.2/x"),
        Ok("/api/v1.2/x".into())
    );
    assert_eq!(normalize_path_prefix("/a%20b"), Ok("/a%20b".into()));
}

#[test]
fn path_prefixes_refuse_what_a_request_path_cannot_equal() {
    for bad in [
        "",
        "crossbeam",
        "/a//b",
        "//",
        "/a/../b",
        "/a/./b",
        "/..",
        "/a?x=1",
        "/a#f",
        "/a b",
    ] {
        assert!(normalize_path_prefix(bad).is_err(), "{bad:?}");
    }
}

/// Found by the `route_match` fuzz target (its check that every route is reachable): these
/// loaded, but `route::normalize_path` resolves or refuses them in every request path, so no
/// request could ever take the route.
#[test]
fn path_prefixes_refuse_encoded_dot_segments_and_separators() {
    for bad in [
        "/a/%2e%2e",
        "/a/%2E",
        "/a/.%2e/b",
        "/a/%2e./b",
        "/a/..;x",
        "/a/.;x=1",
        "/a%2Fb",
        "/a%5cb",
        "/a%00",
    ] {
        assert!(normalize_path_prefix(bad).is_err(), "{bad:?}");
    }
    for good in ["/a/;x", "/a;x", "/a/...", "/a/%2e%2e%2e", "/a/%252e%252e"] {
        assert_eq!(
            normalize_path_prefix(good),
            Ok(good.to_string()),
            "{good:?}"
        );
    }
}

#[test]
fn hosts_are_lower_case_names_or_addresses() {
    assert_eq!(
        normalize_host("API.GetCrossbeam.com"),
        Ok("api.getcrossbeam.com".into())
    );
    assert_eq!(normalize_host("example.com."), Ok("example.com".into()));
    assert_eq!(normalize_host("127.0.0.1"), Ok("127.0.0.1".into()));
    assert_eq!(normalize_host("::1"), Ok("::1".into()));
    assert_eq!(normalize_host("0:0:0:0:0:0:0:1"), Ok("::1".into()));
    assert_eq!(normalize_host("2001:DB8::0:1"), Ok("2001:db8::1".into()));
    for bad in [
        "",
        "api.example.com:443",
        "https://api.example.com",
        "api.example.com/x",
        "[::1]",
        "-bad.example.com",
        "a..b",
        "*.example.com",
    ] {
        assert!(normalize_host(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn methods_are_upper_case_and_routable() {
    assert_eq!(parse_method("GET"), Ok(Method::GET));
    assert_eq!(parse_method("PROPFIND").unwrap().as_str(), "PROPFIND");
    assert!(parse_method("get").is_err());
    assert!(parse_method("CONNECT").is_err());
    assert!(parse_method("TRACE").is_err());
    assert!(parse_method("GE T").is_err());
}

#[test]
fn upstreams_keep_authority_and_base_path() {
    let upstream = parse_upstream("https://API.example.com/base/").unwrap();
    assert_eq!(upstream.scheme, Scheme::HTTPS);
    assert_eq!(upstream.authority, "api.example.com");
    assert_eq!(upstream.base_path, "/base");
    let upstream = parse_upstream("http://127.0.0.1:8081").unwrap();
    assert_eq!(upstream.authority, "127.0.0.1:8081");
    assert_eq!(upstream.base_path, "");
    let upstream = parse_upstream("http://[::1]:9000/v1").unwrap();
    assert_eq!(upstream.authority, "[::1]:9000");
    for bad in [
        "api.example.com",
        "ftp://example.com",
        "https://u:p@example.com",
        "https://example.com/?a=1",
        "https://example.com/#x",
        "unix:/run/sock",
    ] {
        assert!(parse_upstream(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn forbidden_headers_are_refused() {
    assert!(header_name("Xbeam-Organization").is_ok());
    for bad in [
        "Connection",
        "TE",
        "Host",
        "Content-Length",
        "Authorization",
        "Proxy-Authorization",
        "bad name",
    ] {
        assert!(header_name(bad).is_err(), "{bad:?}");
    }
}
