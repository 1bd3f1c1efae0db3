use std::time::Duration;

use super::*;
use crate::config::{RouteMatch, UpstreamUrl};

fn route(
    name: &str,
    prefix: &str,
    host: Option<&str>,
    methods: Option<Vec<Method>>,
) -> RouteConfig {
    RouteConfig {
        account: crate::config::RouteAccount::None,
        name: name.into(),
        matcher: RouteMatch {
            path_prefix: prefix.into(),
            host: host.map(Into::into),
            methods,
        },
        strip_prefix: false,
        upstream: UpstreamUrl {
            scheme: http::uri::Scheme::HTTPS,
            authority: "api.example.com".parse().unwrap(),
            base_path: String::new(),
        },
        provider: "p".into(),
        headers: Vec::new(),
        callers: None,
        upgrade: false,
        max_body: 10 << 20,
        max_replay_body: 1024 * 1024,
        timeout: Duration::from_secs(30),
    }
}

fn origin<'a>(method: &'a Method, path: &'a str) -> RouteRequest<'a> {
    RouteRequest {
        method,
        host: Some("127.0.0.1"),
        absolute_form: false,
        path,
    }
}

fn table() -> RouteTable {
    RouteTable::new([
        route("root", "/", None, None),
        route("a", "/a", None, None),
        route("ab", "/a/b", None, None),
        route("a-host", "/a", Some("vendor.example"), None),
        route("get-only", "/g", None, Some(vec![Method::GET])),
    ])
}

fn name(result: Result<&Arc<RouteConfig>, NoRoute>) -> Result<&str, NoRoute> {
    result.map(|route| route.name.as_str())
}

#[test]
fn longest_prefix_wins_at_segment_boundaries() {
    let table = table();
    let get = Method::GET;
    assert_eq!(name(table.match_request(origin(&get, "/a/b/c"))), Ok("ab"));
    assert_eq!(name(table.match_request(origin(&get, "/a/bc"))), Ok("a"));
    assert_eq!(name(table.match_request(origin(&get, "/a"))), Ok("a"));
    assert_eq!(name(table.match_request(origin(&get, "/ab"))), Ok("root"));
}

#[test]
fn host_specific_route_beats_a_hostless_one() {
    let table = table();
    let get = Method::GET;
    let request = RouteRequest {
        host: Some("vendor.example"),
        ..origin(&get, "/a/x")
    };
    assert_eq!(name(table.match_request(request)), Ok("a-host"));
    let request = RouteRequest {
        host: Some("VENDOR.example"),
        ..origin(&get, "/a/x")
    };
    assert_eq!(name(table.match_request(request)), Ok("a-host"));
}

#[test]
fn absolute_form_matches_only_routes_naming_its_host() {
    let table = table();
    let get = Method::GET;
    let to_vendor = RouteRequest {
        host: Some("vendor.example"),
        absolute_form: true,
        ..origin(&get, "/a/x")
    };
    assert_eq!(name(table.match_request(to_vendor)), Ok("a-host"));
    let elsewhere = RouteRequest {
        host: Some("evil.example"),
        absolute_form: true,
        ..origin(&get, "/a/x")
    };
    assert_eq!(name(table.match_request(elsewhere)), Err(NoRoute::NotFound));
}

#[test]
fn methods_filter_and_connect_trace_never_route() {
    let table = table();
    assert_eq!(
        name(table.match_request(origin(&Method::GET, "/g/1"))),
        Ok("get-only")
    );
    assert_eq!(
        name(table.match_request(origin(&Method::POST, "/g/1"))),
        Ok("root")
    );
    assert_eq!(
        name(table.match_request(origin(&Method::CONNECT, "/a"))),
        Err(NoRoute::MethodRefused)
    );
    assert_eq!(
        name(table.match_request(origin(&Method::TRACE, "/a"))),
        Err(NoRoute::MethodRefused)
    );
}

#[test]
fn paths_are_normalized_before_matching() {
    assert_eq!(normalize_path("/a/./b//c/").as_deref(), Some("/a/b/c/"));
    assert_eq!(normalize_path("/a/../b").as_deref(), Some("/b"));
    // Encoded dot segments are refused: an upstream that decodes them could resolve them again.
    assert_eq!(normalize_path("/a/%2E%2e/b"), None);
    assert_eq!(normalize_path("/a/%2e/b"), None);
    assert_eq!(normalize_path("/a/b/..").as_deref(), Some("/a/"));
    assert_eq!(normalize_path("/").as_deref(), Some("/"));
    assert_eq!(normalize_path("/.."), None);
    assert_eq!(normalize_path("/a;v=1/b").as_deref(), Some("/a;v=1/b"));
    assert_eq!(normalize_path("a/b"), None);
}

#[test]
fn upstream_target_joins_base_path_and_keeps_query_bytes() {
    let mut r = route("a", "/crossbeam", None, None);
    r.upstream.base_path = "/v1".into();
    assert_eq!(
        upstream_path_and_query(&r, "/crossbeam/partners", Some("a=%20&b")),
        "/v1/crossbeam/partners?a=%20&b"
    );
    r.strip_prefix = true;
    assert_eq!(
        upstream_path_and_query(&r, "/crossbeam/partners", None),
        "/v1/partners"
    );
    assert_eq!(upstream_path_and_query(&r, "/crossbeam", None), "/v1/");
    r.upstream.base_path = String::new();
    assert_eq!(upstream_path_and_query(&r, "/crossbeam", Some("")), "/?");
}

