//! User tags of an Official Account (用户标签管理): creating, listing, renaming and deleting
//! tags, tagging or untagging users by openid (at most 50 a call), and one user's tags.

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::Empty;

/// The answer of `tags/create`.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub tag: Tag,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tag {
    pub id: u64,
}

#[derive(Serialize)]
struct Create<'a> {
    tag: NewTag<'a>,
}

#[derive(Serialize)]
struct NewTag<'a> {
    name: &'a str,
}

/// The body of `tags/members/batchtagging` and `batchuntagging`.
#[derive(Serialize)]
struct Members<'a> {
    openid_list: &'a [&'a String],
    tagid: u64,
}

/// `cgi-bin/tags/create`: a new tag named `name` (45157: the name is taken).
pub async fn create(
    tokens: &TokenAuthority,
    account: &Account,
    name: &str,
) -> Result<Created, TokenError> {
    let body = Create {
        tag: NewTag { name },
    };
    tokens
        .post(account, "tags/create", "/cgi-bin/tags/create", &body)
        .await
}

/// `cgi-bin/tags/members/batchtagging`: puts at most 50 users in the tag.
pub async fn tag_users(
    tokens: &TokenAuthority,
    account: &Account,
    tag_id: u64,
    open_ids: &[&String],
) -> Result<Empty, TokenError> {
    let body = Members {
        openid_list: open_ids,
        tagid: tag_id,
    };
    tokens
        .post(
            account,
            "tags/members/batchtagging",
            "/cgi-bin/tags/members/batchtagging",
            &body,
        )
        .await
}

/// `cgi-bin/tags/members/batchuntagging`: takes at most 50 users out of the tag.
pub async fn untag_users(
    tokens: &TokenAuthority,
    account: &Account,
    tag_id: u64,
    open_ids: &[&String],
) -> Result<Empty, TokenError> {
    let body = Members {
        openid_list: open_ids,
        tagid: tag_id,
    };
    tokens
        .post(
            account,
            "tags/members/batchuntagging",
            "/cgi-bin/tags/members/batchuntagging",
            &body,
        )
        .await
}

/// One tag as `tags/get` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct TagInfo {
    pub id: u64,
    pub name: String,
    /// Followers carrying the tag.
    #[serde(default)]
    pub count: u64,
}

/// The answer of `tags/get`: every tag of the account, WeChat's reserved ones included.
#[derive(Debug, Clone, Deserialize)]
pub struct TagList {
    #[serde(default)]
    pub tags: Vec<TagInfo>,
}

/// The answer of `tags/getidlist`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserTags {
    #[serde(default)]
    pub tagid_list: Vec<u64>,
}

#[derive(Serialize)]
struct Edit<'a> {
    tag: EditTag<'a>,
}

#[derive(Serialize)]
struct EditTag<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct OpenId<'a> {
    openid: &'a str,
}

/// `cgi-bin/tags/get`: every tag with its follower count.
pub async fn list(tokens: &TokenAuthority, account: &Account) -> Result<TagList, TokenError> {
    tokens
        .get(account, "tags/get", "/cgi-bin/tags/get", &[])
        .await
}

/// `cgi-bin/tags/update`: renames a tag (45058: a reserved tag, 45157: the name is taken,
/// 45158: too long, 45159: no such tag).
pub async fn update(
    tokens: &TokenAuthority,
    account: &Account,
    tag_id: u64,
    name: &str,
) -> Result<Empty, TokenError> {
    let body = Edit {
        tag: EditTag {
            id: tag_id,
            name: Some(name),
        },
    };
    tokens
        .post(account, "tags/update", "/cgi-bin/tags/update", &body)
        .await
}

/// `cgi-bin/tags/delete`: deletes a tag (45058: a reserved tag, 45057: more than 100,000
/// followers carry it, 45159: no such tag).
pub async fn delete(
    tokens: &TokenAuthority,
    account: &Account,
    tag_id: u64,
) -> Result<Empty, TokenError> {
    let body = Edit {
        tag: EditTag {
            id: tag_id,
            name: None,
        },
    };
    tokens
        .post(account, "tags/delete", "/cgi-bin/tags/delete", &body)
        .await
}

/// `cgi-bin/tags/getidlist`: the tag ids of one follower (40003: not an openid of the
/// account).
pub async fn user_tags(
    tokens: &TokenAuthority,
    account: &Account,
    open_id: &str,
) -> Result<UserTags, TokenError> {
    tokens
        .post(
            account,
            "tags/getidlist",
            "/cgi-bin/tags/getidlist",
            &OpenId { openid: open_id },
        )
        .await
}
