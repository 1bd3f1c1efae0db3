//! One cached token per provider: a hit is a lock-free `ArcSwap` load; a miss joins the single
//! token request in flight or starts it; a token near its expiry is renewed in the background
//! while it keeps being served.
//!
//! A rejected secret blocks the cache until it is rebuilt (new config) — never retried — and
//! transient failures back off with full jitter, honouring `Retry-After`.

mod fleet;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::grant::{GrantError, GrantRequest, TokenClient};
use super::status::{ProviderState, ProviderStatus};
use super::token::AccessToken;
use crate::config::{GrantConfig, ProviderConfig};
use crate::metrics::{Metrics, ProviderMetrics, TokenOutcome};
use crate::secret::{Secret, digest_name};
use crate::store::{
    AccountInfo, CredentialKey, CredentialRecord, Lease, RedisStore, Rejection, StoreError,
    StoredToken, TokenStore,
};

/// Shortest and longest default renewal margins; the default is a tenth of the lifetime.
const MIN_DEFAULT_MARGIN: Duration = Duration::from_secs(5);
const MAX_DEFAULT_MARGIN: Duration = Duration::from_secs(300);
/// Backoff after transient failures: first ceiling and largest ceiling (full jitter below it).
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// Unanswered token requests a lockout-sensitive provider may have outstanding: with Cross
/// River's three strikes, two unknown outcomes plus one certain answer can never lock.
const MAX_UNCONFIRMED: u32 = 2;
/// After a replay with a fresh token is refused, 401s stop invalidating tokens for this long.
pub const REPLAY_COOL_DOWN: Duration = Duration::from_secs(30);
/// A vendor's `Retry-After` is believed up to this long; beyond it is a bug or an attack.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Even full jitter waits this long, so a failing endpoint sees at most a few requests a second.
const BACKOFF_FLOOR: Duration = Duration::from_millis(250);
/// In a fleet, how often a blocked cache reads the store to see a reset, or an account
/// connected again, done through another replica.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

type Flight = Shared<BoxFuture<'static, Result<Arc<AccessToken>, GrantError>>>;

/// The token of one OAuth provider, or of one connected account of a provider.
pub struct TokenCache {
    /// Replaced by a reload that keeps the credentials but changes other settings, so one
    /// credential always has one cache: one flight, one refresh token, one rejection state.
    settings: ArcSwap<Settings>,
    store: Arc<dyn TokenStore>,
    key: CredentialKey,
    /// For refresh-token grants: a digest of the configured refresh token (see `CredentialRecord`).
    lineage: Option<String>,
    /// Set once the first flight has read the store (a stored token, refresh token, rejection).
    restored: AtomicBool,
    current: ArcSwapOption<AccessToken>,
    /// The newest refresh token, once one was issued (before that, the configured one).
    refresh_token: Mutex<Option<Secret>>,
    /// Held only for a few instructions, never across an await.
    flight: Mutex<FlightState>,
    /// When a replay with a fresh token was last refused (see `invalidate`).
    replay_failed_at: Mutex<Option<Instant>>,
    /// Token requests sent without a recorded answer (lockout-sensitive providers only).
    unconfirmed: AtomicU32,
    /// A connected account's details, rewritten with every record of it.
    account: Mutex<Option<AccountInfo>>,
    /// Replaced by a new connection of its account, or removed: writes nothing more.
    retired: AtomicBool,
    /// In a fleet: the last token a vendor refused here, so that a copy of it read back from
    /// Redis is not used again, and whether Redis was told (see `fleet.rs`).
    refused: Mutex<Option<RefusedToken>>,
    /// In a fleet: a rotated refresh token that could not be written. Until it is, the older
    /// one in Redis is not taken over it (it was retired by the vendor).
    unsaved_refresh_token: AtomicBool,
    /// The current rejection is in the store (so a reset there is seen by re-reading it).
    rejection_stored: AtomicBool,
    metrics: ProviderMetrics,
}

/// A token a vendor answered 401 to, by its id in the fleet store.
struct RefusedToken {
    id: String,
    reported: bool,
}

/// Where a flight writes the outcome of its token request.
#[derive(Clone, Copy)]
enum WriteTo<'a> {
    /// The store; a failed write is an error.
    Store,
    /// The fleet store, only while `Lease` is still the newest lease on the credential.
    Leased(&'a RedisStore, &'a Lease),
    /// The store if it answers; a replica on its own without Redis keeps going regardless.
    BestEffort,
}

/// What a reload may change without touching the credential.
struct Settings {
    provider: Arc<ProviderConfig>,
    client: TokenClient,
    /// The provider settings these were built for (see `Credentials::build`).
    identity: String,
}

