//! Identity enrichment and the privacy purge, run by the forwarder on each batch just before
//! delivery (a [`Decorate`] step, after attribution), never on the callback path.
//!
//! - **Enrichment.** An Official Account event with an `open_id` whose user the gateway has not
//!   looked up within `enrichment.user_ttl_seconds` (the user cache: [`USER_CACHE`] documents,
//!   id = openid, with that TTL), or whose cache entry predates a `subscribe` in
//!   the batch (the subscribe scene and QR scene change with each follow), gets its user looked up with `user/info/batchget`,
//!   at most [`BATCHGET_MAX`] users per call as WeChat documents it, so a batch of n users to
//!   look up costs ceil(n / 100) calls. The answer is cached and `union_id` and `profile` are set
//!   on the event. A WeCom event with an `external_user_id` is looked up with
//!   `externalcontact/get`, which gives the name, the members who have the customer
//!   (`follow_user`: their remark, tags, add_way, state, createtime; `Event.follow_user`) and,
//!   where the corp is bound to an open platform, the `unionid`.
//! - **A lookup never holds an event back.** The lookups of one batch get [`DEADLINE`] in all;
//!   a failure (WeChat refusing, busy, away, past the deadline) is logged and counted in
//!   `wgw_enrichment_failures_total`, the events go out with what the cache had (or nothing),
//!   and the account's lookups pause for a while (1 s, doubling to 60 s while failures go on)
//!   so that a WeChat outage does not slow every batch. A later event of the user is enriched.
//! - **Purge on unsubscribe.** WeChat requires an account to delete a user's data when they
//!   unsubscribe. On an `unsubscribe` the gateway deletes its cache entry of the user and the
//!   links feature's click memory ([`links::forget_follower`]), then sets
//!   `Unsubscribe.data_purged` on the event, so the CRM can do the same. The flag is set only
//!   when both deletions succeeded. A follow after that starts from nothing: no cache, a new
//!   lookup. WeCom's `del_external_contact` and `del_follow_user` drop the cache entry of the
//!   external contact as well (their events have no flag to set).
//!
//! Within a batch, a user whose last event is an unsubscribe is not looked up (their earlier
//! events get what the cache had), and nothing is written to the cache for them. A cache entry
//! fetched before the batch's latest follow or departure of the user is out of date: the user
//! is looked up again. A batch that is retried (the CRM was away) is enriched again; the entry
//! its first attempt cached is newer than its events, so a retry costs no call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{links, Services};
use crate::domain::Platform;
use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::store::{kinds, DocKind, DocWrite, Store};
use crate::wechat::account::Account;
use crate::wechat::api::{user, ApiError};
use crate::wechat::tokens::TokenError;

/// The user cache (id: openid, or WeCom external_userid), written with the cache's TTL.
const USER_CACHE: DocKind<CachedUser> = DocKind::new(kinds::USER);
/// WeChat's limit of `user/info/batchget`: 100 users per call.
pub const BATCHGET_MAX: usize = 100;
/// All the lookups of one batch, together.
const DEADLINE: Duration = Duration::from_secs(5);
const PAUSE_MIN: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(60);

/// What the cache keeps of a user: what `profile` and `union_id` are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CachedUser {
    union_id: String,
    subscribe_scene: String,
    qr_scene_str: String,
    tag_ids: Vec<i64>,
    /// Unix seconds; 0 when WeChat gave none (not following).
    subscribed_at: i64,
    name: String,
    /// Unix seconds.
    fetched_at: i64,
    /// WeCom: `follow_user` of externalcontact/get (absent in entries cached before it was kept).
    #[serde(default)]
    follow_user: Vec<user::FollowUser>,
}

impl CachedUser {
    fn profile(&self) -> pb::UserProfile {
        let ts = |seconds: i64| (seconds > 0).then_some(pb::Timestamp { seconds, nanos: 0 });
        pb::UserProfile {
            subscribe_scene: self.subscribe_scene.clone(),
            qr_scene_str: self.qr_scene_str.clone(),
            tag_ids: self.tag_ids.clone(),
            subscribed_at: ts(self.subscribed_at),
            fetched_at: ts(self.fetched_at),
            name: self.name.clone(),
        }
    }

