//! The runner: one task per process that looks at each account's current sync and, under the
//! sync's lease, reads it on from its cursor: one WeChat call at a time, paced, each page of
//! snapshots recorded before the cursor moves past it (see the module comment of [`super`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::PerAccount;
use crate::config::SyncConfig;
use crate::error::ServiceError;
use crate::pb;
use crate::services::Services;
use crate::store::{DocWrite, LeaseKey, Leases, Store};
use crate::wechat::account::Account;
use crate::wechat::api::{audience, user, ApiError};
use crate::wechat::tokens::TokenError;

use super::model::{unix_now, Cursor, SyncDoc, SyncStatus, CURRENT, CURRENT_ID, SYNCS};
use super::snapshot::Frame;

/// How often the runner looks for work when nobody kicks it (a sync started on another
/// instance, a pause ending, a lease lapsing).
const POLL: Duration = Duration::from_secs(1);
/// WeChat's limit of `user/info/batchget`.
const BATCHGET_MAX: usize = 100;

/// The runner's settings and its wake-up call; one per process, in [`Services`].
pub struct Syncs {
    cfg: SyncConfig,
    pub(super) kick: Notify,
}

impl Syncs {
    pub fn new(cfg: SyncConfig) -> Self {
        Self {
            cfg,
            kick: Notify::new(),
        }
    }
}

