//! The lease that says which instance runs a job: a `bcast-lease` document written
//! create-only with a TTL, renewed by its holder through a compare-and-swap, released by
//! letting it lapse at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{DocWrite, Store, StoreError};

use super::model::LEASE;

pub(super) async fn take_lease(
    store: &dyn Store,
    account: &str,
    job_id: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    store
        .put_doc(
            account,
            LEASE,
            job_id,
            owner.as_bytes(),
            DocWrite::IfAbsent,
            Some(ttl),
        )
        .await
}

/// Renews the lease every third of its TTL; cancels `held` when it is lost (another instance
/// took the job over after this one stalled) or cannot be renewed in time.
pub(super) async fn renew_lease(
    store: Arc<dyn Store>,
    account: String,
    job_id: String,
    owner: String,
    ttl: Duration,
    held: CancellationToken,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = held.cancelled() => return,
        }
        match store
            .put_doc(
                &account,
                LEASE,
                &job_id,
                owner.as_bytes(),
                DocWrite::IfEquals(owner.as_bytes().to_vec()),
                Some(ttl),
            )
            .await
        {
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

/// Lets the lease lapse at once (if this instance still holds it).
pub(super) async fn release_lease(store: &dyn Store, account: &str, job_id: &str, owner: &str) {
    if let Err(e) = store
        .put_doc(
            account,
            LEASE,
            job_id,
            owner.as_bytes(),
            DocWrite::IfEquals(owner.as_bytes().to_vec()),
            Some(Duration::from_millis(1)),
        )
        .await
    {
        tracing::warn!(account, job_id, error = %e, "cannot release a broadcast job lease");
    }
}