    /// `Event.follow_user`: every member who has the customer, with their tags.
    fn follow_users(&self) -> Vec<pb::FollowUser> {
        self.follow_user.iter().map(follow_user_to_pb).collect()
    }
}

/// One `follow_user` entry as the event carries it.
pub(crate) fn follow_user_to_pb(f: &user::FollowUser) -> pb::FollowUser {
    pb::FollowUser {
        user_id: f.userid.clone(),
        remark: f.remark.clone(),
        description: f.description.clone(),
        created_at: (f.createtime > 0).then_some(pb::Timestamp {
            seconds: f.createtime,
            nanos: 0,
        }),
        tags: f
            .tags
            .iter()
            .map(|t| pb::FollowUserTag {
                tag_id: t.tag_id.clone(),
                tag_name: t.tag_name.clone(),
                group_name: t.group_name.clone(),
                r#type: t.r#type,
            })
            .collect(),
        add_way: f.add_way,
        state: f.state.clone(),
        oper_user_id: f.oper_userid.clone(),
        remark_corp_name: f.remark_corp_name.clone(),
        remark_mobiles: f.remark_mobiles.clone(),
    }
}

pub struct Enricher {
    services: Arc<Services>,
    ttl: Duration,
    /// Account → until when its lookups pause, and the pause that was set.
    paused: Mutex<HashMap<String, (Instant, Duration)>>,
}

/// What the batch holds for one user.
struct UserPlan {
    /// Event indices, in order.
    events: Vec<usize>,
    cached: Option<CachedUser>,
    fresh: Option<CachedUser>,
    last_leaves: bool,
    /// When the latest follow or departure of the batch happened (unix seconds, 0: none): a
    /// cache entry fetched before it is out of date.
    turned_at: i64,
    look_up: bool,
}

fn seconds(event: &pb::Event) -> i64 {
    event.occurred_at.as_ref().map_or(0, |t| t.seconds)
}

#[async_trait]
impl Decorate for Enricher {
    /// Enriches the batch in place and purges the data of users who left (module comment).
    async fn decorate(&self, events: &mut [pb::Event]) {
        let deadline = Instant::now() + DEADLINE;
        let mut by_account: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            by_account.entry(e.account_id.clone()).or_default().push(i);
        }
        for (account_id, indices) in by_account {
            let Some(account) = self.services.accounts.get(&account_id).cloned() else {
                continue;
            };
            self.enrich_account(&account, events, &indices, deadline)
                .await;
        }
    }
}

