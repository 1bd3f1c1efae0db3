//! Route matching on arbitrary requests: routes loaded through `Config::from_yaml` (so path
//! prefixes and hosts are normalized as in production), then a request path, query, method, `Host`
//! header and absolute-form authority through `route::normalize_path`, `route::request_host`,
//! `RouteTable::match_request` and `route::upstream_path_and_query`, as `proxy::match_route` and
//! `proxy::forward` call them.
//!
//! Checked: a normalized path starts with `/`, holds no `//`, no dot segment (plain, encoded, or
//! with `;` parameters), no `%2F`, `%5C`, `%00` or `\`, and normalizing it again changes nothing;
//! the chosen route is the one an independent model picks (longest prefix at a segment boundary,
//! then a route naming the host, then file order; hosts compared as hosts: case-insensitive names,
//! IPv6 literals by address); the upstream target is base path + (stripped) path + query and
//! builds a valid URI; and every loaded route is reachable by a request for its own prefix, host
//! and method.
#![no_main]

use std::net::Ipv6Addr;
use std::path::Path;
use std::sync::Arc;

use authrelay::Config;
use authrelay::config::RouteConfig;
use authrelay::route::{
    NoRoute, RouteRequest, RouteTable, normalize_path, request_host, upstream_path_and_query,
};
use http::{Method, Uri};
use libfuzzer_sys::fuzz_target;

/// The input as text:
///
/// ```text
/// GET /a/%2e%2e/b?x=1                                   method and target (origin or absolute form)
/// api.example:8080 h2                                   Host header (`-`: none); `h2`: HTTP/2
/// /api api.example GET,POST strip https://api.example/v2
/// /                                                     one route a line: path_prefix, host,
///                                                       methods, strip|keep, upstream; `-` or
///                                                       nothing leaves one out
/// ```
struct Input<'a> {
    method: &'a str,
    target: &'a str,
    host_header: Option<&'a str>,
    http2: bool,
    routes: Vec<RouteSpec<'a>>,
}

struct RouteSpec<'a> {
    prefix: Option<&'a str>,
    host: Option<&'a str>,
    methods: Option<Vec<&'a str>>,
    strip_prefix: bool,
    upstream: &'a str,
}

