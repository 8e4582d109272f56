//! The job use cases both transports call: create (check the request, plan its batches, and
//! persist everything before the runner sends anything), read, cancel, preview and delete.

use serde_json::Value;

use crate::domain::broadcast::{
    batch_client_msg_id, is_open_id, plan_batches, Audience, Broadcast, BroadcastAudience,
    BroadcastMessage, MassMessage,
};
use crate::domain::group_message::{GroupMessage, MediaSlot};
use crate::domain::{AccountId, Actor, Platform};
use crate::error::ServiceError;
use crate::services::{media, Services};
use crate::store::{DocWrite, StoreError};
use crate::wechat::account::Account;
use crate::wechat::api::{groupmsg, mass, Typed};

use super::model::{
    unix_now, Batch, BatchResult, BatchStatus, Job, Target, ACTIVE, CLIENT_MSG_IDS, JOBS,
    RECIPIENTS, RESULTS,
};
use super::persist::{batch_key, load_job, new_job_id, update_job};
use super::views::{view, JobView};

/// Longest caller `client_msg_id`.
const MAX_CALLER_ID: usize = 128;

/// A broadcast request as either transport parsed it; checked against the account and
/// planned into batches in [`create_job`].
#[derive(Debug, Clone)]
pub struct SendBroadcast {
    pub broadcast: Broadcast,
    pub client_msg_id: Option<String>,
}

/// What a valid request turns into.
struct Plan {
    target: Target,
    msgtype: String,
    body: Value,
    ignore_reprint: bool,
    /// The recipients of each batch; one empty batch for a tag, everyone, a WeCom tag filter
    /// alone or every customer group of the sender.
    batches: Vec<Vec<String>>,
    /// WeCom: the media fields that name a gateway upload by its hash, resolved to a media id
    /// once the request is known to be valid.
    uploads: Vec<(MediaSlot, String)>,
    group: Option<GroupMessage>,
}

fn plan(account: &Account, broadcast: Broadcast) -> Result<Plan, ServiceError> {
    let v = ServiceError::Validation;
    let Broadcast { audience, message } = broadcast;
    audience.check_platform(account.platform).map_err(v)?;
    match (audience, message) {
        (BroadcastAudience::Followers(audience), BroadcastMessage::Mass(message)) => {
            let (target, batches) = match audience {
                Audience::Tag(tag_id) => (Target::Tag { tag_id }, vec![Vec::new()]),
                Audience::All => (Target::All, vec![Vec::new()]),
                Audience::OpenIds(ids) => (Target::OpenIds, plan_batches(&ids).map_err(v)?),
            };
            Ok(Plan {
                target,
                msgtype: message.msgtype.to_owned(),
                body: message.body,
                ignore_reprint: message.ignore_reprint,
                batches,
                uploads: Vec::new(),
                group: None,
            })
        }
        (BroadcastAudience::External(audience), BroadcastMessage::Group(message)) => Ok(Plan {
            target: Target::External {
                sender: audience.sender.clone(),
                chat_type: audience.chat_type,
                tag_filter: audience.tag_filter_json(),
                allow_select: audience.allow_select,
            },
            msgtype: message.msgtype(),
            body: message.body(),
            ignore_reprint: false,
            batches: audience.plan_batches(),
            uploads: message.upload_references(),
            group: Some(message),
        }),
        (BroadcastAudience::Followers(_), BroadcastMessage::Group(_)) => Err(v(
            "a group message (text and attachments) is a WeCom broadcast; an Official Account \
             sends a mass message"
                .into(),
        )),
        (BroadcastAudience::External(_), BroadcastMessage::Mass(_)) => Err(v(
            "a WeCom broadcast sends a group message: {\"text\": {\"content\": \"...\"}, \
             \"attachments\": [...]}"
                .into(),
        )),
    }
}

/// Replaces every upload reference of a WeCom message by a live media id of those bytes (or
/// refuses the request when the gateway has no such upload).
async fn resolve_uploads(
    svc: &Services,
    account: &Account,
    plan: &mut Plan,
) -> Result<(), ServiceError> {
    let Some(message) = plan.group.as_mut() else {
        return Ok(());
    };
    for (slot, sha) in std::mem::take(&mut plan.uploads) {
        let media_id = media::media_id_of_upload(svc, account, slot.kind, &sha)
            .await?
            .ok_or_else(|| {
                ServiceError::Validation(format!(
                    "message.attachments[{}].{}.{}: no WeCom upload of a {} with sha256 {sha} \
                     on this account (upload it with POST .../media first)",
                    slot.index,
                    slot.msgtype,
                    slot.reference,
                    slot.kind.as_str()
                ))
            })?;
        message.resolve(slot, &media_id);
    }
    plan.body = message.body();
    Ok(())
}

fn check_caller_id(id: &str) -> Result<(), ServiceError> {
    if id.is_empty()
        || id.len() > MAX_CALLER_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(ServiceError::Validation(format!(
            "client_msg_id must be 1 to {MAX_CALLER_ID} characters of letters, digits, '-', \
             '_', '.' and ':'"
        )));
    }
    Ok(())
}

