//! Menus, made safe to change: every menu is checked locally and completely
//! ([`crate::domain::menu`]) before anything reaches WeChat, every successful publish or delete
//! is kept as a numbered version, any version can be published again in one call, and a live
//! menu that is not the latest version (edited in WeChat's own console) is reported as drift.
//!
//! - Official Accounts: `menu/create`, `menu/delete`, `get_current_selfmenu_info` (the
//!   menu followers see, console edits included) with `menu/get` (for the conditional menus),
//!   and the conditional menus: `menu/addconditional` → menuid, `menu/delconditional`,
//!   `menu/trymatch`.
//! - WeCom applications: `menu/create?agentid=`, `menu/get?agentid=`,
//!   `menu/delete?agentid=`, with WeCom's own limits ([`MenuFlavor::Work`]). They have no
//!   conditional menus.
//!
//! Changes of one account's menu are serialized: a mutex per account in this process, and the
//! account's menu lease in the store across instances ([`MenuLocks`]). A change runs in a task
//! of its own, so a caller that goes away mid-change does not leave WeChat changed and the
//! version unrecorded. A change WeChat refuses records no version.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tracing::Instrument;

use crate::domain::menu::{validate_conditional_menu, validate_menu, MenuFlavor, Problem};
use crate::domain::{AccountId, Actor, Platform};
use crate::error::ServiceError;
use crate::store::{LeaseKey, MenuVersion};
use crate::wechat::account::Account;
use crate::wechat::api::{menu as api, ApiError};

use super::Services;

/// WeChat's "menu no exist": the account has no menu (made through the API) right now.
const NO_MENU: i64 = 46003;
/// How often a change waiting for another instance's menu lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// The live menu, as [`live_menu`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveMenu {
    /// WeChat's own JSON shape: `{"button": [...]}` (empty when there is no menu), and on
    /// Official Accounts `"conditionalmenu": [{"button", "matchrule", "menuid"}, ...]`.
    pub menu: Value,
    /// The latest version the gateway recorded, if any.
    pub version: Option<u64>,
    /// The live default menu is not the latest version (or there is a live menu and no version).
    pub drift: bool,
}

/// One change of the default menu.
enum Change {
    Publish(Value),
    Delete,
}

/// Serializes the menu changes of each account (see the module comment). One per process.
pub struct MenuLocks {
    /// This process's name on the menu leases it takes.
    owner: String,
    accounts: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for MenuLocks {
    fn default() -> Self {
        Self {
            owner: format!("menu-{}-{:016x}", std::process::id(), rand::random::<u64>()),
            accounts: Mutex::default(),
        }
    }
}

impl MenuLocks {
    fn gate(&self, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(account.to_owned())
            .or_default()
            .clone()
    }
}

/// The verdict of `POST .../menu/validate`: exactly what a publish would refuse.
pub fn validate(
    svc: &Services,
    account_id: &AccountId,
    menu: &Value,
) -> Result<Vec<Problem>, ServiceError> {
    let account = svc.account(account_id)?;
    Ok(problems(account, menu))
}

/// Checks, then publishes the default menu and records it as the next version.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn publish(
    svc: &Arc<Services>,
    account_id: &AccountId,
    actor: &Actor,
    menu: Value,
) -> Result<u64, ServiceError> {
    let account = svc.account(account_id)?.clone();
    refuse(problems(&account, &menu))?;
    detached(svc, account, actor, move |svc, account, actor| async move {
        change(&svc, &account, &actor, Change::Publish(menu), None).await
    })
    .await
}

/// Deletes the menu (on Official Accounts WeChat deletes the conditional menus with it) and
/// records the deletion as the next version.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn delete(
    svc: &Arc<Services>,
    account_id: &AccountId,
    actor: &Actor,
) -> Result<u64, ServiceError> {
    let account = svc.account(account_id)?.clone();
    detached(svc, account, actor, |svc, account, actor| async move {
        change(&svc, &account, &actor, Change::Delete, None).await
    })
    .await
}

