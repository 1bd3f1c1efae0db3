//! Fleet mode against the embedded store, on a real `redis-server` (started here on a free
//! loopback port, without persistence, and killed at the end):
//! - `fleet_hit`: a cache hit (`Credentials::authorize` on a warm client-credentials route) with
//!   the file store and with Redis. Hits are served from the replica's memory, so they should
//!   cost the same.
//! - `fleet_renewal`: N replicas (each its own `Credentials` and Redis connections) hold the same
//!   token; each gets a 401 for it at once, invalidates it and asks for a new one. Measured: the
//!   time until every replica holds the new token (one token request to the in-process sandbox,
//!   the lease, the holder's write, and the others' wake-up on the notification). N = 1 is the
//!   baseline without waiters.
#![allow(clippy::expect_used, reason = "bench setup: a panic is a failed bench")]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authrelay::Config;
use authrelay::credential::Credentials;
use authrelay::metrics::{Metrics, Registry};
use authrelay::sandbox::{Sandbox, SandboxHandle};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use tokio::runtime::Runtime;

const CLIENT_ID: &str = "ca-demo-client";
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

const YAML: &str = r#"
listeners: [{ bind: "127.0.0.1:0" }]
providers:
  cultureamp:
    preset: cultureamp
    token_url: "{sandbox}/cultureamp/v1/oauth2/token"
    client_id: ca-demo-client
    client_secret: ca-demo-secret
    scopes: ["target-entity:8ed17dce-9eca-4383-a9e1-54f82c362b6d:employees-read"]
routes:
  - match: { path_prefix: /cultureamp }
    upstream: "{sandbox}/cultureamp/v1"
    provider: cultureamp
    headers:
      Xbeam-Organization: 02fde942-c7cd-4f12-9d4e-07ee8a57c8c6
"#;

/// A `redis-server` of this bench's own, killed on drop.
struct RedisProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisProcess {
    fn start() -> RedisProcess {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs the redis-server package)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisProcess {
            child,
            port,
            _dir: dir,
        }
    }

    fn store_yaml(&self) -> String {
        format!(
            "store: {{ kind: redis, url: \"redis://127.0.0.1:{}/0\", key: \"{KEY}\" }}\n",
            self.port
        )
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica's credentials on the store described by `store_yaml`.
async fn replica(sandbox: &SandboxHandle, store_yaml: &str) -> (Arc<Config>, Arc<Credentials>) {
    let yaml = format!("{}{store_yaml}", YAML.replace("{sandbox}", &sandbox.url()));
    let config = Config::from_yaml(&yaml, Path::new(".")).expect("bench config");
    let store = authrelay::store::open(&config.store)
        .await
        .expect("token store");
    let metrics = Metrics::new(Registry::new()).expect("metrics");
    let credentials = Credentials::build(&config, &store, None, &metrics).expect("credentials");
    (Arc::new(config), Arc::new(credentials))
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn hit(c: &mut Criterion) {
    let runtime = runtime();
    let redis = RedisProcess::start();
    let file_dir = tempfile::tempdir().expect("temp dir");
    let file_yaml = format!(
        "store: {{ kind: file, path: \"{}\" }}\n",
        file_dir.path().display()
    );
    let (sandbox, stores) = runtime.block_on(async {
        let sandbox = Sandbox::new()
            .start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("sandbox");
        let mut stores = Vec::new();
        for (name, store_yaml) in [
            ("embedded", file_yaml.clone()),
            ("redis", redis.store_yaml()),
        ] {
            let (config, credentials) = replica(&sandbox, &store_yaml).await;
            credentials
                .authorize(&config.routes[0], &mut HeaderMap::new())
                .await
                .expect("first token");
            stores.push((name, config, credentials));
        }
        (sandbox, stores)
    });
    // The Redis replica found no token of its own: it made the second request.
    assert_eq!(sandbox.token_requests(CLIENT_ID), 2);

    let mut group = c.benchmark_group("fleet_hit");
    for (name, config, credentials) in &stores {
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let config = Arc::clone(config);
                let credentials = Arc::clone(credentials);
                async move {
                    let route = &config.routes[0];
                    let mut headers = HeaderMap::new();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(
                            credentials
                                .authorize(route, &mut headers)
                                .await
                                .expect("hit"),
                        );
                    }
                    start.elapsed()
                }
            });
        });
    }
    group.finish();
    assert_eq!(
        sandbox.token_requests(CLIENT_ID),
        2,
        "every measured call was a hit"
    );
}

fn renewal(c: &mut Criterion) {
    let runtime = runtime();
    let redis = RedisProcess::start();
    let sandbox = runtime.block_on(async {
        Sandbox::new()
            .start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("sandbox")
    });
    let mut group = c.benchmark_group("fleet_renewal");
    group.sample_size(20);
    for replicas in [1usize, 3, 10] {
        let fleet = runtime.block_on(async {
            let mut fleet = Vec::with_capacity(replicas);
            for _ in 0..replicas {
                fleet.push(replica(&sandbox, &redis.store_yaml()).await);
            }
            fleet
        });
        group.bench_with_input(BenchmarkId::from_parameter(replicas), &replicas, |b, _| {
            b.to_async(&runtime).iter_custom(|iters| {
                let fleet = fleet.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += storm(&fleet).await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

/// Every replica gets a 401 for the token they share, at once: the time until all hold the new
/// one. Checks that they do share it.
async fn storm(fleet: &[(Arc<Config>, Arc<Credentials>)]) -> Duration {
    let mut used = Vec::with_capacity(fleet.len());
    for (config, credentials) in fleet {
        let route = &config.routes[0];
        let credential = credentials
            .credential(&route.provider, None)
            .await
            .expect("credential");
        let token = credential.token().await.expect("token");
        used.push((credential, token));
    }
    let start = Instant::now();
    let renewals: Vec<_> = used
        .into_iter()
        .map(|(credential, token)| {
            tokio::spawn(async move {
                credential.invalidate(&token);
                credential.token().await.expect("new token")
            })
        })
        .collect();
    let mut fresh = Vec::with_capacity(renewals.len());
    for renewal in renewals {
        fresh.push(renewal.await.expect("renewal"));
    }
    let elapsed = start.elapsed();
    let first = fresh[0].authorization();
    assert!(
        fresh.iter().all(|token| token.authorization() == first),
        "the fleet shares one new token"
    );
    elapsed
}

criterion_group!(benches, hit, renewal);
criterion_main!(benches);