/// Checks the request, persists the job and its batches, and wakes the runner. The same
/// `client_msg_id` again answers the job it made, and sends nothing (`false`).
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create_job(
    svc: &Services,
    account_id: &AccountId,
    actor: &Actor,
    req: SendBroadcast,
) -> Result<(JobView, bool), ServiceError> {
    let account = svc.account(account_id)?.clone();
    let mut plan = plan(&account, req.broadcast)?;
    if let Some(id) = &req.client_msg_id {
        check_caller_id(id)?;
    }
    resolve_uploads(svc, &account, &mut plan).await?;
    let store = &*svc.store;
    let mut job_id = new_job_id();
    if let Some(id) = &req.client_msg_id {
        if !CLIENT_MSG_IDS
            .put(store, account_id.as_str(), id, &job_id, DocWrite::IfAbsent)
            .await?
        {
            // Another request with this id claimed a job id: that is the job. If its creator
            // died before writing the job, this request finishes writing it.
            job_id = CLIENT_MSG_IDS
                .get(store, account_id.as_str(), id)
                .await?
                .ok_or_else(|| {
                    ServiceError::Conflict(format!(
                        "client_msg_id {id:?} is being used by a request in progress; try again"
                    ))
                })?;
        }
    }
    if let Some((job, _)) = load_job(store, account_id.as_str(), &job_id).await? {
        return Ok((
            view(store, account_id.as_str(), &account, &job).await?,
            false,
        ));
    }
    for (i, recipients) in plan.batches.iter().enumerate() {
        if !recipients.is_empty() {
            RECIPIENTS
                .put(
                    store,
                    account_id.as_str(),
                    &batch_key(&job_id, i),
                    recipients,
                    DocWrite::IfAbsent,
                )
                .await?;
        }
    }
    let job = Job {
        client_msg_id: req.client_msg_id.clone(),
        actor: actor.to_string(),
        created_at: unix_now(),
        target: plan.target,
        msgtype: plan.msgtype,
        body: plan.body,
        ignore_reprint: plan.ignore_reprint,
        batches: plan
            .batches
            .iter()
            .enumerate()
            .map(|(i, r)| Batch {
                client_msg_id: batch_client_msg_id(&job_id, i),
                size: r.len(),
                status: BatchStatus::Queued,
                attempts: 0,
                msg_id: None,
                msg_data_id: None,
                sent_at: None,
                already_sent: false,
                reconciled: false,
                attempt_started_at: None,
                error: None,
                fail_list: Vec::new(),
                checked_at: None,
                deleted: false,
            })
            .collect(),
        job_id: job_id.clone(),
        cancelled_at: None,
        cancelled_by: None,
    };
    // Active first: a job that exists is always one the runner will find.
    ACTIVE
        .put(store, account_id.as_str(), &job_id, &(), DocWrite::Always)
        .await?;
    let created = JOBS
        .put(
            store,
            account_id.as_str(),
            &job_id,
            &job,
            DocWrite::IfAbsent,
        )
        .await?;
    let (job, _) = load_job(store, account_id.as_str(), &job_id)
        .await?
        .ok_or_else(|| StoreError::Unavailable("the job just written is not there".into()))?;
    if created {
        tracing::info!(job_id = %job_id, batches = job.batches.len(), msgtype = %job.msgtype,
            "broadcast job created");
        svc.broadcasts.kick.notify_one();
    }
    Ok((
        view(store, account_id.as_str(), &account, &job).await?,
        created,
    ))
}

/// The job and every batch, with the results WeChat reported.
pub async fn get_job(
    svc: &Services,
    account_id: &AccountId,
    job_id: &str,
) -> Result<JobView, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let (job, _) = load_job(&*svc.store, account_id.as_str(), job_id)
        .await?
        .ok_or_else(|| not_found(job_id))?;
    Ok(view(&*svc.store, account_id.as_str(), &account, &job).await?)
}

/// Cancels a job: its queued batches are never sent; a batch being sent finishes its attempt
/// (it cannot be undone) and keeps its result. Idempotent: a cancelled job answers its view
/// again. A job with nothing left to send is a conflict.
#[tracing::instrument(skip_all, fields(account = %account_id, job_id = job_id, actor = %actor))]
pub async fn cancel_job(
    svc: &Services,
    account_id: &AccountId,
    job_id: &str,
    actor: &Actor,
) -> Result<JobView, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let store = &*svc.store;
    let now = unix_now();
    let mut cancelled_now = false;
    // Compare-and-swap against the runners' writes: a batch the runner marked `sending` first
    // stays `sending` (its attempt is in flight), every other pending batch is cancelled.
    let job = update_job(store, account_id.as_str(), job_id, |j| {
        cancelled_now = false;
        let pending = j
            .batches
            .iter()
            .any(|b| matches!(b.status, BatchStatus::Queued | BatchStatus::Sending));
        if j.cancelled_at.is_none() && pending {
            j.cancelled_at = Some(now);
            j.cancelled_by = Some(actor.to_string());
            for b in &mut j.batches {
                if b.status == BatchStatus::Queued {
                    b.status = BatchStatus::Cancelled;
                }
            }
            cancelled_now = true;
        }
    })
    .await?;
    let view = view(store, account_id.as_str(), &account, &job).await?;
    if job.cancelled_at.is_none() {
        return Err(ServiceError::Precondition(format!(
            "broadcast job {job_id:?} has nothing left to send (it is {}): only a queued or \
             sending job can be cancelled",
            view.status
        )));
    }
    if cancelled_now {
        tracing::info!("broadcast job cancelled");
    }
    Ok(view)
}

