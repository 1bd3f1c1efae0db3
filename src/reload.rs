//! Hot reload: a change of the config file (seen through its directory, so editors' rename-on-save
//! and Kubernetes' symlink swaps count) or SIGHUP -> `Config::load` -> `State::build` reusing what
//! did not change -> one `ArcSwap::store`. A bad file keeps the running state.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors, StoreConfig};
use crate::metrics::Metrics;
use crate::state::{SharedState, State, StateError};
use crate::store::TokenStore;

/// Changes arriving closer together than this are one reload (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Rebuilds and swaps the state from the config file.
#[derive(Clone)]
pub struct Reloader {
    path: PathBuf,
    state: SharedState,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
}

/// Why a reload was refused; the running state stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0} cannot change without a restart")]
    NeedsRestart(&'static str),
    #[error("the reload task stopped abnormally")]
    Task,
}

// === impl Reloader ===

impl Reloader {
    /// Every attempt is counted in `metrics` (`authrelay_config_reloads_total`).
    pub fn new(
        path: &Path,
        state: SharedState,
        store: Arc<dyn TokenStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            state,
            store,
            metrics,
        }
    }

    /// Loads the file and, when it is valid, swaps in a new state. Token caches and upstream
    /// pools of unchanged providers carry over.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || this.build())
            .await
            .map_err(|_| ReloadError::Task)
            .and_then(|built| built);
        match result {
            Ok(state) => {
                // A new authorization-code provider lists its accounts from the first scrape.
                if let Err(error) = state.credentials.restore_accounts().await {
                    tracing::warn!(%error, "cannot list the connected accounts; each loads on its first request");
                }
                self.state.store(Arc::new(state));
                tracing::info!(path = %self.path.display(), "configuration reloaded");
                self.metrics.record_reload(true);
                Ok(())
            }
            Err(error) => {
                // ConfigErrors' Display is one problem per line, with YAML paths and line/column.
                tracing::error!(path = %self.path.display(), "reload refused, keeping the running configuration:\n{error}");
                self.metrics.record_reload(false);
                Err(error)
            }
        }
    }

    fn build(&self) -> Result<State, ReloadError> {
        let config = Config::load(&self.path)?;
        let running = self.state.load_full();
        let binds = |c: &Config| {
            let listeners: Vec<_> = c.listeners.iter().map(|l| l.bind).collect();
            (listeners, c.admin.as_ref().map(|a| a.bind))
        };
        if binds(&config) != binds(&running.config) {
            return Err(ReloadError::NeedsRestart("listeners and admin.bind"));
        }
        // Debug hides the key and the Redis URL, so compare them apart.
        let secrets = |store: &StoreConfig| match store {
            StoreConfig::File { key, .. } => (key.as_ref().map(|k| k.expose().to_owned()), None),
            StoreConfig::Redis(redis) => (
                Some(redis.key.expose().to_owned()),
                Some(redis.url.expose().to_owned()),
            ),
        };
        if format!("{:?}", config.store) != format!("{:?}", running.config.store)
            || secrets(&config.store) != secrets(&running.config.store)
        {
            return Err(ReloadError::NeedsRestart("store"));
        }
        Ok(State::build_from(
            config,
            &self.store,
            &self.metrics,
            Some(&running),
        )?)
    }

    /// Reloads on SIGHUP and on changes to the config file until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        // Watch the directory: the file itself may be replaced (rename, symlink swap).
        let dir = self
            .path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let watched_name = self.path.file_name().map(ToOwned::to_owned);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Any event on the file, or on a `..data`-style symlink the file resolves through.
            let relevant = event.paths.iter().any(|path| {
                path.file_name() == watched_name.as_deref()
                    || path
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy().starts_with(".."))
            });
            if relevant {
                let _ = changed.send(());
            }
        });
        let _watcher = match watcher {
            Ok(mut watcher) => match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(watcher),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch the config directory; reload with SIGHUP");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "cannot watch files; reload with SIGHUP");
                None
            }
        };
        let mut hangup = hangup_signal();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = changes.recv() => {
                    // Let the editor finish: wait for a quiet moment, then reload once.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changes.recv()).await {}
                    let _ = self.reload().await;
                }
                Some(()) = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    let _ = self.reload().await;
                }
            }
        }
    }
}

/// SIGHUP as a stream of `()`; never yields where there is no such signal.
fn hangup_signal() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut signal) => {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGHUP"),
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
