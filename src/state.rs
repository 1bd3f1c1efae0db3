//! Everything a request needs from one configuration, built whole and swapped whole.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::caller::CallerTable;
use crate::config::Config;
use crate::credential::{CredentialSetupError, Credentials};
use crate::metrics::{Metrics, ProxyMetrics};
use crate::route::RouteTable;
use crate::store::TokenStore;
use crate::trust::TrustError;
use crate::upstream::Upstream;

/// One configuration, ready to serve. Immutable; a reload builds a new one.
pub struct State {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub callers: CallerTable,
    pub credentials: Credentials,
    pub upstream: Upstream,
    /// The request path's metric handles, resolved once per route.
    pub metrics: ProxyMetrics,
}

/// The live state, read by every request and replaced in one store.
pub type SharedState = Arc<ArcSwap<State>>;

/// Why a validated config could not become a state (TLS roots, HTTP clients).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Credentials(#[from] CredentialSetupError),
    #[error("upstream TLS: {0}")]
    Upstream(#[from] TrustError),
}

// === impl State ===

impl State {
    /// `metrics` is the process's: counters keep counting across reloads.
    pub fn build(
        config: Config,
        store: &Arc<dyn TokenStore>,
        metrics: &Metrics,
    ) -> Result<State, StateError> {
        Self::build_from(config, store, metrics, None)
    }

    /// Builds the state of a new config, taking over from `previous` the token caches of
    /// providers whose settings did not change (so their tokens stay warm) and the upstream
    /// pools whose trust did not change.
    pub fn build_from(
        config: Config,
        store: &Arc<dyn TokenStore>,
        metrics: &Metrics,
        previous: Option<&State>,
    ) -> Result<State, StateError> {
        let credentials =
            Credentials::build(&config, store, previous.map(|p| &p.credentials), metrics)?;
        let upstream = Upstream::build(&config, previous.map(|p| &p.upstream))?;
        let routes = RouteTable::new(config.routes.iter().cloned());
        let callers = CallerTable::new(&config.callers);
        let metrics = metrics.proxy(config.routes.iter().map(|route| route.name.as_str()));
        Ok(State {
            config: Arc::new(config),
            routes,
            callers,
            credentials,
            upstream,
            metrics,
        })
    }
}
