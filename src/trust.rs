//! Outbound TLS trust: the OS roots (which honour `SSL_CERT_FILE` / `SSL_CERT_DIR`), plus a
//! provider's own `ca` bundle. Verification is always on; there is no switch to turn it off.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::config::CaBundle;

/// Why outbound TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: certificate {index} is not a usable root: {error}")]
    BadRoot {
        path: String,
        index: usize,
        #[source]
        error: rustls::Error,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Client TLS settings that trust the OS roots and `extra`. Not ALPN-specific: callers add theirs.
pub fn client_config(extra: Option<&CaBundle>) -> Result<rustls::ClientConfig, TrustError> {
    let mut roots = RootCertStore::empty();
    // Unparseable OS certificates are skipped, as browsers do; a bad configured one is an error.
    roots.add_parsable_certificates(native_roots().iter().cloned());
    if let Some(bundle) = extra {
        for (index, cert) in bundle.certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|error| TrustError::BadRoot {
                    path: bundle.path.display().to_string(),
                    index,
                    error,
                })?;
        }
    }
    if roots.is_empty() {
        // Plain-http upstreams still work; every https one will fail verification, loudly.
        tracing::warn!("no trusted root certificates: install ca-certificates or set `ca`");
    }
    let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The one crypto provider of the process (aws-lc-rs).
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The OS roots, read once: reading them walks the file system.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        for error in &result.errors {
            tracing::warn!(%error, "skipping part of the OS trust store");
        }
        result.certs
    })
}
