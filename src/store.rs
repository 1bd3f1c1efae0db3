//! The durable token store under the credential cache: refresh tokens, still-valid access tokens
//! and rejected-secret marks survive restarts, encrypted at rest (`store/seal.rs`). Two backends:
//! an embedded redb file for one process (`store/file.rs`), and Redis for a fleet of replicas
//! (`store/fleet.rs`), which also coordinates their token requests.

mod file;
mod fleet;
mod record;
pub mod seal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;

pub use crate::config::StoreConfig;
use crate::secret::Secret;
pub use file::FileStore;
pub use fleet::{Lease, RedisStore, Updates, notification_name};

/// Names one credential's record: provider, optional connected account, and a fingerprint of the
/// credential settings (computed by the credential module; opaque hex here).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    /// The provider's name in `proxy.yaml`.
    pub provider: String,
    /// The connected account, for providers with one credential per account.
    pub account: Option<String>,
    /// Hex fingerprint of the credential settings: a config change starts a fresh record.
    pub fingerprint: String,
}

/// What is remembered about one credential. Debug redacts every token.
#[derive(Debug, Clone, Default)]
pub struct CredentialRecord {
    /// The last access token, reused after a restart while it is still valid.
    pub access_token: Option<StoredToken>,
    /// The current refresh token; rotated ones are saved before the new access token is used.
    pub refresh_token: Option<Secret>,
    /// Set when the token endpoint refused the secret; blocks retries until cleared.
    pub rejected: Option<Rejection>,
    /// Token requests of a lockout-sensitive provider sent without a recorded answer (the
    /// process died, or the answer never came): each may have been a strike at the vendor.
    pub unconfirmed_attempts: u32,
    /// For refresh-token grants, names the chain of refresh tokens this record's belongs to
    /// (the configured one it started from), so a record written under other credential settings
    /// can hand over the newest refresh token.
    pub lineage: Option<String>,
    /// For a connected account: who connected it, when, and whether it still works.
    pub account: Option<AccountInfo>,
}

/// What is known about a connected account besides its tokens. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// When a person completed the authorization.
    pub connected_at: SystemTime,
    /// The scopes granted (the token response's `scope`, else the ones requested).
    pub scopes: Vec<String>,
    /// Fields captured from the code exchange (`xref_account_id`), kept for header templates
    /// when a refreshed token's response lacks them.
    pub fields: BTreeMap<String, String>,
    /// The refresh token was refused (`invalid_grant`) or there is none left: a person must
    /// connect the account again.
    pub reauthorization_required: bool,
    /// The OAuth error code or status of the last failed refresh, for `accounts list`.
    pub last_error: Option<String>,
}

/// An access token as issued, with the response fields that header templates may use.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The token as presented upstream.
    pub value: Secret,
    /// When the token stops being valid (from `expires_in`, the JWT `exp`, or `default_ttl`).
    pub expires_at: SystemTime,
    /// The lifetime granted at issue, used to schedule early renewal.
    pub lifetime: Duration,
    /// Other response fields, for header templates.
    pub fields: BTreeMap<String, String>,
}

/// The token endpoint refused the credential's secret: it is not tried again until reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status of the token endpoint's answer.
    pub status: u16,
    /// The OAuth `error` code, when the answer had one (`invalid_client`, ...).
    pub oauth_error: Option<String>,
    /// When the rejection was received.
    pub at: SystemTime,
}

