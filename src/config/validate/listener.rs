//! `listeners[i]` -> [`ListenerConfig`]: the address (loopback unless callers authenticate or
//! the listener says `allow_anonymous`), TLS material, browser origins and limits.

use std::path::Path;
use std::sync::Arc;

use http::Uri;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::super::file::{LimitsFile, ListenerFile, TlsFile};
use super::super::{Limits, ListenerConfig, ListenerTls};
use super::byte_size::parse_byte_size;
use super::{Problems, parse_bind, parse_duration, pem};
use crate::trust::crypto_provider;

/// Upper bounds that keep limits meaningful: hyper's buffers, the sniffer and timers are
/// sized from them.
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_HEADERS: usize = 1000;
const MAX_HEAD_SIZE: usize = 1024 * 1024;
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

const NOT_LOOPBACK: &str = "is not a loopback address, so anyone who reaches it would call vendors with our credentials: configure `callers` (API keys or certificate subjects) or write `allow_anonymous: true` on this listener";

/// Checks every listener; `callers_configured` tells whether requests can authenticate.
pub(super) fn listeners(
    files: &[ListenerFile],
    callers_configured: bool,
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<ListenerConfig> {
    if files.is_empty() {
        problems.add("listeners", "at least one listener is required");
    }
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let path = format!("listeners[{i}]");
        let bind = problems.check(format!("{path}.bind"), parse_bind(&file.bind));
        if let Some(bind) = bind {
            let anonymous_written = file.allow_anonymous == Some(true);
            if !bind.ip().is_loopback() && !callers_configured && !anonymous_written {
                problems.add(format!("{path}.bind"), format!("{bind} {NOT_LOOPBACK}"));
            }
            // Port 0 asks the OS for a fresh port each time, so equal port-0 binds never clash.
            let earlier = listeners
                .iter()
                .position(|other| other.bind == bind && bind.port() != 0);
            if let Some(j) = earlier {
                let message = format!("{bind} is already bound by listeners[{j}]");
                problems.add(format!("{path}.bind"), message);
            }
        }
        let tls = match &file.tls {
            Some(tls_file) => tls(tls_file, &path, base_dir, problems).map(Some),
            None => Some(None),
        };
        let allowed_origins = origins(file.allowed_origins.as_deref(), &path, problems);
        let limits = limits(file.limits.as_ref(), &path, problems);
        let (Some(bind), Some(tls), Some(allowed_origins), Some(limits)) =
            (bind, tls, allowed_origins, limits)
        else {
            continue;
        };
        // Without callers nobody can authenticate, so a loopback listener serves everyone;
        // once callers exist, anonymity is something a listener must ask for.
        let anonymous = file
            .allow_anonymous
            .unwrap_or(!callers_configured && bind.ip().is_loopback());
        listeners.push(ListenerConfig {
            bind,
            tls,
            anonymous,
            allowed_origins,
            limits,
        });
    }
    listeners
}