#[derive(Default)]
struct FlightState {
    running: Option<Flight>,
    blocked: Option<Blocked>,
    consecutive_failures: u32,
    /// In a fleet, when a blocked cache last read the store for a reset or a new connection.
    rechecked_at: Option<Instant>,
}

enum Blocked {
    /// The vendor rejected the credentials: no request until the cache is rebuilt.
    Rejected(GrantError),
    /// Transient failure: no request before `until`.
    BackingOff { until: Instant, error: GrantError },
}

/// Why the cache has no token for a caller right now.
#[derive(Debug, Clone)]
pub enum CacheError {
    /// The credentials were rejected; nothing is tried until the config changes.
    Rejected(GrantError),
    /// The last attempt failed; the next is allowed after `retry_after`.
    Unavailable {
        error: GrantError,
        retry_after: Duration,
    },
}

/// How a token was served, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// Served from the cache, and this lookup started the background renewal.
    EarlyRenewal,
    Miss,
}

enum Joined {
    Ready(Arc<AccessToken>),
    /// The flight to wait for, and whether this call started it.
    Wait(Flight, bool),
}

// === impl TokenCache ===

impl TokenCache {
    pub fn new(
        provider: Arc<ProviderConfig>,
        client: TokenClient,
        store: Arc<dyn TokenStore>,
        key: CredentialKey,
        identity: String,
        metrics: &Metrics,
    ) -> Self {
        let metrics = metrics.provider(&provider.name, grant_name(&provider.grant));
        Self::with_metrics(provider, client, store, key, identity, metrics)
    }

    /// As [`TokenCache::new`], counting into handles already resolved (one set per provider,
    /// shared by its accounts).
    pub fn with_metrics(
        provider: Arc<ProviderConfig>,
        client: TokenClient,
        store: Arc<dyn TokenStore>,
        key: CredentialKey,
        identity: String,
        metrics: ProviderMetrics,
    ) -> Self {
        let lineage = match &provider.grant {
            GrantConfig::RefreshToken { refresh_token, .. } => {
                let material = zeroize::Zeroizing::new(format!(
                    "{}\n{}",
                    provider.name,
                    refresh_token.expose()
                ));
                Some(digest_name(material.as_bytes()))
            }
            _ => None,
        };
        Self {
            lineage,
            settings: ArcSwap::from_pointee(Settings {
                provider,
                client,
                identity,
            }),
            store,
            key,
            restored: AtomicBool::new(false),
            current: ArcSwapOption::empty(),
            refresh_token: Mutex::new(None),
            flight: Mutex::new(FlightState::default()),
            replay_failed_at: Mutex::new(None),
            unconfirmed: AtomicU32::new(0),
            account: Mutex::new(None),
            retired: AtomicBool::new(false),
            refused: Mutex::new(None),
            unsaved_refresh_token: AtomicBool::new(false),
            rejection_stored: AtomicBool::new(false),
            metrics,
        }
    }

    /// A token valid now: cached, or obtained by the one request in flight.
    pub async fn get(self: &Arc<Self>) -> Result<(Arc<AccessToken>, Lookup), CacheError> {
        let result = self.lookup().await;
        // A lookup that ends without a token found none valid in the cache: a miss.
        match result.as_ref().map_or(Lookup::Miss, |(_, lookup)| *lookup) {
            Lookup::Hit => self.metrics.cache_hit(),
            Lookup::EarlyRenewal => self.metrics.cache_early_renewal(),
            Lookup::Miss => self.metrics.cache_miss(),
        }
        result
    }

    async fn lookup(self: &Arc<Self>) -> Result<(Arc<AccessToken>, Lookup), CacheError> {
        let now = Instant::now();
        if let Some(token) = self.current.load_full() {
            if token.fresh(now) {
                return Ok((token, Lookup::Hit));
            }
            if now < token.expires_at {
                // Start (or join) a renewal without waiting for it; failures only delay the next one.
                let started = matches!(self.join_or_start(now), Ok(Joined::Wait(_, true)));
                let lookup = if started {
                    Lookup::EarlyRenewal
                } else {
                    Lookup::Hit
                };
                return Ok((token, lookup));
            }
        }
        match self.join_or_start(now)? {
            Joined::Ready(token) => Ok((token, Lookup::Hit)),
            Joined::Wait(flight, _) => match flight.await {
                Ok(token) => Ok((token, Lookup::Miss)),
                Err(_) => Err(self.blocked_error(Instant::now())),
            },
        }
    }

