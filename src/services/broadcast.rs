//! Broadcasts as tracked, resumable jobs (issue 5): a CRM fires one request, the gateway sends
//! it to WeChat in batches, paced, exactly once per batch across crashes, and records what
//! WeChat reports back.
//!
//! **Documents** (the store's documents API, under the account):
//! - `bcast-job/<job>`: the job and the state of each batch. Written by the creating request,
//!   then by whichever instance holds the job's lease (and by `DELETE`), always
//!   compare-and-swap.
//! - `bcast-batch/<job>-<i>`: the recipients of batch `i`, written once before the job exists.
//! - `bcast-cmid/<client_msg_id>`: the caller's idempotency key → the job id (create-only).
//! - `bcast-active/<job>`: the jobs the runner still has work on.
//! - `bcast-msgid/<msg_id>`: WeChat's msg_id → `(job, batch)`, for the forwarder.
//! - `bcast-result/<job>-<i>`: what WeChat reported for a batch. The forwarder writes it from
//!   a MASSSENDJOBFINISH callback (replacing whatever is there: the callback is the full
//!   report); the runner's `mass/get` check writes it only if absent. So the runner and the
//!   forwarder never overwrite each other's job record.
//! - `bcast-lease/<job>`: which instance runs the job. A document lease, not `try_lease`,
//!   because its holder can renew it atomically (compare-and-swap with a new TTL) on both
//!   backends, where Redis' `SET NX` lease cannot be renewed by its holder.
//!
//! **Exactly one send per batch.** Everything is persisted before the first call to WeChat.
//! Each batch carries a `clientmsgid` derived from the job id and the batch number
//! ([`batch_client_msg_id`]); WeChat de-duplicates by it for 24 hours and answers a repeat with
//! 45065 and the msg_id of the first send. So a batch whose answer was lost (a timeout, a crash
//! between WeChat accepting it and the gateway recording it) is sent again with the same
//! clientmsgid, and 45065 marks it sent. WeCom's `add_msg_template` has no such key, so it is
//! called in one attempt (never repeated inside the call), and a WeCom batch found `sending`
//! (an attempt whose answer was lost) is first *reconciled* ([`Runner::reconcile`]): WeCom's
//! record of group messages since the first attempt is searched for this batch's send; found,
//! it is recorded (`"reconciled": true`); not found, the attempt did not land and the batch is
//! sent again; unsure (the search failed), nothing is sent until a later search answers.
//!
//! **Lifecycle** of a batch: `queued` → `sending` (persisted before each call) → `sent` (WeChat
//! answered a msg_id) → `finished` (its result is in) or `failed` (WeChat refused it: a bad
//! media_id, an invalid openid list), or `cancelled` (never sent). A job is `queued`,
//! `sending`, `sent` (every batch settled, results pending), `finished`, `failed` (no batch
//! could be sent), or `cancelled` (cancelled, and nothing is pending any more).
//!
//! **Cancelling** ([`cancel_job`]) is one compare-and-swap on the job: its queued batches
//! become `cancelled`. The runner marks a batch `sending` only through a compare-and-swap that
//! sees no cancellation, so on any instance either the cancel lands first and the batch is
//! never sent, or the batch was marked first and its attempt (in flight, it cannot be undone)
//! runs to its end and its result is kept. A batch left in doubt by such an attempt is settled
//! without a new send: reconciled on WeCom, `cancelled` (with a note) on Official Accounts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Account, BroadcastConfig};
use crate::domain::broadcast::{
    batch_client_msg_id, is_open_id, plan_batches, plan_external_batches, Audience,
    ExternalAudience, MassMessage,
};
use crate::domain::Platform;
use crate::error::AdminError;
use crate::pb::{self, event::Kind};
use crate::store::{DocWrite, Store, StoreError};
use crate::wechat::api::{ApiError, ALREADY_SENT};
use crate::wechat::tokens::TokenError;

use super::Services;

const JOB: &str = "bcast-job";
const RECIPIENTS: &str = "bcast-batch";
const CMID: &str = "bcast-cmid";
const ACTIVE: &str = "bcast-active";
const MSGID: &str = "bcast-msgid";
const RESULT: &str = "bcast-result";
pub(crate) const LEASE: &str = "bcast-lease";

/// How often the runner looks for work when nobody kicks it (a job created on another
/// instance, a result check coming due).
const POLL: Duration = Duration::from_secs(1);
/// Longest caller `client_msg_id`.
const MAX_CALLER_ID: usize = 128;
/// Slack on each side of a reconcile window, for the clocks of WeCom and this host.
const CLOCK_SKEW: u64 = 300;
/// The widest reconcile window: `get_groupmsg_list_v2` takes at most a month (93338).
const MAX_WINDOW: u64 = 28 * 24 * 3600;
/// Pages read before a reconcile gives up (and tries again later): 100 messages a page.
const MAX_PAGES: usize = 1000;

/// The runner's settings and its wake-up call; one per process, in [`Services`].
pub struct Broadcasts {
    cfg: BroadcastConfig,
    kick: Notify,
}

impl Broadcasts {
    pub fn new(cfg: BroadcastConfig) -> Self {
        Self {
            cfg,
            kick: Notify::new(),
        }
    }

    pub fn config(&self) -> &BroadcastConfig {
        &self.cfg
    }
}

/// A broadcast request as either transport received it; checked in [`create_job`].
#[derive(Debug, Clone)]
pub struct SendBroadcast {
    pub audience: Value,
    pub message: Value,
    pub client_msg_id: Option<String>,
}

// ---- the stored shapes ----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Target {
    Tag { tag_id: u64 },
    All,
    OpenIds,
    External { sender: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BatchStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    /// The job was cancelled before this batch was sent.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Batch {
    client_msg_id: String,
    /// Recipients; 0 for a tag or everyone (WeChat counts them).
    size: usize,
    status: BatchStatus,
    attempts: u32,
    /// WeChat's msg_id (a number on Official Accounts, WeCom's msgid string).
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    msg_data_id: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    sent_at: Option<u64>,
    /// WeChat answered 45065: the batch had been sent already (by an attempt whose answer was
    /// lost); its msg_id is that send's.
    #[serde(default)]
    already_sent: bool,
    /// WeCom: the send of an attempt whose answer was lost, found by [`Runner::reconcile`]
    /// (`already_sent` is set too).
    #[serde(default)]
    reconciled: bool,
    /// Unix seconds when the first attempt started, persisted before the call: a WeCom
    /// reconcile searches WeCom's record from there on, so its window covers every attempt.
    #[serde(default)]
    attempt_started_at: Option<u64>,
    /// The last failure (errcode and errmsg), kept while retrying and when failed.
    #[serde(default)]
    error: Option<String>,
    /// WeCom: external contacts the message cannot reach (`fail_list`).
    #[serde(default)]
    fail_list: Vec<String>,
    /// Unix seconds of the last `mass/get` / `get_groupmsg_task` check.
    #[serde(default)]
    checked_at: Option<u64>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    job_id: String,
    actor: String,
    created_at: u64,
    #[serde(default)]
    client_msg_id: Option<String>,
    target: Target,
    msgtype: String,
    body: Value,
    ignore_reprint: bool,
    batches: Vec<Batch>,
    /// Unix seconds of the cancel, and who cancelled.
    #[serde(default)]
    cancelled_at: Option<u64>,
    #[serde(default)]
    cancelled_by: Option<String>,
}