/// `mass/preview`: the message to one follower, to check it before a broadcast.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn preview(
    svc: &Services,
    account_id: &AccountId,
    open_id: &str,
    message: &Value,
) -> Result<Option<i64>, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account, "preview")?;
    if !is_open_id(open_id) {
        return Err(ServiceError::Validation(
            "open_id must be an openid (1 to 64 characters of letters, digits, '-' and '_')".into(),
        ));
    }
    let message = MassMessage::parse(message).map_err(ServiceError::Validation)?;
    let message = Typed {
        msgtype: message.msgtype,
        body: &message.body,
    };
    let answer = mass::preview(&svc.tokens, &account, open_id, message).await?;
    Ok(answer.msg_id)
}

/// `mass/delete` of every sent batch: WeChat then shows the articles as deleted (it deletes
/// only mpnews and mpvideo mass sends, and only once they were sent). On WeCom, the group
/// message of every batch is cancelled for the members who have not sent it.
#[tracing::instrument(skip_all, fields(account = %account_id, job_id = job_id))]
pub async fn delete_job(
    svc: &Services,
    account_id: &AccountId,
    job_id: &str,
) -> Result<JobView, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let store = &*svc.store;
    let (job, _) = load_job(store, account_id.as_str(), job_id)
        .await?
        .ok_or_else(|| not_found(job_id))?;
    let mp = account.platform == Platform::Mp;
    if mp && !matches!(job.msgtype.as_str(), "mpnews" | "mpvideo") {
        return Err(ServiceError::Validation(format!(
            "WeChat deletes only mpnews and mpvideo mass sends (mass/delete); this job sent {}",
            job.msgtype
        )));
    }
    if job
        .batches
        .iter()
        .any(|b| matches!(b.status, BatchStatus::Queued | BatchStatus::Sending))
    {
        return Err(ServiceError::Precondition(
            "the job is still sending; delete it once every batch is sent".into(),
        ));
    }
    for (i, batch) in job.batches.iter().enumerate() {
        let Some(msg_id) = batch.msg_id.as_deref().filter(|_| !batch.deleted) else {
            continue;
        };
        if !mp {
            cancel_group_message(svc, &account, job_id, i, msg_id).await?;
            continue;
        }
        let msg_id: i64 = msg_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("batch {i} has msg_id {msg_id:?}")))?;
        mass::delete(&svc.tokens, &account, msg_id).await?;
        update_job(store, account_id.as_str(), job_id, |j| {
            j.batches[i].deleted = true
        })
        .await?;
    }
    tracing::info!("broadcast deleted");
    get_job(svc, account_id, job_id).await
}

/// WeCom's nearest to a delete: `externalcontact/cancel_groupmsg_send` stops the group
/// message for the members who have not sent it yet. Its result is final ("cancelled"), so
/// the job no longer waits for their confirmation.
async fn cancel_group_message(
    svc: &Services,
    account: &Account,
    job_id: &str,
    batch: usize,
    msgid: &str,
) -> Result<(), ServiceError> {
    let account_id = account.id.as_str();
    groupmsg::cancel_groupmsg_send(&svc.tokens, account, msgid).await?;
    let result = BatchResult {
        status: "cancelled".into(),
        source: "cancel_groupmsg_send".into(),
        at: unix_now(),
        ..Default::default()
    };
    RESULTS
        .put(
            &*svc.store,
            account_id,
            &batch_key(job_id, batch),
            &result,
            DocWrite::Always,
        )
        .await?;
    update_job(&*svc.store, account_id, job_id, |j| {
        j.batches[batch].deleted = true
    })
    .await?;
    Ok(())
}

fn mp_only(account: &Account, what: &str) -> Result<(), ServiceError> {
    match account.platform {
        Platform::Mp => Ok(()),
        Platform::Work => Err(ServiceError::Validation(format!(
            "account {:?} is a WeCom application: broadcast {what} is an Official Account \
             feature (mass/{what})",
            account.id.as_str()
        ))),
    }
}

pub(super) fn not_found(job_id: &str) -> ServiceError {
    ServiceError::NotFound(format!("no broadcast job {job_id:?} on this account"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_ids_are_checked() {
        assert!(check_caller_id("crm-2026-12-01:campaign.7").is_ok());
        assert!(check_caller_id("").is_err());
        assert!(check_caller_id("a b").is_err());
        assert!(check_caller_id(&"x".repeat(129)).is_err());
    }
}