impl Enricher {
    pub fn new(services: Arc<Services>, ttl: Duration) -> Self {
        Self {
            services,
            ttl,
            paused: Mutex::default(),
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.services.store
    }

    async fn enrich_account(
        &self,
        account: &Account,
        events: &mut [pb::Event],
        indices: &[usize],
        deadline: Instant,
    ) {
        let account_id = account.id.as_str();
        // The user an event is about, in this account's id space.
        let user_of = |e: &pb::Event| -> Option<String> {
            let id = match account.platform {
                Platform::Mp => &e.open_id,
                Platform::Work => &e.external_user_id,
            };
            (!id.is_empty()).then(|| id.clone())
        };
        let mut plans: BTreeMap<String, UserPlan> = BTreeMap::new();
        for &i in indices {
            let Some(user) = user_of(&events[i]) else {
                continue;
            };
            let leaves = leaves(&events[i]);
            let plan = plans.entry(user).or_insert_with(|| UserPlan {
                events: Vec::new(),
                cached: None,
                fresh: None,
                last_leaves: false,
                turned_at: 0,
                look_up: false,
            });
            plan.events.push(i);
            plan.last_leaves = leaves;
            if leaves || matches!(events[i].kind, Some(Kind::Subscribe(_))) {
                plan.turned_at = plan.turned_at.max(seconds(&events[i]));
            }
        }
        if plans.is_empty() {
            return;
        }
        for (user, plan) in plans.iter_mut() {
            plan.cached = match USER_CACHE.read(self.store(), account_id, user).await {
                Ok(Some(stored)) => stored.value.ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(account = account_id, error = %e, "cannot read the user cache");
                    None
                }
            };
            plan.look_up = !plan.last_leaves
                && plan
                    .cached
                    .as_ref()
                    .is_none_or(|c| c.fetched_at < plan.turned_at);
        }

        let wanted: Vec<String> = plans
            .iter()
            .filter(|(_, p)| p.look_up)
            .map(|(u, _)| u.clone())
            .collect();
        if !wanted.is_empty() && !self.is_paused(account_id) {
            let found = match account.platform {
                Platform::Mp => self.batchget(account, &wanted, deadline).await,
                Platform::Work => self.external_contacts(account, &wanted, deadline).await,
            };
            match found {
                Ok(found) => {
                    self.paused.lock().unwrap().remove(account_id);
                    for (user, profile) in found {
                        if let Some(plan) = plans.get_mut(&user) {
                            plan.fresh = Some(profile);
                        }
                    }
                }
                Err((found, e)) => {
                    tracing::warn!(account = account_id, error = %e,
                        "user lookup failed; delivering without it, a later event enriches");
                    metrics::counter!("wgw_enrichment_failures_total", "account" => account_id.to_owned())
                        .increment(1);
                    self.pause(account_id);
                    for (user, profile) in found {
                        if let Some(plan) = plans.get_mut(&user) {
                            plan.fresh = Some(profile);
                        }
                    }
                }
            }
        }

        for (user, plan) in &plans {
            let mut current = plan.fresh.clone().or_else(|| plan.cached.clone());
            let mut purged_any = false;
            for &i in &plan.events {
                let event = &mut events[i];
                if leaves(event) {
                    if event.union_id.is_empty() {
                        if let Some(u) = &current {
                            event.union_id = u.union_id.clone();
                        }
                    }
                    let left_at = seconds(event);
                    let purged = self.purge(account, user).await;
                    if let Some(Kind::Unsubscribe(u)) = &mut event.kind {
                        u.data_purged = purged;
                    }
                    purged_any = true;
                    // After this (a follow again) only what was fetched since is true: a fresh
                    // answer, or the cache entry an earlier attempt of this batch wrote.
                    current = plan
                        .fresh
                        .clone()
                        .or_else(|| plan.cached.clone().filter(|c| c.fetched_at >= left_at));
                    continue;
                }
                if let Some(u) = &current {
                    if event.union_id.is_empty() {
                        event.union_id = u.union_id.clone();
                    }
                    event.profile = Some(u.profile());
                    event.follow_user = u.follow_users();
                }
            }
            let keep = match (&plan.fresh, &current) {
                (Some(fresh), _) => Some(fresh),
                // The purge removed an entry that is still true: put it back.
                (None, Some(current)) if purged_any => Some(current),
                _ => None,
            };
            if let (Some(keep), false) = (keep, plan.last_leaves) {
                if let Err(e) = USER_CACHE
                    .put_lapsing(
                        self.store(),
                        account_id,
                        user,
                        keep,
                        DocWrite::Always,
                        self.ttl,
                    )
                    .await
                {
                    tracing::warn!(account = account_id, error = %e, "cannot write the user cache");
                }
            }
        }
    }

    /// Deletes the user's cache entry and link-click memory; `true` when both deletions went
    /// through (whether or not there was anything).
    async fn purge(&self, account: &Account, user: &str) -> bool {
        let account_id = account.id.as_str();
        let cache = USER_CACHE.delete(self.store(), account_id, user).await;
        let clicks = links::forget_follower(self.store(), account_id, user).await;
        match (cache, clicks) {
            (Ok(_), Ok(_)) => {
                metrics::counter!("wgw_user_data_purged_total", "account" => account_id.to_owned())
                    .increment(1);
                true
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(account = account_id, error = %e,
                    "cannot delete a departed user's data; data_purged stays false");
                false
            }
        }
    }