/// What WeChat reported for a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct BatchResult {
    /// MASSSENDJOBFINISH `Status` ("send success", "err(10001)", ...), `mass/get`'s
    /// `msg_status` (SEND_SUCCESS, SEND_FAIL, DELETE), or on WeCom "confirmed" / "pending".
    status: String,
    #[serde(default)]
    total: Option<i64>,
    #[serde(default)]
    filtered: Option<i64>,
    #[serde(default)]
    sent: Option<i64>,
    #[serde(default)]
    errors: Option<i64>,
    /// "callback", "mass/get" or "get_groupmsg_task".
    source: String,
    /// WeCom: members who have not yet confirmed the group message.
    #[serde(default)]
    pending_confirmation: Vec<String>,
    at: u64,
}

impl BatchResult {
    /// Whether nothing more will come: on WeCom only once every member confirmed.
    fn is_final(&self) -> bool {
        self.source != "get_groupmsg_task" || self.pending_confirmation.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MsgIndex {
    job_id: String,
    batch: usize,
}

// ---- the views both transports answer -------------------------------------------------------

/// A job as `GET .../broadcasts/{job_id}` and `GetBroadcast` show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub status: &'static str,
    pub created_at: u64,
    pub actor: String,
    pub client_msg_id: Option<String>,
    pub msgtype: String,
    /// `{"tag_id": N}`, `{"all": true}`, `{"open_ids": <count>}` or
    /// `{"external_user_ids": <count>, "sender": ".."}`.
    pub audience: Value,
    pub batches: Vec<BatchView>,
    /// Unix seconds; null unless cancelled.
    pub cancelled_at: Option<u64>,
    pub cancelled_by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchView {
    pub index: usize,
    pub client_msg_id: String,
    pub size: usize,
    pub status: &'static str,
    /// A number on Official Accounts, WeCom's msgid string on WeCom; null until sent.
    pub msg_id: Value,
    pub total: Option<i64>,
    pub filtered: Option<i64>,
    pub sent: Option<i64>,
    pub errors: Option<i64>,
    pub wechat_status: Option<String>,
    pub result_source: Option<String>,
    pub attempts: u32,
    pub already_sent: bool,
    /// WeCom: found in WeCom's record after an attempt whose answer was lost.
    pub reconciled: bool,
    pub error: Option<String>,
    pub fail_list: Vec<String>,
    pub pending_confirmation: Vec<String>,
    pub deleted: bool,
}

// ---- creating a job --------------------------------------------------------------------------

/// What a valid request turns into.
struct Plan {
    target: Target,
    message: MassMessage,
    /// The recipients of each batch; one empty batch for a tag or everyone.
    batches: Vec<Vec<String>>,
}

fn plan(account: &Account, req: &SendBroadcast) -> Result<Plan, AdminError> {
    let v = AdminError::Validation;
    match account.platform {
        Platform::Mp => {
            let message = MassMessage::parse(&req.message).map_err(v)?;
            let (target, batches) = match Audience::parse(&req.audience).map_err(v)? {
                Audience::Tag(tag_id) => (Target::Tag { tag_id }, vec![Vec::new()]),
                Audience::All => (Target::All, vec![Vec::new()]),
                Audience::OpenIds(ids) => (Target::OpenIds, plan_batches(&ids).map_err(v)?),
            };
            Ok(Plan {
                target,
                message,
                batches,
            })
        }
        Platform::Work => {
            let audience = ExternalAudience::parse(&req.audience).map_err(v)?;
            let message = MassMessage::parse(&req.message).map_err(v)?;
            if !matches!(message.msgtype, "text" | "image") {
                return Err(AdminError::Validation(format!(
                    "message type {:?} cannot be sent to WeCom external contacts here; the \
                     types are text and image (externalcontact/add_msg_template)",
                    message.msgtype
                )));
            }
            Ok(Plan {
                target: Target::External {
                    sender: audience.sender,
                },
                message,
                batches: plan_external_batches(&audience.external_user_ids).map_err(v)?,
            })
        }
    }
}

fn check_caller_id(id: &str) -> Result<(), AdminError> {
    if id.is_empty()
        || id.len() > MAX_CALLER_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(AdminError::Validation(format!(
            "client_msg_id must be 1 to {MAX_CALLER_ID} characters of letters, digits, '-', \
             '_', '.' and ':'"
        )));
    }
    Ok(())
}

/// Checks the request, persists the job and its batches, and wakes the runner. The same
/// `client_msg_id` again answers the job it made, and sends nothing (`false`).
#[tracing::instrument(skip_all, fields(account = account_id, actor = actor))]
pub async fn create_job(
    svc: &Services,
    account_id: &str,
    actor: &str,
    req: SendBroadcast,
) -> Result<(JobView, bool), AdminError> {
    let account = svc.account(account_id)?.clone();
    let plan = plan(&account, &req)?;
    if let Some(id) = &req.client_msg_id {
        check_caller_id(id)?;
    }
    let store = &*svc.store;
    let mut job_id = new_job_id();
    if let Some(id) = &req.client_msg_id {
        if !store
            .put_doc(
                account_id,
                CMID,
                id,
                job_id.as_bytes(),
                DocWrite::IfAbsent,
                None,
            )
            .await?
        {
            // Another request with this id claimed a job id: that is the job. If its creator
            // died before writing the job, this request finishes writing it.
            let claimed = store.doc(account_id, CMID, id).await?.ok_or_else(|| {
                AdminError::Conflict(format!(
                    "client_msg_id {id:?} is being used by a request in progress; try again"
                ))
            })?;
            job_id = String::from_utf8(claimed)
                .map_err(|_| StoreError::Corrupt("a bcast-cmid document".into()))?;
        }
    }
    if let Some((job, _)) = load_job(store, account_id, &job_id).await? {
        return Ok((view(store, account_id, &account, &job).await?, false));
    }
    for (i, recipients) in plan.batches.iter().enumerate() {
        if !recipients.is_empty() {
            let bytes = serde_json::to_vec(recipients).expect("a list of strings serializes");
            store
                .put_doc(
                    account_id,
                    RECIPIENTS,
                    &batch_key(&job_id, i),
                    &bytes,
                    DocWrite::IfAbsent,
                    None,
                )
                .await?;
        }
    }
    let job = Job {
        client_msg_id: req.client_msg_id.clone(),
        actor: actor.to_owned(),
        created_at: unix_now(),
        target: plan.target,
        msgtype: plan.message.msgtype.to_owned(),
        body: plan.message.body,
        ignore_reprint: plan.message.ignore_reprint,
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
    store
        .put_doc(account_id, ACTIVE, &job_id, b"1", DocWrite::Always, None)
        .await?;
    let bytes = serde_json::to_vec(&job).expect("a job serializes");
    let created = store
        .put_doc(account_id, JOB, &job_id, &bytes, DocWrite::IfAbsent, None)
        .await?;
    let (job, _) = load_job(store, account_id, &job_id)
        .await?
        .ok_or_else(|| StoreError::Unavailable("the job just written is not there".into()))?;
    if created {
        tracing::info!(job_id = %job_id, batches = job.batches.len(), msgtype = %job.msgtype,
            "broadcast job created");
        svc.broadcasts.kick.notify_one();
    }
    Ok((view(store, account_id, &account, &job).await?, created))
}

/// The job and every batch, with the results WeChat reported.
pub async fn get_job(
    svc: &Services,
    account_id: &str,
    job_id: &str,
) -> Result<JobView, AdminError> {
    let account = svc.account(account_id)?.clone();
    let (job, _) = load_job(&*svc.store, account_id, job_id)
        .await?
        .ok_or_else(|| not_found(job_id))?;
    Ok(view(&*svc.store, account_id, &account, &job).await?)
}

/// Cancels a job: its queued batches are never sent; a batch being sent finishes its attempt
/// (it cannot be undone) and keeps its result. Idempotent: a cancelled job answers its view
/// again. A job with nothing left to send is a conflict.
#[tracing::instrument(skip_all, fields(account = account_id, job_id = job_id, actor = actor))]
pub async fn cancel_job(
    svc: &Services,
    account_id: &str,
    job_id: &str,
    actor: &str,
) -> Result<JobView, AdminError> {
    let account = svc.account(account_id)?.clone();
    let store = &*svc.store;
    let now = unix_now();
    let mut cancelled_now = false;
    // Compare-and-swap against the runners' writes: a batch the runner marked `sending` first
    // stays `sending` (its attempt is in flight), every other pending batch is cancelled.
    let job = update_job(store, account_id, job_id, |j| {
        cancelled_now = false;
        let pending = j
            .batches
            .iter()
            .any(|b| matches!(b.status, BatchStatus::Queued | BatchStatus::Sending));
        if j.cancelled_at.is_none() && pending {
            j.cancelled_at = Some(now);
            j.cancelled_by = Some(actor.to_owned());
            for b in &mut j.batches {
                if b.status == BatchStatus::Queued {
                    b.status = BatchStatus::Cancelled;
                }
            }
            cancelled_now = true;
        }
    })
    .await?;
    let view = view(store, account_id, &account, &job).await?;
    if job.cancelled_at.is_none() {
        return Err(AdminError::Precondition(format!(
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
#[tracing::instrument(skip_all, fields(account = account_id))]
pub async fn preview(
    svc: &Services,
    account_id: &str,
    open_id: &str,
    message: &Value,
) -> Result<Option<i64>, AdminError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account, "preview")?;
    if !is_open_id(open_id) {
        return Err(AdminError::Validation(
            "open_id must be an openid (1 to 64 characters of letters, digits, '-' and '_')".into(),
        ));
    }
    let message = MassMessage::parse(message).map_err(AdminError::Validation)?;
    let mut body = json!({ "touser": open_id, "msgtype": message.msgtype });
    body[message.msgtype] = message.body;
    #[derive(Deserialize)]
    struct Previewed {
        #[serde(default)]
        msg_id: Option<i64>,
    }
    let answer: Previewed = svc
        .tokens
        .post(
            &account,
            "mass/preview",
            "/cgi-bin/message/mass/preview",
            &body,
        )
        .await?;
    Ok(answer.msg_id)
}

/// `mass/delete` of every sent batch: WeChat then shows the articles as deleted (it deletes
/// only mpnews and mpvideo mass sends, and only once they were sent). On WeCom, the group
/// message of every batch is cancelled for the members who have not sent it.
#[tracing::instrument(skip_all, fields(account = account_id, job_id = job_id))]
pub async fn delete_job(
    svc: &Services,
    account_id: &str,
    job_id: &str,
) -> Result<JobView, AdminError> {
    let account = svc.account(account_id)?.clone();
    let store = &*svc.store;
    let (job, _) = load_job(store, account_id, job_id)
        .await?
        .ok_or_else(|| not_found(job_id))?;
    let mp = account.platform == Platform::Mp;
    if mp && !matches!(job.msgtype.as_str(), "mpnews" | "mpvideo") {
        return Err(AdminError::Validation(format!(
            "WeChat deletes only mpnews and mpvideo mass sends (mass/delete); this job sent {}",
            job.msgtype
        )));
    }
    if job
        .batches
        .iter()
        .any(|b| matches!(b.status, BatchStatus::Queued | BatchStatus::Sending))
    {
        return Err(AdminError::Precondition(
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
        let _: crate::wechat::api::Empty = svc
            .tokens
            .post(
                &account,
                "mass/delete",
                "/cgi-bin/message/mass/delete",
                &json!({ "msg_id": msg_id, "article_idx": 0 }),
            )
            .await?;
        update_job(store, account_id, job_id, |j| j.batches[i].deleted = true).await?;
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
) -> Result<(), AdminError> {
    let account_id = account.id.as_str();
    let _: crate::wechat::api::Empty = svc
        .tokens
        .post(
            account,
            "externalcontact/cancel_groupmsg_send",
            "/cgi-bin/externalcontact/cancel_groupmsg_send",
            &json!({ "msgid": msgid }),
        )
        .await?;
    let result = BatchResult {
        status: "cancelled".into(),
        source: "cancel_groupmsg_send".into(),
        at: unix_now(),
        ..Default::default()
    };
    let bytes = serde_json::to_vec(&result).expect("a result serializes");
    svc.store
        .put_doc(
            account_id,
            RESULT,
            &batch_key(job_id, batch),
            &bytes,
            DocWrite::Always,
            None,
        )
        .await?;
    update_job(&*svc.store, account_id, job_id, |j| {
        j.batches[batch].deleted = true
    })
    .await?;
    Ok(())
}

fn mp_only(account: &Account, what: &str) -> Result<(), AdminError> {
    match account.platform {
        Platform::Mp => Ok(()),
        Platform::Work => Err(AdminError::Validation(format!(
            "account {:?} is a WeCom application: broadcast {what} is an Official Account \
             feature (mass/{what})",
            account.id.as_str()
        ))),
    }
}

fn not_found(job_id: &str) -> AdminError {
    AdminError::NotFound(format!("no broadcast job {job_id:?} on this account"))
}

// ---- the forwarder's side --------------------------------------------------------------------

/// For every MASSSENDJOBFINISH whose msg_id is a batch of a job: sets `broadcast_job_id` and
/// records the batch's result. A lookup that fails leaves the event as it is (and is logged):
/// delivery never waits or fails because of it, and the runner's `mass/get` check covers the
/// result.
pub async fn attach_to_jobs(store: &dyn Store, events: &mut [pb::Event]) {
    for event in events.iter_mut() {
        let Some(Kind::MassSendFinished(m)) = &event.kind else {
            continue;
        };
        let found = match store
            .doc(&event.account_id, MSGID, &m.msg_id.to_string())
            .await
        {
            Ok(Some(bytes)) => serde_json::from_slice::<MsgIndex>(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e,
                    "cannot look up the broadcast of a MASSSENDJOBFINISH");
                None
            }
        };
        let Some(index) = found else { continue };
        let result = BatchResult {
            status: m.status.clone(),
            total: Some(m.total_count),
            filtered: Some(m.filter_count),
            sent: Some(m.sent_count),
            errors: Some(m.error_count),
            source: "callback".into(),
            pending_confirmation: Vec::new(),
            at: unix_now(),
        };
        let bytes = serde_json::to_vec(&result).expect("a result serializes");
        // Always: a retried delivery writes the same, and the callback's report replaces a
        // mass/get status.
        if let Err(e) = store
            .put_doc(
                &event.account_id,
                RESULT,
                &batch_key(&index.job_id, index.batch),
                &bytes,
                DocWrite::Always,
                None,
            )
            .await
        {
            tracing::warn!(event_id = %event.id, error = %e, "cannot record a broadcast result");
        }
        event.broadcast_job_id = index.job_id;
    }
}

// ---- the runner ------------------------------------------------------------------------------

/// Runs broadcast jobs until `shutdown`: every active job of every account, one at a time,
/// each under its lease. Woken by a new job, and every [`POLL`].
pub async fn run(svc: Arc<Services>, owner: String, shutdown: CancellationToken) {
    let mut runner = Runner {
        svc: svc.clone(),
        owner,
        last_call: None,
        failures: HashMap::new(),
    };
    loop {
        runner.pass(&shutdown).await;
        tokio::select! {
            _ = svc.broadcasts.kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

struct Runner {
    svc: Arc<Services>,
    /// This instance's name on job leases.
    owner: String,
    /// When this instance last called a mass-send API: the pace.
    last_call: Option<Instant>,
    /// Job → consecutive failures and when to try again.
    failures: HashMap<String, (u32, Instant)>,
}

/// How far one turn on a job got.
enum Turn {
    /// Nothing left to do: the job is finished or failed.
    Done,
    /// Backing off, or waiting for a job being created.
    Later,
    /// Every batch is settled; the next result check is due then.
    WaitUntil(Instant),
    /// The lease was lost or shutdown began.
    Stopped,
}

/// What WeCom's record says about a batch in doubt.
enum Reconciled {
    /// The lost attempt created this group message.
    Found(String),
    /// No group message of this batch: the attempt did not land.
    NotLanded,
}

enum Outcome {
    Sent {
        msg_id: String,
        msg_data_id: Option<i64>,
        already_sent: bool,
        fail_list: Vec<String>,
    },
    /// WeChat refused the batch itself: not retried.
    Failed(String),
    /// Not sent, or not known to be: tried again later with the same clientmsgid.
    Retry(String),
}

impl Runner {
    fn store(&self) -> &dyn Store {
        &*self.svc.store
    }

    fn cfg(&self) -> &BroadcastConfig {
        &self.svc.broadcasts.cfg
    }

    async fn pass(&mut self, shutdown: &CancellationToken) {
        let mut accounts: Vec<_> = self.svc.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for account in accounts {
            let id = account.id.as_str().to_owned();
            let active = match self.store().docs(&id, ACTIVE).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "cannot list broadcast jobs");
                    continue;
                }
            };
            for (job_id, _) in active {
                if shutdown.is_cancelled() {
                    return;
                }
                if self
                    .failures
                    .get(&job_id)
                    .is_some_and(|(_, at)| *at > Instant::now())
                {
                    continue;
                }
                self.turn(&account, &job_id, shutdown).await;
            }
        }
    }

    /// One turn on a job under its lease, renewed while the turn lasts.
    async fn turn(&mut self, account: &Arc<Account>, job_id: &str, shutdown: &CancellationToken) {
        let id = account.id.as_str();
        let ttl = self.cfg().lease;
        match take_lease(self.store(), id, job_id, &self.owner, ttl).await {
            Ok(true) => {}
            Ok(false) => return, // another instance runs it
            Err(e) => {
                tracing::warn!(account = id, job_id, error = %e, "cannot take a job lease");
                return;
            }
        }
        let held = shutdown.child_token();
        let renewer = tokio::spawn(renew_lease(
            self.svc.store.clone(),
            id.to_owned(),
            job_id.to_owned(),
            self.owner.clone(),
            ttl,
            held.clone(),
        ));
        let result = self.drive(account, job_id, &held).await;
        renewer.abort();
        release_lease(self.store(), id, job_id, &self.owner).await;
        match result {
            Ok(Turn::Done) => {
                self.failures.remove(job_id);
                // The lease document goes too: nothing runs a retired job any more.
                for kind in [ACTIVE, LEASE] {
                    if let Err(e) = self.store().delete_doc(id, kind, job_id).await {
                        tracing::warn!(account = id, job_id, error = %e, "cannot retire a job");
                    }
                }
            }
            Ok(Turn::WaitUntil(at)) => {
                self.failures.insert(job_id.to_owned(), (0, at));
            }
            Ok(Turn::Later | Turn::Stopped) => {}
            Err(e) => {
                tracing::warn!(account = id, job_id, error = %e, "broadcast job turn failed");
                self.back_off(job_id);
            }
        }
    }

    fn back_off(&mut self, job_id: &str) {
        let (min, max) = (self.cfg().backoff_min, self.cfg().backoff_max);
        let entry = self
            .failures
            .entry(job_id.to_owned())
            .or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        let wait = crate::backoff::exponential(min, max, entry.0 - 1);
        entry.1 = Instant::now() + wait;
    }

    async fn drive(
        &mut self,
        account: &Arc<Account>,
        job_id: &str,
        held: &CancellationToken,
    ) -> Result<Turn, AdminError> {
        let id = account.id.as_str();
        let Some((first, _)) = load_job(self.store(), id, job_id).await? else {
            // Being created (its active mark is written first), or its creator died.
            return Ok(Turn::Later);
        };
        for i in 0..first.batches.len() {
            // Read again before each batch: another instance's write (a DELETE) is seen.
            let Some((job, _)) = load_job(self.store(), id, job_id).await? else {
                return Ok(Turn::Later);
            };
            let status = job.batches[i].status;
            if !matches!(status, BatchStatus::Queued | BatchStatus::Sending) {
                continue;
            }
            if job.cancelled_at.is_some() {
                if self.settle_cancelled(account, &job, i, held).await? {
                    return Ok(Turn::Later);
                }
                continue;
            }
            if status == BatchStatus::Sending && matches!(job.target, Target::External { .. }) {
                // An earlier attempt may have landed: find out before sending again.
                let found = tokio::select! {
                    r = self.reconcile(account, &job, i) => r,
                    _ = held.cancelled() => return Ok(Turn::Stopped),
                };
                match found {
                    Ok(Reconciled::NotLanded) => {}
                    Ok(Reconciled::Found(msg_id)) => {
                        let sent = Outcome::Sent {
                            msg_id,
                            msg_data_id: None,
                            already_sent: true,
                            fail_list: Vec::new(),
                        };
                        self.record(id, job_id, i, sent, true).await?;
                        continue;
                    }
                    Err(outcome) => {
                        if self.record(id, job_id, i, outcome, false).await? {
                            return Ok(Turn::Later);
                        }
                        continue;
                    }
                }
            }
            if !self.pace(held).await {
                return Ok(Turn::Stopped);
            }
            // Persisted before the call: after a crash the batch is known to be in doubt. Not
            // once the job is cancelled (by anyone: the write is a compare-and-swap).
            let now = unix_now();
            let job = update_job(self.store(), id, job_id, |j| {
                if j.cancelled_at.is_some() {
                    return;
                }
                let b = &mut j.batches[i];
                b.status = BatchStatus::Sending;
                b.attempts += 1;
                b.attempt_started_at.get_or_insert(now);
            })
            .await?;
            if job.cancelled_at.is_some() {
                // The cancel landed first: this attempt is not made.
                if self.settle_cancelled(account, &job, i, held).await? {
                    return Ok(Turn::Later);
                }
                continue;
            }
            let outcome = tokio::select! {
                o = self.send_batch(account, &job, i) => o,
                _ = held.cancelled() => return Ok(Turn::Stopped),
            };
            if self.record(id, job_id, i, outcome, false).await? {
                return Ok(Turn::Later);
            }
        }
        self.check_results(account, job_id, held).await
    }

    /// Batch `i` of a cancelled job, queued or left in doubt by an attempt made before the
    /// cancel: settled without sending. A WeCom batch in doubt is reconciled (found: sent;
    /// not found: cancelled); an Official Account batch in doubt cannot be looked up without
    /// sending it, so it is cancelled with a note. True when the job must wait (backing off).
    async fn settle_cancelled(
        &mut self,
        account: &Account,
        job: &Job,
        i: usize,
        held: &CancellationToken,
    ) -> Result<bool, AdminError> {
        let id = account.id.as_str();
        let batch = &job.batches[i];
        let note = match (batch.status, &job.target) {
            (BatchStatus::Sending, Target::External { .. }) => {
                let found = tokio::select! {
                    r = self.reconcile(account, job, i) => r,
                    _ = held.cancelled() => return Ok(true),
                };
                match found {
                    Ok(Reconciled::Found(msg_id)) => {
                        let sent = Outcome::Sent {
                            msg_id,
                            msg_data_id: None,
                            already_sent: true,
                            fail_list: Vec::new(),
                        };
                        return self.record(id, &job.job_id, i, sent, true).await;
                    }
                    Ok(Reconciled::NotLanded) => None,
                    Err(Outcome::Failed(reason)) => Some(format!(
                        "cancelled; whether its last attempt reached WeCom is unknown: {reason}"
                    )),
                    Err(retry) => return self.record(id, &job.job_id, i, retry, false).await,
                }
            }
            (BatchStatus::Sending, _) => Some(format!(
                "cancelled after an attempt whose outcome is unknown ({}): if it reached \
                 WeChat, the batch was sent",
                batch.error.as_deref().unwrap_or("interrupted")
            )),
            _ => None,
        };
        update_job(self.store(), id, &job.job_id, |j| {
            let b = &mut j.batches[i];
            if matches!(b.status, BatchStatus::Queued | BatchStatus::Sending) {
                b.status = BatchStatus::Cancelled;
                if let Some(note) = &note {
                    b.error = Some(note.clone());
                }
            }
        })
        .await?;
        tracing::info!(account = id, job_id = %job.job_id, batch = i, "broadcast batch cancelled");
        Ok(false)
    }

    /// Counts and persists the outcome of an attempt (or of a reconcile, `reconciled`); true
    /// when the job must wait (backing off) before its next batch.
    async fn record(
        &mut self,
        id: &str,
        job_id: &str,
        i: usize,
        outcome: Outcome,
        reconciled: bool,
    ) -> Result<bool, AdminError> {
        let label = match &outcome {
            Outcome::Sent { .. } if reconciled => "reconciled",
            Outcome::Sent {
                already_sent: true, ..
            } => "already_sent",
            Outcome::Sent { .. } => "sent",
            Outcome::Failed(_) => "failed",
            Outcome::Retry(_) => "retry",
        };
        metrics::counter!("wgw_broadcast_batches_total",
            "account" => id.to_owned(), "outcome" => label)
        .increment(1);
        match outcome {
            Outcome::Sent {
                msg_id,
                msg_data_id,
                already_sent,
                fail_list,
            } => {
                let index = serde_json::to_vec(&MsgIndex {
                    job_id: job_id.to_owned(),
                    batch: i,
                })
                .expect("an index serializes");
                self.store()
                    .put_doc(id, MSGID, &msg_id, &index, DocWrite::Always, None)
                    .await?;
                update_job(self.store(), id, job_id, |j| {
                    let b = &mut j.batches[i];
                    b.status = BatchStatus::Sent;
                    b.msg_id = Some(msg_id.clone());
                    b.msg_data_id = msg_data_id;
                    b.sent_at = Some(unix_now());
                    b.already_sent = already_sent;
                    b.reconciled = reconciled;
                    b.fail_list = fail_list.clone();
                    b.error = None;
                })
                .await?;
                self.failures.remove(job_id);
                tracing::info!(account = id, job_id, batch = i, msg_id = %msg_id, already_sent,
                    reconciled, "broadcast batch sent");
                Ok(false)
            }
            Outcome::Failed(reason) => {
                tracing::warn!(account = id, job_id, batch = i, reason = %reason,
                    "WeChat refused a broadcast batch");
                update_job(self.store(), id, job_id, |j| {
                    j.batches[i].status = BatchStatus::Failed;
                    j.batches[i].error = Some(reason.clone());
                })
                .await?;
                Ok(false)
            }
            Outcome::Retry(reason) => {
                tracing::info!(account = id, job_id, batch = i, reason = %reason,
                    "broadcast batch not known to be sent; trying again later");
                update_job(self.store(), id, job_id, |j| {
                    j.batches[i].error = Some(reason.clone());
                })
                .await?;
                self.back_off(job_id);
                Ok(true)
            }
        }
    }

    /// WeCom: whether an earlier attempt of batch `i`, whose answer was lost, created the
    /// group message. `add_msg_template` has no idempotency key, so WeCom's own record is read
    /// (developer.work.weixin.qq.com/document/path/93338):
    ///
    /// - `get_groupmsg_list_v2` (`chat_type` single, `start_time`/`end_time` in unix seconds,
    ///   at most a month apart, `filter_type` 0 = created by the enterprise, which is what the
    ///   API creates, `limit` at most 100, `cursor` → `next_cursor`, empty on the last page)
    ///   lists the group messages created since the first attempt. Not filtered by `creator`:
    ///   the page documents that messages created through the API do not carry one, so a
    ///   `creator` filter could hide the very message looked for.
    /// - A candidate has this job's content (`text.content`, or the image's `media_id` in
    ///   `attachments`) and a msgid no other batch recorded (`bcast-msgid`).
    /// - `get_groupmsg_send_result` (`msgid`, `userid` = the sender, `limit` at most 1000,
    ///   `cursor`) lists its `send_list` (`external_userid`, `userid`, `status`): it is this
    ///   batch's send when every contact listed is one of this batch's recipients. The batches
    ///   of a job are disjoint, so a message of another batch, or of another job to other
    ///   contacts, has a contact that is not ours.
    ///
    /// Every page is read before concluding: a failed read is `Err(Retry)` (nothing is sent
    /// while unsure), a refused list `Err(Failed)`.
    async fn reconcile(
        &self,
        account: &Account,
        job: &Job,
        i: usize,
    ) -> Result<Reconciled, Outcome> {
        let Target::External { sender } = &job.target else {
            return Ok(Reconciled::NotLanded);
        };
        let id = account.id.as_str();
        let recipients: HashSet<String> = self.recipients(id, job, i).await?.into_iter().collect();
        let since = job.batches[i].attempt_started_at.unwrap_or(job.created_at);
        let end = unix_now() + CLOCK_SKEW;
        let start = since
            .saturating_sub(CLOCK_SKEW)
            .max(end.saturating_sub(MAX_WINDOW));
        #[derive(Deserialize)]
        struct GroupMsg {
            msgid: String,
            #[serde(default)]
            text: Option<Value>,
            #[serde(default)]
            attachments: Vec<Value>,
        }
        #[derive(Deserialize)]
        struct GroupMsgList {
            #[serde(default)]
            group_msg_list: Vec<GroupMsg>,
            #[serde(default)]
            next_cursor: String,
        }
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let list: GroupMsgList = self
                .svc
                .tokens
                .post(
                    account,
                    "externalcontact/get_groupmsg_list_v2",
                    "/cgi-bin/externalcontact/get_groupmsg_list_v2",
                    &json!({
                        "chat_type": "single",
                        "start_time": start,
                        "end_time": end,
                        "filter_type": 0,
                        "limit": 100,
                        "cursor": cursor,
                    }),
                )
                .await
                .map_err(classify)?;
            for m in list.group_msg_list {
                if !same_content(job, m.text.as_ref(), &m.attachments) {
                    continue;
                }
                match self.store().doc(id, MSGID, &m.msgid).await {
                    Ok(Some(bytes)) => {
                        let ours = serde_json::from_slice::<MsgIndex>(&bytes)
                            .is_ok_and(|x| x.job_id == job.job_id && x.batch == i);
                        if ours {
                            // Recorded before a crash that came before the job's update.
                            return Ok(Reconciled::Found(m.msgid));
                        }
                        continue; // another batch's send
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Outcome::Retry(e.to_string())),
                }
                if self
                    .sends_to(account, sender, &m.msgid, &recipients)
                    .await?
                {
                    tracing::info!(account = id, job_id = %job.job_id, batch = i,
                        msgid = %m.msgid, "a lost WeCom group message was found");
                    return Ok(Reconciled::Found(m.msgid));
                }
            }
            if list.next_cursor.is_empty() {
                return Ok(Reconciled::NotLanded);
            }
            cursor = list.next_cursor;
        }
        Err(Outcome::Retry(format!(
            "get_groupmsg_list_v2 had more than {MAX_PAGES} pages; not sent again while unsure"
        )))
    }

    /// Whether the group message `msgid` goes, in `sender`'s name, to this batch's recipients
    /// only (`get_groupmsg_send_result`, every page). A refusal means the sender has no task
    /// in that message, so it is not ours; a failed read is `Err(Retry)`.
    async fn sends_to(
        &self,
        account: &Account,
        sender: &str,
        msgid: &str,
        recipients: &HashSet<String>,
    ) -> Result<bool, Outcome> {
        #[derive(Deserialize)]
        struct Sent {
            #[serde(default)]
            external_userid: String,
        }
        #[derive(Deserialize)]
        struct SendResult {
            #[serde(default)]
            send_list: Vec<Sent>,
            #[serde(default)]
            next_cursor: String,
        }
        let mut cursor = String::new();
        let mut any = false;
        for _ in 0..MAX_PAGES {
            let page: SendResult = match self
                .svc
                .tokens
                .post(
                    account,
                    "externalcontact/get_groupmsg_send_result",
                    "/cgi-bin/externalcontact/get_groupmsg_send_result",
                    &json!({ "msgid": msgid, "userid": sender, "limit": 1000, "cursor": cursor }),
                )
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    return match classify(e) {
                        Outcome::Failed(_) => Ok(false),
                        other => Err(other),
                    }
                }
            };
            for s in &page.send_list {
                if !recipients.contains(&s.external_userid) {
                    return Ok(false);
                }
                any = true;
            }
            if page.next_cursor.is_empty() {
                return Ok(any);
            }
            cursor = page.next_cursor;
        }
        Err(Outcome::Retry(format!(
            "get_groupmsg_send_result had more than {MAX_PAGES} pages; not sent again while unsure"
        )))
    }

    /// The recipients of batch `i`; none for a tag or everyone.
    async fn recipients(&self, id: &str, job: &Job, i: usize) -> Result<Vec<String>, Outcome> {
        if job.batches[i].size == 0 {
            return Ok(Vec::new());
        }
        match self
            .store()
            .doc(id, RECIPIENTS, &batch_key(&job.job_id, i))
            .await
        {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| Outcome::Failed(format!("stored recipients corrupt: {e}"))),
            Ok(None) => Err(Outcome::Failed("the batch's recipients are missing".into())),
            Err(e) => Err(Outcome::Retry(e.to_string())),
        }
    }

    /// Waits until the next mass-send call is allowed; false when the lease or the process
    /// ends first.
    async fn pace(&mut self, held: &CancellationToken) -> bool {
        let interval = Duration::from_millis(60_000 / u64::from(self.cfg().calls_per_minute));
        if let Some(last) = self.last_call {
            tokio::select! {
                _ = tokio::time::sleep_until(last + interval) => {}
                _ = held.cancelled() => return false,
            }
        }
        self.last_call = Some(Instant::now());
        !held.is_cancelled()
    }

    async fn send_batch(&self, account: &Account, job: &Job, i: usize) -> Outcome {
        let batch = &job.batches[i];
        let recipients = match self.recipients(account.id.as_str(), job, i).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let tokens = &self.svc.tokens;
        match &job.target {
            Target::External { sender } => {
                let mut body = json!({
                    "chat_type": "single",
                    "external_userid": recipients,
                    "sender": sender,
                });
                match job.msgtype.as_str() {
                    "text" => body["text"] = job.body.clone(),
                    _ => {
                        body["attachments"] =
                            json!([{ "msgtype": job.msgtype, job.msgtype.as_str(): job.body }])
                    }
                }
                #[derive(Deserialize)]
                struct Template {
                    msgid: String,
                    #[serde(default)]
                    fail_list: Vec<String>,
                }
                // One attempt: a repeat would be a second task for the sender; a lost answer
                // is reconciled instead (see `reconcile`).
                match tokens
                    .post_once::<Template>(
                        account,
                        "externalcontact/add_msg_template",
                        "/cgi-bin/externalcontact/add_msg_template",
                        &body,
                    )
                    .await
                {
                    Ok(t) => Outcome::Sent {
                        msg_id: t.msgid,
                        msg_data_id: None,
                        already_sent: false,
                        fail_list: t.fail_list,
                    },
                    Err(e) => classify(e),
                }
            }
            target => {
                let mut body = json!({
                    "msgtype": job.msgtype,
                    "send_ignore_reprint": u8::from(job.ignore_reprint),
                    "clientmsgid": batch.client_msg_id,
                });
                body[job.msgtype.as_str()] = job.body.clone();
                let (api, path) = match target {
                    Target::Tag { tag_id } => {
                        body["filter"] = json!({ "is_to_all": false, "tag_id": tag_id });
                        ("mass/sendall", "/cgi-bin/message/mass/sendall")
                    }
                    Target::All => {
                        body["filter"] = json!({ "is_to_all": true });
                        ("mass/sendall", "/cgi-bin/message/mass/sendall")
                    }
                    _ => {
                        body["touser"] = json!(recipients);
                        ("mass/send", "/cgi-bin/message/mass/send")
                    }
                };
                #[derive(Deserialize)]
                struct MassSent {
                    #[serde(default)]
                    errcode: i64,
                    msg_id: i64,
                    #[serde(default)]
                    msg_data_id: Option<i64>,
                }
                match tokens.post::<MassSent>(account, api, path, &body).await {
                    Ok(sent) => Outcome::Sent {
                        msg_id: sent.msg_id.to_string(),
                        msg_data_id: sent.msg_data_id,
                        already_sent: sent.errcode == ALREADY_SENT,
                        fail_list: Vec::new(),
                    },
                    Err(e) => classify(e),
                }
            }
        }
    }

    /// Sent batches without a final result get checked once `check_after` passed since they
    /// were sent (or last checked). `Done` once every sent batch has its final result.
    async fn check_results(
        &mut self,
        account: &Arc<Account>,
        job_id: &str,
        held: &CancellationToken,
    ) -> Result<Turn, AdminError> {
        let id = account.id.as_str();
        let Some((job, _)) = load_job(self.store(), id, job_id).await? else {
            return Ok(Turn::Later);
        };
        let check_after = self.cfg().check_after.as_secs();
        let now = unix_now();
        // The earliest next check, in seconds from now.
        let mut open: Option<u64> = None;
        let mut wait = |secs: u64| open = Some(open.map_or(secs, |o: u64| o.min(secs)));
        for (i, batch) in job.batches.iter().enumerate() {
            let Some(msg_id) = batch.msg_id.as_deref() else {
                continue; // failed or cancelled
            };
            let key = batch_key(job_id, i);
            let stored = self.store().doc(id, RESULT, &key).await?;
            let result = stored.as_deref().map(decode_result).transpose()?;
            if result.as_ref().is_some_and(BatchResult::is_final) {
                continue;
            }
            let since = batch.checked_at.or(batch.sent_at).unwrap_or(now);
            if now < since + check_after {
                wait(since + check_after - now);
                continue;
            }
            if held.is_cancelled() {
                return Ok(Turn::Stopped);
            }
            let checked = match account.platform {
                Platform::Mp => self.mass_get(account, msg_id).await,
                Platform::Work => self.groupmsg_task(account, msg_id).await,
            };
            update_job(self.store(), id, job_id, |j| {
                j.batches[i].checked_at = Some(now)
            })
            .await?;
            match checked {
                Ok(Some(result)) => {
                    let bytes = serde_json::to_vec(&result).expect("a result serializes");
                    // The runner never replaces a result (the callback's is the full one),
                    // except its own WeCom confirmation status, and that only if nobody
                    // changed it meanwhile (a DELETE's "cancelled" stays).
                    let write = match stored {
                        Some(old) => DocWrite::IfEquals(old),
                        None => DocWrite::IfAbsent,
                    };
                    self.store()
                        .put_doc(id, RESULT, &key, &bytes, write, None)
                        .await?;
                    if !result.is_final() {
                        wait(check_after);
                    }
                }
                Ok(None) => wait(check_after),
                Err(e) => {
                    tracing::info!(account = id, job_id, batch = i, error = %e,
                        "cannot check a broadcast batch; checking again later");
                    wait(check_after);
                }
            }
        }
        Ok(match open {
            None => Turn::Done,
            // Results come in through callbacks meanwhile; a look once a minute retires a job
            // whose results are all in without waiting for the check.
            Some(secs) => Turn::WaitUntil(Instant::now() + Duration::from_secs(secs.clamp(1, 60))),
        })
    }

    /// `mass/get`: `None` while WeChat is still sending.
    async fn mass_get(
        &self,
        account: &Account,
        msg_id: &str,
    ) -> Result<Option<BatchResult>, AdminError> {
        let msg_id: i64 = msg_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("msg_id {msg_id:?}")))?;
        #[derive(Deserialize)]
        struct Status {
            msg_status: String,
        }
        let s: Status = self
            .svc
            .tokens
            .post(
                account,
                "mass/get",
                "/cgi-bin/message/mass/get",
                &json!({ "msg_id": msg_id }),
            )
            .await?;
        Ok((s.msg_status != "SENDING").then(|| BatchResult {
            status: s.msg_status,
            source: "mass/get".into(),
            at: unix_now(),
            ..Default::default()
        }))
    }

    /// WeCom `get_groupmsg_task`: which members have confirmed (status 2) the group message.
    async fn groupmsg_task(
        &self,
        account: &Account,
        msgid: &str,
    ) -> Result<Option<BatchResult>, AdminError> {
        #[derive(Deserialize)]
        struct Task {
            userid: String,
            #[serde(default)]
            status: i64,
        }
        #[derive(Deserialize)]
        struct Tasks {
            #[serde(default)]
            task_list: Vec<Task>,
        }
        let t: Tasks = self
            .svc
            .tokens
            .post(
                account,
                "externalcontact/get_groupmsg_task",
                "/cgi-bin/externalcontact/get_groupmsg_task",
                &json!({ "msgid": msgid, "limit": 1000 }),
            )
            .await?;
        let pending: Vec<String> = t
            .task_list
            .into_iter()
            .filter(|t| t.status != 2)
            .map(|t| t.userid)
            .collect();
        Ok(Some(BatchResult {
            status: if pending.is_empty() {
                "confirmed"
            } else {
                "pending"
            }
            .into(),
            source: "get_groupmsg_task".into(),
            pending_confirmation: pending,
            at: unix_now(),
            ..Default::default()
        }))
    }
}

/// Whether a group message listed by `get_groupmsg_list_v2` has this job's content: a text
/// message the same text and no attachment; an image message no text and an image attachment
/// with the same `media_id`, or with none shown (the list may show a `pic_url` instead: the
/// recipients then decide).
fn same_content(job: &Job, text: Option<&Value>, attachments: &[Value]) -> bool {
    let content = text.and_then(|t| t.get("content")).filter(|c| *c != "");
    match job.msgtype.as_str() {
        "text" => attachments.is_empty() && content == job.body.get("content"),
        kind => {
            content.is_none()
                && attachments.iter().any(|a| {
                    a["msgtype"] == kind
                        && a[kind]
                            .get("media_id")
                            .is_none_or(|m| Some(m) == job.body.get("media_id"))
                })
        }
    }
}

/// WeChat's refusals as the runner treats them: a quota (45009 daily, 45011 per minute), a
/// busy or unreachable WeChat, a token, IP-whitelist or store problem is retried later (with
/// the same clientmsgid, so a send whose answer was lost is not repeated); any other errcode
/// refused the batch itself.
fn classify(e: TokenError) -> Outcome {
    match e {
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => {
            Outcome::Failed(format!("errcode {errcode}: {errmsg}"))
        }
        TokenError::Api(ApiError::BadResponse(m)) => Outcome::Failed(m),
        other => Outcome::Retry(other.to_string()),
    }
}

// ---- leases ----------------------------------------------------------------------------------

async fn take_lease(
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
async fn renew_lease(
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
async fn release_lease(store: &dyn Store, account: &str, job_id: &str, owner: &str) {
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

// ---- documents -------------------------------------------------------------------------------

fn batch_key(job_id: &str, batch: usize) -> String {
    format!("{job_id}-{batch}")
}

/// 96 random bits in hex: a batch's clientmsgid (`<job>-<batch>`) stays far under 64 bytes.
fn new_job_id() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

async fn load_job(
    store: &dyn Store,
    account: &str,
    job_id: &str,
) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
    let Some(bytes) = store.doc(account, JOB, job_id).await? else {
        return Ok(None);
    };
    let job = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("broadcast job {job_id}: {e}")))?;
    Ok(Some((job, bytes)))
}

/// Compare-and-swap: `f` is applied to the job as stored until the write lands unchanged by
/// anyone else meanwhile.
async fn update_job(
    store: &dyn Store,
    account: &str,
    job_id: &str,
    mut f: impl FnMut(&mut Job),
) -> Result<Job, AdminError> {
    loop {
        let (mut job, old) = load_job(store, account, job_id)
            .await?
            .ok_or_else(|| not_found(job_id))?;
        f(&mut job);
        let new = serde_json::to_vec(&job).expect("a job serializes");
        if new == old
            || store
                .put_doc(account, JOB, job_id, &new, DocWrite::IfEquals(old), None)
                .await?
        {
            return Ok(job);
        }
    }
}

async fn read_result(
    store: &dyn Store,
    account: &str,
    key: &str,
) -> Result<Option<BatchResult>, StoreError> {
    store
        .doc(account, RESULT, key)
        .await?
        .as_deref()
        .map(decode_result)
        .transpose()
}

fn decode_result(bytes: &[u8]) -> Result<BatchResult, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt(format!("a broadcast result: {e}")))
}

