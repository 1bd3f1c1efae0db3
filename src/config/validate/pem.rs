//! PEM files named in the config (`ca`, `tls.cert`, `tls.key`, `tls.client_ca`), read with
//! messages that name the file as written and as resolved, never its contents.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// `written` resolved against `base_dir`, and how to show it in a message.
pub(super) fn resolve(written: &str, base_dir: &Path) -> (PathBuf, String) {
    let path = base_dir.join(written);
    let shown = if Path::new(written).is_absolute() {
        written.to_owned()
    } else {
        format!("{written} ({})", path.display())
    };
    (path, shown)
}

/// Every certificate in the file; at least one.
pub(super) fn certificates(
    written: &str,
    base_dir: &Path,
) -> Result<(PathBuf, Vec<CertificateDer<'static>>), String> {
    let (path, shown) = resolve(written, base_dir);
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| describe(error, &shown))?;
    if certs.is_empty() {
        return Err(format!("{shown} holds no PEM certificate"));
    }
    Ok((path, certs))
}

/// The first private key in the file (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(
    written: &str,
    base_dir: &Path,
) -> Result<(PathBuf, PrivateKeyDer<'static>), String> {
    let (path, shown) = resolve(written, base_dir);
    match PrivateKeyDer::from_pem_file(&path) {
        Ok(key) => Ok((path, key)),
        Err(pem::Error::NoItemsFound) => Err(format!("{shown} holds no PEM private key")),
        Err(error) => Err(describe(error, &shown)),
    }
}

// pem::Error's Display names only the kind of problem and positions, never the bytes.
fn describe(error: pem::Error, shown: &str) -> String {
    match error {
        pem::Error::Io(error) => format!("cannot read {shown}: {error}"),
        error => format!("{shown} is not valid PEM: {error}"),
    }
}
