//! Listeners and connections: TCP accept -> (TLS) -> hyper-util auto builder (HTTP/1.1 and
//! HTTP/2) -> Proxy. A task per connection; on shutdown, accepting stops and open connections
//! drain.

mod admin;
mod connection;
mod sniff;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::caller::certificate_subject;
use crate::config::{CallerCredential, Config, Limits};
use crate::metrics::{Metrics, MetricsError, Registry};
use crate::proxy::{ConnectionScope, Peer, PeerCertificate, Proxy};
use crate::reload::Reloader;
use crate::state::{SharedState, State, StateError};
use connection::{Activity, Lifecycle};
use sniff::Sniffed;

use crate::store::{self, StoreError, TokenStore};
use crate::upstream::ProxyBody;
pub use sniff::HeadWatch;
#[doc(hidden)]
pub use sniff::sniff_stream;

/// A token request's own timeout plus a store write: how long shutdown waits for one in flight.
const TOKEN_REQUEST_BOUND: Duration = Duration::from_secs(15);
/// The `X-Relay-Error` code of a connection refused at `max_connections`.
const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
/// How long a refused connection is read from before it is closed.
const OVER_LIMIT_DRAIN: Duration = Duration::from_secs(1);
/// Sent on a plain listener at `max_connections`, before closing: clearer than a reset.
const TOO_MANY_CONNECTIONS_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nx-relay-error: too_many_connections\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

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
        warn_about_clear_text_keys(&config);
        let binds: Vec<SocketAddr> = config.listeners.iter().map(|l| l.bind).collect();
        let admin_bind = config.admin.as_ref().map(|admin| admin.bind);
        let store = store::open(&config.store).await?;
        let state = State::build(config, &store, &metrics)?;
        if let Err(error) = state.credentials.restore_accounts().await {
            tracing::warn!(%error, "cannot list the connected accounts; each loads on its first request");
        }
        let state = Arc::new(ArcSwap::from_pointee(state));
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
        let lifecycle = Lifecycle::default();
        let connections = TaskTracker::new();
        let stop = CancellationToken::new();
        let proxy = Proxy::new(Arc::clone(&self.state));
        let mut accept_loops = Vec::new();
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let front = Front {
                index,
                state: Arc::clone(&self.state),
                proxy: proxy.clone(),
                open: Arc::new(AtomicUsize::new(0)),
                lifecycle: lifecycle.clone(),
                tasks: connections.clone(),
            };
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                stop.clone(),
                connections.clone(),
                move |stream, addr| front.clone().connection(stream, addr),
            )));
        }
        if let Some(listener) = self.admin {
            let admin = admin::Admin::new(
                Arc::clone(&self.state),
                Arc::clone(&self.store),
                Arc::clone(&self.metrics),
            );
            let lifecycle = lifecycle.clone();
            accept_loops.push(tokio::spawn(accept_loop(
                listener,
                stop.clone(),
                connections.clone(),
                move |stream, _addr| {
                    let admin = admin.clone();
                    let lifecycle = lifecycle.clone();
                    async move {
                        let service = service_fn(move |request| {
                            let admin = admin.clone();
                            async move { Ok::<_, Infallible>(admin.handle(request).await) }
                        });
                        let activity = Activity::new();
                        connection::serve(stream, service, &Limits::DEFAULT, &activity, &lifecycle)
                            .await;
                    }
                },
            )));
        }
        tracing::info!("serving");
        shutdown.await;
        stop.cancel();
        for accept_loop in accept_loops {
            let _ = accept_loop.await;
        }
        lifecycle.drain.cancel();
        connections.close();
        let state = self.state.load_full();
        let grace = state.config.shutdown_grace;
        match tokio::time::timeout(grace, connections.wait()).await {
            Ok(()) => tracing::info!("all connections drained"),
            Err(_) => {
                tracing::warn!(?grace, "closing connections that did not drain");
                lifecycle.abort.cancel();
            }
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

/// One caller listener: the index of its config, and its open connections.
#[derive(Clone)]
struct Front {
    index: usize,
    state: SharedState,
    proxy: Proxy,
    open: Arc<AtomicUsize>,
    lifecycle: Lifecycle,
    /// The connection tasks (and tunnels) shutdown waits for.
    tasks: TaskTracker,
}

/// Counts a connection as open until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Front {
    /// One caller connection, under the listener's current settings: a reload changes limits,
    /// certificates and callers for the connections that follow.
    async fn connection(self, stream: TcpStream, addr: SocketAddr) {
        let state = self.state.load_full();
        let Some(listener) = state.config.listeners.get(self.index) else {
            return;
        };
        let limits = listener.limits.clone();
        let tls = listener
            .tls
            .as_ref()
            .map(|tls| Arc::clone(&tls.server_config));
        drop(state);

        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        // Shared with an upgraded connection's tunnel, which outlives the HTTP connection.
        let slot = Arc::new(OpenConnection(Arc::clone(&self.open)));
        if open > limits.max_connections {
            self.state.load().metrics.relay_error(TOO_MANY_CONNECTIONS);
            if tls.is_none() {
                refuse_over_limit(stream).await;
            }
            return;
        }
        let local_loopback = stream
            .local_addr()
            .is_ok_and(|local| local.ip().is_loopback());
        let activity = Activity::new();
        let peer = |scheme, certificate, head| Peer {
            addr,
            local_loopback,
            listener: self.index,
            scheme,
            certificate,
            head,
            scope: ConnectionScope {
                slot: slot.clone(),
                tasks: self.tasks.clone(),
                abort: self.lifecycle.abort.clone(),
            },
        };
        match tls {
            None => {
                let (io, head) = sniffed(stream, &limits);
                let peer = peer("http", PeerCertificate::None, head);
                let service = self.service(peer, &activity);
                connection::serve(io, service, &limits, &activity, &self.lifecycle).await;
            }
            Some(server_config) => {
                let handshake = TlsAcceptor::from(server_config).accept(stream);
                let stream = match tokio::time::timeout(limits.header_read_timeout, handshake).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(peer = %addr, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "TLS handshake timed out");
                        return;
                    }
                };
                let certificate = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => match certificate_subject(leaf) {
                        Some(subject) => PeerCertificate::Subject(Arc::new(subject)),
                        None => PeerCertificate::Unreadable,
                    },
                    _ => PeerCertificate::None,
                };
                let (io, head) = sniffed(stream, &limits);
                let service = self.service(peer("https", certificate, head), &activity);
                connection::serve(io, service, &limits, &activity, &self.lifecycle).await;
            }
        }
    }

    fn service(
        &self,
        peer: Peer,
        activity: &Arc<Activity>,
    ) -> impl Service<
        Request<Incoming>,
        Response = Response<ProxyBody>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + use<>,
    > + Send
    + use<> {
        let proxy = self.proxy.clone();
        let activity = Arc::clone(activity);
        // One reference count per request rather than one per field.
        let peer = Arc::new(peer);
        service_fn(move |request| {
            let proxy = proxy.clone();
            let peer = Arc::clone(&peer);
            let in_flight = activity.begin();
            async move {
                let response = proxy.handle(request, &peer).await;
                // In flight until the last byte of the response body is sent (or dropped).
                Ok::<_, Infallible>(
                    response.map(|body| connection::hold_until_end(body, in_flight)),
                )
            }
        })
    }
}