async fn view(
    store: &dyn Store,
    account_id: &str,
    account: &Account,
    job: &Job,
) -> Result<JobView, StoreError> {
    let mut batches = Vec::with_capacity(job.batches.len());
    for (i, b) in job.batches.iter().enumerate() {
        let result = match b.status {
            BatchStatus::Sent => read_result(store, account_id, &batch_key(&job.job_id, i)).await?,
            _ => None,
        };
        let finished = result.as_ref().is_some_and(BatchResult::is_final);
        let r = result.clone().unwrap_or_default();
        batches.push(BatchView {
            index: i,
            client_msg_id: b.client_msg_id.clone(),
            size: b.size,
            status: match b.status {
                BatchStatus::Queued => "queued",
                BatchStatus::Sending => "sending",
                BatchStatus::Sent if finished => "finished",
                BatchStatus::Sent => "sent",
                BatchStatus::Failed => "failed",
                BatchStatus::Cancelled => "cancelled",
            },
            msg_id: match (&b.msg_id, account.platform) {
                (None, _) => Value::Null,
                (Some(m), Platform::Mp) => m.parse::<i64>().map_or(json!(m), |n| json!(n)),
                (Some(m), Platform::Work) => json!(m),
            },
            total: r.total,
            filtered: r.filtered,
            sent: r.sent,
            errors: r.errors,
            wechat_status: result.as_ref().map(|r| r.status.clone()),
            result_source: result.as_ref().map(|r| r.source.clone()),
            attempts: b.attempts,
            already_sent: b.already_sent,
            reconciled: b.reconciled,
            error: b.error.clone(),
            fail_list: b.fail_list.clone(),
            pending_confirmation: match (&job.target, &result) {
                (_, Some(r)) if r.source == "get_groupmsg_task" => r.pending_confirmation.clone(),
                // Until checked, the sender has yet to confirm the group message.
                (Target::External { sender }, None) if b.status == BatchStatus::Sent => {
                    vec![sender.clone()]
                }
                _ => Vec::new(),
            },
            deleted: b.deleted,
        });
    }
    Ok(JobView {
        job_id: job.job_id.clone(),
        status: job_status(&batches, job.cancelled_at.is_some()),
        created_at: job.created_at,
        actor: job.actor.clone(),
        client_msg_id: job.client_msg_id.clone(),
        msgtype: job.msgtype.clone(),
        audience: match &job.target {
            Target::Tag { tag_id } => json!({ "tag_id": tag_id }),
            Target::All => json!({ "all": true }),
            Target::OpenIds => {
                json!({ "open_ids": job.batches.iter().map(|b| b.size).sum::<usize>() })
            }
            Target::External { sender } => json!({
                "external_user_ids": job.batches.iter().map(|b| b.size).sum::<usize>(),
                "sender": sender,
            }),
        },
        batches,
        cancelled_at: job.cancelled_at,
        cancelled_by: job.cancelled_by.clone(),
    })
}

