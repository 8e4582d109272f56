//! Keyword auto-replies and campaign welcomes: the rules and the default welcome of
//! each account, kept as store documents ([`RULES`] and [`WELCOME`]) and
//! managed by the admin API and gRPC; an in-memory snapshot per account that the callback path
//! reads without touching the store; and what the callback path does with them.
//!
//! The snapshot is rebuilt after every change made through this instance and every
//! [`REFRESH_EVERY`] from the store, so that instances sharing a Redis store converge on the
//! same rules within that period. Building it compiles the regular expressions once; a stored
//! rule that does not decode or compile is skipped and logged, never fatal.
//!
//! On the callback path ([`decide`]), a text message or a menu CLICK is matched against the
//! snapshot's rules (no I/O); a subscribe through a QR code looks up its scene's welcome (one
//! store read, on subscribe events only: scenes are many, a snapshot of them would not stay
//! small), else takes the account default from the snapshot. A WeCom customer added through a
//! contact-me code gets the welcome of its `State` through `externalcontact/send_welcome_msg`,
//! sent by a task spawned after the event is durable ([`send_welcome_soon`]): WeCom honours a
//! `WelcomeCode` only within 20 seconds of its event, and only once.
//! This decides what answers (a [`Reply`]); how the answer travels, plain or encrypted, is
//! `crate::wechat::envelope`'s business.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backoff::PerAccount;
use crate::domain::autoreply::{check_rule_id, Reply, Rule, RuleSet};
use crate::domain::{AccountId, Actor};
use crate::error::ServiceError;
use crate::pb;
use crate::pb::event::Kind;
use crate::store::{kinds, DocKind, DocWrite, Store, StoreError};
use crate::wechat::api::welcome;

use super::Services;

/// The rules (one document per rule, by id).
const RULES: DocKind<StoredRule> = DocKind::new(kinds::REPLY_RULE);
/// The account's default welcome (one document, [`DEFAULT_WELCOME`]).
const WELCOME: DocKind<StoredWelcome> = DocKind::new(kinds::REPLY_WELCOME);
const DEFAULT_WELCOME: &str = "default";
/// How often every instance re-reads the rules from the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Most rules of one account: they are all read at every refresh and scanned on every message.
pub const MAX_RULES: usize = 500;
/// WeCom accepts a `WelcomeCode` for 20 seconds after its event ("发送新客户欢迎语": "企业仅可在
/// 收到相关事件后20秒内调用，且只可调用一次").
const WELCOME_CODE_VALIDITY: Duration = Duration::from_secs(20);
/// Compare-and-swap attempts before a concurrent writer wins with a 409.
const CAS_ATTEMPTS: usize = 5;

/// A rule as stored and as the admin API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ReplyRule)]
pub struct StoredRule {
    #[serde(flatten)]
    pub rule: Rule,
    /// Unix ms; orders rules of equal priority (the first created wins).
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// The admin token name or gRPC caller of the last change.
    pub actor: String,
}

/// The account's default welcome as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWelcome {
    pub reply: Reply,
    pub updated_at_ms: u64,
    pub actor: String,
}

/// What the callback path reads for one account.
pub struct Snapshot {
    rules: RuleSet,
    welcome: Option<Reply>,
}

struct Installed {
    /// The reload that built it: a slower, older reload never replaces a newer snapshot.
    generation: u64,
    snapshot: Arc<Snapshot>,
}

/// Every account's snapshot; one per process (in [`Services`]).
#[derive(Default)]
pub struct Replies {
    accounts: RwLock<HashMap<String, Installed>>,
    generation: AtomicU64,
}

impl Replies {
    fn snapshot(&self, account: &str) -> Option<Arc<Snapshot>> {
        let map = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        map.get(account).map(|i| i.snapshot.clone())
    }