/// At `max_connections`: a short answer rather than a reset. The request is read (briefly)
/// first, so closing does not reset the connection before the client reads the answer.
async fn refuse_over_limit(mut stream: TcpStream) {
    let _ = stream.write_all(TOO_MANY_CONNECTIONS_RESPONSE).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(OVER_LIMIT_DRAIN, drain).await;
}

/// API keys sent over plain HTTP across a network can be read by anyone on the path.
fn warn_about_clear_text_keys(config: &Config) {
    let api_keys = config
        .callers
        .iter()
        .any(|caller| matches!(caller.credential, CallerCredential::ApiKey(_)));
    for listener in &config.listeners {
        if api_keys && listener.tls.is_none() && !listener.is_loopback() {
            tracing::warn!(bind = %listener.bind, "callers' API keys reach this plain-HTTP listener in clear text; give it `tls`");
        }
    }
}

/// `stream` read through the head sniffer, with hyper's own head limits.
fn sniffed<T>(stream: T, limits: &Limits) -> (Sniffed<T>, Arc<HeadWatch>) {
    Sniffed::new(stream, connection::head_buffer(limits), limits.max_headers)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })
}

/// Accepts connections until `stop`, serving each on its own task.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    stop: CancellationToken,
    connections: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
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
        connections.spawn(serve(stream, peer));
    }
}
