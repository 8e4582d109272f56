//! The runner: one task per process that walks every active template job of every account
//! and, under the job's lease, sends to its recipients one call each, paced
//! (`template_sends.sends_per_second`), a window of recipients at a time: the window is
//! written before its first call and cleared with its outcomes, so that after a crash the
//! recipients whose send may have reached WeChat are known (see the module documentation).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::PerAccount;
use crate::config::TemplateSendConfig;
use crate::domain::template::{recipient_client_msg_id, TemplateKind};
use crate::error::ServiceError;
use crate::services::Services;
use crate::store::{DocWrite, Store};
use crate::wechat::account::Account;
use crate::wechat::api::{template, ApiError};
use crate::wechat::tokens::TokenError;

use super::model::{
    unix_now, Job, MsgIndex, Page, PageStatus, Pause, RecipientStatus, Window, ACTIVE, MSG_IDS,
};
use super::persist::{
    load_job, load_page, release_lease, renew_lease, save_page, take_lease, update_job,
};

const POLL: Duration = Duration::from_secs(1);
/// WeChat de-duplicates `template/send` on openid and client_msg_id for 10 minutes; an
/// attempt in doubt is repeated only while well inside that.
pub(super) const DEDUP_WINDOW: u64 = 540;
/// Recipients per window: template messages (a repeat in doubt is de-duplicated by WeChat);
/// notices go one at a time (a send in doubt is never repeated, so the window is one).
const TEMPLATE_WINDOW: usize = 50;
/// Sends between two looks at the job for a cancel, inside a window.
const CANCEL_CHECK: usize = 10;

/// The runner's settings and its wake-up call; one per process, in [`Services`].
pub struct Templates {
    cfg: TemplateSendConfig,
    pub(super) kick: Notify,
}

impl Templates {
    pub fn new(cfg: TemplateSendConfig) -> Self {
        Self {
            cfg,
            kick: Notify::new(),
        }
    }
}

