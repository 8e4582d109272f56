//! The leases of the Redis store: a string holding the owner, with an expiry, taken or renewed
//! by the `LEASE` script and released by `RELEASE_LEASE`, both comparing the owner (a plain
//! `SET NX PX` could not be renewed by its holder).

use std::time::Duration;

use async_trait::async_trait;

use super::keys::lease_key;
use super::RedisStore;
use crate::store::{LeaseKey, Leases, StoreError};

#[async_trait]
impl Leases for RedisStore {
    async fn try_lease(
        &self,
        key: &LeaseKey,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let lease = lease_key(key);
        let ttl_ms = ttl.as_millis().max(1) as u64;
        // Safe to retry: had a lost answer taken the lease, the retry renews it for the same
        // owner.
        let answer: i64 = self
            .run("take lease", || {
                let mut invocation = self.lease_script.key(&lease);
                invocation.arg(owner).arg(ttl_ms);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(answer != 0)
    }

    async fn release_lease(&self, key: &LeaseKey, owner: &str) -> Result<(), StoreError> {
        let lease = lease_key(key);
        let _released: i64 = self
            .run("release lease", || {
                let mut invocation = self.release_lease_script.key(&lease);
                invocation.arg(owner);
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(())
    }
}
