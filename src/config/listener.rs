//! The front door: listeners (plain or TLS, with limits) and the callers allowed through them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;

/// One listener for callers.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// TLS (and mTLS with `client_ca`); `None` serves plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Requests without caller credentials are served. True on a loopback listener when no
    /// `callers` are configured, or when written on the listener.
    pub anonymous: bool,
    /// Browser origins (`https://app.example.com`, lower case, no trailing `/`) whose
    /// cross-site requests an anonymous listener accepts.
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
}

/// A TLS listener's certificate, key and optional caller CA, loaded into a rustls config.
#[derive(Clone)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Callers must present a certificate issued by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// What one listener accepts from a caller before giving up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once; the next one is answered 503 and closed.
    pub max_connections: usize,
    /// Header fields in one request (431 past it).
    pub max_headers: usize,
    /// Bytes of all header names and values together (431 past it).
    pub max_header_bytes: usize,
    /// Bytes of the request target, path and query (414 past it).
    pub max_target_bytes: usize,
    /// Time to receive a request's headers (the TLS handshake included); also how long an
    /// HTTP/1.1 connection may sit idle before its next request.
    pub header_read_timeout: Duration,
    /// Time to receive a whole request body (408 past it).
    pub body_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// A known caller: who may use authrelay, and how it proves it.
#[derive(Debug, Clone)]
pub struct CallerConfig {
    /// Used in logs, metric labels and routes' `callers` lists.
    pub name: String,
    pub credential: CallerCredential,
}

/// How a caller proves who it is.
#[derive(Debug, Clone)]
pub enum CallerCredential {
    /// Sent as `Proxy-Authorization: Bearer <key>`.
    ApiKey(Secret),
    /// The subject of a client certificate verified by a listener's `client_ca`.
    CertSubject(CertSubject),
}

/// A distinguished name as attribute/value pairs in certificate order (`CN=crm`,
/// `O=Acme, CN=crm`); attribute names upper case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject(pub Vec<(String, String)>);

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_connections: 1024,
        max_headers: 100,
        max_header_bytes: 32 * 1024,
        max_target_bytes: 8 * 1024,
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

impl ListenerConfig {
    /// `http` or `https`: how callers reach this listener.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn is_loopback(&self) -> bool {
        self.bind.ip().is_loopback()
    }

    /// Requires a client certificate (`tls.client_ca`).
    pub fn is_mutual_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some())
    }
}

// The rustls config holds the private key: show the files, never the material.
impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl CallerCredential {
    /// Two callers that one request could not tell apart.
    pub fn same_as(&self, other: &CallerCredential) -> bool {
        match (self, other) {
            (CallerCredential::ApiKey(a), CallerCredential::ApiKey(b)) => a.same_as(b),
            (CallerCredential::CertSubject(a), CallerCredential::CertSubject(b)) => a == b,
            _ => false,
        }
    }
}

// === impl CertSubject ===

impl CertSubject {
    /// Reads `CN=crm` or `O=Acme, CN=crm` (spaces around `=` and `,` ignored, as
    /// `openssl x509 -noout -subject` prints them). Values cannot hold commas.
    pub fn parse(text: &str) -> Result<CertSubject, String> {
        let invalid = || format!("`{text}` is not a subject like CN=crm or O=Acme, CN=crm");
        let mut pairs = Vec::new();
        for part in text.split(',') {
            let (name, value) = part.split_once('=').ok_or_else(invalid)?;
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty()
                || value.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            {
                return Err(invalid());
            }
            pairs.push((name.to_ascii_uppercase(), value.to_owned()));
        }
        Ok(CertSubject(pairs))
    }
}

impl fmt::Display for CertSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_read_as_openssl_prints_them() {
        let subject = CertSubject::parse("O = Acme, cn = crm").unwrap();
        assert_eq!(subject, CertSubject::parse("O=Acme,CN=crm").unwrap());
        assert_eq!(subject.to_string(), "O=Acme, CN=crm");
        assert!(CertSubject::parse("crm").is_err());
        assert!(CertSubject::parse("CN=").is_err());
        assert!(CertSubject::parse("C N=x").is_err());
    }
}
