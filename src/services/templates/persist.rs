//! Loading and the compare-and-swap update of a job, its pages, and the lease that says
//! which instance runs it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::store::{DocWrite, LeaseKey, Leases, Store, StoreError};

use super::model::{page_key, Job, Page, JOBS, PAGES};

pub(super) fn new_job_id() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

pub(super) fn not_found(job_id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no template job {job_id:?} on this account"))
}

pub(super) async fn load_job(
    store: &dyn Store,
    account: &str,
    job_id: &str,
) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
    let Some(stored) = JOBS.read(store, account, job_id).await? else {
        return Ok(None);
    };
    Ok(Some((stored.value?, stored.bytes)))
}

/// Compare-and-swap: `f` is applied to the job as stored until the write lands unchanged by
/// anyone else meanwhile.
pub(super) async fn update_job(
    store: &dyn Store,
    account: &str,
    job_id: &str,
    mut f: impl FnMut(&mut Job),
) -> Result<Job, ServiceError> {
    loop {
        let (mut job, old) = load_job(store, account, job_id)
            .await?
            .ok_or_else(|| not_found(job_id))?;
        f(&mut job);
        if JOBS.encode(&job) == old
            || JOBS
                .put(store, account, job_id, &job, DocWrite::IfEquals(old))
                .await?
        {
            return Ok(job);
        }
    }
}

pub(super) async fn load_page(
    store: &dyn Store,
    account: &str,
    job_id: &str,
    page: usize,
) -> Result<Page, StoreError> {
    PAGES
        .get(store, account, &page_key(job_id, page))
        .await?
        .ok_or_else(|| {
            StoreError::Corrupt(format!("page {page} of template job {job_id} is missing"))
        })
}

/// Written only by the holder of the job's lease.
pub(super) async fn save_page(
    store: &dyn Store,
    account: &str,
    job_id: &str,
    page: usize,
    value: &Page,
) -> Result<(), StoreError> {
    PAGES
        .put(
            store,
            account,
            &page_key(job_id, page),
            value,
            DocWrite::Always,
        )
        .await?;
    Ok(())
}

pub(super) async fn take_lease(
    store: &dyn Leases,
    account: &str,
    job_id: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    store
        .try_lease(&LeaseKey::template_job(account, job_id), owner, ttl)
        .await
}

/// Renews the lease every third of its TTL; cancels `held` when it is lost or cannot be
/// renewed in time.
pub(super) async fn renew_lease(
    store: Arc<dyn Leases>,
    account: String,
    job_id: String,
    owner: String,
    ttl: Duration,
    held: CancellationToken,
) {
    let key = LeaseKey::template_job(&account, &job_id);
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = held.cancelled() => return,
        }
        match store.try_lease(&key, &owner, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(account, job_id, "lost the lease of a template job");
                held.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(account, job_id, error = %e, "cannot renew a template job lease");
                if renewed.elapsed() >= ttl * 2 / 3 {
                    held.cancel();
                    return;
                }
            }
        }
    }
}

pub(super) async fn release_lease(store: &dyn Leases, account: &str, job_id: &str, owner: &str) {
    let key = LeaseKey::template_job(account, job_id);
    if let Err(e) = store.release_lease(&key, owner).await {
        tracing::warn!(account, job_id, error = %e, "cannot release a template job lease");
    }
}