/// Publishes version `n` again (or deletes again, if `n` was a deletion) as a new version.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor, restore = n))]
pub async fn restore(
    svc: &Arc<Services>,
    account_id: &AccountId,
    actor: &Actor,
    n: u64,
) -> Result<u64, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let versions = svc.store.menu_versions(account_id.as_str()).await?;
    let Some(old) = versions.into_iter().find(|v| v.version == n) else {
        return Err(ServiceError::NotFound(format!(
            "account {:?} has no menu version {n}",
            account_id.as_str()
        )));
    };
    let what = match old.menu {
        Some(menu) => {
            // Checked again: WeChat's rules may have changed since (they did for matchrules).
            refuse(problems(&account, &menu))?;
            Change::Publish(menu)
        }
        None => Change::Delete,
    };
    detached(svc, account, actor, move |svc, account, actor| async move {
        change(&svc, &account, &actor, what, Some(n)).await
    })
    .await
}

/// Every recorded version, oldest first.
pub async fn versions(
    svc: &Services,
    account_id: &AccountId,
) -> Result<Vec<MenuVersion>, ServiceError> {
    svc.account(account_id)?;
    Ok(svc.store.menu_versions(account_id.as_str()).await?)
}

/// The menu live in WeChat now, compared with the latest version.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn live_menu(svc: &Services, account_id: &AccountId) -> Result<LiveMenu, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let (buttons, conditional) = match account.platform {
        Platform::Mp => {
            let current = api::current_selfmenu_info(&svc.tokens, &account).await?;
            let open = current.is_menu_open == 1;
            let buttons = if open {
                canonical(&current.selfmenu_info.button)
            } else {
                Vec::new()
            };
            let conditional = match api::get(&svc.tokens, &account).await {
                Ok(got) => got.conditionalmenu,
                Err(e) if is_no_menu(&e) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            (buttons, Some(conditional))
        }
        Platform::Work => match api::get(&svc.tokens, &account).await {
            Ok(got) => (canonical(&got.button), None),
            Err(e) if is_no_menu(&e) => (Vec::new(), None),
            Err(e) => return Err(e.into()),
        },
    };
    let latest = svc.store.menu_versions(account_id.as_str()).await?.pop();
    let drift = match &latest {
        Some(v) => {
            let recorded = v
                .menu
                .as_ref()
                .map_or(Vec::new(), |m| canonical(&m["button"]));
            recorded != buttons
        }
        None => !buttons.is_empty(),
    };
    metrics::gauge!("wgw_menu_drift", "account" => account_id.to_string()).set(if drift {
        1.0
    } else {
        0.0
    });
    if drift {
        tracing::warn!(
            latest = latest.as_ref().map(|v| v.version),
            "the live menu is not the latest version: it was changed outside the gateway"
        );
    }
    let mut menu = json!({ "button": buttons });
    if let Some(conditional) = conditional {
        menu["conditionalmenu"] = Value::Array(conditional);
    }
    Ok(LiveMenu {
        menu,
        version: latest.map(|v| v.version),
        drift,
    })
}

/// Checks a conditional menu (`button` and `matchrule`) and adds it: WeChat's menuid.
/// Conditional menus are not versioned: the versions are those of the default menu.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn add_conditional(
    svc: &Arc<Services>,
    account_id: &AccountId,
    actor: &Actor,
    menu: Value,
) -> Result<String, ServiceError> {
    let account = svc.account(account_id)?.clone();
    official_only(&account)?;
    refuse(validate_conditional_menu(&menu))?;
    detached(
        svc,
        account,
        actor,
        move |svc, account, _actor| async move {
            let added = api::add_conditional(&svc.tokens, &account, &menu).await?;
            let menuid = added.menuid.to_string();
            tracing::info!(menuid, "conditional menu added");
            Ok(menuid)
        },
    )
    .await
}

#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor, menuid))]
pub async fn delete_conditional(
    svc: &Arc<Services>,
    account_id: &AccountId,
    actor: &Actor,
    menuid: &str,
) -> Result<(), ServiceError> {
    let account = svc.account(account_id)?.clone();
    official_only(&account)?;
    if menuid.is_empty() || !menuid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServiceError::Validation(format!(
            "menuid: WeChat's menuid is a number, not {menuid:?}"
        )));
    }
    let menuid = menuid.to_owned();
    detached(
        svc,
        account,
        actor,
        move |svc, account, _actor| async move {
            api::del_conditional(&svc.tokens, &account, &menuid).await?;
            tracing::info!("conditional menu deleted");
            Ok(())
        },
    )
    .await
}