    /// Forgets `used` if it is still the cached token (a vendor answered 401 to it). A newer token,
    /// already fetched by another request's invalidation, stays.
    ///
    /// Returns false, and keeps the token, while a replay with a fresh token was also refused
    /// in the last [`REPLAY_COOL_DOWN`]: a vendor that refuses every token (a permission problem,
    /// not an expired token) must not turn each request into a token request.
    pub fn invalidate(&self, used: &Arc<AccessToken>) -> bool {
        let failed_at = *self
            .replay_failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failed_at.is_some_and(|at| at.elapsed() < REPLAY_COOL_DOWN) {
            return false;
        }
        let expected = Some(Arc::clone(used));
        let previous = self
            .current
            .compare_and_swap(&expected, None::<Arc<AccessToken>>);
        let forgotten = previous
            .as_ref()
            .is_some_and(|token| Arc::ptr_eq(token, used));
        if forgotten && let Some(fleet) = self.store.fleet() {
            *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(RefusedToken {
                id: fleet.token_id(used.value()),
                reported: false,
            });
        }
        true
    }

    /// A replay with a freshly obtained token got 401 too: start the cool-down.
    pub fn note_replay_failed(&self) {
        *self
            .replay_failed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Resolves when no token request of this cache is in flight (its store write included).
    pub async fn settle(&self) {
        let running = self
            .flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .running
            .clone();
        if let Some(flight) = running {
            let _ = flight.await;
        }
    }

    /// The provider settings this cache serves; a reload keeps the cache while they are equal.
    pub fn identity(&self) -> String {
        self.settings.load().identity.clone()
    }

    /// The store record this cache reads and writes (provider, account, credential fingerprint).
    pub fn key(&self) -> &CredentialKey {
        &self.key
    }

    /// Takes a reload's settings for the same credential. A changed `scheme` drops the cached
    /// token, whose `Authorization` value was built with the old one.
    pub fn update(&self, provider: Arc<ProviderConfig>, client: TokenClient, identity: String) {
        let scheme_changed = self.settings.load().provider.scheme != provider.scheme;
        self.settings.store(Arc::new(Settings {
            provider,
            client,
            identity,
        }));
        if scheme_changed {
            self.current.store(None);
        }
        // Accounts keep their record across a new client secret (their key leaves the secret
        // out), so a rejection of the old secret must not outlive it.
        let mut state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        if self.key.account.is_some()
            && matches!(&state.blocked, Some(Blocked::Rejected(error)) if !error.needs_reauthorization())
        {
            state.blocked = None;
        }
    }

    /// The newest refresh token, when `provider` starts from the same configured refresh token
    /// as this cache (the same lineage, whatever else changed).
    pub fn refresh_token_of_lineage(&self, provider: &ProviderConfig) -> Option<Secret> {
        let (
            GrantConfig::RefreshToken {
                refresh_token: mine,
                ..
            },
            GrantConfig::RefreshToken {
                refresh_token: theirs,
                ..
            },
        ) = (&self.provider().grant, &provider.grant)
        else {
            return None;
        };
        if !mine.same_as(theirs) {
            return None;
        }
        self.refresh_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Starts from `refresh_token` instead of the configured one (see `refresh_token_of_lineage`).
    pub fn adopt_refresh_token(&self, refresh_token: Secret) {
        *self
            .refresh_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(refresh_token);
    }

    fn provider(&self) -> Arc<ProviderConfig> {
        Arc::clone(&self.settings.load().provider)
    }

    /// The token currently cached, valid or not.
    pub fn current(&self) -> Option<Arc<AccessToken>> {
        self.current.load_full()
    }

    fn renewal_margin(&self, token: &AccessToken) -> Duration {
        let margin = self
            .provider()
            .refresh_before
            .unwrap_or_else(|| (token.lifetime / 10).clamp(MIN_DEFAULT_MARGIN, MAX_DEFAULT_MARGIN));
        // A margin near the lifetime would renew almost continuously: keep three quarters of
        // every token's life for use.
        margin.min(token.lifetime / 4)
    }

    fn join_or_start(self: &Arc<Self>, now: Instant) -> Result<Joined, CacheError> {
        let mut state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = &state.running {
            return Ok(Joined::Wait(flight.clone(), false));
        }
        let recheck = match &state.blocked {
            Some(Blocked::Rejected(error)) => self.may_recheck(error, state.rechecked_at, now),
            _ => false,
        };
        match &state.blocked {
            Some(Blocked::Rejected(_)) if recheck => state.rechecked_at = Some(now),
            Some(Blocked::Rejected(error)) => return Err(CacheError::Rejected(error.clone())),
            Some(Blocked::BackingOff { until, error }) if *until > now => {
                return Err(CacheError::Unavailable {
                    error: error.clone(),
                    retry_after: *until - now,
                });
            }
            _ => {}
        }
        // A flight may have finished between the caller's cache check and this lock.
        if let Some(token) = self.current.load_full()
            && token.fresh(now)
        {
            return Ok(Joined::Ready(token));
        }
        let cache = Arc::clone(self);
        // Spawned so that the request completes (and is cached) even if every waiter goes away.
        let task = tokio::spawn(async move {
            // A panic must still end the flight, or every later caller would wait on it forever.
            let result = AssertUnwindSafe(cache.obtain())
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(GrantError::Transient {
                        reason: "the token request panicked".into(),
                    })
                })
                .map(|mut token| {
                    token.renew_before(cache.renewal_margin(&token));
                    Arc::new(token)
                });
            cache.finish(&result);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|_| {
                Err(GrantError::Transient {
                    reason: "the token request task ended abnormally".into(),
                })
            })
        }
        .boxed()
        .shared();
        state.running = Some(flight.clone());
        Ok(Joined::Wait(flight, true))
    }

