//! Everything a request needs from one configuration, built whole and swapped whole.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::credential::{CredentialSetupError, Credentials};
use crate::route::RouteTable;
use crate::store::TokenStore;
use crate::trust::TrustError;
use crate::upstream::Upstream;

/// One configuration, ready to serve. Immutable; a reload builds a new one.
pub struct State {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub credentials: Credentials,
    pub upstream: Upstream,
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
    pub fn build(config: Config, store: &Arc<dyn TokenStore>) -> Result<State, StateError> {
        Self::build_from(config, store, None)
    }

    /// Builds the state of a new config, taking over from `previous` the token caches of
    /// providers whose settings did not change (so their tokens stay warm) and the upstream
    /// pools whose trust did not change.
    pub fn build_from(
        config: Config,
        store: &Arc<dyn TokenStore>,
        previous: Option<&State>,
    ) -> Result<State, StateError> {
        let credentials = Credentials::build(&config, store, previous.map(|p| &p.credentials))?;
        let upstream = Upstream::build(&config, previous.map(|p| &p.upstream))?;
        let routes = RouteTable::new(config.routes.iter().cloned());
        Ok(State {
            config: Arc::new(config),
            routes,
            credentials,
            upstream,
        })
    }
}