/// The menu a user (openid or WeChat id) would see: WeChat's `menu/trymatch` answer,
/// `{"button": [...]}`.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn try_match(
    svc: &Services,
    account_id: &AccountId,
    user_id: &str,
) -> Result<Value, ServiceError> {
    let account = svc.account(account_id)?.clone();
    official_only(&account)?;
    if user_id.is_empty() || user_id.len() > 64 || user_id.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "user_id: an openid or WeChat id of 1 to 64 characters".into(),
        ));
    }
    Ok(api::try_match(&svc.tokens, &account, user_id).await?)
}

/// What a publish of `menu` on `account` would refuse.
fn problems(account: &Account, menu: &Value) -> Vec<Problem> {
    let mut problems = validate_menu(menu, flavor(account));
    if menu.get("matchrule").is_some() {
        problems.push(Problem {
            path: "matchrule".into(),
            message: "the default menu has no matchrule; add a conditional menu through \
                      .../menu/conditional instead"
                .into(),
        });
    }
    problems
}

fn flavor(account: &Account) -> MenuFlavor {
    match account.platform {
        Platform::Mp => MenuFlavor::Mp,
        Platform::Work => MenuFlavor::Work,
    }
}

/// A 400 listing every problem, or nothing.
fn refuse(problems: Vec<Problem>) -> Result<(), ServiceError> {
    if problems.is_empty() {
        return Ok(());
    }
    let list = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ServiceError::Validation(format!(
        "the menu breaks {} rule(s), nothing was sent to WeChat: {list}",
        problems.len()
    )))
}

fn official_only(account: &Account) -> Result<(), ServiceError> {
    match account.platform {
        Platform::Mp => Ok(()),
        Platform::Work => Err(ServiceError::Validation(format!(
            "account {:?} is a WeCom application: conditional menus are an Official Account \
             feature",
            account.id.as_str()
        ))),
    }
}

fn is_no_menu(e: &crate::wechat::tokens::TokenError) -> bool {
    matches!(
        e,
        crate::wechat::tokens::TokenError::Api(ApiError::Refused {
            errcode: NO_MENU,
            ..
        })
    )
}

/// Runs a change of the account's menu in a task of its own, holding the account's locks.
async fn detached<T, F, Fut>(
    svc: &Arc<Services>,
    account: Arc<Account>,
    actor: &Actor,
    f: F,
) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce(Arc<Services>, Arc<Account>, Actor) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, ServiceError>> + Send + 'static,
{
    let svc = svc.clone();
    let actor = actor.clone();
    let task = tokio::spawn(
        async move {
            let id = account.id.as_str().to_owned();
            let locks = &svc.menu_locks;
            let _local = locks.gate(&id).lock_owned().await;
            // Long enough for a change with every retry of its calls (and a token refresh).
            let ttl = svc.tokens.api().policy().worst_case() * 3 + Duration::from_secs(1);
            let deadline = tokio::time::Instant::now() + ttl + LEASE_POLL;
            while !svc
                .store
                .try_lease(&LeaseKey::menu(&id), &locks.owner, ttl)
                .await?
            {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ServiceError::Conflict(format!(
                        "another instance is changing the menu of {id:?}; try again"
                    )));
                }
                tokio::time::sleep(LEASE_POLL).await;
            }
            let result = f(svc.clone(), account, actor).await;
            if let Err(e) = svc
                .store
                .release_lease(&LeaseKey::menu(&id), &locks.owner)
                .await
            {
                // It lapses by itself; until then the other instances wait.
                tracing::warn!(account = %id, error = %e, "cannot release a menu lease");
            }
            result
        }
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(result) => result,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// With the locks held: makes the change in WeChat, then records it as the next version.
async fn change(
    svc: &Services,
    account: &Account,
    actor: &Actor,
    what: Change,
    restored_from: Option<u64>,
) -> Result<u64, ServiceError> {
    let menu = match what {
        Change::Publish(published) => {
            api::create(&svc.tokens, account, &published).await?;
            Some(published)
        }
        Change::Delete => {
            api::delete(&svc.tokens, account).await?;
            None
        }
    };
    let id = account.id.as_str();
    let published = menu.is_some();
    let recorded = record(svc, id, actor, menu, restored_from).await;
    match &recorded {
        Ok(version) => tracing::info!(version, published, restored_from, "menu changed"),
        Err(e) => tracing::error!(error = %e, published,
            "the menu changed in WeChat but its version could not be recorded; it will show \
             as drift"),
    }
    recorded
}