    /// In a fleet, a blocked cache whose block came from the store reads it again now and then:
    /// an operator reset, or the account connected again, may have happened on another replica.
    /// A rejection kept in memory only is never retried this way (that would be a new strike).
    fn may_recheck(&self, error: &GrantError, last: Option<Instant>, now: Instant) -> bool {
        let from_store = if error.needs_reauthorization() {
            self.key.account.is_some()
        } else {
            self.rejection_stored.load(Ordering::SeqCst)
        };
        self.store.fleet().is_some()
            && from_store
            && last.is_none_or(|at| now.saturating_duration_since(at) >= RECHECK_EVERY)
    }

    /// What a flight does: on the first one, look in the store (a token from before a restart is
    /// reused; a stored rejection stops here); then ask the token endpoint and make the outcome
    /// durable before anyone uses it.
    async fn obtain(&self) -> Result<AccessToken, GrantError> {
        if self.retired.load(Ordering::SeqCst) {
            // Its account was connected again or removed: its refresh token is not the one to use.
            return Err(GrantError::Transient {
                reason: "the account was connected again or removed".into(),
            });
        }
        if let Some(fleet) = self.store.fleet() {
            return self.obtain_in_fleet(fleet).await;
        }
        if !self.restored.swap(true, Ordering::SeqCst)
            && let Some(token) = self.restore().await?
        {
            return Ok(token);
        }
        self.fetch_and_persist(WriteTo::Store).await
    }

    /// One token request and the write of its outcome, which comes before any use of the token.
    async fn fetch_and_persist(&self, to: WriteTo<'_>) -> Result<AccessToken, GrantError> {
        let result = self.fetch(to).await;
        // A rejection stands even when it could not be written: memory still blocks retries.
        if let Err(error) = self.persist(&result, to).await
            && result.is_ok()
        {
            return Err(error);
        }
        result
    }

    /// Reads the stored record: the newest refresh token, a rejection, a still-valid token.
    async fn restore(&self) -> Result<Option<AccessToken>, GrantError> {
        let record = match self.store.load(&self.key).await {
            Ok(record) => record,
            // Without its record an account has no refresh token: going on would end in a
            // record that forgets the account.
            Err(error) if self.provider().lockout_sensitive || self.key.account.is_some() => {
                tracing::error!(provider = %self.provider().name, %error, "cannot read the token store; no token request without it (lockout-sensitive provider or connected account)");
                self.restored.store(false, Ordering::SeqCst);
                return Err(GrantError::StoreUnavailable {
                    reason: "the token store cannot be read".into(),
                });
            }
            Err(error) => {
                tracing::warn!(provider = %self.provider().name, %error, "cannot read the token store; requesting a new token");
                None
            }
        };
        self.adopt(record).await
    }

    /// Takes what a stored record says: the newest refresh token, attempts not yet answered, the
    /// account's details, a rejection; returns its access token when it is still good to use.
    async fn adopt(
        &self,
        record: Option<CredentialRecord>,
    ) -> Result<Option<AccessToken>, GrantError> {
        let has_refresh_token = record.as_ref().is_some_and(|r| r.refresh_token.is_some());
        if !has_refresh_token && let Some(newest) = self.newest_refresh_token_of_lineage().await {
            // Other credential settings wrote the newest refresh token of this chain; the
            // configured one was retired by the vendor at the first rotation.
            self.adopt_refresh_token(newest);
        }
        let Some(record) = record else {
            return Ok(None);
        };
        if let Some(refresh_token) = record.refresh_token
            && !self.unsaved_refresh_token.load(Ordering::SeqCst)
        {
            *self
                .refresh_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(refresh_token);
        }
        self.unconfirmed
            .store(record.unconfirmed_attempts, Ordering::SeqCst);
        let reauthorize = record
            .account
            .as_ref()
            .is_some_and(|account| account.reauthorization_required);
        *self.account.lock().unwrap_or_else(PoisonError::into_inner) = record.account;
        if reauthorize {
            return Err(GrantError::ReauthorizationRequired {
                reason: "recorded before a restart".into(),
            });
        }
        if let Some(rejection) = record.rejected {
            self.rejection_stored.store(true, Ordering::SeqCst);
            return Err(GrantError::Rejected {
                status: rejection.status,
                oauth_error: rejection.oauth_error,
            });
        }
        let token = record
            .access_token
            .and_then(|stored| AccessToken::from_stored(&stored, &self.provider().scheme));
        Ok(token.filter(|token| {
            token.remaining(Instant::now()) > self.renewal_margin(token) && !self.was_refused(token)
        }))
    }

