//! Custom menus (自定义菜单). Official Accounts: the default menu (`menu/create`,
//! `menu/delete`, `get_current_selfmenu_info`: the menu followers see, console edits
//! included), and the conditional menus (`menu/get`, `menu/addconditional`,
//! `menu/delconditional`, `menu/trymatch`). A WeCom application has the default menu only, and
//! names itself with `?agentid=` on `menu/create`, `menu/get` and `menu/delete`.
//!
//! Menus travel in WeChat's own JSON shape (`{"button": [...]}`), checked before by
//! [`crate::domain::menu`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Platform;
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::{Attempts, Empty};

/// The answer of `get_current_selfmenu_info`.
#[derive(Debug, Clone, Deserialize)]
pub struct CurrentSelfMenu {
    /// 1 when a menu is shown.
    #[serde(default)]
    pub is_menu_open: i64,
    #[serde(default)]
    pub selfmenu_info: Buttons,
}

/// A menu's buttons, as WeChat shows them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Buttons {
    #[serde(default)]
    pub button: Value,
}

/// The answer of `menu/get`: a WeCom application's `button`, or an Official Account's
/// `conditionalmenu` (its default menu, under `menu`, is read through
/// `get_current_selfmenu_info` instead).
#[derive(Debug, Clone, Deserialize)]
pub struct Menus {
    #[serde(default)]
    pub button: Value,
    #[serde(default)]
    pub conditionalmenu: Vec<Value>,
}

/// The answer of `menu/addconditional`.
#[derive(Debug, Clone, Deserialize)]
pub struct Added {
    pub menuid: MenuId,
}

/// WeChat's menuid, a number that some answers quote as a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MenuId {
    Text(String),
    Number(serde_json::Number),
}

impl std::fmt::Display for MenuId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

#[derive(Serialize)]
struct MenuRef<'a> {
    menuid: &'a str,
}

#[derive(Serialize)]
struct User<'a> {
    user_id: &'a str,
}

/// Calls `path` with the WeCom application's `agentid` where the account has one, in
/// `Attempts::Retried`: the menu APIs are safe to repeat.
async fn call<T: serde::de::DeserializeOwned>(
    tokens: &TokenAuthority,
    account: &Account,
    api: &'static str,
    path: &'static str,
    body: Option<&Value>,
) -> Result<T, TokenError> {
    let agent = account.agent_id.to_string();
    let extra: &[(&'static str, &str)] = match account.platform {
        Platform::Mp => &[],
        Platform::Work => &[("agentid", &agent)],
    };
    tokens
        .call(account, api, path, extra, body, Attempts::Retried)
        .await
}

/// `cgi-bin/menu/create`: publishes `menu` as the default menu.
pub async fn create(
    tokens: &TokenAuthority,
    account: &Account,
    menu: &Value,
) -> Result<Empty, TokenError> {
    call(
        tokens,
        account,
        "menu/create",
        "/cgi-bin/menu/create",
        Some(menu),
    )
    .await
}

/// `cgi-bin/menu/delete`: removes the default menu (and, on an Official Account, every
/// conditional menu with it).
pub async fn delete(tokens: &TokenAuthority, account: &Account) -> Result<Empty, TokenError> {
    call(tokens, account, "menu/delete", "/cgi-bin/menu/delete", None).await
}

/// `cgi-bin/menu/get` (46003: there is no menu).
pub async fn get(tokens: &TokenAuthority, account: &Account) -> Result<Menus, TokenError> {
    call(tokens, account, "menu/get", "/cgi-bin/menu/get", None).await
}

/// `cgi-bin/get_current_selfmenu_info`: the default menu followers see, console edits included.
pub async fn current_selfmenu_info(
    tokens: &TokenAuthority,
    account: &Account,
) -> Result<CurrentSelfMenu, TokenError> {
    tokens
        .get(
            account,
            "get_current_selfmenu_info",
            "/cgi-bin/get_current_selfmenu_info",
            &[],
        )
        .await
}

/// `cgi-bin/menu/addconditional`: adds a conditional menu (`button` and `matchrule`).
pub async fn add_conditional(
    tokens: &TokenAuthority,
    account: &Account,
    menu: &Value,
) -> Result<Added, TokenError> {
    tokens
        .post(
            account,
            "menu/addconditional",
            "/cgi-bin/menu/addconditional",
            menu,
        )
        .await
}

/// `cgi-bin/menu/delconditional`.
pub async fn del_conditional(
    tokens: &TokenAuthority,
    account: &Account,
    menuid: &str,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "menu/delconditional",
            "/cgi-bin/menu/delconditional",
            &MenuRef { menuid },
        )
        .await
}

/// `cgi-bin/menu/trymatch`: the menu a user (openid or WeChat id) would see, in WeChat's shape
/// `{"button": [...]}` (without the answer's errcode and errmsg).
pub async fn try_match(
    tokens: &TokenAuthority,
    account: &Account,
    user_id: &str,
) -> Result<Value, TokenError> {
    let mut answer: Value = tokens
        .post(
            account,
            "menu/trymatch",
            "/cgi-bin/menu/trymatch",
            &User { user_id },
        )
        .await?;
    if let Some(fields) = answer.as_object_mut() {
        fields.remove("errcode");
        fields.remove("errmsg");
    }
    Ok(answer)
}
