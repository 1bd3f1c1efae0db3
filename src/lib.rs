//! authrelay: an authenticating reverse proxy. Callers send plain HTTP; authrelay finds the
//! route, obtains and caches the vendor's token, injects it and forwards over TLS.
//!
//! ```text
//! caller ──▶ server ──▶ proxy::Proxy::handle
//!                         1. route::RouteTable::match_request    &Request -> &Route
//!                         2. credential::Credentials::authorize  &Route   -> headers injected
//!                         3. upstream::Upstream::send             Request  -> Response<Incoming>
//!                         4. response, or ProxyError::into_response
//! config ──▶ state::State::build ──▶ ArcSwap<State>   (read by 1–3; replaced whole)
//! ```
//!
//! Dependency rule: `server → proxy → {route, credential, upstream} → {config, secret, trust,
//! metrics}`.

pub mod accounts;
pub mod caller;
pub mod config;
pub mod credential;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod operate;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod sandbox;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod trust;
pub mod upstream;

use std::future::Future;
use std::path::Path;

use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use server::{Server, ServerError};

/// Binds every listener of `config` and serves until `shutdown` resolves, then drains. The
/// config file at `config_path` is watched (and SIGHUP heard) for hot reloads.
pub async fn run(
    config: Config,
    config_path: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let server = Server::bind(config).await?;
    for addr in server.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    if let Some(addr) = server.admin_addr() {
        tracing::info!(%addr, "admin listening");
    }
    let stop_reloading = CancellationToken::new();
    let reloads = tokio::spawn(server.reloader(config_path).run(stop_reloading.clone()));
    server.serve(shutdown).await;
    stop_reloading.cancel();
    let _ = reloads.await;
    Ok(())
}