    /// Whether a vendor refused `token` here before (fleet only: elsewhere a refused token is
    /// never read back).
    fn was_refused(&self, token: &AccessToken) -> bool {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        match (refused.as_ref(), self.store.fleet()) {
            (Some(refused), Some(fleet)) => fleet.token_id(token.value()) == refused.id,
            _ => false,
        }
    }

    /// The refresh token of the most recently issued record of the same provider, account and
    /// lineage, under any credential fingerprint.
    async fn newest_refresh_token_of_lineage(&self) -> Option<Secret> {
        let lineage = self.lineage.as_ref()?;
        let records = self.store.list().await.ok()?;
        records
            .into_iter()
            .filter(|(key, record)| {
                key.provider == self.key.provider
                    && key.account == self.key.account
                    && record.lineage.as_ref() == Some(lineage)
            })
            .filter_map(|(_, record)| {
                let issued = record.access_token.as_ref().map(|token| {
                    token
                        .expires_at
                        .checked_sub(token.lifetime)
                        .unwrap_or(token.expires_at)
                });
                Some((issued, record.refresh_token?))
            })
            .max_by_key(|(issued, _)| *issued)
            .map(|(_, refresh_token)| refresh_token)
    }

    /// Writes the outcome of a token request. A rotated refresh token that cannot be written is
    /// an error: using its access token would leave only a retired refresh token on disk.
    async fn persist(
        &self,
        result: &Result<AccessToken, GrantError>,
        to: WriteTo<'_>,
    ) -> Result<(), GrantError> {
        // Nothing reached the vendor, or its outcome is what could not be written.
        if self.retired.load(Ordering::SeqCst)
            || matches!(result, Err(GrantError::StoreUnavailable { .. }))
        {
            return Ok(());
        }
        if self.key.account.is_some() && self.account_info().is_none() {
            // Never read (the store failed): writing would replace the account with a stub.
            tracing::error!(provider = %self.provider().name, "not writing an account record whose details were never read");
            return Ok(());
        }
        // Any answer confirms the attempts before it; only a request left unanswered stays counted.
        let unconfirmed = match result {
            Err(GrantError::NoAnswer { .. }) => self.unconfirmed.load(Ordering::SeqCst),
            _ => 0,
        };
        self.unconfirmed.store(unconfirmed, Ordering::SeqCst);
        let rejection = |status: u16, oauth_error: &Option<String>| Rejection {
            status,
            oauth_error: oauth_error.clone(),
            at: SystemTime::now(),
        };
        let record = match result {
            Ok(token) => {
                self.note_account_outcome(None);
                self.record(Some(token.to_stored()), None, 0)
            }
            Err(error @ GrantError::ReauthorizationRequired { .. }) => {
                self.note_account_outcome(Some(error));
                // Both tokens are dead; only the account's details remain.
                self.refresh_token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                self.record(None, None, 0)
            }
            // An account's record survives a new client secret (see `update`): a rejection of
            // this one is kept in memory only.
            Err(error @ GrantError::Rejected { .. }) if self.key.account.is_some() => {
                self.note_account_outcome(Some(error));
                self.record(None, None, 0)
            }
            Err(GrantError::Rejected {
                status,
                oauth_error,
            }) => self.record(None, Some(rejection(*status, oauth_error)), 0),
            Err(error) if self.key.account.is_some() => {
                self.note_account_outcome(Some(error));
                self.record(
                    self.current().map(|token| token.to_stored()),
                    None,
                    unconfirmed,
                )
            }
            // An answer that was not a rejection clears the count recorded before the request.
            Err(_) if self.provider().lockout_sensitive => self.record(
                self.current().map(|token| token.to_stored()),
                None,
                unconfirmed,
            ),
            Err(_) => return Ok(()),
        };
        let saved = self.save(&record, to).await;
        let rotating = self.rotates();
        if rotating {
            self.unsaved_refresh_token
                .store(saved.is_err(), Ordering::SeqCst);
        }
        self.rejection_stored
            .store(saved.is_ok() && record.rejected.is_some(), Ordering::SeqCst);
        match saved {
            Ok(()) => Ok(()),
            Err(error) if matches!(to, WriteTo::BestEffort) => {
                tracing::warn!(provider = %self.provider().name, %error, "cannot write the token store; keeping the outcome in memory");
                Ok(())
            }
            Err(error) => {
                tracing::error!(provider = %self.provider().name, %error, "cannot write the token store");
                if rotating {
                    return Err(GrantError::StoreUnavailable {
                        reason: "the rotated refresh token could not be stored".into(),
                    });
                }
                Ok(())
            }
        }
    }

