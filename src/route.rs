//! Step 1 of the request path: which route takes a request, and what path it forwards.
//!
//! Matching runs on the normalized path (dot segments resolved, empty segments dropped), never on
//! the query, and the normalized path is also what is forwarded, so the upstream cannot be made to
//! see a different path than the one that chose the route.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;

use http::{Method, Uri};

use crate::config::RouteConfig;

/// All routes of one configuration, ready to match.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<RouteConfig>>,
    /// Route indices by exact `path_prefix`, in file order; only for tables large enough that
    /// scanning every route costs more than a few map lookups (see [`INDEX_FROM`]).
    by_prefix: Option<PrefixIndex>,
}

#[derive(Debug)]
struct PrefixIndex {
    routes_by_prefix: HashMap<String, Vec<usize>>,
    /// The longest prefix: a request path is cut to it before the lookups start, so that a
    /// long path costs no more than a short one (each lookup hashes what remains).
    longest: usize,
}

/// From this many routes on, matching looks up the request path's prefixes (one map lookup per
/// segment) instead of testing every route: about 7-11 ns per route scanned against ~30 ns per
/// lookup (BENCHMARKS.md, route match with 1, 100 and 1,000 routes).
const INDEX_FROM: usize = 24;

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    pub method: &'a Method,
    /// Host name without port, from the absolute-form authority or the `Host` header.
    pub host: Option<&'a str>,
    /// True for an HTTP/1 absolute-form target (`GET http://host/...`): a proxy-style request.
    pub absolute_form: bool,
    /// The normalized path (see [`normalize_path`]).
    pub path: &'a str,
}

/// Why a request found no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// Nothing takes this host and path.
    NotFound,
    /// CONNECT or TRACE: never routed, whatever the target.
    MethodRefused,
}

// === impl RouteTable ===

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = RouteConfig>) -> Self {
        let routes: Vec<Arc<RouteConfig>> = routes.into_iter().map(Arc::new).collect();
        let by_prefix = (routes.len() >= INDEX_FROM).then(|| {
            let mut routes_by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
            for (i, route) in routes.iter().enumerate() {
                routes_by_prefix
                    .entry(route.matcher.path_prefix.clone())
                    .or_default()
                    .push(i);
            }
            let longest = routes_by_prefix.keys().map(String::len).max().unwrap_or(1);
            PrefixIndex {
                routes_by_prefix,
                longest,
            }
        });
        Self { routes, by_prefix }
    }

    /// The most specific route for the request: longest path prefix, then a route naming the host
    /// over one that does not, then file order. An absolute-form request only matches routes whose
    /// `host` is its authority, so authrelay is never an open proxy.
    pub fn match_request(&self, request: RouteRequest<'_>) -> Result<&Arc<RouteConfig>, NoRoute> {
        if request.method == Method::CONNECT || request.method == Method::TRACE {
            return Err(NoRoute::MethodRefused);
        }
        if let Some(by_prefix) = &self.by_prefix {
            return self.match_indexed(by_prefix, &request);
        }
        self.match_scan(&request)
    }

    /// Every route tested; the most specific that matches wins.
    fn match_scan(&self, request: &RouteRequest<'_>) -> Result<&Arc<RouteConfig>, NoRoute> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, route)| matches(route, request))
            .max_by_key(|(index, route)| {
                let specificity = (
                    route.matcher.path_prefix.len(),
                    route.matcher.host.is_some(),
                );
                // max_by_key keeps the last maximum; the reversed index makes the first one win.
                (specificity, std::cmp::Reverse(*index))
            })
            .map(|(_, route)| route)
            .ok_or(NoRoute::NotFound)
    }

    /// The same choice as [`Self::match_scan`], from the longest of the path's own prefixes down:
    /// the first prefix with a matching route holds the answer (a longer prefix always wins), and
    /// within it a route naming the host beats one that does not, then file order.
    fn match_indexed(
        &self,
        index: &PrefixIndex,
        request: &RouteRequest<'_>,
    ) -> Result<&Arc<RouteConfig>, NoRoute> {
        let mut candidate = request.path;
        // No prefix is longer than `longest`: start at the last segment boundary within it.
        if candidate.len() > index.longest {
            let head = &candidate.as_bytes()[..=index.longest];
            candidate = match head.iter().rposition(|&byte| byte == b'/') {
                Some(0) | None => "/",
                Some(cut) => &candidate[..cut],
            };
        }
        loop {
            if let Some(indices) = index.routes_by_prefix.get(candidate) {
                let best = indices
                    .iter()
                    .map(|&i| &self.routes[i])
                    .filter(|route| matches(route, request))
                    // min_by_key keeps the first minimum: file order among equals.
                    .min_by_key(|route| route.matcher.host.is_none());
                if let Some(route) = best {
                    return Ok(route);
                }
            }
            if candidate == "/" || candidate.is_empty() {
                return Err(NoRoute::NotFound);
            }
            candidate = match candidate.rfind('/') {
                Some(0) => "/",
                Some(cut) => &candidate[..cut],
                None => "/",
            };
        }
    }

    /// True when some route names `host` in its match: a request for it is meant for us.
    pub fn names_host(&self, host: &str) -> bool {
        self.routes.iter().any(|route| {
            route
                .matcher
                .host
                .as_deref()
                .is_some_and(|want| host_matches(want, host))
        })
    }
}

fn matches(route: &RouteConfig, request: &RouteRequest<'_>) -> bool {
    let matcher = &route.matcher;
    let host_ok = match (&matcher.host, request.host) {
        (Some(want), Some(got)) => host_matches(want, got),
        (Some(_), None) => false,
        (None, _) => !request.absolute_form,
    };
    let method_ok = matcher
        .methods
        .as_ref()
        .is_none_or(|methods| methods.contains(request.method));
    host_ok && method_ok && prefix_matches(&matcher.path_prefix, request.path)
}

