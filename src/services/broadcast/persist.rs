//! Reading and writing the job's documents: their keys, new job ids, loading a job, the
//! compare-and-swap every writer of a job goes through, and the batch results.

use crate::error::ServiceError;
use crate::store::{DocWrite, Store, StoreError};

use super::jobs::not_found;
use super::model::{BatchResult, Job, JOBS, RESULTS};

pub(super) fn batch_key(job_id: &str, batch: usize) -> String {
    format!("{job_id}-{batch}")
}

/// 96 random bits in hex: a batch's clientmsgid (`<job>-<batch>`) stays far under 64 bytes.
pub(super) fn new_job_id() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
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

pub(super) async fn read_result(
    store: &dyn Store,
    account: &str,
    key: &str,
) -> Result<Option<BatchResult>, StoreError> {
    RESULTS.get(store, account, key).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::broadcast::batch_client_msg_id;

    #[test]
    fn job_ids_keep_batch_clientmsgids_within_wechats_64_bytes() {
        let id = new_job_id();
        assert_eq!(id.len(), 24);
        assert!(batch_client_msg_id(&id, 99_999).len() <= 64);
        assert_ne!(id, new_job_id());
    }
}