/// Runs template jobs until `shutdown`.
pub async fn run(svc: Arc<Services>, owner: String, shutdown: CancellationToken) {
    let mut runner = Runner {
        svc: svc.clone(),
        owner,
        last_call: None,
        failures: HashMap::new(),
        accounts_backoff: PerAccount::new(
            svc.templates.cfg.backoff_min,
            svc.templates.cfg.backoff_max,
        ),
    };
    loop {
        runner.pass(&shutdown).await;
        tokio::select! {
            _ = svc.templates.kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

struct Runner {
    svc: Arc<Services>,
    owner: String,
    last_call: Option<Instant>,
    /// Job → consecutive failures and when to try again.
    failures: HashMap<String, (u32, Instant)>,
    /// Accounts whose part of the store failed, skipped until their backoff is over (one
    /// unreachable Redis Cluster slot must not hold up the other accounts' jobs, nor log a
    /// warning every second).
    accounts_backoff: PerAccount,
}

enum Turn {
    Done,
    Later,
    Stopped,
}

/// What one send came to.
enum Outcome {
    Sent(Option<i64>),
    /// Refused for this follower.
    Failed(i64, String),
    /// A quota answer: nothing was sent; the job pauses.
    Quota(String),
    /// Not known to be sent (a timeout, WeChat busy, a token problem).
    Retry(String),
}

/// Why a window stopped early.
enum Stop {
    Stopped,
    Quota(String),
    Retry(String),
}

impl Runner {
    fn store(&self) -> &dyn Store {
        &*self.svc.store
    }

    fn cfg(&self) -> &TemplateSendConfig {
        &self.svc.templates.cfg
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
                        tracing::info!(account = %id, "template jobs can be listed again");
                    }
                    a
                }
                Err(e) => {
                    let (wait, first) = self.accounts_backoff.failed(&id);
                    if first {
                        tracing::warn!(account = %id, error = %e, retry_in_ms = wait.as_millis() as u64,
                            "cannot list template jobs; the account's jobs wait");
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

    async fn turn(&mut self, account: &Arc<Account>, job_id: &str, shutdown: &CancellationToken) {
        let id = account.id.as_str();
        let ttl = self.cfg().lease;
        match take_lease(self.store(), id, job_id, &self.owner, ttl).await {
            Ok(true) => {}
            Ok(false) => return,
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
            Ok(Turn::Later | Turn::Stopped) => {}
            Err(e) => {
                tracing::warn!(account = id, job_id, error = %e, "template job turn failed");
                self.back_off(job_id);
            }
        }
    }

    /// Backs the job off; the wait, for a pause to show.
    fn back_off(&mut self, job_id: &str) -> Duration {
        let (min, max) = (self.cfg().backoff_min, self.cfg().backoff_max);
        let entry = self
            .failures
            .entry(job_id.to_owned())
            .or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        let wait = crate::backoff::exponential(min, max, entry.0 - 1);
        entry.1 = Instant::now() + wait;
        wait
    }

    async fn drive(
        &mut self,
        account: &Arc<Account>,
        job_id: &str,
        held: &CancellationToken,
    ) -> Result<Turn, ServiceError> {
        let id = account.id.as_str();
        let Some((first, _)) = load_job(self.store(), id, job_id).await? else {
            return Ok(Turn::Later);
        };
        for i in 0..first.pages.len() {
            let Some((job, _)) = load_job(self.store(), id, job_id).await? else {
                return Ok(Turn::Later);
            };
            if !matches!(
                job.pages[i].status,
                PageStatus::Queued | PageStatus::Sending
            ) {
                continue;
            }
            if let Some(turn) = self.run_page(account, &job, i, held).await? {
                return Ok(turn);
            }
        }
        update_job(self.store(), id, job_id, |j| {
            j.paused = None;
            j.finished_at.get_or_insert_with(unix_now);
        })
        .await?;
        tracing::info!(account = id, job_id, "template job finished");
        Ok(Turn::Done)
    }

    /// Sends the pending recipients of page `i`; `Some` when the turn ends here.
    async fn run_page(
        &mut self,
        account: &Account,
        job: &Job,
        i: usize,
        held: &CancellationToken,
    ) -> Result<Option<Turn>, ServiceError> {
        let id = account.id.as_str();
        let job_id = job.job_id.as_str();
        let mut page = load_page(self.store(), id, job_id, i).await?;
        if let Some(w) = page.window {
            // An attempt died with this window open: its pending recipients may have been sent.
            settle_window(job, &mut page, w);
            save_page(self.store(), id, job_id, i, &page).await?;
        }
        loop {
            let Some(from) = page
                .recipients
                .iter()
                .position(|r| r.status == RecipientStatus::Pending)
            else {
                self.save_counts(id, job_id, i, &page, PageStatus::Done)
                    .await?;
                return Ok(None);
            };
            // Marked sending only through a compare-and-swap that sees no cancel: either the
            // cancel lands first and this window is never sent, or the page is sending and
            // the runner settles it (a cancel only touches queued pages).
            let now_job = update_job(self.store(), id, job_id, |j| {
                if j.cancelled_at.is_none() && j.pages[i].status == PageStatus::Queued {
                    j.pages[i].status = PageStatus::Sending;
                }
            })
            .await?;
            if now_job.cancelled_at.is_some() {
                if now_job.pages[i].status == PageStatus::Cancelled {
                    return Ok(None);
                }
                for r in &mut page.recipients {
                    if r.status == RecipientStatus::Pending {
                        r.status = RecipientStatus::Cancelled;
                    }
                }
                save_page(self.store(), id, job_id, i, &page).await?;
                self.save_counts(id, job_id, i, &page, PageStatus::Done)
                    .await?;
                return Ok(None);
            }
            let size = match job.kind {
                TemplateKind::Template => TEMPLATE_WINDOW,
                TemplateKind::Subscribe => 1,
            };
            let window = Window {
                from,
                to: (from + size).min(page.recipients.len()),
                at: unix_now(),
            };
            page.window = Some(window);
            save_page(self.store(), id, job_id, i, &page).await?;
            let mut stop = None;
            let mut sent = Vec::new();
            for k in window.from..window.to {
                if page.recipients[k].status != RecipientStatus::Pending {
                    continue;
                }
                // A cancel (on any instance) is seen within a few sends.
                if k > window.from && (k - window.from).is_multiple_of(CANCEL_CHECK) {
                    match load_job(self.store(), id, job_id).await {
                        Ok(Some((j, _))) if j.cancelled_at.is_some() => break,
                        _ => {}
                    }
                }
                if !self.pace(held).await {
                    stop = Some(Stop::Stopped);
                    break;
                }
                let open_id = page.recipients[k].open_id.clone();
                let outcome = tokio::select! {
                    o = self.send_one(account, job, &open_id) => o,
                    _ = held.cancelled() => { stop = Some(Stop::Stopped); break; }
                };
                let r = &mut page.recipients[k];
                r.attempts += 1;
                let label = match outcome {
                    Outcome::Sent(msgid) => {
                        r.status = RecipientStatus::Sent;
                        r.msgid = msgid;
                        r.errcode = None;
                        r.error = None;
                        if let Some(m) = msgid {
                            sent.push((m, k));
                        }
                        "sent"
                    }
                    Outcome::Failed(code, msg) => {
                        r.status = RecipientStatus::Failed;
                        r.errcode = Some(code);
                        r.error = Some(msg);
                        "failed"
                    }
                    Outcome::Quota(msg) => {
                        // Not acted on: not an attempt.
                        r.attempts -= 1;
                        stop = Some(Stop::Quota(msg));
                        "quota"
                    }
                    Outcome::Retry(msg) if job.kind == TemplateKind::Subscribe => {
                        r.status = RecipientStatus::Unknown;
                        r.error = Some(format!(
                            "the send's outcome is unknown ({msg}); not repeated: bizsend has \
                             no de-duplication key"
                        ));
                        stop = Some(Stop::Retry(msg));
                        "unknown"
                    }
                    Outcome::Retry(msg) => {
                        r.error = Some(msg.clone());
                        stop = Some(Stop::Retry(msg));
                        "retry"
                    }
                };
                metrics::counter!("wgw_template_sends_total",
                    "account" => id.to_owned(), "outcome" => label)
                .increment(1);
                if stop.is_some() {
                    break;
                }
            }
            // The msgid index first, so that a TEMPLATESENDJOBFINISH finds its recipient.
            let store = self.store();
            let index = sent.iter().map(|&(msgid, k)| {
                let value = MsgIndex {
                    job_id: job_id.to_owned(),
                    page: i,
                    index: k,
                };
                let key = msgid.to_string();
                async move { MSG_IDS.put(store, id, &key, &value, DocWrite::Always).await }
            });
            for written in futures::future::join_all(index).await {
                written?;
            }
            // Recipients still pending in the window are in doubt only after a template send
            // that may have landed (kept for a repeat with the same client_msg_id) or when the
            // turn was cut short in a call.
            page.window = match &stop {
                None | Some(Stop::Quota(_)) => None,
                Some(Stop::Retry(_)) if job.kind == TemplateKind::Subscribe => None,
                Some(_) => Some(window),
            };
            save_page(self.store(), id, job_id, i, &page).await?;
            self.save_counts(id, job_id, i, &page, PageStatus::Sending)
                .await?;
            match stop {
                None => {}
                Some(Stop::Stopped) => return Ok(Some(Turn::Stopped)),
                Some(Stop::Quota(reason)) => {
                    let wait = self.back_off(job_id);
                    let until = unix_now() + wait.as_secs().max(1);
                    tracing::warn!(account = id, job_id, reason = %reason,
                        wait_ms = wait.as_millis() as u64, "template job paused by a quota");
                    update_job(self.store(), id, job_id, |j| {
                        j.paused = Some(Pause {
                            until,
                            reason: reason.clone(),
                        })
                    })
                    .await?;
                    return Ok(Some(Turn::Later));
                }
                Some(Stop::Retry(reason)) => {
                    tracing::info!(account = id, job_id, reason = %reason,
                        "a template send is not known to be sent; trying again later");
                    self.back_off(job_id);
                    return Ok(Some(Turn::Later));
                }
            }
        }
    }

    /// The page's counts (and status, unless it has pending recipients) into the job; clears
    /// a pause once sends go through again.
    async fn save_counts(
        &mut self,
        id: &str,
        job_id: &str,
        i: usize,
        page: &Page,
        status: PageStatus,
    ) -> Result<(), ServiceError> {
        let counts = page.counts();
        let progressed = counts.sent + counts.failed > 0;
        update_job(self.store(), id, job_id, |j| {
            let p = &mut j.pages[i];
            p.counts = counts;
            p.status = status;
            if progressed && j.paused.is_some() && status == PageStatus::Sending {
                j.paused = None;
            }
        })
        .await?;
        Ok(())
    }

    async fn pace(&mut self, held: &CancellationToken) -> bool {
        let interval = Duration::from_micros(1_000_000 / u64::from(self.cfg().sends_per_second));
        if let Some(last) = self.last_call {
            tokio::select! {
                _ = tokio::time::sleep_until(last + interval) => {}
                _ = held.cancelled() => return false,
            }
        }
        self.last_call = Some(Instant::now());
        !held.is_cancelled()
    }

    async fn send_one(&self, account: &Account, job: &Job, open_id: &str) -> Outcome {
        let tokens = &self.svc.tokens;
        let sent = match job.kind {
            TemplateKind::Template => {
                let cmid = recipient_client_msg_id(job.dedup_key(), open_id);
                template::send(tokens, account, open_id, &cmid, &job.message).await
            }
            TemplateKind::Subscribe => {
                template::bizsend(tokens, account, open_id, &job.message).await
            }
        };
        match sent {
            Ok(s) => Outcome::Sent(s.msgid),
            Err(e) => classify(e),
        }
    }
}

/// A window found open: its pending recipients may have been sent. A template message within
/// WeChat's de-duplication window is sent again with the same client_msg_id (WeChat sends it
/// at most once); otherwise (a notice, or too late) it is `unknown` and not repeated.
fn settle_window(job: &Job, page: &mut Page, w: Window) {
    let repeatable =
        job.kind == TemplateKind::Template && unix_now() < w.at.saturating_add(DEDUP_WINDOW);
    if !repeatable {
        let to = w.to.min(page.recipients.len());
        for r in &mut page.recipients[w.from.min(to)..to] {
            if r.status == RecipientStatus::Pending {
                r.status = RecipientStatus::Unknown;
                r.error = Some(
                    "an attempt was interrupted and its outcome is unknown; not repeated (no \
                     de-duplication left)"
                        .into(),
                );
            }
        }
    }
    page.window = None;
}

/// A quota (45009, 45011) pauses the job; a refusal is final for that follower; anything
/// else (timeout, busy, token, IP whitelist, store) is tried again later.
fn classify(e: TokenError) -> Outcome {
    match e {
        TokenError::Api(ApiError::QuotaExceeded { errcode, errmsg }) => {
            Outcome::Quota(format!("errcode {errcode}: {errmsg}"))
        }
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => Outcome::Failed(errcode, errmsg),
        TokenError::Api(ApiError::BadResponse(m)) => Outcome::Failed(0, m),
        other => Outcome::Retry(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_pause_refusals_fail_and_timeouts_retry() {
        let q = classify(TokenError::Api(ApiError::from_errcode(45009, "q".into())));
        assert!(matches!(q, Outcome::Quota(_)));
        let f = classify(TokenError::Api(ApiError::from_errcode(43004, "x".into())));
        assert!(matches!(f, Outcome::Failed(43004, _)));
        let t = classify(TokenError::Api(ApiError::Unreachable {
            attempts: 3,
            reason: "timeout".into(),
        }));
        assert!(matches!(t, Outcome::Retry(_)));
    }
}