fn job_status(batches: &[BatchView], cancelled: bool) -> &'static str {
    let has = |s: &str| batches.iter().any(|b| b.status == s);
    if batches.iter().all(|b| b.status == "queued") {
        "queued"
    } else if has("queued") || has("sending") {
        "sending"
    } else if cancelled {
        "cancelled"
    } else if batches.iter().all(|b| b.status == "failed") {
        "failed"
    } else if has("sent") {
        "sent"
    } else {
        "finished"
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: &'static str) -> BatchView {
        BatchView {
            index: 0,
            client_msg_id: String::new(),
            size: 2,
            status,
            msg_id: Value::Null,
            total: None,
            filtered: None,
            sent: None,
            errors: None,
            wechat_status: None,
            result_source: None,
            attempts: 0,
            already_sent: false,
            reconciled: false,
            error: None,
            fail_list: Vec::new(),
            pending_confirmation: Vec::new(),
            deleted: false,
        }
    }

    #[test]
    fn a_job_status_follows_its_batches() {
        let status = |list: &[&'static str], cancelled| {
            job_status(
                &list.iter().map(|s| batch(s)).collect::<Vec<_>>(),
                cancelled,
            )
        };
        let s = |list: &[&'static str]| status(list, false);
        assert_eq!(s(&["queued", "queued"]), "queued");
        assert_eq!(s(&["sent", "queued"]), "sending");
        assert_eq!(s(&["sending"]), "sending");
        assert_eq!(s(&["sent", "failed"]), "sent");
        assert_eq!(s(&["finished", "failed"]), "finished");
        assert_eq!(s(&["failed", "failed"]), "failed");
        // Cancelled: once nothing is pending, whatever was sent.
        assert_eq!(status(&["sending", "cancelled"], true), "sending");
        assert_eq!(status(&["sent", "cancelled"], true), "cancelled");
        assert_eq!(status(&["cancelled", "cancelled"], true), "cancelled");
    }

    #[test]
    fn quota_and_timeouts_are_retried_and_refusals_are_final() {
        let q = classify(TokenError::Api(ApiError::from_errcode(
            45009,
            "quota".into(),
        )));
        assert!(matches!(q, Outcome::Retry(_)));
        let t = classify(TokenError::Api(ApiError::Unreachable {
            attempts: 3,
            reason: "timeout".into(),
        }));
        assert!(matches!(t, Outcome::Retry(_)));
        let r = classify(TokenError::Api(ApiError::from_errcode(
            40007,
            "bad media".into(),
        )));
        assert!(matches!(r, Outcome::Failed(m) if m.contains("40007")));
    }

    #[test]
    fn a_listed_group_message_is_a_candidate_only_with_the_jobs_content() {
        let job = |msgtype: &str, body: Value| Job {
            job_id: "j".into(),
            actor: "ops".into(),
            created_at: 0,
            client_msg_id: None,
            target: Target::External {
                sender: "zhangsan".into(),
            },
            msgtype: msgtype.into(),
            body,
            ignore_reprint: false,
            batches: Vec::new(),
            cancelled_at: None,
            cancelled_by: None,
        };
        let text = job("text", json!({"content": "新品上市"}));
        assert!(same_content(
            &text,
            Some(&json!({"content": "新品上市"})),
            &[]
        ));
        assert!(!same_content(
            &text,
            Some(&json!({"content": "other"})),
            &[]
        ));
        assert!(!same_content(&text, None, &[]));
        let image = json!({"msgtype": "image", "image": {"media_id": "IMG"}});
        assert!(!same_content(
            &text,
            Some(&json!({"content": "新品上市"})),
            std::slice::from_ref(&image)
        ));
        let img = job("image", json!({"media_id": "IMG"}));
        assert!(same_content(&img, None, &[image]));
        assert!(same_content(
            &img,
            Some(&json!({"content": ""})),
            &[json!({"msgtype": "image", "image": {"pic_url": "http://p.qpic.cn/x"}})]
        ));
        assert!(!same_content(
            &img,
            None,
            &[json!({"msgtype": "image", "image": {"media_id": "OTHER"}})]
        ));
        assert!(!same_content(&img, None, &[]));
    }

    #[test]
    fn job_ids_keep_batch_clientmsgids_within_wechats_64_bytes() {
        let id = new_job_id();
        assert_eq!(id.len(), 24);
        assert!(batch_client_msg_id(&id, 99_999).len() <= 64);
        assert_ne!(id, new_job_id());
    }

    #[test]
    fn caller_ids_are_checked() {
        assert!(check_caller_id("crm-2026-12-01:campaign.7").is_ok());
        assert!(check_caller_id("").is_err());
        assert!(check_caller_id("a b").is_err());
        assert!(check_caller_id(&"x".repeat(129)).is_err());
    }
}