    fn is_paused(&self, account: &str) -> bool {
        self.paused
            .lock()
            .unwrap()
            .get(account)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn pause(&self, account: &str) {
        let mut paused = self.paused.lock().unwrap();
        let next = match paused.get(account) {
            Some((_, last)) => (*last * 2).min(PAUSE_MAX),
            None => PAUSE_MIN,
        };
        paused.insert(account.to_owned(), (Instant::now() + next, next));
    }

    /// `user/info/batchget` by chunks of [`BATCHGET_MAX`]; on failure, what was found so far.
    ///
    /// WeChat refuses a whole call for one openid it does not know (40003, "invalid openid"),
    /// so such a chunk is split in halves until the culprit stands alone and is skipped: one
    /// bad openid costs about 2·log2(100) calls and does not keep the others unenriched, nor
    /// pause the account.
    async fn batchget(
        &self,
        account: &Account,
        users: &[String],
        deadline: Instant,
    ) -> Result<Vec<(String, CachedUser)>, (Vec<(String, CachedUser)>, String)> {
        let mut found = Vec::new();
        let mut queue: std::collections::VecDeque<&[String]> = users.chunks(BATCHGET_MAX).collect();
        while let Some(chunk) = queue.pop_front() {
            metrics::counter!("wgw_enrichment_lookups_total", "account" => account.id.to_string())
                .increment(1);
            let call = user::batchget(&self.services.tokens, account, chunk);
            let answer = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(TokenError::Api(ApiError::Refused { errcode: 40003, .. }))) => {
                    if chunk.len() > 1 {
                        let (a, b) = chunk.split_at(chunk.len() / 2);
                        queue.push_front(b);
                        queue.push_front(a);
                    } else {
                        tracing::info!(account = %account.id,
                            "WeChat does not know an openid (40003); its events go unenriched");
                        metrics::counter!("wgw_enrichment_failures_total", "account" => account.id.to_string())
                            .increment(1);
                    }
                    continue;
                }
                Ok(Err(e)) => return Err((found, e.to_string())),
                Err(_) => return Err((found, format!("past the {DEADLINE:?} deadline"))),
            };
            let now = unix_now();
            for u in answer.user_info_list {
                let qr_scene_str = if u.qr_scene_str.is_empty() && u.qr_scene != 0 {
                    u.qr_scene.to_string()
                } else {
                    u.qr_scene_str
                };
                found.push((
                    u.openid,
                    CachedUser {
                        union_id: u.unionid,
                        subscribe_scene: u.subscribe_scene,
                        qr_scene_str,
                        tag_ids: u.tagid_list,
                        subscribed_at: u.subscribe_time,
                        name: String::new(),
                        fetched_at: now,
                        follow_user: Vec::new(),
                    },
                ));
            }
        }
        Ok(found)
    }

    /// `externalcontact/get`, one external contact per call (WeCom has no batch form keyed
    /// by external_userid).
    async fn external_contacts(
        &self,
        account: &Account,
        users: &[String],
        deadline: Instant,
    ) -> Result<Vec<(String, CachedUser)>, (Vec<(String, CachedUser)>, String)> {
        let mut found = Vec::new();
        for user in users {
            metrics::counter!("wgw_enrichment_lookups_total", "account" => account.id.to_string())
                .increment(1);
            let call = user::external_contact(&self.services.tokens, account, user);
            let answer = match tokio::time::timeout_at(deadline, call).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err((found, e.to_string())),
                Err(_) => return Err((found, format!("past the {DEADLINE:?} deadline"))),
            };
            found.push((
                user.clone(),
                CachedUser {
                    union_id: answer.external_contact.unionid,
                    name: answer.external_contact.name,
                    follow_user: answer.follow_user,
                    fetched_at: unix_now(),
                    ..CachedUser::default()
                },
            ));
        }
        Ok(found)
    }
}

/// An event after which the gateway must forget the user: an Official Account unsubscribe, or
/// a WeCom customer relation ending.
fn leaves(event: &pb::Event) -> bool {
    match &event.kind {
        Some(Kind::Unsubscribe(_)) => true,
        Some(Kind::ExternalContactChange(c)) => {
            c.change_type == "del_external_contact" || c.change_type == "del_follow_user"
        }
        _ => false,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
