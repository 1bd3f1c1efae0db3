//! The fleet store: credential records in Redis, shared by every replica, sealed with the same
//! AEAD as the file store (Redis never sees a plain token), plus what replicas need to agree on
//! one token request per credential: leases with fencing values, compare-and-delete of a refused
//! token, and a notification channel for the replicas waiting on a lease holder.
//!
//! Layout under `prefix`, for a record named `cred/<provider>/<account>/<fingerprint>`:
//! - `<prefix><name>`: a hash with `sealed` (the record), `token_id` (a keyed digest of its access
//!   token, so that Lua can compare tokens without seeing them), `stale` (the id of a token a
//!   vendor refused) and `fence` (the fencing value of the last lease or write);
//! - `<prefix>lease/<name>`: the lease, `<owner> <fence>`, expiring on its own;
//! - `<prefix>fence`: the counter that issues fencing values; `<prefix>index`: every record name;
//! - `<prefix>meta/key-check`: sealed at first use, so a replica with another key is refused;
//! - channel `<prefix>updates`: the name of every record written.

mod scripts;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Client, RedisError};
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use super::record::{open_key_check, open_record, record_name, seal_key_check, seal_record};
use super::seal::SealingKey;
use super::{CredentialKey, CredentialRecord, StoreError, StoreHealth, TokenStore};
use crate::config::{RedisStoreConfig, WhenUnreachable};
use crate::secret::{Secret, hex};

use scripts::Scripts;

/// Tries of one operation: a second after a timeout or a broken connection.
const ATTEMPTS: usize = 2;
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How many record names a waiting replica may fall behind on before it just re-reads.
const UPDATES_BACKLOG: usize = 256;
/// Sent on the local updates channel when notifications may have been missed (a reconnect):
/// every waiter re-reads.
const EVERY_RECORD: &str = "*";

/// The fleet's Redis. Cloning shares the connections.
pub struct RedisStore {
    shared: Arc<Shared>,
    watcher: tokio::task::JoinHandle<()>,
}

struct Shared {
    manager: ConnectionManager,
    client: Client,
    sealing_key: SealingKey,
    /// Keyed digests of access tokens; derived from the store key, never the AEAD key itself.
    token_id_key: hmac::Key,
    prefix: String,
    /// The URL without user name or password, for messages.
    shown: String,
    timeout: Duration,
    when_unreachable: WhenUnreachable,
    /// This process's part of every lease value.
    owner: String,
    scripts: Scripts,
    updates: broadcast::Sender<Arc<str>>,
    reachable: AtomicBool,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The key-check record was sealed with another key: nothing is read or written.
    wrong_key: AtomicBool,
    /// The key-check record opened with this key.
    key_verified: AtomicBool,
}

/// The right to make the next token request for one credential, until it expires.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Issued by Redis, increasing: a write carrying an older one is refused.
    pub fence: u64,
    value: String,
}

/// Notifications of written records, for a replica waiting on another's token request.
pub struct Updates {
    receiver: broadcast::Receiver<Arc<str>>,
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects, and checks the key against the key-check record. An unreachable Redis is not
    /// an error here (the replica starts degraded and reconnects by itself); another key is.
    pub async fn open(config: &RedisStoreConfig) -> Result<RedisStore, StoreError> {
        let shown = shown_url(config.url.expose());
        let key_bytes = Zeroizing::new(
            STANDARD
                .decode(config.key.expose().trim())
                .map_err(|_| StoreError::RedisKey { url: shown.clone() })?,
        );
        let sealing_key = SealingKey::from_bytes(&key_bytes)
            .map_err(|_| StoreError::RedisKey { url: shown.clone() })?;
        let token_id_key = derive_token_id_key(&key_bytes);
        let client = client(config, &shown)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
            .map_err(|error| StoreError::Redis {
                url: shown.clone(),
                detail: describe(&error),
            })?;
        let (updates, _) = broadcast::channel(UPDATES_BACKLOG);
        let shared = Arc::new(Shared {
            manager,
            client,
            sealing_key,
            token_id_key,
            prefix: config.prefix.clone(),
            shown,
            timeout: config.timeout,
            when_unreachable: config.when_unreachable,
            owner: random_hex(12),
            scripts: Scripts::new(),
            updates,
            reachable: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(Some("not connected yet".into())),
            wrong_key: AtomicBool::new(false),
            key_verified: AtomicBool::new(false),
        });
        match shared.check_key().await {
            Err(error @ StoreError::RedisDifferentKey { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "Redis is unreachable at start-up; serving degraded until it answers");
            }
            Ok(()) => {}
        }
        let watcher = tokio::spawn(watch::run(Arc::clone(&shared)));
        Ok(RedisStore { shared, watcher })
    }

