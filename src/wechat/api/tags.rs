//! User tags of an Official Account (用户标签管理): creating a tag, and tagging or untagging
//! users by openid, at most 50 a call.

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
