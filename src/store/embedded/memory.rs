//! What the embedded store keeps in memory only: the access tokens and the leases. One node
//! shares them with no one; after a restart a token is fetched again and no lease is held.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{lock, EmbeddedStore};
use crate::store::{CachedToken, LeaseKey, Leases, StoreError, TokenCache};

#[async_trait]
impl TokenCache for EmbeddedStore {
    async fn cached_token(&self, key: &str) -> Result<Option<CachedToken>, StoreError> {
        Ok(lock(&self.tokens).get(key).cloned())
    }

    async fn put_token(&self, key: &str, token: &CachedToken) -> Result<(), StoreError> {
        lock(&self.tokens).insert(key.to_owned(), token.clone());
        Ok(())
    }

    async fn evict_token(&self, key: &str, rejected: &str) -> Result<bool, StoreError> {
        let mut tokens = lock(&self.tokens);
        match tokens.get_mut(key) {
            Some(cached) if !rejected.is_empty() && cached.token.expose() == rejected => {
                cached.token = Default::default();
                cached.expires_at_ms = 0;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl Leases for EmbeddedStore {
    async fn try_lease(
        &self,
        key: &LeaseKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut leases = lock(&self.leases);
        let now = Instant::now();
        match leases.get(&key.to_string()) {
            Some((holder, lapses)) if holder != owner && *lapses > now => Ok(false),
            _ => {
                leases.insert(key.to_string(), (owner.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, key: &LeaseKey, owner: &str) -> Result<(), StoreError> {
        let mut leases = lock(&self.leases);
        let key = key.to_string();
        if leases.get(&key).is_some_and(|(holder, _)| holder == owner) {
            leases.remove(&key);
        }
        Ok(())
    }
}