    /// Rebuilds the account's snapshot from the store.
    pub async fn reload(&self, store: &dyn Store, account: &str) -> Result<(), StoreError> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rules: Vec<StoredRule> = Vec::new();
        for stored in RULES.list(store, account).await? {
            match stored.value {
                Ok(r) => rules.push(r),
                Err(e) => {
                    tracing::warn!(account, rule = %stored.id, error = %e, "auto-reply rule skipped: it does not decode");
                }
            }
        }
        rules.sort_by(|a, b| (a.created_at_ms, &a.rule.id).cmp(&(b.created_at_ms, &b.rule.id)));
        let welcome = match WELCOME.read(store, account, DEFAULT_WELCOME).await? {
            Some(stored) => match stored.value {
                Ok(w) if w.reply.problems("welcome").is_empty() => Some(w.reply),
                Ok(_) => {
                    tracing::warn!(account, "default welcome skipped: it is not a valid reply");
                    None
                }
                Err(e) => {
                    tracing::warn!(account, error = %e, "default welcome skipped: it does not decode");
                    None
                }
            },
            None => None,
        };
        let snapshot = Arc::new(Snapshot {
            rules: RuleSet::new(rules.into_iter().map(|r| r.rule).collect()),
            welcome,
        });
        let mut map = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        match map.get(account) {
            Some(installed) if installed.generation > generation => {}
            _ => {
                map.insert(
                    account.to_owned(),
                    Installed {
                        generation,
                        snapshot,
                    },
                );
            }
        }
        Ok(())
    }

    /// Reloads every account; a store failure keeps the previous snapshot (and is logged).
    pub async fn refresh_all(&self, store: &dyn Store, accounts: &[String]) {
        for account in accounts {
            if let Err(e) = self.reload(store, account).await {
                tracing::warn!(account = %account, error = %e, "auto-reply rules not refreshed; keeping the previous ones");
            }
        }
    }
}