impl<'a> Input<'a> {
    fn read(text: &'a str) -> Input<'a> {
        let given = |word: Option<&'a str>| word.filter(|w| !w.is_empty() && *w != "-");
        let mut lines = text.split('\n');
        let (method, target) = lines
            .next()
            .unwrap_or_default()
            .split_once(' ')
            .unwrap_or(("GET", "/"));
        let mut host_line = lines.next().unwrap_or_default().split(' ');
        let host_header = given(host_line.next());
        let http2 = host_line.next() == Some("h2");
        let routes = lines
            .map(|line| {
                let mut words = line.split(' ');
                RouteSpec {
                    prefix: given(words.next()),
                    host: given(words.next()),
                    methods: given(words.next()).map(|m| m.split(',').collect()),
                    strip_prefix: words.next() == Some("strip"),
                    upstream: given(words.next()).unwrap_or("https://api.example"),
                }
            })
            .collect();
        Input {
            method,
            target,
            host_header,
            http2,
            routes,
        }
    }
}

/// A YAML double-quoted scalar holding exactly `text`.
fn yaml_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn config_yaml(routes: &[RouteSpec<'_>]) -> String {
    let mut yaml = String::from(
        "listeners:\n  - bind: 127.0.0.1:0\nproviders:\n  p:\n    grant: static\n    token: t\nroutes:\n",
    );
    for (i, route) in routes.iter().enumerate() {
        yaml.push_str(&format!("  - name: r{i}\n    provider: p\n"));
        yaml.push_str(&format!(
            "    upstream: {}\n    strip_prefix: {}\n    match:\n",
            yaml_quoted(route.upstream),
            route.strip_prefix
        ));
        if let Some(prefix) = route.prefix {
            yaml.push_str(&format!("      path_prefix: {}\n", yaml_quoted(prefix)));
        }
        if let Some(host) = route.host {
            yaml.push_str(&format!("      host: {}\n", yaml_quoted(host)));
        }
        if let Some(methods) = &route.methods {
            let methods: Vec<String> = methods.iter().map(|m| yaml_quoted(m)).collect();
            yaml.push_str(&format!("      methods: [{}]\n", methods.join(", ")));
        }
    }
    yaml
}

/// What a dot segment looks like, plain or percent-encoded, with or without `;` parameters.
fn is_dot_segment(segment: &str) -> bool {
    let bare = segment
        .split(';')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bare = bare.replace("%2e", ".");
    bare == "." || bare == ".."
}

fn check_normalized(original: &str, normalized: &str) {
    assert!(
        normalized.starts_with('/'),
        "{original:?} -> {normalized:?}"
    );
    assert!(!normalized.contains("//"), "{original:?} -> {normalized:?}");
    assert!(!normalized.contains('\\'), "{original:?} -> {normalized:?}");
    let lower = normalized.to_ascii_lowercase();
    for encoded in ["%2f", "%5c", "%00"] {
        assert!(!lower.contains(encoded), "{original:?} -> {normalized:?}");
    }
    assert!(
        !normalized.split('/').any(is_dot_segment),
        "{original:?} -> {normalized:?}"
    );
    assert_eq!(
        normalize_path(normalized).as_deref(),
        Some(normalized),
        "normalizing {original:?} twice"
    );
}

/// Host equality as hosts: IPv6 literals (bracketed in a request) by address, names and IPv4
/// addresses ASCII-case-insensitively.
fn same_host(route: &str, request: &str) -> bool {
    let request_v6 = request
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok());
    match (route.parse::<Ipv6Addr>(), request_v6) {
        (Ok(want), Some(got)) => want == got,
        (Ok(_), None) | (Err(_), Some(_)) => false,
        (Err(_), None) => route.eq_ignore_ascii_case(request),
    }
}

/// The documented choice, written out independently of `RouteTable::match_request`.
fn model_match(
    routes: &[RouteConfig],
    method: &Method,
    host: Option<&str>,
    absolute_form: bool,
    path: &str,
) -> Result<usize, NoRoute> {
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(NoRoute::MethodRefused);
    }
    let mut best: Option<(usize, (usize, bool))> = None;
    for (i, route) in routes.iter().enumerate() {
        let matcher = &route.matcher;
        let prefix = matcher.path_prefix.as_str();
        let path_ok = prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/"));
        let host_ok = match (&matcher.host, host) {
            (Some(want), Some(got)) => same_host(want, got),
            (Some(_), None) => false,
            (None, _) => !absolute_form,
        };
        let method_ok = matcher
            .methods
            .as_ref()
            .is_none_or(|methods| methods.contains(method));
        if path_ok && host_ok && method_ok {
            let rank = (prefix.len(), matcher.host.is_some());
            if best.is_none_or(|(_, best_rank)| rank > best_rank) {
                best = Some((i, rank));
            }
        }
    }
    best.map(|(i, _)| i).ok_or(NoRoute::NotFound)
}

fn index_of(routes: &[RouteConfig], chosen: &Arc<RouteConfig>) -> usize {
    routes
        .iter()
        .position(|route| route.name == chosen.name)
        .expect("the chosen route is one of the config's")
}

