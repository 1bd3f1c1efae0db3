//! The connected accounts of one `authorization_code` provider: one [`TokenCache`] per account,
//! each with its own record in the store, so two accounts never share a token or a flight.
//!
//! Caches are created from the store (at start-up, or when a request names an account not yet
//! loaded) and replaced when a person connects the account again.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::cache::TokenCache;
use super::grant::TokenClient;
use super::status::ProviderStatus;
use crate::config::ProviderConfig;
use crate::metrics::ProviderMetrics;
use crate::store::{CredentialKey, CredentialRecord, StoreError, TokenStore};

/// Every connected account of one provider that this process has seen.
pub struct AccountSet {
    settings: ArcSwap<AccountSettings>,
    store: Arc<dyn TokenStore>,
    /// The credential fingerprint of every account record (see `account_fingerprint`).
    fingerprint: String,
    metrics: ProviderMetrics,
    /// Held for a map lookup or insert only, never across an await.
    caches: RwLock<HashMap<String, Arc<TokenCache>>>,
    /// Serializes what adds or removes accounts (loading from the store, connecting, removing),
    /// so that a removed or replaced account is never loaded back from its old record.
    membership: tokio::sync::Mutex<()>,
}

struct AccountSettings {
    provider: Arc<ProviderConfig>,
    client: TokenClient,
    identity: String,
}

// === impl AccountSet ===

impl AccountSet {
    pub fn new(
        provider: Arc<ProviderConfig>,
        client: TokenClient,
        store: Arc<dyn TokenStore>,
        fingerprint: String,
        identity: String,
        metrics: ProviderMetrics,
    ) -> Self {
        Self {
            settings: ArcSwap::from_pointee(AccountSettings {
                provider,
                client,
                identity,
            }),
            store,
            fingerprint,
            metrics,
            caches: RwLock::new(HashMap::new()),
            membership: tokio::sync::Mutex::new(()),
        }
    }

    /// The store record of `account`.
    pub fn key(&self, account: &str) -> CredentialKey {
        CredentialKey {
            provider: self.provider().name.clone(),
            account: Some(account.to_owned()),
            fingerprint: self.fingerprint.clone(),
        }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn identity(&self) -> String {
        self.settings.load().identity.clone()
    }

    pub fn provider(&self) -> Arc<ProviderConfig> {
        Arc::clone(&self.settings.load().provider)
    }

    pub fn client(&self) -> TokenClient {
        self.settings.load().client.clone()
    }

    /// Takes a reload's settings for the same accounts (a new client secret, other scopes).
    pub fn update(&self, provider: Arc<ProviderConfig>, client: TokenClient, identity: String) {
        for cache in self.loaded() {
            cache.update(Arc::clone(&provider), client.clone(), identity.clone());
        }
        self.settings.store(Arc::new(AccountSettings {
            provider,
            client,
            identity,
        }));
    }

    /// The cache of `account`; `None` when no such account is connected.
    pub async fn cache(&self, account: &str) -> Result<Option<Arc<TokenCache>>, StoreError> {
        if let Some(cache) = self.read().get(account)
            && !cache.is_retired()
        {
            return Ok(Some(Arc::clone(cache)));
        }
        let _membership = self.membership.lock().await;
        if let Some(cache) = self.read().get(account)
            && !cache.is_retired()
        {
            return Ok(Some(Arc::clone(cache)));
        }
        // A cache retired by a fleet flight (the account was removed, or connected again,
        // through another replica) gives way to what the store holds now.
        self.write()
            .retain(|name, cache| name != account || !cache.is_retired());
        let key = self.key(account);
        let connected = self
            .store
            .load(&key)
            .await?
            .is_some_and(|record| record.account.is_some());
        if !connected {
            return Ok(None);
        }
        Ok(Some(self.insert_if_absent(account, key)))
    }

    /// The stored record of `account`, as last written.
    pub async fn stored(&self, account: &str) -> Result<Option<CredentialRecord>, StoreError> {
        self.store.load(&self.key(account)).await
    }

    /// Loads a cache for every account the store holds for this provider.
    pub async fn restore_all(&self) -> Result<(), StoreError> {
        let _membership = self.membership.lock().await;
        for (key, record) in self.store.list().await? {
            if key.provider != self.provider().name
                || key.fingerprint != self.fingerprint
                || record.account.is_none()
            {
                continue;
            }
            if let Some(account) = key.account.clone() {
                // Its state shows in /readyz and the metrics before its first request.
                self.insert_if_absent(&account, key)
                    .know_account(record.account.clone());
            }
        }
        Ok(())
    }

    /// Stores a newly connected account and starts it a fresh cache. The old cache is retired
    /// first: a refresh of its older tokens still in flight must not overwrite the new ones.
    pub async fn connect(
        &self,
        account: &str,
        record: &CredentialRecord,
    ) -> Result<(), StoreError> {
        let _membership = self.membership.lock().await;
        let old = self.read().get(account).cloned();
        if let Some(old) = old {
            old.retire();
            old.settle().await;
        }
        let key = self.key(account);
        if let Err(error) = self.store.save(&key, record).await {
            // The retired cache writes nothing more: the next request loads a fresh one.
            self.write().remove(account);
            return Err(error);
        }
        let cache = self.new_cache(key);
        self.write().insert(account.to_owned(), cache);
        Ok(())
    }

    /// Forgets `account` here and in the store; true when the store had it.
    pub async fn remove(&self, account: &str) -> Result<bool, StoreError> {
        let _membership = self.membership.lock().await;
        // Retired and settled before the delete: no refresh of it can write the record back.
        let loaded = self.read().get(account).cloned();
        if let Some(cache) = &loaded {
            cache.retire();
            cache.settle().await;
        }
        let deleted = self.store.delete(&self.key(account)).await;
        if deleted.is_ok() {
            self.write().remove(account);
        } else if let Some(cache) = loaded {
            // The record stays: so does a cache that may write it.
            let fresh = self.new_cache(cache.key().clone());
            self.write().insert(account.to_owned(), fresh);
        }
        deleted
    }

    /// The status of every loaded account, by account name.
    pub fn statuses(&self, now: Instant) -> Vec<ProviderStatus> {
        let mut statuses: Vec<ProviderStatus> = self
            .loaded()
            .iter()
            .map(|cache| cache.status(now))
            .collect();
        statuses.sort_by(|a, b| a.account.cmp(&b.account));
        statuses
    }

    /// Every loaded cache.
    pub fn loaded(&self) -> Vec<Arc<TokenCache>> {
        self.read().values().cloned().collect()
    }

    fn insert_if_absent(&self, account: &str, key: CredentialKey) -> Arc<TokenCache> {
        let mut caches = self.write();
        let cache = caches
            .entry(account.to_owned())
            .or_insert_with(|| self.new_cache(key));
        Arc::clone(cache)
    }

    fn new_cache(&self, key: CredentialKey) -> Arc<TokenCache> {
        let settings = self.settings.load();
        Arc::new(TokenCache::with_metrics(
            Arc::clone(&settings.provider),
            settings.client.clone(),
            Arc::clone(&self.store),
            key,
            settings.identity.clone(),
            self.metrics.clone(),
        ))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<TokenCache>>> {
        self.caches.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<TokenCache>>> {
        self.caches.write().unwrap_or_else(PoisonError::into_inner)
    }
}