/// The refresher: every [`REFRESH_EVERY`], until shutdown. An account whose part of the store
/// fails keeps its snapshot and is skipped for a while (backing off up to 5 minutes), so that it
/// does not hold up the others' refresh on every pass (issue 17).
pub async fn refresh_periodically(svc: Arc<Services>, shutdown: CancellationToken) {
    let accounts: Vec<String> = svc.accounts.keys().cloned().collect();
    let backoff = PerAccount::new(REFRESH_EVERY, Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
        for account in accounts.iter().filter(|a| backoff.ready(a)) {
            match svc.replies.reload(&*svc.store, account).await {
                Ok(()) => {
                    if backoff.succeeded(account) {
                        tracing::info!(account = %account, "auto-reply rules refreshed again");
                    }
                }
                Err(e) => {
                    let (wait, first) = backoff.failed(account);
                    if first {
                        tracing::warn!(account = %account, error = %e, retry_in_s = wait.as_secs(),
                            "auto-reply rules not refreshed; keeping the previous ones");
                    }
                }
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn validated(rule: &Rule) -> Result<(), ServiceError> {
    let problems = rule.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Validation(format!(
            "rule {:?}: {}",
            rule.id,
            problems.join("; ")
        )))
    }
}

/// Applies a change to this instance's snapshot at once (the others follow within
/// [`REFRESH_EVERY`]). The change is stored already: a failed reload is only logged.
async fn after_change(svc: &Services, account: &str) {
    if let Err(e) = svc.replies.reload(&*svc.store, account).await {
        tracing::warn!(account, error = %e, "auto-reply rules changed but not reloaded yet");
    }
}

/// Every rule of the account, in evaluation order (priority, highest first; then oldest first).
pub async fn list_rules(
    svc: &Services,
    account: &AccountId,
) -> Result<Vec<StoredRule>, ServiceError> {
    svc.account(account)?;
    let mut rules = Vec::new();
    for stored in RULES.list(&*svc.store, account.as_str()).await? {
        match stored.value {
            Ok(r) => rules.push(r),
            // Shown to no one, used by no one: the refresh skips it too.
            Err(e) => {
                tracing::warn!(account = %account, rule = %stored.id, error = %e, "unreadable rule not listed")
            }
        }
    }
    rules.sort_by(|a, b| {
        (
            std::cmp::Reverse(a.rule.priority),
            a.created_at_ms,
            &a.rule.id,
        )
            .cmp(&(
                std::cmp::Reverse(b.rule.priority),
                b.created_at_ms,
                &b.rule.id,
            ))
    });
    Ok(rules)
}

async fn check_room(svc: &Services, account: &str) -> Result<(), ServiceError> {
    if RULES.list(&*svc.store, account).await?.len() >= MAX_RULES {
        return Err(ServiceError::Validation(format!(
            "an account has at most {MAX_RULES} reply rules; delete one first"
        )));
    }
    Ok(())
}

/// Creates a rule; an empty id gets a generated one. 409 when the id is taken.
#[tracing::instrument(skip_all, fields(account = %account, actor = %actor))]
pub async fn create_rule(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    mut rule: Rule,
) -> Result<StoredRule, ServiceError> {
    svc.account(account)?;
    if rule.id.is_empty() {
        rule.id = format!("r{:012x}", rand::random::<u64>() >> 16);
    }
    validated(&rule)?;
    check_room(svc, account.as_str()).await?;
    let now = now_ms();
    let stored = StoredRule {
        rule,
        created_at_ms: now,
        updated_at_ms: now,
        actor: actor.to_string(),
    };
    let written = RULES
        .put(
            &*svc.store,
            account.as_str(),
            &stored.rule.id,
            &stored,
            DocWrite::IfAbsent,
        )
        .await?;
    if !written {
        return Err(ServiceError::Conflict(format!(
            "a reply rule with id {:?} exists; PUT it to replace it",
            stored.rule.id
        )));
    }
    tracing::info!(rule = %stored.rule.id, "reply rule created");
    after_change(svc, account.as_str()).await;
    Ok(stored)
}

/// Creates or replaces the rule `rule.id`, keeping its creation time (and so its place among
/// rules of equal priority). Answers the rule and whether it was created.
#[tracing::instrument(skip_all, fields(account = %account, actor = %actor))]
pub async fn put_rule(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    rule: Rule,
) -> Result<(StoredRule, bool), ServiceError> {
    svc.account(account)?;
    validated(&rule)?;
    for _ in 0..CAS_ATTEMPTS {
        let now = now_ms();
        let current = RULES.read(&*svc.store, account.as_str(), &rule.id).await?;
        let (created_at_ms, write) = match &current {
            Some(current) => {
                // An unreadable record is replaced: that is how an operator repairs it.
                let created = current.value.as_ref().map_or(now, |r| r.created_at_ms);
                (created, DocWrite::IfEquals(current.bytes.clone()))
            }
            None => {
                check_room(svc, account.as_str()).await?;
                (now, DocWrite::IfAbsent)
            }
        };
        let stored = StoredRule {
            rule: rule.clone(),
            created_at_ms,
            updated_at_ms: now,
            actor: actor.to_string(),
        };
        if RULES
            .put(&*svc.store, account.as_str(), &rule.id, &stored, write)
            .await?
        {
            tracing::info!(rule = %rule.id, created = current.is_none(), "reply rule stored");
            after_change(svc, account.as_str()).await;
            return Ok((stored, current.is_none()));
        }
    }
    Err(ServiceError::Conflict(format!(
        "reply rule {:?} kept changing under this request; try again",
        rule.id
    )))
}

#[tracing::instrument(skip_all, fields(account = %account, actor = %actor))]
pub async fn delete_rule(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    id: &str,
) -> Result<(), ServiceError> {
    svc.account(account)?;
    check_rule_id(id).map_err(ServiceError::Validation)?;
    if !RULES.delete(&*svc.store, account.as_str(), id).await? {
        return Err(ServiceError::NotFound(format!(
            "no reply rule {:?}",
            crate::domain::Untrusted(id)
        )));
    }
    tracing::info!(rule = id, "reply rule deleted");
    after_change(svc, account.as_str()).await;
    Ok(())
}

/// The account's default welcome, if set.
pub async fn welcome(
    svc: &Services,
    account: &AccountId,
) -> Result<Option<StoredWelcome>, ServiceError> {
    svc.account(account)?;
    Ok(WELCOME
        .get(&*svc.store, account.as_str(), DEFAULT_WELCOME)
        .await?)
}

#[tracing::instrument(skip_all, fields(account = %account, actor = %actor))]
pub async fn put_welcome(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
    reply: Reply,
) -> Result<StoredWelcome, ServiceError> {
    svc.account(account)?;
    let problems = reply.problems("welcome");
    if !problems.is_empty() {
        return Err(ServiceError::Validation(problems.join("; ")));
    }
    let stored = StoredWelcome {
        reply,
        updated_at_ms: now_ms(),
        actor: actor.to_string(),
    };
    WELCOME
        .put(
            &*svc.store,
            account.as_str(),
            DEFAULT_WELCOME,
            &stored,
            DocWrite::Always,
        )
        .await?;
    tracing::info!("default welcome stored");
    after_change(svc, account.as_str()).await;
    Ok(stored)
}

#[tracing::instrument(skip_all, fields(account = %account, actor = %actor))]
pub async fn delete_welcome(
    svc: &Services,
    account: &AccountId,
    actor: &Actor,
) -> Result<(), ServiceError> {
    svc.account(account)?;
    if !WELCOME
        .delete(&*svc.store, account.as_str(), DEFAULT_WELCOME)
        .await?
    {
        return Err(ServiceError::NotFound("no default welcome is set".into()));
    }
    tracing::info!("default welcome deleted");
    after_change(svc, account.as_str()).await;
    Ok(())
}

// ---- The callback path ----------------------------------------------------------------------

/// What answers a callback, once [`decide`] chose.
pub enum Answer {
    /// Sent back in the callback's answer.
    Passive(Reply),
    /// A WeCom contact-me welcome, sent through `send_welcome_msg` once the event is durable.
    WelcomeMsg { welcome_code: String, reply: Reply },
}

/// Chooses the answer of one callback and records its origin in `event.reply_rule_id` (a rule
/// id, `welcome:<scene>` or `welcome:default`). Reads no store but on (WeCom contact) subscribe
/// events through a code, to find the code's welcome; a failed read falls back to the default.
pub async fn decide(svc: &Services, event: &mut pb::Event) -> Option<Answer> {
    let snapshot = svc.replies.snapshot(&event.account_id);
    let (origin, answer) = match &event.kind {
        Some(Kind::Text(_) | Kind::MenuClick(_)) => {
            let rule = snapshot.as_ref()?.rules.evaluate(event)?;
            (rule.id.clone(), Answer::Passive(rule.reply.clone()))
        }
        Some(Kind::Subscribe(s)) => {
            let (origin, reply) =
                choose_welcome(svc, &event.account_id, &s.scene, snapshot).await?;
            (origin, Answer::Passive(reply))
        }
        Some(Kind::ExternalContactChange(c))
            if !c.welcome_code.is_empty()
                && matches!(
                    c.change_type.as_str(),
                    "add_external_contact" | "add_half_external_contact"
                ) =>
        {
            let (origin, reply) =
                choose_welcome(svc, &event.account_id, &c.state, snapshot).await?;
            (
                origin,
                Answer::WelcomeMsg {
                    welcome_code: c.welcome_code.clone(),
                    reply,
                },
            )
        }
        _ => return None,
    };
    metrics::counter!("wgw_auto_replies_total", "account" => event.account_id.clone(),
        "origin" => if origin.starts_with("welcome:") { "welcome" } else { "rule" })
    .increment(1);
    event.reply_rule_id = origin;
    Some(answer)
}

/// The welcome of `scene` if the gateway created that code with one, else the default.
async fn choose_welcome(
    svc: &Services,
    account: &str,
    scene: &str,
    snapshot: Option<Arc<Snapshot>>,
) -> Option<(String, Reply)> {
    if !scene.is_empty() {
        match svc.store.scene(account, scene).await {
            Ok(Some(record)) => {
                if let Some(reply) = record.welcome.filter(|r| r.problems("welcome").is_empty()) {
                    return Some((format!("welcome:{scene}"), reply));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(account, scene, error = %e, "scene welcome unavailable; using the default");
            }
        }
    }
    let reply = snapshot?.welcome.clone()?;
    Some(("welcome:default".to_owned(), reply))
}

/// Sends a contact-me welcome off the callback path, within what is left of the code's 20
/// seconds since `received`. A failure is logged and counted
/// (`wgw_welcome_messages_total{outcome}`), never retried: the code is single-use, and WeCom
/// answers 41051 once the customer has been greeted by someone else.
pub fn send_welcome_soon(
    svc: Arc<Services>,
    account: String,
    welcome_code: String,
    reply: Reply,
    received: Instant,
) {
    tokio::spawn(async move {
        let outcome = send_welcome(&svc, &account, &welcome_code, &reply, received).await;
        metrics::counter!("wgw_welcome_messages_total", "account" => account, "outcome" => outcome)
            .increment(1);
    });
}

async fn send_welcome(
    svc: &Services,
    account_id: &str,
    welcome_code: &str,
    reply: &Reply,
    received: Instant,
) -> &'static str {
    let Some(account) = svc.accounts.get(account_id) else {
        return "failed";
    };
    let Some(left) = WELCOME_CODE_VALIDITY.checked_sub(received.elapsed()) else {
        tracing::warn!(
            account = account_id,
            "welcome code expired before it could be used"
        );
        return "expired";
    };
    let call = welcome::send_welcome_msg(&svc.tokens, account, welcome_code, reply);
    match tokio::time::timeout(left, call).await {
        Ok(Ok(_)) => {
            tracing::info!(account = account_id, "contact-me welcome sent");
            "sent"
        }
        Ok(Err(e)) => {
            tracing::warn!(account = account_id, error = %e, "contact-me welcome not sent");
            "failed"
        }
        Err(_) => {
            tracing::warn!(
                account = account_id,
                "contact-me welcome not sent within the code's 20 s"
            );
            "expired"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rules_keep_the_admin_shape_flat() {
        let stored = StoredRule {
            rule: serde_json::from_value(serde_json::json!({
                "id": "r1", "match": {"kind": "exact", "value": "hi"},
                "reply": {"image": {"media_id": "M"}}
            }))
            .unwrap(),
            created_at_ms: 1,
            updated_at_ms: 2,
            actor: "ops".into(),
        };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["id"], "r1");
        assert_eq!(json["match"]["kind"], "exact");
        assert_eq!(json["enabled"], true);
        let back: StoredRule = serde_json::from_value(json).unwrap();
        assert_eq!(back, stored);
    }
}
