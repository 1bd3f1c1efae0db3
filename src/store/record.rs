//! How a credential record becomes sealed bytes and back: its name (the AEAD associated data and
//! the database key) and a private serde mirror, since `Secret` has no `Serialize` on purpose.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::seal::{SealError, SealingKey};
use super::{AccountInfo, CredentialKey, CredentialRecord, Rejection, StoredToken};
use crate::secret::Secret;

/// Prefix of every credential record's name; other names hold store metadata.
pub(super) const CREDENTIAL_PREFIX: &str = "cred/";

/// Name of the record sealed at creation, so a wrong key is caught even in an empty store.
pub(super) const KEY_CHECK_NAME: &str = "meta/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"authrelay token store v1";

/// Why a record could not be turned into sealed bytes or back.
#[derive(Debug)]
pub(super) enum RecordError {
    Seal(SealError),
    /// The record could not be serialized (not expected for these types).
    Encode,
    /// Authenticated but not a record this build can read.
    Decode,
}

/// The serialized form of a record, holding plain copies of its secrets: wiped on drop.
#[derive(Serialize, Deserialize, Default)]
struct RecordFile {
    provider: String,
    account: Option<String>,
    fingerprint: String,
    access_token: Option<TokenFile>,
    refresh_token: Option<String>,
    rejected: Option<RejectionFile>,
    #[serde(default)]
    unconfirmed_attempts: u32,
    #[serde(default)]
    lineage: Option<String>,
    #[serde(default)]
    account_info: Option<AccountFile>,
}

