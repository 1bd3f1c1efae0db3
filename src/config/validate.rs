//! file -> Config: applies defaults and presets, resolves secret references, parses every text
//! value (addresses, URLs, header names, durations, sizes) and checks the rules between fields.
//! Every problem is collected with its YAML path so that one run reports all of them.

mod byte_size;
mod caller;
mod listener;
mod pem;
mod provider;
mod route;
mod secret_ref;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrors};
use super::file::{AdminFile, ConfigFile};
use super::presets::{self, Preset};
use super::{AdminConfig, Config, ListenerConfig, ProviderConfig};

/// Problems found so far, in the order the file was walked.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

/// Every provider name written in the file, with its config when that one validated. Routes
/// check names against all of them, so a broken provider does not also count as unknown.
type WrittenProviders = BTreeMap<String, WrittenProvider>;

/// One provider as routes see it: its known preset (for the rules a preset sets on routes) and
/// its config when it validated.
#[derive(Debug)]
struct WrittenProvider {
    preset: Option<&'static Preset>,
    config: Option<Arc<ProviderConfig>>,
}

/// Checks `file` and builds the [`Config`]; `base_dir` anchors relative `${file:...}` and `ca` paths.
pub fn validate(file: ConfigFile, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut problems = Problems::default();

    let callers = caller::callers(
        file.callers.as_deref().unwrap_or_default(),
        base_dir,
        &mut problems,
    );
    let callers_configured = file.callers.as_ref().is_some_and(|c| !c.is_empty());
    let listeners =
        listener::listeners(&file.listeners, callers_configured, base_dir, &mut problems);
    check_cert_callers_can_connect(&file, &mut problems);
    let admin = file
        .admin
        .as_ref()
        .and_then(|admin_file| admin(admin_file, &listeners, base_dir, &mut problems));
    let shutdown_grace = match &file.shutdown_grace {
        None => Some(DEFAULT_SHUTDOWN_GRACE),
        Some(text) => problems.check("shutdown_grace", parse_duration(text)),
    };
    let store = store::store(file.store.as_ref(), base_dir, &mut problems);

    let mut written = WrittenProviders::new();
    for (name, provider_file) in &file.providers.0 {
        let config = provider::provider(name, provider_file, base_dir, &mut problems);
        let preset = provider_file.preset.as_deref().and_then(presets::find);
        let config = config.map(Arc::new);
        written.insert(name.clone(), WrittenProvider { preset, config });
    }

    let caller_names: Vec<&str> = file
        .callers
        .iter()
        .flatten()
        .map(|caller| caller.name.as_str())
        .collect();
    let routes = route::routes(&file.routes, &written, &caller_names, &mut problems);

    // A part that is `None` recorded why, so only an empty list means a whole config.
    let (store, shutdown_grace) = match (store, shutdown_grace) {
        (Some(store), Some(grace)) if problems.0.is_empty() => (store, grace),
        _ => return Err(ConfigErrors(problems.0)),
    };
    let providers = written
        .into_iter()
        .filter_map(|(name, provider)| Some((name, provider.config?)))
        .collect();
    Ok(Config {
        listeners,
        admin,
        callers,
        providers,
        routes,
        store,
        shutdown_grace,
    })
}

/// How long a shutdown waits for in-flight requests when the config does not say.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The admin listener resets providers and will hold account connections: loopback only.
const ADMIN_NOT_LOOPBACK: &str = "must be a loopback address (127.0.0.1, ::1): the admin listener can reset providers and read their state";

/// A caller known by its certificate needs a listener that asks for one. Judged on the file,
/// so a listener whose CA failed to load does not also cause this complaint.
fn check_cert_callers_can_connect(file: &ConfigFile, problems: &mut Problems) {
    let mutual_tls = file.listeners.iter().any(|listener| {
        listener
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some())
    });
    if mutual_tls {
        return;
    }
    for (i, caller) in file.callers.iter().flatten().enumerate() {
        // An unreadable subject was reported already.
        let readable = caller
            .cert_subject
            .as_deref()
            .is_some_and(|subject| super::CertSubject::parse(subject).is_ok())
            && caller.api_key.is_none();
        if readable {
            problems.add(
                format!("callers[{i}].cert_subject"),
                "no listener has tls.client_ca, so no caller can present a certificate",
            );
        }
    }
}

fn admin(
    file: &AdminFile,
    listeners: &[ListenerConfig],
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<AdminConfig> {
    let token = match &file.token {
        None => None,
        Some(reference) => {
            Some(problems.check("admin.token", secret_ref::resolve(reference, base_dir))?)
        }
    };
    let bind = problems.check("admin.bind", parse_bind(&file.bind))?;
    if !bind.ip().is_loopback() {
        problems.add("admin.bind", ADMIN_NOT_LOOPBACK);
        return None;
    }
    // Port 0 asks the OS for a fresh port, so it never clashes with a listener.
    let clash = listeners
        .iter()
        .position(|listener| listener.bind == bind && bind.port() != 0);
    if let Some(i) = clash {
        let message =
            format!("{bind} is also listeners[{i}].bind; the admin listener needs its own address");
        problems.add("admin.bind", message);
        return None;
    }
    Some(AdminConfig { bind, token })
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not an IP:port address like 127.0.0.1:8080 or [::1]:8080")
    })
}

/// A humane duration (`60s`, `5m`, `1h30m`) greater than zero.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("`{text}` is not a duration like 30s, 5m or 1h30m"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// Provider and route names end up in metric labels and URLs, so they stay plain.
/// An account name: it appears in URLs, metric labels and the store's record names.
pub fn check_account_name(name: &str) -> Result<(), String> {
    // At least one letter or digit: `.` and `..` would be path segments in admin URLs.
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.chars().any(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid account name: 1 to 64 of A-Z a-z 0-9 . _ - with a letter or digit",
            name.escape_debug()
        ))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use [a-z0-9][a-z0-9_-]* (it appears in metric labels and URLs)"
        ))
    }
}

// === impl Problems ===

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::invalid(path, message));
    }

    /// The value, or `None` after recording the error at `path`.
    fn check<T>(&mut self, path: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(path, message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humane_and_positive() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn names_are_label_safe() {
        assert!(check_name("cross-river").is_ok());
        assert!(check_name("x2_y").is_ok());
        assert!(check_name("0day").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("CrossRiver").is_err());
        assert!(check_name("a.b").is_err());
    }
}
