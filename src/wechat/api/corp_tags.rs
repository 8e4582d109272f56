//! WeCom corp tags (企业客户标签, "管理企业标签" and "编辑客户企业标签"): the tag library of the
//! corp, in groups, and the tags a member puts on a customer (`mark_tag`). Every call is a POST
//! of `cgi-bin/externalcontact/...`. The ids are WeCom's strings (`et...`) for tags and groups
//! alike; `edit_corp_tag` takes either, `del_corp_tag` names which.

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::Empty;

/// The answer of `get_corp_tag_list`.
#[derive(Debug, Clone, Deserialize)]
pub struct TagGroups {
    #[serde(default)]
    pub tag_group: Vec<TagGroup>,
}

/// One group and its tags (`tag_group[]`; `add_corp_tag` answers one).
#[derive(Debug, Clone, Deserialize)]
pub struct TagGroup {
    pub group_id: String,
    #[serde(default)]
    pub group_name: String,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub order: u32,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub tag: Vec<Tag>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub create_time: i64,
    #[serde(default)]
    pub order: u32,
    #[serde(default)]
    pub deleted: bool,
}

/// The answer of `add_corp_tag`.
#[derive(Debug, Clone, Deserialize)]
pub struct Added {
    pub tag_group: TagGroup,
}

/// The body of `get_corp_tag_list` and `del_corp_tag`: ids of tags and of groups.
#[derive(Serialize)]
struct Ids<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tag_id: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    group_id: &'a [String],
}

/// What `add_corp_tag` is asked for (checked by `crate::domain::wecom` before).
#[derive(Debug, Serialize)]
pub struct NewTags<'a> {
    /// An existing group; or none and `group_name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    pub tag: Vec<NewTag<'a>>,
}

#[derive(Debug, Serialize)]
pub struct NewTag<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
}

#[derive(Serialize)]
struct Edit<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<u32>,
}

#[derive(Serialize)]
struct Mark<'a> {
    userid: &'a str,
    external_userid: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    add_tag: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    remove_tag: &'a [String],
}

/// `externalcontact/get_corp_tag_list`: the groups with their tags; with ids, only those tags
/// (in their groups) and those groups (both empty: every group).
pub async fn list(
    tokens: &TokenAuthority,
    account: &Account,
    tag_ids: &[String],
    group_ids: &[String],
) -> Result<TagGroups, TokenError> {
    let body = Ids {
        tag_id: tag_ids,
        group_id: group_ids,
    };
    tokens
        .post(
            account,
            "externalcontact/get_corp_tag_list",
            "/cgi-bin/externalcontact/get_corp_tag_list",
            &body,
        )
        .await
}

/// `externalcontact/add_corp_tag`: sent once (a timeout is reported, not repeated), since a
/// second attempt after one that landed would be refused for the names it just created.
pub async fn add(
    tokens: &TokenAuthority,
    account: &Account,
    tags: &NewTags<'_>,
) -> Result<Added, TokenError> {
    tokens
        .post_once(
            account,
            "externalcontact/add_corp_tag",
            "/cgi-bin/externalcontact/add_corp_tag",
            tags,
        )
        .await
}

/// `externalcontact/edit_corp_tag`: a tag's or a group's name and order.
pub async fn edit(
    tokens: &TokenAuthority,
    account: &Account,
    id: &str,
    name: Option<&str>,
    order: Option<u32>,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "externalcontact/edit_corp_tag",
            "/cgi-bin/externalcontact/edit_corp_tag",
            &Edit { id, name, order },
        )
        .await
}

/// `externalcontact/del_corp_tag`: tags, and groups with all their tags.
pub async fn delete(
    tokens: &TokenAuthority,
    account: &Account,
    tag_ids: &[String],
    group_ids: &[String],
) -> Result<Empty, TokenError> {
    let body = Ids {
        tag_id: tag_ids,
        group_id: group_ids,
    };
    tokens
        .post(
            account,
            "externalcontact/del_corp_tag",
            "/cgi-bin/externalcontact/del_corp_tag",
            &body,
        )
        .await
}

/// `externalcontact/mark_tag`: adds and removes corp tags on the customer of a member.
pub async fn mark(
    tokens: &TokenAuthority,
    account: &Account,
    userid: &str,
    external_userid: &str,
    add: &[String],
    remove: &[String],
) -> Result<Empty, TokenError> {
    let body = Mark {
        userid,
        external_userid,
        add_tag: add,
        remove_tag: remove,
    };
    tokens
        .post(
            account,
            "externalcontact/mark_tag",
            "/cgi-bin/externalcontact/mark_tag",
            &body,
        )
        .await
}
