//! The runner: one task per process that walks every active job of every account and, under
//! the job's lease, sends its batches one at a time, paced, persisting each attempt before
//! the call and its outcome after. A turn ends with the result checks of
//! [`super::reconcile`], which also settles a WeCom batch whose answer was lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::PerAccount;
use crate::config::BroadcastConfig;
use crate::domain::group_message::media_ids;
use crate::error::ServiceError;
use crate::services::Services;
use crate::store::{DocWrite, Store};
use crate::wechat::account::Account;
use crate::wechat::api::{groupmsg, mass, ApiError, Typed};
use crate::wechat::tokens::TokenError;

use super::lease::{release_lease, renew_lease, take_lease};
use super::model::{unix_now, BatchStatus, Job, MsgIndex, Target, ACTIVE, MSG_IDS, RECIPIENTS};
use super::persist::{batch_key, load_job, update_job};
use super::reconcile::Reconciled;

/// How often the runner looks for work when nobody kicks it (a job created on another
/// instance, a result check coming due).
const POLL: Duration = Duration::from_secs(1);

/// The runner's settings and its wake-up call; one per process, in [`Services`].
pub struct Broadcasts {
    cfg: BroadcastConfig,
    pub(super) kick: Notify,
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

/// Runs broadcast jobs until `shutdown`: every active job of every account, one at a time,
/// each under its lease. Woken by a new job, and every [`POLL`].
pub async fn run(svc: Arc<Services>, owner: String, shutdown: CancellationToken) {
    let mut runner = Runner {
        svc: svc.clone(),
        owner,
        last_call: None,
        failures: HashMap::new(),
        accounts_backoff: PerAccount::new(
            svc.broadcasts.cfg.backoff_min,
            svc.broadcasts.cfg.backoff_max,
        ),
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

pub(super) struct Runner {
    pub(super) svc: Arc<Services>,
    /// This instance's name on job leases.
    owner: String,
    /// When this instance last called a mass-send API: the pace.
    last_call: Option<Instant>,
    /// Job → consecutive failures and when to try again.
    failures: HashMap<String, (u32, Instant)>,
    /// Accounts whose part of the store failed, skipped until their backoff is over: one
    /// account's unreachable Redis Cluster slot must not hold up the others' jobs (issue 17).
    accounts_backoff: PerAccount,
}

/// How far one turn on a job got.
pub(super) enum Turn {
    /// Nothing left to do: the job is finished or failed.
    Done,
    /// Backing off, or waiting for a job being created.
    Later,
    /// Every batch is settled; the next result check is due then.
    WaitUntil(Instant),
    /// The lease was lost or shutdown began.
    Stopped,
}

pub(super) enum Outcome {
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
    pub(super) fn store(&self) -> &dyn Store {
        &*self.svc.store
    }

    pub(super) fn cfg(&self) -> &BroadcastConfig {
        &self.svc.broadcasts.cfg
    }

    async fn pass(&mut self, shutdown: &CancellationToken) {
        let mut accounts: Vec<_> = self.svc.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for account in accounts {
            let id = account.id.as_str().to_owned();
            if !self.accounts_backoff.ready(&id) {
                continue;
            }
            let active = match ACTIVE.list(self.store(), &id).await {
                Ok(a) => {
                    if self.accounts_backoff.succeeded(&id) {
                        tracing::info!(account = %id, "broadcast jobs can be listed again");
                    }
                    a
                }
                Err(e) => {
                    let (wait, first) = self.accounts_backoff.failed(&id);
                    if first {
                        tracing::warn!(account = %id, error = %e, retry_in_ms = wait.as_millis() as u64,
                            "cannot list broadcast jobs; the account's jobs wait");
                    }
                    continue;
                }
            };
            for job_id in active.into_iter().map(|a| a.id) {
                if shutdown.is_cancelled() {
                    return;
                }
                if !self.accounts_backoff.ready(&id) {
                    break;
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
                let (wait, first) = self.accounts_backoff.failed(id);
                if first {
                    tracing::warn!(account = id, job_id, error = %e, retry_in_ms = wait.as_millis() as u64,
                        "cannot take a job lease; the account's jobs wait");
                }
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
                if let Err(e) = ACTIVE.delete(self.store(), id, job_id).await {
                    tracing::warn!(account = id, job_id, error = %e, "cannot retire a job");
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
    ) -> Result<Turn, ServiceError> {
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
    ) -> Result<bool, ServiceError> {
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
    ) -> Result<bool, ServiceError> {
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
                let index = MsgIndex {
                    job_id: job_id.to_owned(),
                    batch: i,
                };
                MSG_IDS
                    .put(self.store(), id, &msg_id, &index, DocWrite::Always)
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

    /// The recipients of batch `i`; none for a tag or everyone.
    pub(super) async fn recipients(
        &self,
        id: &str,
        job: &Job,
        i: usize,
    ) -> Result<Vec<String>, Outcome> {
        if job.batches[i].size == 0 {
            return Ok(Vec::new());
        }
        match RECIPIENTS
            .read(self.store(), id, &batch_key(&job.job_id, i))
            .await
        {
            Ok(Some(stored)) => stored.value.map_err(|e| Outcome::Failed(e.to_string())),
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
            Target::External {
                sender,
                chat_type,
                tag_filter,
                allow_select,
            } => {
                // One attempt: a repeat would be a second task for the sender; a lost answer
                // is reconciled instead (see `reconcile`). A temporary media id that lapsed is
                // uploaded again first; one WeCom refused (40007) is uploaded again and the
                // call made once more: a refusal created nothing, so nothing is repeated.
                let content = self
                    .live_group_media(account, &job.group_content(), false)
                    .await;
                let call = |content| groupmsg::GroupMessageCall {
                    chat_type: chat_type.as_str(),
                    recipients: &recipients,
                    sender,
                    tag_filter: tag_filter.as_ref(),
                    allow_select: *allow_select,
                    content,
                };
                let mut sent = groupmsg::add_msg_template(tokens, account, call(&content)).await;
                if let Err(TokenError::Api(ApiError::Refused {
                    errcode: INVALID_MEDIA_ID,
                    ..
                })) = &sent
                {
                    let fresh = self.live_group_media(account, &content, true).await;
                    if fresh != content {
                        sent = groupmsg::add_msg_template(tokens, account, call(&fresh)).await;
                    }
                }
                match sent {
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
                // A temporary media id the gateway uploaded lives 3 days: a job resumed after
                // that sends the same bytes uploaded again (`crate::services::media`).
                let mut body = self.live_media(account, &job.body, false).await;
                let mut sent = self
                    .mass_send(account, job, batch, target, &recipients, &body)
                    .await;
                if let Err(TokenError::Api(ApiError::Refused {
                    errcode: INVALID_MEDIA_ID,
                    ..
                })) = &sent
                {
                    // WeChat forgot it before the gateway expected: upload again, send once more.
                    let fresh = self.live_media(account, &body, true).await;
                    if fresh != body {
                        body = fresh;
                        sent = self
                            .mass_send(account, job, batch, target, &recipients, &body)
                            .await;
                    }
                }
                match sent {
                    Ok(sent) => Outcome::Sent {
                        msg_id: sent.msg_id.to_string(),
                        msg_data_id: sent.msg_data_id,
                        already_sent: sent.already_sent(),
                        fail_list: Vec::new(),
                    },
                    Err(e) => classify(e),
                }
            }
        }
    }

    /// One mass send of a batch with this message body.
    async fn mass_send(
        &self,
        account: &Account,
        job: &Job,
        batch: &super::model::Batch,
        target: &Target,
        recipients: &[String],
        body: &serde_json::Value,
    ) -> Result<mass::Sent, TokenError> {
        let tokens = &self.svc.tokens;
        let send = mass::Send {
            message: Typed {
                msgtype: &job.msgtype,
                body,
            },
            ignore_reprint: job.ignore_reprint,
            clientmsgid: &batch.client_msg_id,
        };
        match target {
            Target::Tag { tag_id } => mass::send_all(tokens, account, Some(*tag_id), &send).await,
            Target::All => mass::send_all(tokens, account, None, &send).await,
            _ => mass::send_to(tokens, account, recipients, &send).await,
        }
    }

    /// The message body with its `media_id` replaced by a live one, when it names a temporary
    /// upload of the gateway whose id lapsed (or, with `forgotten`, that WeChat refused); the
    /// body as it is otherwise, or when the upload cannot be repeated (logged).
    async fn live_media(
        &self,
        account: &Account,
        body: &serde_json::Value,
        forgotten: bool,
    ) -> serde_json::Value {
        let Some(media_id) = body.get("media_id").and_then(|m| m.as_str()) else {
            return body.clone();
        };
        let mut fresh = body.clone();
        fresh["media_id"] = self
            .live_media_id(account, media_id, forgotten)
            .await
            .into();
        fresh
    }

    /// A WeCom group message with every media id of its attachments (`media_id`, a
    /// miniprogram's `pic_media_id`) live, as [`Self::live_media`] does for one.
    async fn live_group_media(
        &self,
        account: &Account,
        content: &serde_json::Value,
        forgotten: bool,
    ) -> serde_json::Value {
        let mut fresh = content.clone();
        for (slot, media_id) in media_ids(content) {
            fresh["attachments"][slot.index][slot.msgtype][slot.field] = self
                .live_media_id(account, &media_id, forgotten)
                .await
                .into();
        }
        fresh
    }

    /// A live id for `media_id` (see [`crate::services::media::refresh`]); `media_id` itself
    /// when it is not a temporary upload of the gateway, or cannot be uploaded again (logged).
    async fn live_media_id(&self, account: &Account, media_id: &str, forgotten: bool) -> String {
        match crate::services::media::refresh(&self.svc, account, media_id, forgotten).await {
            Ok(Some(live)) => live,
            Ok(None) => media_id.to_owned(),
            Err(e) => {
                tracing::warn!(account = %account.id, error = %e,
                    "cannot upload a lapsed temporary media again; sending the job's media id");
                media_id.to_owned()
            }
        }
    }
}

/// WeChat's "invalid media_id": a temporary media id it no longer knows (3 days passed).
const INVALID_MEDIA_ID: i64 = 40007;

/// WeChat's refusals as the runner treats them: a quota (45009 daily, 45011 per minute), a
/// busy or unreachable WeChat, a token, IP-whitelist or store problem is retried later (with
/// the same clientmsgid, so a send whose answer was lost is not repeated); any other errcode
/// refused the batch itself.
pub(super) fn classify(e: TokenError) -> Outcome {
    match e {
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => {
            Outcome::Failed(format!("errcode {errcode}: {errmsg}"))
        }
        TokenError::Api(ApiError::BadResponse(m)) => Outcome::Failed(m),
        other => Outcome::Retry(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
