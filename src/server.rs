//! Listeners and connections: TCP accept -> hyper-util auto builder (HTTP/1.1 and h2c) -> Proxy.
//! A task per connection; on shutdown, accepting stops and open connections drain.

mod admin;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{Metrics, MetricsError, Registry};
use crate::proxy::{Peer, Proxy};
use crate::reload::Reloader;
use crate::state::{SharedState, State, StateError};
use crate::store::{self, StoreError, TokenStore};

/// A token request's own timeout plus a store write: how long shutdown waits for one in flight.
const TOKEN_REQUEST_BOUND: Duration = Duration::from_secs(15);
/// Time a caller has to send its request headers before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration with every listener bound, ready to serve.
pub struct Server {
    state: SharedState,
    /// One per process: it outlives configuration reloads.
    store: Arc<dyn TokenStore>,
    /// One per process: counters keep counting across reloads.
    metrics: Arc<Metrics>,
    listeners: Vec<TcpListener>,
    admin: Option<TcpListener>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        #[source]
        error: io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("opening the token store stopped abnormally")]
    StoreTask,
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
}

// === impl Server ===

impl Server {
    /// Builds the state and binds every listener of `config` (port 0 picks a free port), with
    /// metrics in a registry of its own.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        Self::bind_with_registry(config, Registry::new()).await
    }

    /// As [`Server::bind`], registering authrelay's metrics into `registry`.
    pub async fn bind_with_registry(
        config: Config,
        registry: Registry,
    ) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::new(registry)?);
        let binds: Vec<SocketAddr> = config.listeners.iter().map(|l| l.bind).collect();
        let admin_bind = config.admin.as_ref().map(|admin| admin.bind);
        // Opening authenticates every record: blocking work, off the async threads.
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || store::open(&store_config))
            .await
            .map_err(|_| ServerError::StoreTask)??;
        let state = Arc::new(ArcSwap::from_pointee(State::build(
            config, &store, &metrics,
        )?));
        metrics.record_config_loaded();
        let mut listeners = Vec::with_capacity(binds.len());
        for addr in binds {
            listeners.push(bind(addr).await?);
        }
        let admin = match admin_bind {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(Server {
            state,
            store,
            metrics,
            listeners,
            admin,
        })
    }

    /// The bound addresses of the caller listeners, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Reloads of `config_path` into this server's state.
    pub fn reloader(&self, config_path: &std::path::Path) -> Reloader {
        Reloader::new(
            config_path,
            self.state(),
            Arc::clone(&self.store),
            self.metrics(),
        )
    }

    /// The live state, for reloads and for tests that look inside.
    pub fn state(&self) -> SharedState {
        Arc::clone(&self.state)
    }

    /// The process's metrics, for the reload code (`record_reload`) and tests.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains open connections.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = Arc::new(GracefulShutdown::new());
        let stop = CancellationToken::new();
        let proxy = Proxy::new(Arc::clone(&self.state));
        let mut accept_loops = Vec::new();
        for listener in self.listeners {
            let proxy = proxy.clone();
            let service = move |peer: SocketAddr| {
                let proxy = proxy.clone();
                service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move {
                        let peer = Peer {
                            addr: peer,
                            scheme: "http",
                        };
                        Ok::<_, Infallible>(proxy.handle(request, peer).await)
                    }
                })
            };
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                service,
                Arc::clone(&graceful),
                stop.clone(),
            )));
        }
        if let Some(listener) = self.admin {
            let admin = admin::Admin::new(
                Arc::clone(&self.state),
                Arc::clone(&self.store),
                Arc::clone(&self.metrics),
            );
            let service = move |_peer: SocketAddr| {
                let admin = admin.clone();
                service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(request).await) }
                })
            };
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                service,
                Arc::clone(&graceful),
                stop.clone(),
            )));
        }
        tracing::info!("serving");
        shutdown.await;
        stop.cancel();
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        // Every accept loop has ended, so this is the last reference.
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            return;
        };
        let state = self.state.load_full();
        let grace = state.config.shutdown_grace;
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections drained"),
            Err(_) => tracing::warn!(?grace, "closing connections that did not drain"),
        }
        // A renewal started by the last requests finishes, and is stored, before the exit.
        // At least as long as one token request may take, whatever the grace period.
        let settle_for = grace.max(TOKEN_REQUEST_BOUND);
        if tokio::time::timeout(settle_for, state.credentials.settle())
            .await
            .is_err()
        {
            tracing::warn!("a token request was still running at exit");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })
}

/// Accepts connections until `stop`, serving each on its own task.
async fn accept_loop<S, F>(
    listener: TcpListener,
    make_service: F,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::upstream::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(peer);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}