    /// Whether the provider's refresh tokens rotate: two requesters must never present one.
    fn rotates(&self) -> bool {
        matches!(
            self.provider().grant,
            GrantConfig::RefreshToken { .. } | GrantConfig::AuthorizationCode(_)
        )
    }

    /// Writes `record` where `to` says.
    async fn save(&self, record: &CredentialRecord, to: WriteTo<'_>) -> Result<(), StoreError> {
        match to {
            WriteTo::Store | WriteTo::BestEffort => self.store.save(&self.key, record).await,
            WriteTo::Leased(fleet, lease) => {
                if fleet.save_fenced(&self.key, record, lease).await? {
                    Ok(())
                } else {
                    Err(StoreError::LeaseLost {
                        record: format!(
                            "{}/{}",
                            self.key.provider,
                            self.key.account.as_deref().unwrap_or("_")
                        ),
                    })
                }
            }
        }
    }

    /// One token request, counted and timed.
    async fn fetch(&self, to: WriteTo<'_>) -> Result<AccessToken, GrantError> {
        let started = Instant::now();
        self.record_attempt(to).await?;
        if let WriteTo::Leased(fleet, lease) = to {
            self.confirm_lease(fleet, lease).await?;
        }
        let result = self.request().await;
        let outcome = match &result {
            Ok(_) => TokenOutcome::Ok,
            Err(GrantError::Rejected { .. } | GrantError::ReauthorizationRequired { .. }) => {
                TokenOutcome::Rejected
            }
            Err(GrantError::RateLimited { .. }) => TokenOutcome::RateLimited,
            Err(
                GrantError::Transient { .. }
                | GrantError::NoAnswer { .. }
                | GrantError::StoreUnavailable { .. },
            ) => TokenOutcome::Transient,
        };
        self.metrics.token_request(outcome, started.elapsed());
        result
    }

    /// One token request, shaped by the provider's grant.
    async fn request(&self) -> Result<AccessToken, GrantError> {
        // One snapshot for the whole request: a reload mid-request changes the next one.
        let settings = self.settings.load_full();
        let (provider, client) = (&settings.provider, &settings.client);
        match &provider.grant {
            GrantConfig::ClientCredentials(endpoint) => {
                let grant = GrantRequest::ClientCredentials;
                Ok(client.request(provider, endpoint, grant).await?.token)
            }
            GrantConfig::RefreshToken {
                endpoint,
                refresh_token: seed,
            } => {
                let current = self
                    .refresh_token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let current = current.unwrap_or_else(|| seed.clone());
                let grant = GrantRequest::RefreshToken(&current);
                let issued = client.request(provider, endpoint, grant).await?;
                if let Some(rotated) = issued.refresh_token {
                    // The vendor retired `current`: from now on only `rotated` works. `persist`
                    // writes it before the new access token is handed out.
                    *self
                        .refresh_token
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(rotated);
                }
                Ok(issued.token)
            }
            GrantConfig::AuthorizationCode(code) => {
                self.refresh_account(provider, client, &code.endpoint).await
            }
            GrantConfig::Static { .. } => Err(GrantError::Transient {
                reason: "a static token is never requested".into(),
            }),
        }
    }

