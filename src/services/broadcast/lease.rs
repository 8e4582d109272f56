//! The lease that says which instance runs a job: the store's lease
//! ([`LeaseKey::broadcast_job`]), taken for a turn on the job, renewed by its holder while the
//! turn lasts, released when it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{LeaseKey, Leases, StoreError};

pub(super) async fn take_lease(
    store: &dyn Leases,
    account: &str,
    job_id: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    store
        .try_lease(&LeaseKey::broadcast_job(account, job_id), owner, ttl)
        .await
}

/// Renews the lease every third of its TTL; cancels `held` when it is lost (another instance
/// took the job over after this one stalled) or cannot be renewed in time.
pub(super) async fn renew_lease(
    store: Arc<dyn Leases>,
    account: String,
    job_id: String,
    owner: String,
    ttl: Duration,
    held: CancellationToken,
) {
    let key = LeaseKey::broadcast_job(&account, &job_id);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = held.cancelled() => return,
        }
        match store.try_lease(&key, &owner, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(account, job_id, "lost the lease of a broadcast job");
                held.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(account, job_id, error = %e, "cannot renew a broadcast job lease");
                if renewed.elapsed() >= ttl * 2 / 3 {
                    held.cancel();
                    return;
                }
            }
        }
    }
}

/// Releases the lease (if this instance still holds it), so another instance may take the job
/// at once.
pub(super) async fn release_lease(store: &dyn Leases, account: &str, job_id: &str, owner: &str) {
    let key = LeaseKey::broadcast_job(account, job_id);
    if let Err(e) = store.release_lease(&key, owner).await {
        tracing::warn!(account, job_id, error = %e, "cannot release a broadcast job lease");
    }
}
