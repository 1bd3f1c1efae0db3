//! What do steps 1 and 2 of the request path cost, in ns per request: matching a route in a
//! table of 1, 100 and 1,000 routes (`RouteTable::match_request`, plus the path normalization
//! that runs before it), and injecting a route's headers (`Credential::authorize` with the token
//! already at hand: `Authorization` plus the rendered header templates) into a caller's map of
//! ten headers? The token-cache hit, lookup plus injection, is `benches/token_cache.rs`;
//! here the token is at hand (a static credential), so only the headers are measured: alone,
//! and after the copy of the caller's map that the proxy makes for each attempt.
//!
//! The tables are built as a config load builds them: a generated `proxy.yaml` goes through
//! `Config::from_yaml`, then `RouteTable::new` over its routes (as `State::build` does). Routes
//! have distinct prefixes of one to six segments; every fourth names a host, two in five name
//! methods. Matching scans every route (the most specific wins, not the first), so a hit on
//! the first route does not end the scan early: it is probed beside a hit on the deepest route
//! (in the middle of the file), a hit on the last route, and a miss (404).
#![allow(clippy::expect_used, reason = "bench setup: a panic is a failed bench")]

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use authrelay::Config;
use authrelay::config::RouteConfig;
use authrelay::credential::{AccessToken, Credential, LifetimeSource};
use authrelay::route::{NoRoute, RouteRequest, RouteTable, resolve_path};
use authrelay::secret::Secret;
use criterion::{BatchSize, Bencher, BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};

const TABLE_SIZES: [usize; 3] = [1, 100, 1000];
/// The `Host` of requests for routes that name none (it is not looked at for them).
const RELAY_HOST: &str = "relay.internal";
/// No route's prefix takes it.
const MISS_PATH: &str = "/nowhere/v1/items/42";

/// Header injection: a fixed organization header (Crossbeam's), and a route whose headers are
/// templates of the token and of a token-response field (Xref's account id).
const INJECTION_YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  partner:
    grant: static
    token: pat-demo-token
  vendor:
    grant: client_credentials
    token_url: https://login.vendor.example/oauth/token
    client_id: vendor-client
    client_secret: vendor-secret
    scheme: Token
routes:
  - match: { path_prefix: /partner }
    upstream: https://api.partner.example/v2
    provider: partner
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: { path_prefix: /vendor }
    upstream: https://api.vendor.example/v1
    provider: vendor
    headers:
      X-Xref-Account: "{xref_account_id}"
      X-Api-Key: "{token}"
"#;
const FIXED_ROUTE: usize = 0;
const TEMPLATED_ROUTE: usize = 1;

/// What one generated route takes.
struct RouteSpec {
    prefix: String,
    host: Option<String>,
    methods: Option<&'static [&'static str]>,
}

/// A request for one route (or for none), as routing sees it.
struct Probe {
    method: Method,
    host: String,
    path: String,
    /// The route it must match; `None` for the 404.
    expect: Option<String>,
}

/// A table of `size` routes, loaded from YAML, and the requests that probe it.
struct RouteFixture {
    table: RouteTable,
    first: Probe,
    /// The route with the longest prefix (six segments), in the middle of the file.
    deep: Option<Probe>,
    last: Probe,
    miss: Probe,
}

// === impl RouteSpec ===

impl RouteSpec {
    /// Route `i` of a table whose deepest route is `deep`.
    fn new(i: usize, deep: Option<usize>) -> RouteSpec {
        let prefix = match i % 3 {
            _ if Some(i) == deep => format!("/orgs/acme/svc{i}/v3/projects/reports"),
            0 => format!("/svc{i}/v1"),
            1 => format!("/svc{i}"),
            _ => format!("/api/svc{i}/v2/items"),
        };
        let methods: Option<&'static [&'static str]> = match i % 5 {
            2 => Some(&["GET", "HEAD"]),
            3 => Some(&["POST", "PUT", "PATCH"]),
            _ => None,
        };
        RouteSpec {
            prefix,
            host: (i % 4 == 1).then(|| format!("api{i}.vendor.example")),
            methods,
        }
    }

    fn write_yaml(&self, i: usize, yaml: &mut String) {
        let mut matcher = format!("path_prefix: {}", self.prefix);
        if let Some(host) = &self.host {
            write!(matcher, ", host: {host}").expect("write to String");
        }
        if let Some(methods) = self.methods {
            write!(matcher, ", methods: [{}]", methods.join(", ")).expect("write to String");
        }
        write!(
            yaml,
            "  - name: r{i}\n    match: {{ {matcher} }}\n    upstream: https://api.vendor.example/v1\n    provider: partner\n"
        )
        .expect("write to String");
    }

    /// A request below the route's prefix, with its host and its first method.
    fn probe(&self, i: usize) -> Probe {
        Probe {
            method: self
                .methods
                .map_or(Method::GET, |methods| methods[0].parse().expect("method")),
            host: self.host.clone().unwrap_or_else(|| RELAY_HOST.to_string()),
            path: format!("{}/2026/q4/items/42", self.prefix),
            expect: Some(format!("r{i}")),
        }
    }
}

// === impl Probe ===

impl Probe {
    fn request(&self) -> RouteRequest<'_> {
        RouteRequest {
            method: &self.method,
            host: Some(&self.host),
            absolute_form: false,
            path: &self.path,
        }
    }
}

// === impl RouteFixture ===