/// Runs audience syncs until `shutdown`: each account's current sync, under its lease. Woken
/// by a start, and every [`POLL`].
pub async fn run(svc: Arc<Services>, owner: String, shutdown: CancellationToken) {
    let mut runner = Runner {
        svc: svc.clone(),
        owner,
        last_call: None,
        accounts_backoff: PerAccount::new(svc.syncs.cfg.backoff_min, svc.syncs.cfg.backoff_max),
    };
    loop {
        runner.pass(&shutdown).await;
        tokio::select! {
            _ = svc.syncs.kick.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

struct Runner {
    svc: Arc<Services>,
    /// This instance's name on sync leases.
    owner: String,
    /// When this instance last called WeChat for a sync: the pace.
    last_call: Option<Instant>,
    /// Accounts whose turn failed (their part of the store unreachable, say), skipped until
    /// their backoff is over: a warning at the first failure and a line at recovery, not one
    /// every [`POLL`].
    accounts_backoff: PerAccount,
}

/// The sync as this runner last read or wrote it: its value and its stored bytes, which the
/// next compare-and-swap expects.
struct Held {
    doc: SyncDoc,
    bytes: Vec<u8>,
}

/// How a WeChat failure is taken.
enum Failure {
    /// A quota, a busy or unreachable WeChat, a token or store problem: pause, then resume.
    Pause(String),
    /// WeChat refused this request itself.
    Refused(String),
}

/// WeChat's answers as a sync takes them: quotas (45009 daily, 45011 per minute, WeCom 45033
/// concurrent calls), busy (-1), no answer, a token still rejected after the authority's fresh
/// one, an IP not yet whitelisted, the store or the token lease: all pause the sync, never fail
/// it; any other errcode refused the request.
fn classify(e: TokenError) -> Failure {
    match e {
        TokenError::Api(ApiError::Refused {
            errcode: 45033,
            errmsg,
        }) => Failure::Pause(format!("errcode 45033: {errmsg}")),
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => {
            Failure::Refused(format!("errcode {errcode}: {errmsg}"))
        }
        TokenError::Api(ApiError::BadResponse(m)) => Failure::Refused(m),
        other => Failure::Pause(other.to_string()),
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Runner {
    fn store(&self) -> &dyn Store {
        &*self.svc.store
    }

    fn cfg(&self) -> &SyncConfig {
        &self.svc.syncs.cfg
    }

    async fn pass(&mut self, shutdown: &CancellationToken) {
        let mut accounts: Vec<_> = self.svc.accounts.values().cloned().collect();
        accounts.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        for account in accounts {
            if shutdown.is_cancelled() {
                return;
            }
            let id = account.id.as_str();
            if !self.accounts_backoff.ready(id) {
                continue;
            }
            match self.turn(&account, shutdown).await {
                Ok(()) => {
                    if self.accounts_backoff.succeeded(id) {
                        tracing::info!(account = id, "audience sync turns work again");
                    }
                }
                Err(e) => {
                    let (wait, first) = self.accounts_backoff.failed(id);
                    if first {
                        tracing::warn!(account = id, error = %e, retry_in_ms = wait.as_millis() as u64,
                            "audience sync turn failed; the account's sync waits");
                    }
                }
            }
        }
    }

    /// The account's current sync, if it has work now: run under its lease until it ends,
    /// pauses, or the lease or the process ends.
    async fn turn(
        &mut self,
        account: &Arc<Account>,
        shutdown: &CancellationToken,
    ) -> Result<(), ServiceError> {
        let id = account.id.as_str();
        let Some(Ok(current)) = CURRENT
            .read(self.store(), id, CURRENT_ID)
            .await?
            .map(|s| s.value)
        else {
            return Ok(());
        };
        let Some(stored) = SYNCS.read(self.store(), id, &current.sync_id).await? else {
            return Ok(()); // being started, or its starter died (the next start replaces it)
        };
        let doc = stored.value?;
        if !doc.status.is_active()
            || doc
                .paused_until
                .is_some_and(|until| doc.status == SyncStatus::Paused && until > unix_millis())
        {
            return Ok(());
        }
        let key = LeaseKey::sync(id, &doc.sync_id);
        let ttl = self.cfg().lease;
        if !self.store().try_lease(&key, &self.owner, ttl).await? {
            return Ok(()); // another instance runs it
        }
        let held = shutdown.child_token();
        let renewer = tokio::spawn(renew_lease(
            self.svc.store.clone(),
            key.clone(),
            self.owner.clone(),
            ttl,
            held.clone(),
        ));
        let mut state = Held {
            doc,
            bytes: stored.bytes,
        };
        let result = self.drive(account, &mut state, &held).await;
        renewer.abort();
        if let Err(e) = self.store().release_lease(&key, &self.owner).await {
            tracing::warn!(account = id, error = %e, "cannot release a sync lease");
        }
        result
    }

    /// Steps until the sync ends, pauses, or the lease is lost.
    async fn drive(
        &mut self,
        account: &Account,
        state: &mut Held,
        held: &CancellationToken,
    ) -> Result<(), ServiceError> {
        while !held.is_cancelled() && state.doc.status.is_active() {
            let more = match state.doc.cursor.clone() {
                Cursor::Followers { next_openid, done } => {
                    self.followers_page(account, state, next_openid, done, held)
                        .await?
                }
                Cursor::ExternalContacts { members: None, .. } => {
                    self.members(account, state, held).await?
                }
                Cursor::ExternalContacts {
                    members: Some(members),
                    member,
                    cursor,
                } => {
                    self.contacts_page(account, state, &members, member, cursor, held)
                        .await?
                }
            };
            if !more {
                break;
            }
        }
        Ok(())
    }

    /// One `user/get` page, then its profiles by 100 from where the cursor says. False when
    /// the sync paused, ended, or is no longer this runner's.
    async fn followers_page(
        &mut self,
        account: &Account,
        state: &mut Held,
        next_openid: String,
        done: usize,
        held: &CancellationToken,
    ) -> Result<bool, ServiceError> {
        if !self.pace(held).await {
            return Ok(false);
        }
        let page = match audience::followers(&self.svc.tokens, account, &next_openid).await {
            Ok(page) => page,
            Err(e) => return self.failed_list(account, state, e).await,
        };
        let ids = page.open_ids();
        if ids.is_empty() {
            return self.finish(account, state).await;
        }
        let mut done = done.min(ids.len());
        loop {
            let expected = Cursor::Followers {
                next_openid: next_openid.clone(),
                done,
            };
            let end = (done + BATCHGET_MAX).min(ids.len());
            // The cursor after this batch: on in the page, or the next page once it is done.
            let next = if end < ids.len() {
                Cursor::Followers {
                    next_openid: next_openid.clone(),
                    done: end,
                }
            } else {
                Cursor::Followers {
                    next_openid: page.next_openid.clone(),
                    done: 0,
                }
            };
            let page_done = end == ids.len();
            let last_page = page_done && page.next_openid.is_empty();
            if done < end {
                if !self.pace(held).await {
                    return Ok(false);
                }
                let chunk = &ids[done..end];
                let (users, left, failure) =
                    match user::batchget(&self.svc.tokens, account, chunk).await {
                        Ok(infos) => {
                            let frame = self.frame(account, state);
                            let events: Vec<pb::Event> = infos
                                .user_info_list
                                .iter()
                                .filter_map(|u| frame.follower(u))
                                .collect();
                            let left = infos.user_info_list.len() - events.len();
                            self.record(account, &events).await?;
                            (events.len() as u64, left as u64, None)
                        }
                        Err(e) => match classify(e) {
                            Failure::Pause(reason) => {
                                self.pause(account, state, &expected, reason).await?;
                                return Ok(false);
                            }
                            Failure::Refused(reason) => (0, 0, Some(reason)),
                        },
                    };
                if let Some(reason) = &failure {
                    tracing::warn!(account = %account.id, sync_id = %state.doc.sync_id,
                        reason = %reason, "WeChat refused a batch of profiles; skipped");
                }
                let moved = self
                    .advance(account, state, &expected, |d| {
                        d.users += users;
                        d.left += left;
                        d.cursor = next.clone();
                        if page_done {
                            d.pages += 1;
                        }
                        if let Some(reason) = &failure {
                            d.failures += 1;
                            d.last_error = Some(reason.clone());
                        }
                    })
                    .await?;
                if !moved {
                    return Ok(false);
                }
            } else {
                // A resumed page that shrank: nothing left of it.
                let moved = self
                    .advance(account, state, &expected, |d| {
                        d.cursor = next.clone();
                        d.pages += 1;
                    })
                    .await?;
                if !moved {
                    return Ok(false);
                }
            }
            if last_page {
                return self.finish(account, state).await;
            }
            if page_done {
                return Ok(true);
            }
            if held.is_cancelled() {
                return Ok(false);
            }
            done = end;
        }
    }

    /// WeCom: the members who may have customers, read once.
    async fn members(
        &mut self,
        account: &Account,
        state: &mut Held,
        held: &CancellationToken,
    ) -> Result<bool, ServiceError> {
        if !self.pace(held).await {
            return Ok(false);
        }
        let list = match audience::follow_user_list(&self.svc.tokens, account).await {
            Ok(list) => list.follow_user,
            Err(e) => return self.failed_list(account, state, e).await,
        };
        let expected = state.doc.cursor.clone();
        self.advance(account, state, &expected, |d| {
            d.cursor = Cursor::ExternalContacts {
                members: Some(list.clone()),
                member: 0,
                cursor: String::new(),
            };
        })
        .await
    }

    /// WeCom: one page of one member's customers.
    async fn contacts_page(
        &mut self,
        account: &Account,
        state: &mut Held,
        members: &[String],
        member: usize,
        cursor: String,
        held: &CancellationToken,
    ) -> Result<bool, ServiceError> {
        let Some(userid) = members.get(member) else {
            return self.finish(account, state).await;
        };
        let expected = Cursor::ExternalContacts {
            members: Some(members.to_vec()),
            member,
            cursor: cursor.clone(),
        };
        let next_member = Cursor::ExternalContacts {
            members: Some(members.to_vec()),
            member: member + 1,
            cursor: String::new(),
        };
        if !self.pace(held).await {
            return Ok(false);
        }
        match audience::contacts_of(&self.svc.tokens, account, userid, &cursor).await {
            Ok(page) => {
                let frame = self.frame(account, state);
                let events: Vec<pb::Event> = page
                    .external_contact_list
                    .iter()
                    .map(|row| frame.external_contact(row))
                    .collect();
                self.record(account, &events).await?;
                let next = if page.next_cursor.is_empty() {
                    next_member
                } else {
                    Cursor::ExternalContacts {
                        members: Some(members.to_vec()),
                        member,
                        cursor: page.next_cursor.clone(),
                    }
                };
                let users = events.len() as u64;
                self.advance(account, state, &expected, |d| {
                    d.users += users;
                    d.pages += 1;
                    d.cursor = next.clone();
                })
                .await
            }
            Err(e) => match classify(e) {
                Failure::Pause(reason) => {
                    self.pause(account, state, &expected, reason).await?;
                    Ok(false)
                }
                Failure::Refused(reason) => {
                    tracing::warn!(account = %account.id, sync_id = %state.doc.sync_id,
                        userid = %userid, reason = %reason,
                        "WeCom refused a member's customers; skipped");
                    self.advance(account, state, &expected, |d| {
                        d.failures += 1;
                        d.last_error = Some(format!("{userid}: {reason}"));
                        d.cursor = next_member.clone();
                    })
                    .await
                }
            },
        }
    }

    fn frame<'a>(&self, account: &'a Account, state: &'a Held) -> Frame<'a> {
        Frame {
            account: account.id.as_str(),
            sync_id: &state.doc.sync_id,
            started_at: state.doc.created_at,
            received_at: pb::Timestamp::from(std::time::SystemTime::now()),
        }
    }

    /// One page of snapshots, one store write.
    async fn record(&self, account: &Account, events: &[pb::Event]) -> Result<(), ServiceError> {
        let new = self.store().record_batch(events).await?;
        metrics::counter!("wgw_sync_snapshots_total", "account" => account.id.as_str().to_owned())
            .increment(new as u64);
        Ok(())
    }

    /// The list call itself failed: a pause, or (refused) the end of the sync.
    async fn failed_list(
        &mut self,
        account: &Account,
        state: &mut Held,
        e: TokenError,
    ) -> Result<bool, ServiceError> {
        let expected = state.doc.cursor.clone();
        match classify(e) {
            Failure::Pause(reason) => self.pause(account, state, &expected, reason).await?,
            Failure::Refused(reason) => {
                tracing::warn!(account = %account.id, sync_id = %state.doc.sync_id,
                    reason = %reason, "WeChat refused the audience list; the sync failed");
                let now = unix_now();
                self.advance(account, state, &expected, |d| {
                    d.status = SyncStatus::Failed;
                    d.finished_at = Some(now);
                    d.last_error = Some(reason.clone());
                })
                .await?;
            }
        }
        Ok(false)
    }

    async fn finish(&mut self, account: &Account, state: &mut Held) -> Result<bool, ServiceError> {
        let expected = state.doc.cursor.clone();
        let now = unix_now();
        if self
            .advance(account, state, &expected, |d| {
                d.status = SyncStatus::Finished;
                d.finished_at = Some(now);
            })
            .await?
        {
            tracing::info!(account = %account.id, sync_id = %state.doc.sync_id,
                users = state.doc.users, pages = state.doc.pages, failures = state.doc.failures,
                "audience sync finished");
        }
        Ok(false)
    }

    /// Pauses the sync for its next backoff, with the reason.
    async fn pause(
        &mut self,
        account: &Account,
        state: &mut Held,
        expected: &Cursor,
        reason: String,
    ) -> Result<(), ServiceError> {
        let step = state.doc.backoff_step;
        let wait =
            crate::backoff::exponential(self.cfg().backoff_min, self.cfg().backoff_max, step);
        let until = unix_millis() + wait.as_millis() as u64;
        tracing::info!(account = %account.id, sync_id = %state.doc.sync_id, reason = %reason,
            wait_ms = wait.as_millis() as u64, "audience sync paused");
        metrics::counter!("wgw_sync_pauses_total", "account" => account.id.as_str().to_owned())
            .increment(1);
        self.advance_raw(account, state, expected, |d| {
            d.status = SyncStatus::Paused;
            d.paused_until = Some(until);
            d.pauses += 1;
            d.backoff_step = step.saturating_add(1);
            d.last_error = Some(reason.clone());
        })
        .await?;
        Ok(())
    }

    /// [`Self::advance_raw`] after a call that went through: a paused sync runs again and its
    /// backoff starts over.
    async fn advance(
        &self,
        account: &Account,
        state: &mut Held,
        expected: &Cursor,
        f: impl Fn(&mut SyncDoc),
    ) -> Result<bool, ServiceError> {
        self.advance_raw(account, state, expected, |d| {
            if d.status == SyncStatus::Paused {
                d.status = SyncStatus::Running;
            }
            d.paused_until = None;
            d.backoff_step = 0;
            f(d);
        })
        .await
    }

    /// Compare-and-swap: `f` applied to the sync while its cursor is still `expected` and it is
    /// still active. False (nothing written) when another holder moved it on meanwhile: this
    /// runner stops, the other goes on.
    async fn advance_raw(
        &self,
        account: &Account,
        state: &mut Held,
        expected: &Cursor,
        f: impl Fn(&mut SyncDoc),
    ) -> Result<bool, ServiceError> {
        let id = account.id.as_str();
        loop {
            if state.doc.cursor != *expected || !state.doc.status.is_active() {
                return Ok(false);
            }
            let mut next = state.doc.clone();
            f(&mut next);
            next.updated_at = unix_now();
            let bytes = SYNCS.encode(&next);
            if self
                .store()
                .put_doc(
                    id,
                    SYNCS.name(),
                    &next.sync_id,
                    &bytes,
                    DocWrite::IfEquals(std::mem::take(&mut state.bytes)),
                    None,
                )
                .await?
            {
                state.doc = next;
                state.bytes = bytes;
                return Ok(true);
            }
            let Some(stored) = SYNCS.read(self.store(), id, &state.doc.sync_id).await? else {
                return Ok(false);
            };
            state.doc = stored.value?;
            state.bytes = stored.bytes;
        }
    }

    /// Waits until the next WeChat call is allowed; false when the lease or the process ends
    /// first.
    async fn pace(&mut self, held: &CancellationToken) -> bool {
        let interval = Duration::from_micros(60_000_000 / u64::from(self.cfg().calls_per_minute));
        if let Some(last) = self.last_call {
            tokio::select! {
                _ = tokio::time::sleep_until(last + interval) => {}
                _ = held.cancelled() => return false,
            }
        }
        self.last_call = Some(Instant::now());
        !held.is_cancelled()
    }
}

/// Renews the lease every third of its TTL; cancels `held` when it is lost (another instance
/// took the sync over after this one stalled) or cannot be renewed in time.
async fn renew_lease(
    store: Arc<dyn Store>,
    key: LeaseKey,
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
        match Leases::try_lease(&*store, &key, &owner, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(lease = %key, "lost the lease of an audience sync");
                held.cancel();
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %key, error = %e, "cannot renew an audience sync lease");
                if renewed.elapsed() >= ttl * 2 / 3 {
                    held.cancel();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_busy_and_unreachable_pause_and_other_refusals_are_refusals() {
        for code in [45009, 45011, -1, 40001, 42001] {
            let e = TokenError::Api(ApiError::from_errcode(code, "x".into()));
            assert!(matches!(classify(e), Failure::Pause(_)), "{code}");
        }
        let concurrent = TokenError::Api(ApiError::from_errcode(45033, "x".into()));
        assert!(matches!(classify(concurrent), Failure::Pause(_)));
        let away = TokenError::Api(ApiError::Unreachable {
            attempts: 3,
            reason: "timeout".into(),
        });
        assert!(matches!(classify(away), Failure::Pause(_)));
        let refused = TokenError::Api(ApiError::from_errcode(40003, "invalid openid".into()));
        assert!(matches!(classify(refused), Failure::Refused(m) if m.contains("40003")));
    }
}