#[derive(Serialize, Deserialize)]
struct AccountFile {
    connected_at: Duration,
    scopes: Vec<String>,
    fields: BTreeMap<String, String>,
    reauthorization_required: bool,
    last_error: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct TokenFile {
    value: String,
    expires_at: Duration,
    lifetime: Duration,
    fields: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct RejectionFile {
    status: u16,
    oauth_error: Option<String>,
    at: Duration,
}

/// `cred/<provider>/<account or _>/<fingerprint>`, each part escaped so that distinct keys never
/// share a name (a `/` in an account, or an account literally named `_`).
pub(super) fn record_name(key: &CredentialKey) -> String {
    let account = match &key.account {
        None => "_".to_owned(),
        Some(account) if account == "_" => "%5F".to_owned(),
        Some(account) => escape(account),
    };
    format!(
        "{CREDENTIAL_PREFIX}{}/{account}/{}",
        escape(&key.provider),
        escape(&key.fingerprint)
    )
}

/// Percent-encodes every byte outside `[A-Za-z0-9._@-]`.
fn escape(part: &str) -> String {
    let mut escaped = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'@') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Serializes and seals `record` under its key's name.
pub(super) fn seal_record(
    sealing_key: &SealingKey,
    key: &CredentialKey,
    record: &CredentialRecord,
) -> Result<Vec<u8>, RecordError> {
    let file = RecordFile {
        provider: key.provider.clone(),
        account: key.account.clone(),
        fingerprint: key.fingerprint.clone(),
        access_token: record.access_token.as_ref().map(|token| TokenFile {
            value: token.value.expose().to_owned(),
            expires_at: since_epoch(token.expires_at),
            lifetime: token.lifetime,
            fields: token.fields.clone(),
        }),
        refresh_token: record
            .refresh_token
            .as_ref()
            .map(|token| token.expose().to_owned()),
        rejected: record.rejected.as_ref().map(|rejection| RejectionFile {
            status: rejection.status,
            oauth_error: rejection.oauth_error.clone(),
            at: since_epoch(rejection.at),
        }),
        unconfirmed_attempts: record.unconfirmed_attempts,
        lineage: record.lineage.clone(),
        account_info: record.account.as_ref().map(|info| AccountFile {
            connected_at: since_epoch(info.connected_at),
            scopes: info.scopes.clone(),
            fields: info.fields.clone(),
            reauthorization_required: info.reauthorization_required,
            last_error: info.last_error.clone(),
        }),
    };
    // Sized generously up front: a reallocation would leave a plaintext copy in freed memory.
    let token_len = record.access_token.as_ref().map_or(0, |token| {
        token.value.expose().len()
            + token
                .fields
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>()
    });
    let refresh_len = record
        .refresh_token
        .as_ref()
        .map_or(0, |token| token.expose().len());
    let mut plaintext = Zeroizing::new(Vec::with_capacity(1024 + 2 * (token_len + refresh_len)));
    serde_json::to_writer(&mut *plaintext, &file).map_err(|_| RecordError::Encode)?;
    sealing_key
        .seal(&record_name(key), &plaintext)
        .map_err(RecordError::Seal)
}

/// Opens and deserializes the record sealed under `name`.
pub(super) fn open_record(
    sealing_key: &SealingKey,
    name: &str,
    sealed: &[u8],
) -> Result<(CredentialKey, CredentialRecord), RecordError> {
    let plaintext = sealing_key.open(name, sealed).map_err(RecordError::Seal)?;
    let mut file: RecordFile =
        serde_json::from_slice(&plaintext).map_err(|_| RecordError::Decode)?;
    let key = CredentialKey {
        provider: std::mem::take(&mut file.provider),
        account: file.account.take(),
        fingerprint: std::mem::take(&mut file.fingerprint),
    };
    // The name is authenticated as associated data; a payload naming another key is not ours.
    if record_name(&key) != name {
        return Err(RecordError::Decode);
    }
    let record = CredentialRecord {
        access_token: file.access_token.as_mut().map(|token| StoredToken {
            value: Secret::new(std::mem::take(&mut token.value)),
            expires_at: UNIX_EPOCH + token.expires_at,
            lifetime: token.lifetime,
            fields: std::mem::take(&mut token.fields),
        }),
        refresh_token: file
            .refresh_token
            .as_mut()
            .map(|token| Secret::new(std::mem::take(token))),
        rejected: file.rejected.take().map(|rejection| Rejection {
            status: rejection.status,
            oauth_error: rejection.oauth_error,
            at: UNIX_EPOCH + rejection.at,
        }),
        unconfirmed_attempts: file.unconfirmed_attempts,
        lineage: file.lineage.take(),
        account: file.account_info.take().map(|info| AccountInfo {
            connected_at: UNIX_EPOCH + info.connected_at,
            scopes: info.scopes,
            fields: info.fields,
            reauthorization_required: info.reauthorization_required,
            last_error: info.last_error,
        }),
    };
    Ok((key, record))
}

/// The sealed key-check record written when a store is created.
pub(super) fn seal_key_check(sealing_key: &SealingKey) -> Result<Vec<u8>, SealError> {
    sealing_key.seal(KEY_CHECK_NAME, KEY_CHECK_PLAINTEXT)
}

/// Verifies the key-check record against `sealing_key`.
pub(super) fn open_key_check(sealing_key: &SealingKey, sealed: &[u8]) -> Result<(), RecordError> {
    let plaintext = sealing_key
        .open(KEY_CHECK_NAME, sealed)
        .map_err(RecordError::Seal)?;
    if plaintext.as_slice() == KEY_CHECK_PLAINTEXT {
        Ok(())
    } else {
        Err(RecordError::Decode)
    }
}

/// Time since the Unix epoch; a time before it (already long past) is stored as the epoch.
fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(UNIX_EPOCH).unwrap_or_default()
}

// === impl RecordFile ===

impl Drop for RecordFile {
    fn drop(&mut self) {
        if let Some(token) = &mut self.access_token {
            token.value.zeroize();
        }
        self.refresh_token.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(provider: &str, account: Option<&str>) -> CredentialKey {
        CredentialKey {
            provider: provider.to_owned(),
            account: account.map(str::to_owned),
            fingerprint: "ab12".to_owned(),
        }
    }

    #[test]
    fn names_are_distinct_for_distinct_keys() {
        assert_eq!(record_name(&key("cr", None)), "cred/cr/_/ab12");
        assert_eq!(record_name(&key("cr", Some("a@b.c"))), "cred/cr/a@b.c/ab12");
        assert_ne!(
            record_name(&key("cr", Some("_"))),
            record_name(&key("cr", None))
        );
        assert_eq!(record_name(&key("cr", Some("x/y"))), "cred/cr/x%2Fy/ab12");
        assert_ne!(
            record_name(&key("a/b", Some("c"))),
            record_name(&key("a", Some("b/c")))
        );
    }
}