fn tls(
    file: &TlsFile,
    path: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ListenerTls> {
    let chain = problems.check(
        format!("{path}.tls.cert"),
        pem::certificates(&file.cert, base_dir),
    );
    let key = problems.check(
        format!("{path}.tls.key"),
        pem::private_key(&file.key, base_dir),
    );
    let client_ca = match &file.client_ca {
        Some(written) => problems
            .check(
                format!("{path}.tls.client_ca"),
                pem::certificates(written, base_dir),
            )
            .map(Some),
        None => Some(None),
    };
    let ((cert, chain), (key, key_der), client_ca) = (chain?, key?, client_ca?);

    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| format!("TLS setup: {error}"));
    let builder = problems.check(format!("{path}.tls"), builder)?;
    let (builder, client_ca) = match client_ca {
        None => (builder.with_no_client_auth(), None),
        Some((ca_path, certs)) => {
            let mut roots = RootCertStore::empty();
            for (index, cert) in certs.into_iter().enumerate() {
                if let Err(error) = roots.add(cert) {
                    let message = format!("certificate {index} is not a usable CA: {error}");
                    problems.add(format!("{path}.tls.client_ca"), message);
                    return None;
                }
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                    .build()
                    .map_err(|error| format!("cannot verify callers with it: {error}"));
            let verifier = problems.check(format!("{path}.tls.client_ca"), verifier)?;
            (builder.with_client_cert_verifier(verifier), Some(ca_path))
        }
    };
    // rustls checks that the key belongs to the certificate; its message names no key material.
    let server_config = builder
        .with_single_cert(chain, key_der)
        .map_err(|error| format!("the certificate and key do not make a TLS identity: {error}"));
    let mut server_config = problems.check(format!("{path}.tls"), server_config)?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(ListenerTls {
        cert,
        key,
        client_ca,
        server_config: Arc::new(server_config),
    })
}

/// `https://app.example.com` -> itself, lower case: compared with a request's `Origin`.
fn origins(written: Option<&[String]>, path: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let mut origins = Vec::new();
    let mut ok = true;
    for (i, text) in written.unwrap_or_default().iter().enumerate() {
        match parse_origin(text) {
            Ok(origin) => origins.push(origin),
            Err(message) => {
                problems.add(format!("{path}.allowed_origins[{i}]"), message);
                ok = false;
            }
        }
    }
    ok.then_some(origins)
}

fn parse_origin(text: &str) -> Result<String, String> {
    let invalid = || format!("`{text}` is not an origin like https://app.example.com");
    let uri: Uri = text.parse().map_err(|_| invalid())?;
    let scheme = uri.scheme_str().ok_or_else(invalid)?;
    let authority = uri.authority().ok_or_else(invalid)?;
    let bare = uri.path() == "/" && !text.ends_with('/') && uri.query().is_none();
    if !matches!(scheme, "http" | "https") || !bare || authority.as_str().contains('@') {
        return Err(invalid());
    }
    Ok(format!("{scheme}://{authority}").to_ascii_lowercase())
}

fn limits(file: Option<&LimitsFile>, path: &str, problems: &mut Problems) -> Option<Limits> {
    let defaults = Limits::DEFAULT;
    let Some(file) = file else {
        return Some(defaults);
    };
    let path = format!("{path}.limits");
    let count = |problems: &mut Problems, name: &str, text: &Option<String>, default, max| {
        let Some(text) = text else {
            return Some(default);
        };
        let parsed = text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("`{text}` is not a whole number from 1 to {max}"));
        problems.check(format!("{path}.{name}"), parsed)
    };
    let size = |problems: &mut Problems, name: &str, text: &Option<String>, default: usize| {
        let Some(text) = text else {
            return Some(default);
        };
        let parsed = parse_byte_size(text).and_then(|n| match usize::try_from(n) {
            Ok(n) if (1..=MAX_HEAD_SIZE).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{text}` must be greater than zero and at most 1MiB"
            )),
        });
        problems.check(format!("{path}.{name}"), parsed)
    };
    let duration = |problems: &mut Problems, name: &str, text: &Option<String>, default| {
        let Some(text) = text else {
            return Some(default);
        };
        let parsed = parse_duration(text).and_then(|duration| match duration <= MAX_TIMEOUT {
            true => Ok(duration),
            false => Err(format!("`{text}` is longer than a day")),
        });
        problems.check(format!("{path}.{name}"), parsed)
    };
    // Every field is checked before any is given up on, so one run reports them all.
    let max_connections = count(
        problems,
        "max_connections",
        &file.max_connections,
        defaults.max_connections,
        MAX_CONNECTIONS,
    );
    let max_headers = count(
        problems,
        "max_headers",
        &file.max_headers,
        defaults.max_headers,
        MAX_HEADERS,
    );
    let max_header_bytes = size(
        problems,
        "max_header_bytes",
        &file.max_header_bytes,
        defaults.max_header_bytes,
    );
    let max_target_bytes = size(
        problems,
        "max_target_bytes",
        &file.max_target_bytes,
        defaults.max_target_bytes,
    );
    let header_read_timeout = duration(
        problems,
        "header_read_timeout",
        &file.header_read_timeout,
        defaults.header_read_timeout,
    );
    let body_read_timeout = duration(
        problems,
        "body_read_timeout",
        &file.body_read_timeout,
        defaults.body_read_timeout,
    );
    let idle_timeout = duration(
        problems,
        "idle_timeout",
        &file.idle_timeout,
        defaults.idle_timeout,
    );
    Some(Limits {
        max_connections: max_connections?,
        max_headers: max_headers?,
        max_header_bytes: max_header_bytes?,
        max_target_bytes: max_target_bytes?,
        header_read_timeout: header_read_timeout?,
        body_read_timeout: body_read_timeout?,
        idle_timeout: idle_timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_bare_scheme_and_authority() {
        assert_eq!(
            parse_origin("https://App.Example.com"),
            Ok("https://app.example.com".into())
        );
        assert_eq!(
            parse_origin("http://localhost:3000"),
            Ok("http://localhost:3000".into())
        );
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/x",
            "ftp://app.example.com",
            "https://user@app.example.com",
            "null",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