/// Stores the change under the next free number.
async fn record(
    svc: &Services,
    account_id: &str,
    actor: &Actor,
    menu: Option<Value>,
    restored_from: Option<u64>,
) -> Result<u64, ServiceError> {
    let latest = svc
        .store
        .menu_versions(account_id)
        .await?
        .last()
        .map(|v| v.version);
    let mut version = MenuVersion {
        version: latest.unwrap_or(0) + 1,
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        actor: actor.to_string(),
        menu,
        restored_from,
    };
    // Taken only when another instance recorded a change while this one's lease had lapsed.
    while !svc.store.put_menu_version(account_id, &version).await? {
        version.version += 1;
    }
    Ok(version.version)
}

/// The buttons of a menu in one comparable form: WeChat's `menu/get` adds `"sub_button": []` to
/// leaves and `get_current_selfmenu_info` nests sub-buttons in `{"list": [...]}`; both become
/// what `menu/create` takes.
fn canonical(buttons: &Value) -> Vec<Value> {
    let Some(buttons) = buttons.as_array() else {
        return Vec::new();
    };
    buttons
        .iter()
        .map(|button| {
            let Some(fields) = button.as_object() else {
                return button.clone();
            };
            let mut fields = fields.clone();
            let subs = fields.remove("sub_button").map(|subs| match subs {
                Value::Object(mut nested) => canonical(&nested.remove("list").unwrap_or_default()),
                subs => canonical(&subs),
            });
            if let Some(subs) = subs.filter(|s| !s.is_empty()) {
                fields.insert("sub_button".into(), Value::Array(subs));
            }
            Value::Object(fields)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_wechat_answers_compare_equal_to_the_menu_published() {
        let published = json!({"button": [
            {"type": "click", "name": "今日歌曲", "key": "V1001"},
            {"name": "菜单", "sub_button": [{"type": "view", "name": "搜索", "url": "http://x/"}]}
        ]});
        let from_menu_get = json!([
            {"type": "click", "name": "今日歌曲", "key": "V1001", "sub_button": []},
            {"name": "菜单", "sub_button": [
                {"type": "view", "name": "搜索", "url": "http://x/", "sub_button": []}
            ]}
        ]);
        let from_selfmenu_info = json!([
            {"type": "click", "name": "今日歌曲", "key": "V1001"},
            {"name": "菜单", "sub_button": {"list": [{"type": "view", "name": "搜索", "url": "http://x/"}]}}
        ]);
        let want = canonical(&published["button"]);
        assert_eq!(canonical(&from_menu_get), want);
        assert_eq!(canonical(&from_selfmenu_info), want);
        let edited = json!([{"type": "click", "name": "今日歌曲", "key": "V1002"}]);
        assert_ne!(canonical(&edited), want);
        assert_eq!(canonical(&Value::Null), Vec::<Value>::new());
    }

    #[test]
    fn refusals_list_every_problem_with_its_path() {
        let e = refuse(vec![
            Problem {
                path: "button[0].name".into(),
                message: "too long".into(),
            },
            Problem {
                path: "button[1].url".into(),
                message: "not http".into(),
            },
        ])
        .unwrap_err();
        let message = e.to_string();
        assert!(message.contains("button[0].name: too long"), "{message}");
        assert!(message.contains("button[1].url: not http"), "{message}");
        assert!(refuse(Vec::new()).is_ok());
    }
}
