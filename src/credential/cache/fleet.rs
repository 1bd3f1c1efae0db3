//! A flight when replicas share the store (Redis): one token request per credential across the
//! fleet. Each flight reads the shared record first, since another replica may have renewed the
//! token or rotated the refresh token. Without a usable token it takes the credential's lease;
//! the replicas that lose the race wait for the holder's write (a notification, or a poll) and
//! read its outcome. The holder reads again under the lease, requests, and writes with its
//! fencing value, so a holder whose lease ran out cannot overwrite a newer outcome.
//!
//! Without Redis a replica serves the tokens it holds; only providers that cannot take a second
//! requester (a lock-out after bad secrets, or rotating refresh tokens) wait for Redis instead of
//! requesting alone, unless `store.when_unreachable: request`.

use std::time::Duration;

use tokio::time::Instant;

use super::{TokenCache, WriteTo};
use crate::config::WhenUnreachable;
use crate::credential::grant::GrantError;
use crate::credential::token::AccessToken;
use crate::store::{CredentialRecord, Lease, RedisStore, StoreError, notification_name};

/// How long a lease lasts: longer than a token request may take (10 s) plus its store writes,
/// so that a second replica never sends a request while the first one's may still be answered.
const LEASE_TTL: Duration = Duration::from_secs(20);
/// How long a replica waits for other replicas' token requests before giving up on this one.
const WAIT_BUDGET: Duration = Duration::from_secs(25);
/// A waiting replica reads the record at least this often, in case a notification is lost.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Why a flight cannot go on with the shared record.
enum Unshared {
    /// Redis did not answer: the replica may request alone (see `obtain_alone`).
    Unreachable(StoreError),
    /// The flight ends with this error.
    Unusable(GrantError),
}

impl TokenCache {
    pub(super) async fn obtain_in_fleet(
        &self,
        fleet: &RedisStore,
    ) -> Result<AccessToken, GrantError> {
        let name = notification_name(&self.key);
        // Subscribed before the first read, so a write between that read and the wait is heard.
        let mut updates = fleet.updates();
        self.report_refused(fleet).await;
        let deadline = Instant::now() + WAIT_BUDGET;
        loop {
            match self.shared_token().await {
                Ok(Some(token)) => return Ok(token),
                Ok(None) => {}
                Err(Unshared::Unreachable(error)) => return self.obtain_alone(error).await,
                Err(Unshared::Unusable(error)) => return Err(error),
            }
            match fleet.acquire(&self.key, LEASE_TTL).await {
                Ok(Some(lease)) => {
                    let result = self.obtain_leased(fleet, &lease).await;
                    fleet.release(&self.key, &lease).await;
                    return result;
                }
                Ok(None) if Instant::now() < deadline => {
                    updates.wait_for(&name, POLL_EVERY).await;
                }
                Ok(None) => {
                    return Err(GrantError::Transient {
                        reason: "another replica's token request did not finish in time".into(),
                    });
                }
                Err(error) => return self.obtain_alone(error).await,
            }
        }
    }

    /// Under the lease: read once more (a replica may have written between the first read and
    /// the lease), then request and write the outcome with the lease's fencing value.
    async fn obtain_leased(
        &self,
        fleet: &RedisStore,
        lease: &Lease,
    ) -> Result<AccessToken, GrantError> {
        match self.shared_token().await {
            Ok(Some(token)) => Ok(token),
            Ok(None) => self.fetch_and_persist(WriteTo::Leased(fleet, lease)).await,
            Err(Unshared::Unreachable(error)) => self.obtain_alone(error).await,
            Err(Unshared::Unusable(error)) => Err(error),
        }
    }

    /// Reads the shared record and takes what it says (see `adopt`): its token, when usable.
    async fn shared_token(&self) -> Result<Option<AccessToken>, Unshared> {
        let record = self.load_shared().await?;
        self.restored
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.adopt(record).await.map_err(Unshared::Unusable)
    }

    /// The shared record. A record that does not authenticate is a miss (a new token replaces
    /// it), except where a refresh token rotates: going on would present the configured one,
    /// long retired. A connected account without a record was removed through another replica:
    /// this cache retires rather than write it back.
    async fn load_shared(&self) -> Result<Option<CredentialRecord>, Unshared> {
        let record = match self.store.load(&self.key).await {
            Ok(record) => record,
            Err(StoreError::Unreadable { .. }) if !self.rotates() => None,
            Err(StoreError::Unreadable { .. }) => {
                return Err(Unshared::Unusable(GrantError::StoreUnavailable {
                    reason: "the stored record does not authenticate; no refresh token to use"
                        .into(),
                }));
            }
            Err(error) => return Err(Unshared::Unreachable(error)),
        };
        if self.key.account.is_some() && record.is_none() {
            self.retire();
            return Err(Unshared::Unusable(GrantError::ReauthorizationRequired {
                reason: "the account was removed".into(),
            }));
        }
        Ok(record)
    }

    /// Right before a token request: the lease must still be this replica's, and now lasts a
    /// whole request longer, so no other replica takes over while the answer may come.
    pub(super) async fn confirm_lease(
        &self,
        fleet: &RedisStore,
        lease: &Lease,
    ) -> Result<(), GrantError> {
        match fleet.extend(&self.key, lease, LEASE_TTL).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(GrantError::Transient {
                reason: "another replica took over the token request".into(),
            }),
            Err(error) => {
                tracing::warn!(provider = %self.provider().name, %error, "cannot confirm the lease; not sending the token request");
                Err(GrantError::StoreUnavailable {
                    reason: "the fleet store (Redis) is unreachable".into(),
                })
            }
        }
    }

    /// Redis did not answer: request alone, unless the provider must not have two requesters.
    async fn obtain_alone(&self, error: StoreError) -> Result<AccessToken, GrantError> {
        let provider = self.provider();
        let protected = provider.lockout_sensitive || self.rotates();
        let fleet_policy = self
            .store
            .fleet()
            .map_or(WhenUnreachable::Protect, RedisStore::when_unreachable);
        // An account never read has no refresh token to use, whatever the policy.
        let unread_account = self.key.account.is_some() && self.account_info().is_none();
        if unread_account || (protected && fleet_policy == WhenUnreachable::Protect) {
            tracing::warn!(provider = %provider.name, %error, "the fleet store is unreachable; this provider makes no token request without it");
            return Err(GrantError::StoreUnavailable {
                reason: "the fleet store (Redis) is unreachable".into(),
            });
        }
        tracing::warn!(provider = %provider.name, %error, "the fleet store is unreachable; requesting a token alone");
        self.fetch_and_persist(WriteTo::BestEffort).await
    }

    /// Tells Redis which token a vendor refused here, once: it is marked refused only if it is
    /// still the stored one, so a 401 storm across replicas leaves one token to replace.
    async fn report_refused(&self, fleet: &RedisStore) {
        let pending = {
            let mut refused = self
                .refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match refused.as_mut() {
                Some(refused) if !refused.reported => {
                    refused.reported = true;
                    Some(refused.id.clone())
                }
                _ => None,
            }
        };
        if let Some(id) = pending
            && let Err(error) = fleet.invalidate(&self.key, &id).await
        {
            tracing::debug!(%error, "refused token not marked in Redis; this replica still skips it");
        }
    }
}