/// Why the store could not be opened, read or written. Every message names the store's file or
/// directory; none ever contains a token or key.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store directory could not be created.
    #[error("cannot create store directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// Another handle (in this or another process) holds redb's lock on the database.
    #[error("store {dir} is in use by another authrelay process")]
    InUse { dir: PathBuf },
    /// `store.key` in the config is not base64 of 32 bytes.
    #[error("the configured key for store {dir} must be standard base64 of exactly 32 bytes")]
    InvalidConfiguredKey { dir: PathBuf },
    /// `<dir>/store.key` is not base64 of 32 bytes.
    #[error("key file {path} must hold standard base64 of exactly 32 bytes")]
    InvalidKeyFile { path: PathBuf },
    /// `<dir>/store.key` could not be read or written.
    #[error("cannot read or create key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database exists but its generated key file is gone; a new key could not open it.
    #[error(
        "key file {key_path} is missing but {db_path} exists; restore the key file or configure the key"
    )]
    KeyFileMissing { key_path: PathBuf, db_path: PathBuf },
    /// A record's key id is not the current key's.
    #[error("{path} was written with a different key")]
    DifferentKey { path: PathBuf },
    /// A record failed authentication, was moved, or the key-check record is missing.
    #[error("cannot authenticate {path}: wrong key, or the file was modified")]
    Tampered { path: PathBuf },
    /// redb could not read the file (truncated, not a redb file, unknown format).
    #[error("{path} is damaged or not an authrelay store: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    /// Any other redb or I/O failure.
    #[error("store database {path}: {source}")]
    Database {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    /// Redis could not be reached or refused an operation. `url` has no user name or password.
    #[error("redis {url}: {detail}")]
    Redis { url: String, detail: String },
    /// `store.key` of a Redis store is not base64 of 32 bytes.
    #[error("the configured key for redis {url} must be standard base64 of exactly 32 bytes")]
    RedisKey { url: String },
    /// The key-check record in Redis was sealed with another key.
    #[error(
        "redis {url} (prefix {prefix}) holds records sealed with a different key; every replica needs the same store.key"
    )]
    RedisDifferentKey { url: String, prefix: String },
    /// A record in Redis did not authenticate: modified, or sealed under another name or key.
    #[error(
        "record {record} in redis does not authenticate with this key (modified, or written under another name or key)"
    )]
    Unreadable { record: String },
    /// A fenced write was refused: another replica took the lease after this one's expired.
    #[error("another replica took over {record} after this replica's lease expired")]
    LeaseLost { record: String },
    /// The random generator or the cipher failed while writing.
    #[error("cannot encrypt a record for {path}")]
    Seal { path: PathBuf },
    /// The blocking task running a redb call panicked or was cancelled.
    #[error("a store task for {path} stopped before finishing")]
    TaskStopped { path: PathBuf },
}

/// Durable storage of credential records, shared by every request task.
pub trait TokenStore: Send + Sync + 'static {
    /// The record saved under `key`, if any; authenticated before it is returned.
    fn load<'a>(
        &'a self,
        key: &'a CredentialKey,
    ) -> BoxFuture<'a, Result<Option<CredentialRecord>, StoreError>>;

    /// Replaces the record under `key`. Durable (committed, fsynced) when the future resolves.
    fn save<'a>(
        &'a self,
        key: &'a CredentialKey,
        record: &'a CredentialRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Clears `rejected` on every record of `provider` (operator reset); returns how many were cleared.
    fn clear_rejections<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Every record (for `accounts list` / `/readyz`), never printed with secrets.
    fn list(&self) -> BoxFuture<'_, Result<Vec<(CredentialKey, CredentialRecord)>, StoreError>>;

    /// Removes the record under `key` (a disconnected account); true when there was one.
    fn delete<'a>(&'a self, key: &'a CredentialKey) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The fleet coordination of a store shared by replicas; `None` for a store with one owner.
    fn fleet(&self) -> Option<&RedisStore> {
        None
    }

    /// Whether the store answers, for `/readyz` and the metrics.
    fn health(&self) -> StoreHealth {
        StoreHealth {
            shared: false,
            reachable: true,
            errors: 0,
            last_error: None,
        }
    }
}

/// How a store is doing. A file store is always reachable (its failures are per operation).
#[derive(Debug, Clone)]
pub struct StoreHealth {
    /// Shared by a fleet (Redis).
    pub shared: bool,
    /// The last operation or probe succeeded.
    pub reachable: bool,
    /// Failed operations since start, for `authrelay_store_errors_total`.
    pub errors: u64,
    /// What the last failure was; never a token, key or password.
    pub last_error: Option<String>,
}

/// Opens the configured store. Fails with a clear error, without modifying anything, on:
/// another process holding the file, a wrong key, a tampered or truncated file, a Redis whose
/// records were sealed with another key. An unreachable Redis is not an error: the replica starts
/// degraded and connects when Redis answers.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn TokenStore>, StoreError> {
    match config {
        StoreConfig::File { path, key } => {
            let (path, key) = (path.clone(), key.clone());
            let path_for_error = path.clone();
            // Opening authenticates every record: blocking work, off the async threads.
            tokio::task::spawn_blocking(move || FileStore::open(&path, key.as_ref()))
                .await
                .map_err(|_| StoreError::TaskStopped {
                    path: path_for_error,
                })?
                .map(|store| Arc::new(store) as Arc<dyn TokenStore>)
        }
        StoreConfig::Redis(redis) => Ok(Arc::new(RedisStore::open(redis).await?)),
    }
}