/// True when the request's host is the route's. An IPv6 literal arrives bracketed (`[::1]`, as
/// the authority and `Host` write it) while a route names it bare and canonical (`::1`), so it is
/// compared as an address.
fn host_matches(want: &str, got: &str) -> bool {
    match got
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
    {
        Some(inner) => inner
            .parse::<Ipv6Addr>()
            .is_ok_and(|ip| want.parse::<Ipv6Addr>() == Ok(ip)),
        None => want.eq_ignore_ascii_case(got),
    }
}

/// True when `path` is `prefix` or lies below it at a segment boundary (`/a` takes `/a/b`, not `/ab`).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path and query to send upstream: base path + (path, without the prefix if stripped) + query.
/// The query is kept byte for byte.
pub fn upstream_path_and_query(route: &RouteConfig, path: &str, query: Option<&str>) -> String {
    let mut rest = path;
    if route.strip_prefix && route.matcher.path_prefix != "/" {
        rest = path
            .strip_prefix(route.matcher.path_prefix.as_str())
            .unwrap_or(path);
    }
    let base = route.upstream.base_path.as_str();
    let mut target =
        String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1);
    target.push_str(base);
    if rest.is_empty() || !rest.starts_with('/') {
        target.push('/');
    }
    target.push_str(rest);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    target
}

/// Resolves `.` and `..` segments and drops empty segments, keeping a trailing `/`. Returns
/// `None` when `..` would climb above the root, and for paths an upstream could read differently
/// than this function does: encoded slashes or backslashes (`%2F`, `%5C`, `\`, which IIS and
/// some frameworks treat as separators), NUL (`%00`), percent-encoded dot segments (`%2e%2e`,
/// which some upstreams decode and resolve again) and dot segments carrying `;` parameters
/// (`..;`, which Tomcat resolves).
pub fn normalize_path(path: &str) -> Option<String> {
    resolve_path(path).map(|resolved| resolved.path)
}

/// A normalized path, and how far up its `..` segments reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPath {
    pub path: String,
    /// The fewest segments left on the way (`usize::MAX` without `..`): a route whose prefix
    /// has more segments was reached by climbing out of another one.
    pub lowest_depth: usize,
}

/// [`normalize_path`], keeping the depth its `..` segments climbed to.
pub fn resolve_path(path: &str) -> Option<ResolvedPath> {
    if !path.starts_with('/') {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut lowest_depth = usize::MAX;
    let mut last = Segment::Empty;
    for segment in path.split('/') {
        last = classify(segment)?;
        match last {
            Segment::Empty | Segment::Current => {}
            Segment::Parent => {
                segments.pop()?;
                lowest_depth = lowest_depth.min(segments.len());
            }
            Segment::Name => segments.push(segment),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in &segments {
        normalized.push('/');
        normalized.push_str(segment);
    }
    let ends_with_slash = matches!(last, Segment::Empty | Segment::Current | Segment::Parent);
    if normalized.is_empty() || ends_with_slash {
        normalized.push('/');
    }
    Some(ResolvedPath {
        path: normalized,
        lowest_depth,
    })
}

/// Segments of a normalized path prefix: `/` has none, `/a/b` two.
pub fn prefix_depth(prefix: &str) -> usize {
    prefix
        .split('/')
        .filter(|segment| !segment.is_empty())
        .count()
}

#[derive(Clone, Copy)]
enum Segment {
    Empty,
    Current,
    Parent,
    Name,
}

/// What a segment means, or `None` when it is ambiguous (see [`normalize_path`]).
fn classify(segment: &str) -> Option<Segment> {
    let bytes = segment.as_bytes();
    let escaped = |code: &[u8]| bytes.windows(3).any(|w| w.eq_ignore_ascii_case(code));
    if bytes.contains(&b'\\') || escaped(b"%2f") || escaped(b"%5c") || escaped(b"%00") {
        return None;
    }
    let (bare, has_params) = match segment.split_once(';') {
        Some((bare, _)) => (bare, true),
        None => (segment, false),
    };
    let is = |forms: &[&str]| forms.iter().any(|form| bare.eq_ignore_ascii_case(form));
    let meaning = if bare.is_empty() {
        if has_params {
            Segment::Name
        } else {
            Segment::Empty
        }
    } else if is(&["%2e", "%2e%2e", ".%2e", "%2e."]) {
        return None;
    } else if bare == "." {
        Segment::Current
    } else if bare == ".." {
        Segment::Parent
    } else {
        Segment::Name
    };
    match meaning {
        Segment::Current | Segment::Parent if has_params => None,
        meaning => Some(meaning),
    }
}

/// The host a request names: the absolute-form or HTTP/2 authority, else the `Host` header;
/// without port, lower-cased by the caller's comparison.
pub fn request_host<'a>(uri: &'a Uri, host_header: Option<&'a str>) -> Option<&'a str> {
    let authority = uri.authority().map(|a| a.host()).or_else(|| {
        host_header.map(|h| {
            // `[::1]:8080` keeps its brackets in Uri::host; do the same here.
            match h.rfind(':') {
                Some(colon) if !h[colon..].contains(']') => &h[..colon],
                _ => h,
            }
        })
    })?;
    (!authority.is_empty()).then_some(authority)
}

/// `localhost`, `*.localhost` (RFC 6761: never sent to DNS), `127.0.0.0/8`, `[::1]`.
pub fn is_loopback_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let suffix = ".localhost";
    let subdomain = host.len() > suffix.len()
        && host.is_char_boundary(host.len() - suffix.len())
        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
    if host.eq_ignore_ascii_case("localhost") || subdomain {
        return true;
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