    /// Renews a connected account's token with its refresh token. `invalid_grant` may mean that
    /// another process rotated the refresh token first: the store is read once more, and only
    /// when it holds no newer refresh token does the account need a person again.
    async fn refresh_account(
        &self,
        provider: &ProviderConfig,
        client: &TokenClient,
        endpoint: &crate::config::TokenEndpoint,
    ) -> Result<AccessToken, GrantError> {
        let mut reread = false;
        loop {
            let current = self
                .refresh_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let Some(current) = current else {
                return Err(GrantError::ReauthorizationRequired {
                    reason:
                        "the token expired or was refused and the vendor issued no refresh token"
                            .into(),
                });
            };
            let grant = GrantRequest::RefreshToken(&current);
            match client.request(provider, endpoint, grant).await {
                Ok(issued) => {
                    if let Some(rotated) = issued.refresh_token {
                        *self
                            .refresh_token
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(rotated);
                    }
                    let mut token = issued.token;
                    if let Some(account) = self.account_info() {
                        token.inherit_fields(&account.fields);
                    }
                    return Ok(token);
                }
                Err(GrantError::Rejected {
                    oauth_error: Some(code),
                    ..
                }) if code == "invalid_grant" => {
                    let stored = if reread {
                        None
                    } else {
                        self.store.load(&self.key).await.ok().flatten()
                    };
                    reread = true;
                    match stored.and_then(|record| record.refresh_token) {
                        Some(newer) if !newer.same_as(&current) => {
                            self.adopt_refresh_token(newer);
                        }
                        _ => {
                            return Err(GrantError::ReauthorizationRequired {
                                reason: "the vendor refused the refresh token (invalid_grant)"
                                    .into(),
                            });
                        }
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// What the cache looks like now, for `/readyz` and the scrape-time metrics.
    pub fn status(&self, now: Instant) -> ProviderStatus {
        let token = self.current.load_full();
        let expires_in = token.as_ref().map(|token| token.remaining(now));
        let state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, retry_in, error) = match (&state.blocked, &state.running) {
            (Some(Blocked::Rejected(error)), _) if error.needs_reauthorization() => (
                ProviderState::ReauthorizationRequired,
                None,
                Some(error.clone()),
            ),
            (Some(Blocked::Rejected(error)), _) => (
                ProviderState::CredentialsRejected,
                None,
                Some(error.clone()),
            ),
            (_, Some(_)) => (ProviderState::Renewing, None, None),
            // Until a token request succeeds, even once the wait is over.
            (Some(Blocked::BackingOff { until, error }), None) => (
                ProviderState::BackingOff,
                Some(until.saturating_duration_since(now)),
                Some(error.clone()),
            ),
            (None, None)
                if self
                    .account_info()
                    .is_some_and(|a| a.reauthorization_required) =>
            {
                (ProviderState::ReauthorizationRequired, None, None)
            }
            (None, None) if token.is_none() && !self.restored.load(Ordering::SeqCst) => {
                (ProviderState::NotYetUsed, None, None)
            }
            (None, None) => (ProviderState::Ok, None, None),
        };
        ProviderStatus {
            provider: self.provider().name.clone(),
            account: self.key.account.clone(),
            state,
            expires_in,
            retry_in,
            error,
        }
    }

    /// For a lockout-sensitive provider, makes the attempt durable before it is sent, so that a
    /// crash between the request and its answer is remembered; refuses a request when earlier
    /// ones were never answered (see [`MAX_UNCONFIRMED`]).
    async fn record_attempt(&self, to: WriteTo<'_>) -> Result<(), GrantError> {
        if !self.provider().lockout_sensitive {
            return Ok(());
        }
        let attempts = self.unconfirmed.load(Ordering::SeqCst);
        if attempts >= MAX_UNCONFIRMED {
            return Err(GrantError::Rejected {
                status: 0,
                oauth_error: Some("unconfirmed_attempts".into()),
            });
        }
        let record = self.record(
            self.current().map(|token| token.to_stored()),
            None,
            attempts + 1,
        );
        match self.save(&record, to).await {
            Ok(()) => {}
            Err(error) if matches!(to, WriteTo::BestEffort) => {
                tracing::warn!(provider = %self.provider().name, %error, "cannot record the token request in the store; counting it in memory");
            }
            Err(error) => {
                tracing::error!(provider = %self.provider().name, %error, "cannot record the token request in the store; not sending it");
                return Err(GrantError::StoreUnavailable {
                    reason: "the token store cannot record the attempt".into(),
                });
            }
        }
        self.unconfirmed.store(attempts + 1, Ordering::SeqCst);
        Ok(())
    }

    /// Forgets a rejection or a backoff (operator reset): the next caller may try again.
    pub fn unblock(&self) {
        self.unconfirmed.store(0, Ordering::SeqCst);
        let mut state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        state.blocked = None;
        state.consecutive_failures = 0;
    }

    /// The record this cache writes, around its current refresh token and account details.
    fn record(
        &self,
        access_token: Option<StoredToken>,
        rejected: Option<Rejection>,
        unconfirmed_attempts: u32,
    ) -> CredentialRecord {
        CredentialRecord {
            access_token,
            refresh_token: self
                .refresh_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            rejected,
            unconfirmed_attempts,
            lineage: self.lineage.clone(),
            account: self
                .account
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Records on a connected account how its last token request ended.
    fn note_account_outcome(&self, error: Option<&GrantError>) {
        let mut account = self.account.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(account) = account.as_mut() {
            account.reauthorization_required = error.is_some_and(GrantError::needs_reauthorization);
            account.last_error = error.map(GrantError::code);
        }
    }

    /// False for a connected account without a refresh token: its token cannot be renewed, so a
    /// vendor's 401 must not make it forget the token.
    pub fn renewable(&self) -> bool {
        // Only connected accounts have a key with an account, and only they can lack one.
        self.key.account.is_none()
            || self
                .refresh_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// Takes the stored account details before the first flight reads them (for listings).
    pub fn know_account(&self, info: Option<AccountInfo>) {
        let mut account = self.account.lock().unwrap_or_else(PoisonError::into_inner);
        if account.is_none() {
            *account = info;
        }
    }

    /// Stops this cache from writing to the store (its account was connected again or removed).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// The connected account's details, as last read or written.
    pub fn account_info(&self) -> Option<AccountInfo> {
        self.account
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn finish(&self, result: &Result<Arc<AccessToken>, GrantError>) {
        let mut state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(token) => {
                // Stored before `running` is cleared, so no caller can miss both.
                self.current.store(Some(Arc::clone(token)));
                state.blocked = None;
                state.consecutive_failures = 0;
                tracing::debug!(provider = %self.provider().name, lifetime = ?token.lifetime, "token obtained");
            }
            Err(error @ GrantError::ReauthorizationRequired { .. }) => {
                tracing::error!(provider = %self.provider().name, account = self.key.account.as_deref().unwrap_or_default(), %error, "the account must be connected again");
                state.blocked = Some(Blocked::Rejected(error.clone()));
            }
            Err(error @ GrantError::Rejected { .. }) => {
                tracing::error!(provider = %self.provider().name, %error, "credentials rejected; no further token request until the configuration changes");
                state.blocked = Some(Blocked::Rejected(error.clone()));
            }
            Err(error) => {
                // The store failed, not the vendor: retry soon, whatever came before.
                let delay = if matches!(error, GrantError::StoreUnavailable { .. }) {
                    backoff(1, error)
                } else {
                    state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                    backoff(state.consecutive_failures, error)
                };
                tracing::warn!(provider = %self.provider().name, %error, retry_in = ?delay, "token request failed");
                state.blocked = Some(Blocked::BackingOff {
                    until: Instant::now()
                        .checked_add(delay)
                        .unwrap_or_else(Instant::now),
                    error: error.clone(),
                });
            }
        }
        state.running = None;
    }

    fn blocked_error(&self, now: Instant) -> CacheError {
        let state = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        match &state.blocked {
            Some(Blocked::Rejected(error)) => CacheError::Rejected(error.clone()),
            Some(Blocked::BackingOff { until, error }) => CacheError::Unavailable {
                error: error.clone(),
                retry_after: until.saturating_duration_since(now),
            },
            None => CacheError::Unavailable {
                error: GrantError::Transient {
                    reason: "the token request did not complete".into(),
                },
                retry_after: BACKOFF_FLOOR,
            },
        }
    }
}

/// The grant's name as the metrics label it.
pub(super) fn grant_name(grant: &GrantConfig) -> &'static str {
    match grant {
        GrantConfig::Static { .. } => "static",
        GrantConfig::ClientCredentials(_) => "client_credentials",
        GrantConfig::RefreshToken { .. } => "refresh_token",
        GrantConfig::AuthorizationCode(_) => "authorization_code",
    }
}

/// Full-jitter exponential backoff, never shorter than the vendor's `Retry-After`.
fn backoff(failures: u32, error: &GrantError) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let jittered = ceiling.mul_f64(random_unit()).max(BACKOFF_FLOOR);
    match error {
        GrantError::RateLimited {
            retry_after: Some(wait),
            ..
        } => jittered.max((*wait).min(MAX_RETRY_AFTER)),
        _ => jittered,
    }
}

/// A uniform number in [0, 1).
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_honours_retry_after() {
        let transient = GrantError::Transient { reason: "x".into() };
        for failures in 1..40 {
            let delay = backoff(failures, &transient);
            assert!(
                delay >= BACKOFF_FLOOR && delay <= BACKOFF_CAP,
                "{failures}: {delay:?}"
            );
        }
        let limited = GrantError::RateLimited {
            status: 429,
            retry_after: Some(Duration::from_secs(90)),
        };
        assert!(backoff(1, &limited) >= Duration::from_secs(90));
        let absurd = GrantError::RateLimited {
            status: 429,
            retry_after: Some(Duration::from_secs(u64::MAX)),
        };
        assert_eq!(backoff(1, &absurd), MAX_RETRY_AFTER);
    }
}
