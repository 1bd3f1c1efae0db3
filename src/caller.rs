//! Who is calling: the configured callers, looked up by API key (`Proxy-Authorization: Bearer`)
//! or by the subject of a verified client certificate.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};

use crate::config::{CallerConfig, CallerCredential, CertSubject};

/// The callers of one configuration, ready for lookups.
#[derive(Default)]
pub struct CallerTable {
    /// SHA-256 of each API key, with its caller's name. Digests of equal length make every
    /// comparison take the same time, whatever the presented key.
    api_keys: Vec<([u8; 32], Arc<str>)>,
    subjects: Vec<(CertSubject, Arc<str>)>,
}

// Key digests are not printed: an unsalted digest of a short key can be searched for.
impl std::fmt::Debug for CallerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keyed: Vec<&str> = self.api_keys.iter().map(|(_, name)| &**name).collect();
        f.debug_struct("CallerTable")
            .field("api_key_callers", &keyed)
            .field("subjects", &self.subjects)
            .finish()
    }
}

/// A presented credential that names no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCaller;

// === impl CallerTable ===

impl CallerTable {
    pub fn new(callers: &[CallerConfig]) -> CallerTable {
        let mut table = CallerTable::default();
        for caller in callers {
            let name: Arc<str> = Arc::from(caller.name.as_str());
            match &caller.credential {
                CallerCredential::ApiKey(key) => {
                    table.api_keys.push((sha256(key.expose().as_bytes()), name));
                }
                CallerCredential::CertSubject(subject) => {
                    table.subjects.push((subject.clone(), name));
                }
            }
        }
        table
    }

    /// True when no caller is configured: requests are not identified.
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_empty() && self.subjects.is_empty()
    }

    /// The caller whose key is `presented`. Every key is compared, so the time taken does not
    /// tell which one (or how much of one) matched.
    pub fn by_api_key(&self, presented: &[u8]) -> Result<Arc<str>, UnknownCaller> {
        let presented = sha256(presented);
        let mut found = None;
        for (key, name) in &self.api_keys {
            if verify_slices_are_equal(key, &presented).is_ok() {
                found = Some(name);
            }
        }
        found.cloned().ok_or(UnknownCaller)
    }

    pub fn by_subject(&self, subject: &CertSubject) -> Result<Arc<str>, UnknownCaller> {
        self.subjects
            .iter()
            .find(|(known, _)| known == subject)
            .map(|(_, name)| Arc::clone(name))
            .ok_or(UnknownCaller)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The subject of a DER certificate, in certificate order, attribute names as OpenSSL
/// abbreviates them (`CN`, `O`, `OU`, ...); `None` when it cannot be read.
pub fn certificate_subject(der: &[u8]) -> Option<CertSubject> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut pairs = Vec::new();
    for attribute in cert.subject().iter_attributes() {
        let oid = attribute.attr_type();
        let name = x509_parser::objects::oid2abbrev(oid, registry)
            .map(str::to_owned)
            .unwrap_or_else(|_| oid.to_id_string());
        let value = attribute.as_str().ok()?;
        pairs.push((name.to_ascii_uppercase(), value.to_owned()));
    }
    Some(CertSubject(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn caller(name: &str, credential: CallerCredential) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            credential,
        }
    }

    #[test]
    fn callers_are_found_by_key_or_subject() {
        let table = CallerTable::new(&[
            caller(
                "billing",
                CallerCredential::ApiKey(Secret::new("billing-key-0123456789")),
            ),
            caller(
                "crm",
                CallerCredential::CertSubject(CertSubject::parse("CN=crm").unwrap()),
            ),
        ]);
        assert_eq!(
            table.by_api_key(b"billing-key-0123456789").as_deref(),
            Ok("billing")
        );
        assert_eq!(
            table.by_api_key(b"billing-key-012345678"),
            Err(UnknownCaller)
        );
        assert_eq!(table.by_api_key(b""), Err(UnknownCaller));
        let crm = CertSubject::parse("CN=crm").unwrap();
        assert_eq!(table.by_subject(&crm).as_deref(), Ok("crm"));
        let other = CertSubject::parse("O=Acme, CN=crm").unwrap();
        assert_eq!(table.by_subject(&other), Err(UnknownCaller));
    }
}