/// Routes `uri` (with the given `Host` header) as the proxy does and compares with the model;
/// returns the model's answer.
fn route_request(
    config: &Config,
    table: &RouteTable,
    method: &Method,
    uri: &Uri,
    host_header: Option<&str>,
    absolute_form: bool,
) -> Result<usize, NoRoute> {
    let Some(path) = normalize_path(uri.path()) else {
        return Err(NoRoute::NotFound);
    };
    check_normalized(uri.path(), &path);
    let host = request_host(uri, host_header);
    let request = RouteRequest {
        method,
        host,
        absolute_form,
        path: &path,
    };
    let got = table
        .match_request(request)
        .map(|route| index_of(&config.routes, route));
    let want = model_match(&config.routes, method, host, absolute_form, &path);
    assert_eq!(got, want, "{method} {uri} host {host:?} (path {path:?})");

    if let Ok(i) = got {
        let route = &config.routes[i];
        let target = upstream_path_and_query(route, &path, uri.query());
        let prefix = route.matcher.path_prefix.as_str();
        let rest = if route.strip_prefix && prefix != "/" {
            path.strip_prefix(prefix).expect("a matched prefix")
        } else {
            path.as_str()
        };
        let slash = if rest.starts_with('/') { "" } else { "/" };
        let mut expected = format!("{}{slash}{rest}", route.upstream.base_path);
        if let Some(query) = uri.query() {
            expected.push('?');
            expected.push_str(query);
        }
        assert_eq!(target, expected);
        let upstream = Uri::builder()
            .scheme(route.upstream.scheme.clone())
            .authority(route.upstream.authority.clone())
            .path_and_query(target.as_str())
            .build();
        assert!(
            upstream.is_ok(),
            "{target:?} is not a valid upstream target"
        );
        let forwarded = target.split('?').next().unwrap_or_default();
        assert!(
            !forwarded.split('/').any(is_dot_segment),
            "{target:?} forwards a dot segment"
        );
    }
    got
}

/// How a client writes `host` in a URI or `Host` header.
fn host_text(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let input = Input::read(text);

    // Normalization alone, on text no URI parser has seen.
    let raw = input.target.split('?').next().unwrap_or_default();
    if let Some(normalized) = normalize_path(raw) {
        check_normalized(raw, &normalized);
    }

    if input.routes.len() > 8 {
        return;
    }
    let Ok(config) = Config::from_yaml(&config_yaml(&input.routes), Path::new(".")) else {
        return;
    };
    let table = RouteTable::new(config.routes.clone());

    // The request as it arrives.
    if let (Ok(method), Ok(uri)) = (
        Method::from_bytes(input.method.as_bytes()),
        Uri::try_from(input.target),
    ) {
        let absolute_form = !input.http2 && uri.scheme().is_some();
        let _ = route_request(
            &config,
            &table,
            &method,
            &uri,
            input.host_header,
            absolute_form,
        );
    }

    // Every route is reachable: a request for its own prefix, method and host takes it.
    let unnamed = "unnamed.invalid";
    if config
        .routes
        .iter()
        .any(|route| route.matcher.host.as_deref() == Some(unnamed))
    {
        return;
    }
    for (i, route) in config.routes.iter().enumerate() {
        let matcher = &route.matcher;
        let method = matcher
            .methods
            .as_ref()
            .map_or(Method::GET, |methods| methods[0].clone());
        let prefix = matcher.path_prefix.as_str();
        let uri = Uri::try_from(prefix)
            .unwrap_or_else(|_| panic!("routes[{i}]: path_prefix {prefix:?} is not a URI path"));
        let host = matcher.host.as_deref().map(host_text);
        let got = route_request(
            &config,
            &table,
            &method,
            &uri,
            Some(host.as_deref().unwrap_or(unnamed)),
            false,
        );
        assert_eq!(got, Ok(i), "routes[{i}] ({prefix:?}) is unreachable");
        if let Some(host) = &host {
            let uri = Uri::try_from(format!("http://{host}{prefix}"))
                .unwrap_or_else(|_| panic!("routes[{i}]: http://{host}{prefix} is not a URI"));
            let got = route_request(&config, &table, &method, &uri, None, true);
            assert_eq!(got, Ok(i), "routes[{i}] is unreachable in absolute form");
        }
    }
});
