//! What does a token-cache hit cost: `Credentials::authorize` on a warm client-credentials
//! provider (token lookup plus `Authorization` and `Xbeam-Organization` injection), with 1 and 16
//! concurrent readers, in ns per call? Target: under 100 ns on the 2-core machine, with no lock.
//!
//! The hit path, read in `src/credential.rs` and `src/credential/cache.rs`: a `HashMap` lookup
//! of the provider name, `tokio::time::Instant::now()`, `ArcSwapOption::load_full` (an arc-swap
//! debt slot plus one `Arc` increment), a remaining-lifetime versus renewal-margin comparison,
//! then two `HeaderMap::insert`s of cloned `HeaderValue`s (`Bytes` reference counts; the route's
//! header is a fixed template, so nothing is rendered). The cache's `Mutex`es are touched only
//! when the token is missing or inside its renewal margin (300 s of the sandbox's 3599 s).
//! `grant: static` is the contrast: the same lookup and headers, an `Arc` clone instead of the
//! cache. `token_only` measures the lookup alone (`Credentials::token`), without the headers.
//!
//! The first `authorize` makes the only token request (to the sandbox, on port 0); the bench
//! checks at the end that no other was made, so every measured call was a hit.
#![allow(clippy::expect_used, reason = "bench setup: a panic is a failed bench")]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authrelay::Config;
use authrelay::credential::Credentials;
use authrelay::metrics::{Metrics, Registry};
use authrelay::sandbox::{Sandbox, SandboxHandle};
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use tokio::runtime::Runtime;

/// Concurrent readers in the contended case, on a runtime with two workers (one per core).
const READERS: u32 = 16;
const CACHED_ROUTE: usize = 0;
const STATIC_ROUTE: usize = 1;
const CLIENT_ID: &str = "ca-demo-client";

/// Both routes inject the same fixed header, so the two differ only in where the token comes from.
const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  cultureamp:
    preset: cultureamp
    token_url: "{sandbox}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
  partner:
    grant: static
    token: pat-demo-token
routes:
  - match: { path_prefix: /cultureamp }
    upstream: "{sandbox}/cultureamp/v1"
    provider: cultureamp
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
  - match: { path_prefix: /partner }
    upstream: "{sandbox}/partner/api"
    provider: partner
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
store: { kind: file, path: "{store}" }
"#;

/// Warm credentials against a running sandbox.
struct Fixture {
    runtime: Runtime,
    config: Arc<Config>,
    credentials: Arc<Credentials>,
    sandbox: SandboxHandle,
    _store: tempfile::TempDir,
}

/// Which map `authorize` writes into.
#[derive(Clone, Copy)]
enum Map {
    /// One map per reader, overwritten on every call (a request's map already exists).
    Reused,
    /// A new map per call, dropped after it: adds the map's allocation and free.
    Fresh,
}

// === impl Fixture ===

