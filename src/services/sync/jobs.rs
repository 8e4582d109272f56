//! The use cases both transports call: start a sync (one at a time per account) and read one.

use crate::domain::{AccountId, Actor, Untrusted};
use crate::error::ServiceError;
use crate::services::Services;
use crate::store::DocWrite;

use super::model::{
    unix_now, Current, Cursor, SyncDoc, SyncKind, SyncStatus, SyncView, CURRENT, CURRENT_ID, SYNCS,
};

/// How long a `current` marker whose sync document is missing is taken for a start still
/// under way (the marker is written first); older, its creator died and it is replaced.
const CREATING_GRACE_SECS: u64 = 60;

fn not_found(sync_id: &str) -> ServiceError {
    ServiceError::NotFound(format!("unknown sync \"{}\"", Untrusted(sync_id)))
}

/// 96 random bits in hex.
fn new_sync_id() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// Starts a sync of `kind` on the account: checked first (the kind must be the platform's),
/// then the account's `current` marker is claimed (a running sync: [`ServiceError::Conflict`]),
/// then the sync is written and the runner woken. No WeChat call happens here.
#[tracing::instrument(skip_all, fields(account = %account, kind = %Untrusted(kind)))]
pub async fn start_sync(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    kind: &str,
) -> Result<SyncView, ServiceError> {
    let platform = svc.account(account)?.platform;
    let kind = SyncKind::parse(kind, platform)?;
    let store = &*svc.store;
    let id = account.as_str();
    let sync_id = new_sync_id();
    let now = unix_now();
    let claim = Current {
        sync_id: sync_id.clone(),
        at: now,
    };
    loop {
        if CURRENT
            .put(store, id, CURRENT_ID, &claim, DocWrite::IfAbsent)
            .await?
        {
            break;
        }
        let Some(found) = CURRENT.read(store, id, CURRENT_ID).await? else {
            continue; // it ended meanwhile
        };
        // A marker that does not decode is replaced like a stale one.
        if let Ok(current) = &found.value {
            match SYNCS.get(store, id, &current.sync_id).await? {
                Some(running) if running.status.is_active() => {
                    return Err(ServiceError::Conflict(format!(
                        "sync {} is {} on this account: one sync at a time",
                        running.sync_id,
                        running.status.as_str()
                    )));
                }
                None if now.saturating_sub(current.at) < CREATING_GRACE_SECS => {
                    return Err(ServiceError::Conflict(format!(
                        "sync {} is starting on this account: one sync at a time",
                        current.sync_id
                    )));
                }
                _ => {}
            }
        }
        // Its sync ended (or never came to be): replace the marker, unless someone else did.
        if CURRENT
            .put(
                store,
                id,
                CURRENT_ID,
                &claim,
                DocWrite::IfEquals(found.bytes),
            )
            .await?
        {
            break;
        }
    }
    let doc = SyncDoc {
        sync_id: sync_id.clone(),
        kind,
        actor: actor.to_string(),
        created_at: now,
        updated_at: now,
        finished_at: None,
        status: SyncStatus::Running,
        pages: 0,
        users: 0,
        failures: 0,
        left: 0,
        pauses: 0,
        backoff_step: 0,
        paused_until: None,
        last_error: None,
        cursor: Cursor::start(kind),
    };
    SYNCS
        .put(store, id, &sync_id, &doc, DocWrite::IfAbsent)
        .await?;
    tracing::info!(sync_id = %sync_id, actor = %actor, "audience sync started");
    svc.syncs.kick.notify_one();
    Ok(SyncView::of(id, &doc))
}

/// Cancels a running or paused sync: one compare-and-swap on its document, which the runner's
/// own compare-and-swaps see, so it stops before its next page (snapshots of a page in flight
/// may still be recorded). Cancelling a cancelled sync answers it again; a finished or failed
/// one is [`ServiceError::Precondition`].
#[tracing::instrument(skip_all, fields(account = %account, sync_id = %Untrusted(sync_id)))]
pub async fn cancel_sync(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    sync_id: &str,
) -> Result<SyncView, ServiceError> {
    svc.account(account)?;
    let store = &*svc.store;
    let id = account.as_str();
    loop {
        let stored = SYNCS
            .read(store, id, sync_id)
            .await?
            .ok_or_else(|| not_found(sync_id))?;
        let mut doc = stored.value?;
        match doc.status {
            SyncStatus::Cancelled => return Ok(SyncView::of(id, &doc)),
            SyncStatus::Finished | SyncStatus::Failed => {
                return Err(ServiceError::Precondition(format!(
                    "sync {} has {}: nothing to cancel",
                    doc.sync_id,
                    doc.status.as_str()
                )))
            }
            SyncStatus::Running | SyncStatus::Paused => {}
        }
        let now = unix_now();
        doc.status = SyncStatus::Cancelled;
        doc.finished_at = Some(now);
        doc.updated_at = now;
        doc.paused_until = None;
        if SYNCS
            .put(store, id, sync_id, &doc, DocWrite::IfEquals(stored.bytes))
            .await?
        {
            tracing::info!(actor = %actor, "audience sync cancelled");
            return Ok(SyncView::of(id, &doc));
        }
    }
}

/// A sync's progress.
pub async fn get_sync(
    svc: &Services,
    account: &AccountId,
    sync_id: &str,
) -> Result<SyncView, ServiceError> {
    svc.account(account)?;
    let doc = SYNCS
        .get(&*svc.store, account.as_str(), sync_id)
        .await?
        .ok_or_else(|| not_found(sync_id))?;
    Ok(SyncView::of(account.as_str(), &doc))
}