#[test]
fn request_host_drops_the_port() {
    let uri: Uri = "/x".parse().unwrap();
    assert_eq!(
        request_host(&uri, Some("example.com:8080")),
        Some("example.com")
    );
    assert_eq!(request_host(&uri, Some("[::1]:8080")), Some("[::1]"));
    assert_eq!(request_host(&uri, Some("[::1]")), Some("[::1]"));
    let absolute: Uri = "http://Vendor.example:80/x".parse().unwrap();
    assert_eq!(
        request_host(&absolute, Some("other")),
        Some("Vendor.example")
    );
}

#[test]
fn paths_an_upstream_could_read_differently_are_refused() {
    for path in [
        "/partner/..%2F..%2Fadmin",
        "/partner/..%2f",
        "/partner/%5c..%5cadmin",
        "/partner/..\\admin",
        "/partner/..;/admin",
        "/partner/.;x/admin",
        "/partner/a%00b",
    ] {
        assert_eq!(normalize_path(path), None, "{path}");
    }
}

/// Found by `fuzz/fuzz_targets/route_match.rs` (input `GET /x`, `Host: [::1]:8080`, routes
/// `/x ::1` and `/x`): a route naming an IPv6 host took no request, because the request's host
/// keeps its brackets and the route's does not.
#[test]
fn ipv6_host_routes_match_bracketed_request_hosts() {
    let table = RouteTable::new([
        route("v6", "/x", Some("::1"), None),
        route("any", "/x", None, None),
    ]);
    let get = Method::GET;
    let uri: Uri = "/x".parse().unwrap();
    for header in ["[::1]:8080", "[::1]", "[0:0::1]", "[0:0:0:0:0:0:0:1]:80"] {
        let request = RouteRequest {
            host: request_host(&uri, Some(header)),
            ..origin(&get, "/x")
        };
        assert_eq!(name(table.match_request(request)), Ok("v6"), "{header}");
    }
    let absolute: Uri = "http://[::1]:8080/x".parse().unwrap();
    let request = RouteRequest {
        host: request_host(&absolute, None),
        absolute_form: true,
        ..origin(&get, "/x")
    };
    assert_eq!(name(table.match_request(request)), Ok("v6"));
    for other in ["[::2]", "[::1", "::1]", "[not-an-address]", "[127.0.0.1]"] {
        let request = RouteRequest {
            host: Some(other),
            ..origin(&get, "/x")
        };
        assert_eq!(name(table.match_request(request)), Ok("any"), "{other}");
    }
}

#[test]
fn the_prefix_index_chooses_what_a_full_scan_chooses() {
    // A deterministic spread of prefixes, hosts and methods, large enough to be indexed.
    let segments = ["a", "b", "api", "v1", "x"];
    let hosts = [None, Some("a.example"), Some("b.example")];
    let methods = [None, Some(vec![Method::GET]), Some(vec![Method::POST])];
    let mut seed: u32 = 7;
    let mut next = |bound: usize| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % bound
    };
    let mut routes = vec![route("root", "/", None, None)];
    for i in 0..300 {
        let depth = 1 + next(3);
        let prefix: String = (0..depth)
            .map(|_| format!("/{}", segments[next(segments.len())]))
            .collect();
        let host = hosts[next(hosts.len())];
        let method = methods[next(methods.len())].clone();
        routes.push(route(&format!("r{i}"), &prefix, host, method));
    }
    let table = RouteTable::new(routes);
    let index = table
        .by_prefix
        .as_ref()
        .expect("a table this large is indexed");
    let mut compared = 0;
    for _ in 0..3_000 {
        let depth = next(5);
        let mut path: String = (0..depth)
            .map(|_| format!("/{}", segments[next(segments.len())]))
            .collect();
        if path.is_empty() {
            path.push('/');
        }
        if next(4) == 0 {
            path.push('/');
        }
        let method = [Method::GET, Method::POST, Method::PUT][next(3)].clone();
        let host = ["a.example", "b.example", "127.0.0.1"][next(3)];
        let request = RouteRequest {
            method: &method,
            host: Some(host),
            absolute_form: next(3) == 0,
            path: &path,
        };
        let scanned = name(table.match_scan(&request));
        let indexed = name(table.match_indexed(index, &request));
        assert_eq!(indexed, scanned, "{method} {host} {path}");
        compared += usize::from(scanned.is_ok());
    }
    assert!(compared > 1_000, "most requests found a route: {compared}");

    // A path far longer than any prefix starts its lookups at the longest prefix's length.
    let long = "/a".repeat(4_000);
    let get = Method::GET;
    let request = RouteRequest {
        method: &get,
        host: Some("127.0.0.1"),
        absolute_form: false,
        path: &long,
    };
    assert_eq!(
        name(table.match_indexed(index, &request)),
        name(table.match_scan(&request))
    );
}