impl Fixture {
    fn start() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = tempfile::tempdir().expect("temp dir");
        let (config, credentials, sandbox) = runtime.block_on(async {
            let loopback = "127.0.0.1:0".parse().expect("address");
            let sandbox = Sandbox::new().start(loopback).await.expect("sandbox");
            let yaml = YAML
                .replace("{sandbox}", &sandbox.url())
                .replace("{store}", &store.path().display().to_string());
            let config = Config::from_yaml(&yaml, Path::new(".")).expect("bench config");
            let token_store = authrelay::store::open(&config.store)
                .await
                .expect("token store");
            let metrics = Metrics::new(Registry::new()).expect("metrics");
            let credentials =
                Credentials::build(&config, &token_store, None, &metrics).expect("credentials");
            // The one token request: every later call on this route is a hit.
            credentials
                .authorize(&config.routes[CACHED_ROUTE], &mut HeaderMap::new())
                .await
                .expect("first token");
            (Arc::new(config), Arc::new(credentials), sandbox)
        });
        assert_eq!(sandbox.token_requests(CLIENT_ID), 1);
        Fixture {
            runtime,
            config,
            credentials,
            sandbox,
            _store: store,
        }
    }

    /// One reader on the bench thread (`block_on`), `iters` calls in one future.
    fn one_reader(&self, b: &mut Bencher<'_>, route: usize, map: Map) {
        b.to_async(&self.runtime).iter_custom(|iters| {
            let config = Arc::clone(&self.config);
            let credentials = Arc::clone(&self.credentials);
            async move {
                let route = &config.routes[route];
                let start = Instant::now();
                match map {
                    Map::Reused => {
                        let mut headers = HeaderMap::new();
                        for _ in 0..iters {
                            let token = credentials.authorize(route, &mut headers).await;
                            black_box(token.expect("hit"));
                        }
                        black_box(headers);
                    }
                    Map::Fresh => {
                        for _ in 0..iters {
                            let mut headers = HeaderMap::new();
                            let token = credentials.authorize(route, &mut headers).await;
                            black_box(token.expect("hit"));
                            black_box(headers);
                        }
                    }
                }
                start.elapsed()
            }
        });
    }

    /// One reader calling `Credentials::token` only: the lookup without the header injection.
    fn token_only(&self, b: &mut Bencher<'_>, route: usize) {
        b.to_async(&self.runtime).iter_custom(|iters| {
            let config = Arc::clone(&self.config);
            let credentials = Arc::clone(&self.credentials);
            async move {
                let provider = &config.routes[route].provider;
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(credentials.token(provider).await.expect("hit"));
                }
                start.elapsed()
            }
        });
    }

    /// `READERS` tasks on the two workers, each making `iters` calls into its own reused map.
    /// Reports wall time per call: the wall time of all `READERS * iters` calls divided by
    /// `READERS`, which criterion then divides by `iters`.
    fn many_readers(&self, b: &mut Bencher<'_>, route: usize) {
        b.to_async(&self.runtime).iter_custom(|iters| {
            let config = Arc::clone(&self.config);
            let credentials = Arc::clone(&self.credentials);
            async move {
                let start = Instant::now();
                let readers: Vec<_> = (0..READERS)
                    .map(|_| {
                        let config = Arc::clone(&config);
                        let credentials = Arc::clone(&credentials);
                        tokio::spawn(async move {
                            let route = &config.routes[route];
                            let mut headers = HeaderMap::new();
                            for _ in 0..iters {
                                let token = credentials.authorize(route, &mut headers).await;
                                black_box(token.expect("hit"));
                            }
                        })
                    })
                    .collect();
                for reader in readers {
                    reader.await.expect("reader");
                }
                start.elapsed() / READERS
            }
        });
    }
}

fn authorize(c: &mut Criterion) {
    let fixture = Fixture::start();

    let mut group = c.benchmark_group("authorize_hit");
    group.bench_function("1_reader", |b| {
        fixture.one_reader(b, CACHED_ROUTE, Map::Reused)
    });
    group.bench_function("1_reader_fresh_map", |b| {
        fixture.one_reader(b, CACHED_ROUTE, Map::Fresh)
    });
    group.bench_function("16_readers", |b| fixture.many_readers(b, CACHED_ROUTE));
    group.finish();

    let mut group = c.benchmark_group("authorize_static");
    group.bench_function("1_reader", |b| {
        fixture.one_reader(b, STATIC_ROUTE, Map::Reused)
    });
    group.bench_function("16_readers", |b| fixture.many_readers(b, STATIC_ROUTE));
    group.finish();

    let mut group = c.benchmark_group("token_only");
    group.bench_function("cached", |b| fixture.token_only(b, CACHED_ROUTE));
    group.bench_function("static", |b| fixture.token_only(b, STATIC_ROUTE));
    group.finish();

    assert_eq!(
        fixture.sandbox.token_requests(CLIENT_ID),
        1,
        "a measured call was not a cache hit"
    );
}

criterion_group! {
    name = benches;
    // A few seconds per benchmark: the machine is shared with other builds.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = authorize
}
criterion_main!(benches);
