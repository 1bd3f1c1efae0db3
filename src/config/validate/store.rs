//! `store` -> [`StoreConfig`]: the embedded file store (the default when the section is absent),
//! its directory relative to the config file, and the at-rest key, which must be 32 bytes.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::super::StoreConfig;
use super::super::file::StoreFile;
use super::{Problems, secret_ref};
use crate::secret::Secret;

const DEFAULT_PATH: &str = "./authrelay-data";

/// Bytes of the AEAD key that encrypts tokens at rest.
const KEY_LEN: usize = 32;

/// Checks the `store` section; `None` when it has errors (they are in `problems`).
pub(super) fn store(
    file: Option<&StoreFile>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<StoreConfig> {
    let Some(file) = file else {
        return Some(StoreConfig::File {
            path: base_dir.join(DEFAULT_PATH),
            key: None,
        });
    };
    match file.kind.as_deref() {
        None | Some("file") => {}
        Some("redis") => {
            problems.add(
                "store.kind",
                "kind redis is not supported yet (fleet mode); use kind file",
            );
            return None;
        }
        Some(other) => {
            problems.add(
                "store.kind",
                format!("unknown kind `{other}` (expected file)"),
            );
            return None;
        }
    }
    let path = match file.path.as_deref() {
        Some("") => {
            problems.add(
                "store.path",
                "must name a directory (leave it out for ./authrelay-data)",
            );
            None
        }
        Some(written) => Some(base_dir.join(written)),
        None => Some(base_dir.join(DEFAULT_PATH)),
    };
    let key = match &file.key {
        Some(text) => {
            let key = secret_ref::resolve(&text.0, base_dir).and_then(check_key);
            problems.check("store.key", key).map(Some)
        }
        None => Some(None),
    };
    let mut out_of_place = false;
    for (name, written) in [
        ("url", file.url.is_some()),
        ("prefix", file.prefix.is_some()),
    ] {
        if written {
            problems.add(
                format!("store.{name}"),
                "not used by kind file (it is for kind redis)",
            );
            out_of_place = true;
        }
    }
    if out_of_place {
        return None;
    }
    Some(StoreConfig::File {
        path: path?,
        key: key?,
    })
}

/// The key must be standard base64 of exactly [`KEY_LEN`] bytes. The message never repeats the
/// text: it is the key itself.
fn check_key(key: Secret) -> Result<Secret, String> {
    let hint = "generate one with `openssl rand -base64 32`";
    match STANDARD.decode(key.expose()) {
        Ok(bytes) if bytes.len() == KEY_LEN => Ok(key),
        Ok(bytes) => Err(format!(
            "must be {KEY_LEN} bytes in standard base64, but decodes to {} bytes; {hint}",
            bytes.len()
        )),
        Err(_) => Err(format!(
            "must be {KEY_LEN} bytes in standard base64, but is not valid base64; {hint}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_must_be_32_bytes_of_standard_base64() {
        let good = STANDARD.encode([7u8; 32]);
        assert!(check_key(Secret::new(good)).is_ok());
        let short = check_key(Secret::new(STANDARD.encode([7u8; 16]))).unwrap_err();
        assert!(short.contains("decodes to 16 bytes"), "{short}");
        // URL-safe alphabet and missing padding are not standard base64.
        let url_safe = "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_8=";
        let error = check_key(Secret::new(url_safe)).unwrap_err();
        assert!(!error.contains(url_safe), "{error}");
        assert!(error.contains("is not valid base64"), "{error}");
    }
}