impl RouteFixture {
    fn load(size: usize) -> RouteFixture {
        let deep = (size > 1).then_some(size / 2);
        let specs: Vec<RouteSpec> = (0..size).map(|i| RouteSpec::new(i, deep)).collect();
        let mut yaml = String::from(
            "listeners: [{ bind: \"127.0.0.1:0\" }]\nproviders:\n  partner:\n    grant: static\n    token: pat-demo-token\nroutes:\n",
        );
        for (i, spec) in specs.iter().enumerate() {
            spec.write_yaml(i, &mut yaml);
        }
        let config = Config::from_yaml(&yaml, Path::new(".")).expect("generated config");
        assert_eq!(config.routes.len(), size);
        let fixture = RouteFixture {
            // As `State::build` does.
            table: RouteTable::new(config.routes.iter().cloned()),
            first: specs[0].probe(0),
            deep: deep.map(|i| specs[i].probe(i)),
            last: specs[size - 1].probe(size - 1),
            miss: Probe {
                method: Method::GET,
                host: RELAY_HOST.to_string(),
                path: MISS_PATH.to_string(),
                expect: None,
            },
        };
        for probe in fixture.probes() {
            let matched = fixture.table.match_request(probe.request());
            match &probe.expect {
                Some(name) => assert_eq!(&matched.expect("a route").name, name),
                None => assert_eq!(matched.err(), Some(NoRoute::NotFound)),
            }
        }
        fixture
    }

    fn probes(&self) -> impl Iterator<Item = &Probe> {
        [Some(&self.first), self.deep.as_ref(), Some(&self.last)]
            .into_iter()
            .flatten()
            .chain([&self.miss])
    }

    fn bench(&self, b: &mut Bencher<'_>, probe: &Probe) {
        let request = probe.request();
        b.iter(|| self.table.match_request(black_box(request)));
    }
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for size in TABLE_SIZES {
        let fixture = RouteFixture::load(size);
        group.bench_function(BenchmarkId::new("hit_first", size), |b| {
            fixture.bench(b, &fixture.first)
        });
        if let Some(deep) = &fixture.deep {
            group.bench_function(BenchmarkId::new("hit_deep", size), |b| {
                fixture.bench(b, deep)
            });
            group.bench_function(BenchmarkId::new("hit_last", size), |b| {
                fixture.bench(b, &fixture.last)
            });
        }
        group.bench_function(BenchmarkId::new("miss_404", size), |b| {
            fixture.bench(b, &fixture.miss)
        });
    }
    group.finish();

    // What runs before the match on every request (`proxy::match_route`): the normalized path.
    let deep = RouteSpec::new(1, Some(1)).probe(1).path;
    let short = "/svc0/v1/users/42";
    let mut group = c.benchmark_group("normalize_path");
    for (name, path) in [("short", short), ("deep", deep.as_str())] {
        group.bench_function(name, |b| b.iter(|| resolve_path(black_box(path))));
    }
    group.finish();
}

/// A caller's request as it reaches step 2: ten headers, the proxy's hop-by-hop and
/// `X-Forwarded-*` rewrite done, no `Authorization`. Built as hyper builds a parsed head: with
/// room for the headers it read.
fn caller_headers() -> HeaderMap {
    let headers = [
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        (
            "user-agent",
            "billing-sync/4.2.1 (+https://intranet.example/billing)",
        ),
        ("content-type", "application/json"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("cookie", "session=8c4b7d0e; theme=dark"),
        ("x-forwarded-for", "10.20.30.40"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "relay.internal:8443"),
    ];
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        map.insert(name, HeaderValue::from_static(value));
    }
    map
}

/// The token of both routes, held as a static credential so that no cache lookup is measured.
fn credential() -> Credential {
    let fields = BTreeMap::from([("xref_account_id".to_string(), "7731004".to_string())]);
    let token = AccessToken::new(
        Secret::new("tok_5f2b8c1d9e7a4f60b3c2d1e0f9a8b7c6"),
        "Token",
        (Duration::from_secs(3600), LifetimeSource::ExpiresIn),
        fields,
    )
    .expect("token");
    Credential::Static(Arc::new(token))
}

/// `authorize` on a credential that needs no lookup: its future is ready at the first poll.
fn inject(credential: &Credential, route: &RouteConfig, headers: &mut HeaderMap) {
    let token = credential
        .authorize(route, headers)
        .now_or_never()
        .expect("a static credential is ready at once");
    black_box(token.expect("headers render"));
}

fn header_injection(c: &mut Criterion) {
    let config = Config::from_yaml(INJECTION_YAML, Path::new(".")).expect("bench config");
    let credential = credential();
    let caller = caller_headers();

    let mut group = c.benchmark_group("inject");
    for (name, route) in [("fixed", FIXED_ROUTE), ("templated", TEMPLATED_ROUTE)] {
        let route = &config.routes[route];
        // Injection alone: a copy of the caller's map with room for the injected headers, made
        // and dropped outside the timing.
        group.bench_function(BenchmarkId::new(name, "inject_only"), |b| {
            b.iter_batched_ref(
                || {
                    let mut headers = caller.clone();
                    headers.reserve(4);
                    headers
                },
                |headers| inject(&credential, route, headers),
                BatchSize::SmallInput,
            )
        });
        // As one attempt runs it (`proxy/retry.rs`, `authorized`): copy the caller's map, then
        // inject into the copy, which has no room left and grows. Dropped outside the timing.
        group.bench_function(BenchmarkId::new(name, "copy_then_inject"), |b| {
            b.iter_batched(
                || (),
                |()| {
                    let mut headers = caller.clone();
                    inject(&credential, route, &mut headers);
                    headers
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The copy alone, to split `copy_then_inject`.
    group.bench_function("copy_only", |b| {
        b.iter_batched(|| (), |()| caller.clone(), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // A few seconds per benchmark: the machine is shared with other builds.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = route_match, header_injection
}
criterion_main!(benches);
