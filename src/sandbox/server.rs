//! The sandbox's accept loop: HTTP/1.1 and h2c on one port (hyper-util's auto builder), one task
//! per connection, every request handed to `routes::route`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::routes;
use super::state::SandboxState;

/// The accept loop. Connection tasks live in a `JoinSet`, so leaving the loop ends them too.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<SandboxState>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                Err(error) => {
                    // Usually out of file descriptors: pause instead of spinning on the error.
                    tracing::warn!(%error, "sandbox accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_finished) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<SandboxState>) {
    // Benches measure the proxy, not Nagle's algorithm.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "sandbox could not set TCP_NODELAY");
    }
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(routes::route(&state, request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, "sandbox connection ended with an error");
    }
}