    /// Whether a replica that cannot reach Redis may request tokens on its own.
    pub fn when_unreachable(&self) -> WhenUnreachable {
        self.shared.when_unreachable
    }

    /// The keyed digest under which `token` is compared in Redis.
    pub fn token_id(&self, token: &Secret) -> String {
        self.shared.token_id(token)
    }

    /// Takes the lease on `key` for `ttl`; `None` when another replica holds it.
    pub async fn acquire(
        &self,
        key: &CredentialKey,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let shared = &self.shared;
        let name = record_name(key);
        let name = name.as_str();
        let owner = format!("{} {}", shared.owner, random_hex(4));
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let owner_arg = &owner;
        let fence: Option<u64> = shared
            .run("acquire", |mut connection| async move {
                shared
                    .scripts
                    .acquire
                    .key(shared.lease_key(name))
                    .key(shared.fence_key())
                    .arg(owner_arg)
                    .arg(ttl_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(fence.map(|fence| Lease {
            fence,
            value: format!("{owner} {fence}"),
        }))
    }

    /// Writes `record` only while `lease` is still this replica's and nothing was written
    /// without a lease (a new connection, a reset) since it was taken; false when refused.
    pub async fn save_fenced(
        &self,
        key: &CredentialKey,
        record: &CredentialRecord,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        self.shared.write(key, record, Some(lease)).await
    }

    /// Makes `lease` last `ttl` from now, if it is still this replica's: called right before a
    /// token request, so that no other replica can take over while it may be answered.
    pub async fn extend(
        &self,
        key: &CredentialKey,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let shared = &self.shared;
        let name = record_name(key);
        let name = name.as_str();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let extended: i64 = shared
            .run("extend", |mut connection| async move {
                shared
                    .scripts
                    .extend
                    .key(shared.lease_key(name))
                    .arg(&lease.value)
                    .arg(ttl_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(extended == 1)
    }

    /// Ends `lease` early if it is still this one's.
    pub async fn release(&self, key: &CredentialKey, lease: &Lease) {
        let shared = &self.shared;
        let name = record_name(key);
        let name = name.as_str();
        let released: Result<i64, _> = shared
            .run("release", |mut connection| async move {
                shared
                    .scripts
                    .release
                    .key(shared.lease_key(name))
                    .arg(&lease.value)
                    .invoke_async(&mut connection)
                    .await
            })
            .await;
        if let Err(error) = released {
            tracing::debug!(%error, "lease not released; it expires by itself");
        }
    }

    /// Marks the access token with `token_id` refused, if it is still the stored one: a token
    /// another replica already replaced stays replaced.
    pub async fn invalidate(
        &self,
        key: &CredentialKey,
        token_id: &str,
    ) -> Result<bool, StoreError> {
        let shared = &self.shared;
        let name = record_name(key);
        let name = name.as_str();
        let marked: i64 = shared
            .run("invalidate", |mut connection| async move {
                shared
                    .scripts
                    .invalidate
                    .key(shared.record_key(name))
                    .arg(token_id)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(marked == 1)
    }

    /// Notifications of records written from now on (by any replica).
    pub fn updates(&self) -> Updates {
        Updates {
            receiver: self.shared.updates.subscribe(),
        }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shared.shown)
            .field("prefix", &self.shared.prefix)
            .finish_non_exhaustive()
    }
}

impl TokenStore for RedisStore {
    fn load<'a>(
        &'a self,
        key: &'a CredentialKey,
    ) -> BoxFuture<'a, Result<Option<CredentialRecord>, StoreError>> {
        Box::pin(async move {
            let loaded = self.shared.load(record_name(key)).await?;
            Ok(loaded.map(|(_, record)| record))
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a CredentialKey,
        record: &'a CredentialRecord,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.shared.write(key, record, None).await?;
            Ok(())
        })
    }

    fn clear_rejections<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut cleared = 0;
            for (key, mut record) in self.shared.list().await? {
                if key.provider == provider && record.rejected.is_some() {
                    record.rejected = None;
                    record.unconfirmed_attempts = 0;
                    self.shared.write(&key, &record, None).await?;
                    cleared += 1;
                }
            }
            Ok(cleared)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<(CredentialKey, CredentialRecord)>, StoreError>> {
        Box::pin(self.shared.list())
    }

    fn delete<'a>(&'a self, key: &'a CredentialKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        let shared = &self.shared;
        Box::pin(async move {
            let name = record_name(key);
            let name = name.as_str();
            let deleted: i64 = shared
                .run("delete", |mut connection| async move {
                    shared
                        .scripts
                        .delete
                        .key(shared.record_key(name))
                        .key(shared.index_key())
                        .arg(name)
                        .arg(shared.channel())
                        .invoke_async(&mut connection)
                        .await
                })
                .await?;
            Ok(deleted == 1)
        })
    }

    fn fleet(&self) -> Option<&RedisStore> {
        Some(self)
    }

    fn health(&self) -> StoreHealth {
        let shared = &self.shared;
        StoreHealth {
            shared: true,
            reachable: shared.reachable.load(Ordering::SeqCst)
                && !shared.wrong_key.load(Ordering::SeqCst),
            errors: shared.errors.load(Ordering::SeqCst),
            last_error: shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

// === impl Shared ===

impl Shared {
    fn record_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn lease_key(&self, name: &str) -> String {
        format!("{}lease/{name}", self.prefix)
    }

    fn fence_key(&self) -> String {
        format!("{}fence", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}updates", self.prefix)
    }

    fn key_check_key(&self) -> String {
        format!("{}meta/key-check", self.prefix)
    }

    /// Runs one Redis operation within the timeout, once more after a failure (every script is
    /// safe to repeat), and keeps the health state and error count up to date. The client's own
    /// timeouts bound each attempt's connect and answer; this bounds the attempt as a whole.
    async fn run<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if self.wrong_key.load(Ordering::SeqCst) {
            return Err(StoreError::RedisDifferentKey {
                url: self.shown.clone(),
                prefix: self.prefix.clone(),
            });
        }
        // A replica started while Redis was down reads and writes nothing before its key is
        // known to be the fleet's: its reads would all be misses, its writes unreadable.
        if !self.key_verified.load(Ordering::SeqCst) {
            self.check_key().await?;
        }
        self.run_verified(op, work).await
    }

    /// [`Shared::run`] once the key is known to be right (or to check it).
    async fn run_verified<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let mut error = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let outcome = tokio::time::timeout(self.timeout * 2, work(self.manager.clone())).await;
            error = match outcome {
                Ok(Ok(value)) => {
                    self.note_reachable();
                    return Ok(value);
                }
                // The server answered: asking again would get the same answer.
                Ok(Err(error))
                    if error.kind() != redis::ErrorKind::Io
                        && !error.is_timeout()
                        && !error.is_connection_dropped()
                        && !error.is_connection_refusal() =>
                {
                    let error = describe(&error);
                    self.note_error(op, &error);
                    return Err(StoreError::Redis {
                        url: self.shown.clone(),
                        detail: format!("{op}: {error}"),
                    });
                }
                Ok(Err(error)) => describe(&error),
                Err(_) => format!("no answer within {:?}", self.timeout * 2),
            };
        }
        self.note_error(op, &error);
        Err(StoreError::Redis {
            url: self.shown.clone(),
            detail: format!("{op}: {error}"),
        })
    }

    fn note_reachable(&self) {
        if !self.reachable.swap(true, Ordering::SeqCst) {
            tracing::info!(url = %self.shown, "Redis answers again");
        }
    }

    fn note_error(&self, op: &str, error: &str) {
        self.errors.fetch_add(1, Ordering::SeqCst);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{op}: {error}"));
        if self.reachable.swap(false, Ordering::SeqCst) {
            tracing::warn!(url = %self.shown, op, %error, "Redis is unreachable; serving from the local copy");
        }
    }

    /// Seals the key-check record if there is none, then opens it with this key.
    async fn check_key(&self) -> Result<(), StoreError> {
        let sealed = seal_key_check(&self.sealing_key).map_err(|_| StoreError::Redis {
            url: self.shown.clone(),
            detail: "cannot seal the key-check record".into(),
        })?;
        let key = self.key_check_key();
        let (key, sealed) = (key.as_str(), sealed.as_slice());
        let stored: Vec<u8> = self
            .run_verified("key check", |mut connection| async move {
                let _: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(sealed)
                    .arg("NX")
                    .query_async(&mut connection)
                    .await?;
                connection.get(key).await
            })
            .await?;
        if open_key_check(&self.sealing_key, &stored).is_err() {
            self.wrong_key.store(true, Ordering::SeqCst);
            tracing::error!(url = %self.shown, prefix = %self.prefix, "the records in Redis were sealed with another key; not using them");
            return Err(StoreError::RedisDifferentKey {
                url: self.shown.clone(),
                prefix: self.prefix.clone(),
            });
        }
        self.key_verified.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// The record named `name`. One that does not open with this key (tampered, written under
    /// another name or key) is [`StoreError::Unreadable`], never used. A token marked refused,
    /// or whose id does not match, is left out.
    async fn load(
        &self,
        name: String,
    ) -> Result<Option<(CredentialKey, CredentialRecord)>, StoreError> {
        let key = self.record_key(&name);
        let key = key.as_str();
        let fields: RecordFields = self
            .run("load", |mut connection| async move {
                record_fields(key).query_async(&mut connection).await
            })
            .await?;
        self.open(&name, fields)
    }

    /// The record's key (authenticated with it) and the record.
    fn open(
        &self,
        name: &str,
        (sealed, token_id, stale): RecordFields,
    ) -> Result<Option<(CredentialKey, CredentialRecord)>, StoreError> {
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let (key, mut record) = match open_record(&self.sealing_key, name, &sealed) {
            Ok(opened) => opened,
            Err(_) => {
                tracing::warn!(
                    record = name,
                    "a record in Redis does not authenticate with this key (modified, or written under another name or key); never used"
                );
                return Err(StoreError::Unreadable {
                    record: name.to_owned(),
                });
            }
        };
        if let Some(token) = &record.access_token {
            let id = self.token_id(&token.value);
            // The id is not authenticated: one that does not match only costs a token request.
            let usable = token_id.as_deref() == Some(id.as_str()) && stale.as_deref() != Some(&id);
            if !usable {
                record.access_token = None;
            }
        }
        Ok(Some((key, record)))
    }

    fn token_id(&self, token: &Secret) -> String {
        let tag = hmac::sign(&self.token_id_key, token.expose().as_bytes());
        hex(&tag.as_ref()[..16])
    }

    /// Writes `record` under `key` and tells the other replicas. With `fence`, only if no lease
    /// was taken since; without, it takes a new fencing value, so a lease holder's later write
    /// cannot overwrite this one.
    async fn write(
        &self,
        key: &CredentialKey,
        record: &CredentialRecord,
        lease: Option<&Lease>,
    ) -> Result<bool, StoreError> {
        let name = record_name(key);
        let name = name.as_str();
        let sealed =
            seal_record(&self.sealing_key, key, record).map_err(|_| StoreError::Redis {
                url: self.shown.clone(),
                detail: format!("cannot seal record {name}"),
            })?;
        let token_id = record
            .access_token
            .as_ref()
            .map(|token| self.token_id(&token.value))
            .unwrap_or_default();
        let (lease_value, fence) = lease
            .map(|lease| (lease.value.as_str(), lease.fence))
            .unwrap_or_default();
        let (sealed, token_id, name) = (&sealed, &token_id, &name);
        let written: i64 = self
            .run("save", |mut connection| async move {
                self.scripts
                    .save
                    .key(self.record_key(name))
                    .key(self.index_key())
                    .key(self.fence_key())
                    .key(self.lease_key(name))
                    .arg(lease_value)
                    .arg(fence)
                    .arg(sealed)
                    .arg(token_id)
                    .arg(name)
                    .arg(self.channel())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(written == 1)
    }

    /// Every record named in the index that opens with this key.
    async fn list(&self) -> Result<Vec<(CredentialKey, CredentialRecord)>, StoreError> {
        let index = self.index_key();
        let index = index.as_str();
        let names: Vec<String> = self
            .run("list", |mut connection| async move {
                connection.smembers(index).await
            })
            .await?;
        if names.is_empty() {
            // An empty pipeline answers nothing, not an empty list.
            return Ok(Vec::new());
        }
        // One round trip for every record.
        let keys: Vec<String> = names.iter().map(|name| self.record_key(name)).collect();
        let keys = keys.as_slice();
        let fields: Vec<RecordFields> = self
            .run("list", |mut connection| async move {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.add_command(record_fields(key));
                }
                pipe.query_async(&mut connection).await
            })
            .await?;
        let mut records = Vec::with_capacity(names.len());
        for (name, fields) in names.iter().zip(fields) {
            match self.open(name, fields) {
                Ok(Some(loaded)) => records.push(loaded),
                Ok(None) | Err(StoreError::Unreadable { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(records)
    }
}

// === impl Updates ===

impl Updates {
    /// Resolves when record `name` was written, notifications may have been missed, or `poll`
    /// passed: the caller reads again in every case.
    pub async fn wait_for(&mut self, name: &str, poll: Duration) {
        let deadline = tokio::time::Instant::now() + poll;
        loop {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Err(_) => return,
                Ok(Ok(written)) if &*written == name || &*written == EVERY_RECORD => return,
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => return,
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
    }
}

/// A record hash's `sealed`, `token_id` and `stale`.
type RecordFields = (Option<Vec<u8>>, Option<String>, Option<String>);

/// `HMGET` of a record's fields, in [`RecordFields`] order.
fn record_fields(key: &str) -> redis::Cmd {
    let mut command = redis::cmd("HMGET");
    command.arg(key).arg("sealed").arg("token_id").arg("stale");
    command
}

/// The record name of `key`, as the channel announces it.
pub fn notification_name(key: &CredentialKey) -> String {
    record_name(key)
}

fn client(config: &RedisStoreConfig, shown: &str) -> Result<Client, StoreError> {
    let url = config.url.expose();
    let built = match &config.ca {
        None => Client::open(url),
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|error| StoreError::Redis {
                url: shown.to_owned(),
                detail: format!("cannot read the CA file {}: {error}", path.display()),
            })?;
            Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
    };
    built.map_err(|error| StoreError::Redis {
        url: shown.to_owned(),
        detail: describe(&error),
    })
}

/// `scheme://host:port/db` without user name, password or query.
fn shown_url(url: &str) -> String {
    match redis::parse_redis_url(url) {
        Some(parsed) => format!(
            "{}://{}:{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(6379),
            parsed.path()
        ),
        None => "redis (unparsable URL)".into(),
    }
}

/// A Redis error's kind and server message. The client's `Display` may include the command's
/// arguments in some versions; this never does.
fn describe(error: &RedisError) -> String {
    match error.detail() {
        Some(detail) => format!("{:?}: {detail}", error.kind()),
        None => format!("{:?}", error.kind()),
    }
}

fn derive_token_id_key(store_key: &[u8]) -> hmac::Key {
    let extract = hmac::Key::new(hmac::HMAC_SHA256, store_key);
    let sub_key = hmac::sign(&extract, b"authrelay token id v1");
    hmac::Key::new(hmac::HMAC_SHA256, sub_key.as_ref())
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // A failing generator leaves zeros: lease values also carry the fence, so they stay unique.
    let _ = aws_lc_rs::rand::fill(&mut buffer);
    hex(&buffer)
}
