//! The audience lists an audience sync reads: an Official Account's followers (`user/get`, by
//! `next_openid`, then their profiles with [`super::user::batchget`]) and a WeCom corp's
//! customers (`externalcontact/get_follow_user_list`, then
//! `externalcontact/batch/get_by_user` per member, by its cursor).

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

/// Most openids of one `user/get` page, as WeChat documents it (一次拉取调用最多拉取10000个).
pub const FOLLOWERS_PAGE_MAX: usize = 10_000;
/// Most rows of one `batch/get_by_user` page (`limit`, WeCom: at most 100).
pub const CONTACTS_PAGE_MAX: u32 = 100;

/// The answer of `user/get`: `{"total", "count", "data": {"openid": [...]}, "next_openid"}`.
/// The last page still names its last openid in `next_openid`; the call after it answers
/// `count` 0 and no `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct FollowerPage {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub count: u64,
    #[serde(default)]
    pub data: Option<OpenIds>,
    #[serde(default)]
    pub next_openid: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct OpenIds {
    #[serde(default)]
    pub openid: Vec<String>,
}

impl FollowerPage {
    /// The openids of the page (WeChat's examples show empty strings in the list: skipped).
    pub fn open_ids(&self) -> Vec<String> {
        self.data
            .iter()
            .flat_map(|d| d.openid.iter())
            .filter(|id| !id.is_empty())
            .cloned()
            .collect()
    }
}

/// `cgi-bin/user/get`: up to 10,000 followers after `next_openid` (from the start when empty).
pub async fn followers(
    tokens: &TokenAuthority,
    account: &Account,
    next_openid: &str,
) -> Result<FollowerPage, TokenError> {
    let query: Vec<(&'static str, &str)> = if next_openid.is_empty() {
        Vec::new()
    } else {
        vec![("next_openid", next_openid)]
    };
    tokens
        .get(account, "user/get", "/cgi-bin/user/get", &query)
        .await
}

/// The answer of `externalcontact/get_follow_user_list`.
#[derive(Debug, Clone, Deserialize)]
pub struct FollowUserList {
    #[serde(default)]
    pub follow_user: Vec<String>,
}

/// WeCom `cgi-bin/externalcontact/get_follow_user_list`: the members who may have customers
/// (客户联系功能的成员).
pub async fn follow_user_list(
    tokens: &TokenAuthority,
    account: &Account,
) -> Result<FollowUserList, TokenError> {
    tokens
        .get(
            account,
            "externalcontact/get_follow_user_list",
            "/cgi-bin/externalcontact/get_follow_user_list",
            &[],
        )
        .await
}

#[derive(Serialize)]
struct ByUser<'a> {
    userid_list: [&'a str; 1],
    cursor: &'a str,
    limit: u32,
}

/// The answer of `externalcontact/batch/get_by_user`: one row per (customer, member) pair.
#[derive(Debug, Clone, Deserialize)]
pub struct ContactPage {
    #[serde(default)]
    pub external_contact_list: Vec<ContactRow>,
    /// Empty on the last page.
    #[serde(default)]
    pub next_cursor: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContactRow {
    pub external_contact: Contact,
    pub follow_info: FollowInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Contact {
    pub external_userid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: i32,
    #[serde(default)]
    pub unionid: String,
    #[serde(default)]
    pub corp_name: String,
    #[serde(default)]
    pub corp_full_name: String,
    #[serde(default)]
    pub position: String,
    #[serde(default)]
    pub gender: i32,
    #[serde(default)]
    pub avatar: String,
}

/// `follow_info`: the member's side of the pair. Tags come as ids (`tag_id`) only.
#[derive(Debug, Clone, Deserialize)]
pub struct FollowInfo {
    pub userid: String,
    #[serde(default)]
    pub remark: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub createtime: i64,
    #[serde(default)]
    pub tag_id: Vec<String>,
    #[serde(default)]
    pub remark_corp_name: String,
    #[serde(default)]
    pub remark_mobiles: Vec<String>,
    #[serde(default)]
    pub oper_userid: String,
    #[serde(default)]
    pub add_way: i32,
    #[serde(default)]
    pub state: String,
}

/// WeCom `cgi-bin/externalcontact/batch/get_by_user` for one member: up to
/// [`CONTACTS_PAGE_MAX`] of their customers from `cursor` (the start when empty).
pub async fn contacts_of(
    tokens: &TokenAuthority,
    account: &Account,
    userid: &str,
    cursor: &str,
) -> Result<ContactPage, TokenError> {
    let body = ByUser {
        userid_list: [userid],
        cursor,
        limit: CONTACTS_PAGE_MAX,
    };
    tokens
        .post(
            account,
            "externalcontact/batch/get_by_user",
            "/cgi-bin/externalcontact/batch/get_by_user",
            &body,
        )
        .await
}
