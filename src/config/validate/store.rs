//! `store` -> [`StoreConfig`]: the embedded file store (the default when the section is absent),
//! its directory relative to the config file, and the at-rest key, which must be 32 bytes; or a
//! fleet's Redis, which needs the key configured (every replica shares it).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::super::file::StoreFile;
use super::super::{RedisStoreConfig, StoreConfig, WhenUnreachable};
use super::{Problems, parse_duration, secret_ref};
use crate::secret::Secret;

const DEFAULT_PATH: &str = "./authrelay-data";
const DEFAULT_PREFIX: &str = "authrelay:";
/// Tens of milliseconds: a command on a healthy Redis takes well under one.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
const MAX_TIMEOUT: Duration = Duration::from_secs(5);

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
        None | Some("file") => file_store(file, base_dir, problems),
        Some("redis") => redis_store(file, base_dir, problems),
        Some(other) => {
            problems.add(
                "store.kind",
                format!("unknown kind `{other}` (expected file or redis)"),
            );
            None
        }
    }
}

fn file_store(file: &StoreFile, base_dir: &Path, problems: &mut Problems) -> Option<StoreConfig> {
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
    let misplaced = [
        ("url", file.url.is_some()),
        ("prefix", file.prefix.is_some()),
        ("ca", file.ca.is_some()),
        ("timeout", file.timeout.is_some()),
        ("when_unreachable", file.when_unreachable.is_some()),
    ];
    if !fields_in_place(&misplaced, "kind file (it is for kind redis)", problems) {
        return None;
    }
    Some(StoreConfig::File {
        path: path?,
        key: key?,
    })
}

fn redis_store(file: &StoreFile, base_dir: &Path, problems: &mut Problems) -> Option<StoreConfig> {
    let in_place = fields_in_place(
        &[("path", file.path.is_some())],
        "kind redis (it is for kind file)",
        problems,
    );
    let url = match &file.url {
        Some(text) => {
            let url = secret_ref::resolve(&text.0, base_dir).and_then(check_redis_url);
            problems.check("store.url", url)
        }
        None => {
            problems.add(
                "store.url",
                "kind redis needs the server's address, like redis://127.0.0.1:6379/0",
            );
            None
        }
    };
    // A key file generated on one machine would differ on every replica.
    let key = match &file.key {
        Some(text) => {
            let key = secret_ref::resolve(&text.0, base_dir).and_then(check_key);
            problems.check("store.key", key)
        }
        None => {
            problems.add(
                "store.key",
                "kind redis needs a key shared by every replica (`openssl rand -base64 32`)",
            );
            None
        }
    };
    let prefix = match file.prefix.as_deref() {
        None => Some(DEFAULT_PREFIX.to_owned()),
        Some(prefix) => problems.check("store.prefix", check_prefix(prefix)),
    };
    let tls = url
        .as_ref()
        .is_some_and(|url| url.expose().starts_with("rediss://"));
    let ca = match file.ca.as_deref() {
        None => Some(None),
        Some(_) if url.is_some() && !tls => {
            problems.add("store.ca", "only used with a rediss:// url");
            None
        }
        Some(written) => {
            let path = base_dir.join(written);
            let readable = std::fs::metadata(&path)
                .map(|_| Some(path.clone()))
                .map_err(|error| format!("cannot read {}: {error}", path.display()));
            problems.check("store.ca", readable)
        }
    };
    let timeout = match file.timeout.as_deref() {
        None => Some(DEFAULT_TIMEOUT),
        Some(text) => problems.check(
            "store.timeout",
            parse_duration(text).and_then(|timeout| {
                if timeout > MAX_TIMEOUT {
                    Err(format!(
                        "must be at most {}; a replica waits this long on a dead Redis",
                        humantime::format_duration(MAX_TIMEOUT)
                    ))
                } else {
                    Ok(timeout)
                }
            }),
        ),
    };
    let when_unreachable = match file.when_unreachable.as_deref() {
        None | Some("protect") => Some(WhenUnreachable::Protect),
        Some("request") => Some(WhenUnreachable::Request),
        Some(other) => {
            problems.add(
                "store.when_unreachable",
                format!("unknown value `{other}` (expected protect or request)"),
            );
            None
        }
    };
    if !in_place {
        return None;
    }
    Some(StoreConfig::Redis(RedisStoreConfig {
        url: url?,
        key: key?,
        prefix: prefix?,
        ca: ca?,
        timeout: timeout?,
        when_unreachable: when_unreachable?,
    }))
}

/// Reports every field of `fields` that is written although this kind does not use it.
fn fields_in_place(fields: &[(&str, bool)], owner: &str, problems: &mut Problems) -> bool {
    let mut in_place = true;
    for (name, written) in fields {
        if *written {
            problems.add(format!("store.{name}"), format!("not used by {owner}"));
            in_place = false;
        }
    }
    in_place
}

/// A `redis://` or `rediss://` URL the client accepts. It may hold a password, so no message
/// repeats it.
fn check_redis_url(url: Secret) -> Result<Secret, String> {
    let text = url.expose();
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss:// (rediss for TLS)".into());
    }
    match redis::parse_redis_url(text) {
        Some(parsed) if parsed.host_str().is_some_and(|host| !host.is_empty()) => {}
        _ => return Err("is not a valid redis URL like redis://host:6379/0".into()),
    }
    // The client's own message may quote the URL.
    redis::IntoConnectionInfo::into_connection_info(text).map_err(|_| {
        "is not a usable redis URL (check the port, the database number and the query)".to_owned()
    })?;
    Ok(url)
}

/// Prefixes end up in key names and the notification channel: plain characters only.
fn check_prefix(prefix: &str) -> Result<String, String> {
    let plain = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-' | '/'));
    if prefix.is_empty() || prefix.len() > 64 || !plain {
        return Err("must be 1 to 64 characters from A-Z a-z 0-9 : . _ - /".into());
    }
    Ok(prefix.to_owned())
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
