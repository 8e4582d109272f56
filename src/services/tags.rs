//! Segments as tags: the CRM turns a large segment into a user tag, then broadcasts
//! to the tag with one `mass/sendall`. `tags/create` makes the tag; `tags/members/batchtagging`
//! and `batchuntagging` take at most 50 openids a call (WeChat answers 40032 beyond), so a list
//! is sent in batches of 50. Tagging is idempotent on WeChat's side, so a request that failed
//! half-way can simply be made again.
//!
//! The rest of WeChat's tag management is here too (issue 14): `tags/get` (every tag with its
//! follower count), `tags/update` (rename), `tags/delete` and `tags/getidlist` (one follower's
//! tags). Tags 0, 1 and 2 are WeChat's own (2 is 星标组, "starred"): WeChat refuses to rename or
//! delete them (45058), so the gateway refuses first, without a call.

use crate::domain::broadcast::is_open_id;
use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::wechat::account::Account;
use crate::wechat::api::{tags, ApiError};
use crate::wechat::tokens::TokenError;

use super::Services;

/// Most openids of one `batchtagging` / `batchuntagging` call.
pub const TAG_BATCH: usize = 50;
/// WeChat: a tag name is at most 30 characters.
const MAX_TAG_NAME: usize = 30;
/// 45157: a tag with this name exists.
const NAME_TAKEN: i64 = 45157;
/// WeChat's reserved tags: ids 0, 1 and 2 (45058 when changed).
pub const MAX_RESERVED_TAG: u64 = 2;
/// 45058: a reserved tag cannot be changed.
const RESERVED: i64 = 45058;
/// 45057: a tag with more than 100,000 followers cannot be deleted.
const TOO_MANY_FOLLOWERS: i64 = 45057;
/// 45159: no such tag.
const NO_SUCH_TAG: i64 = 45159;
/// 40003 (not an openid) and 49003 (an openid of another account) from `tags/getidlist`.
const NOT_A_FOLLOWER: [i64; 2] = [40003, 49003];

/// One tag of an Official Account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub id: u64,
    pub name: String,
    /// Followers carrying it, as WeChat counts them.
    pub count: u64,
    /// One of WeChat's own tags (0, 1, 2): it cannot be renamed or deleted.
    pub reserved: bool,
}

/// The outcome of tagging or untagging a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// Distinct openids sent.
    pub users: usize,
    /// WeChat calls made (batches of at most 50).
    pub batches: usize,
}

fn mp_only(account: &Account) -> Result<(), ServiceError> {
    match account.platform {
        Platform::Mp => Ok(()),
        Platform::Work => Err(ServiceError::Validation(format!(
            "account {:?} is a WeCom application: user tags are an Official Account feature",
            account.id.as_str()
        ))),
    }
}

/// `tags/create`: answers the new tag's id.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn create_tag(
    svc: &Services,
    account_id: &AccountId,
    name: &str,
) -> Result<u64, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    check_name(name)?;
    match tags::create(&svc.tokens, &account, name).await {
        Ok(c) => Ok(c.tag.id),
        Err(TokenError::Api(ApiError::Refused {
            errcode: NAME_TAKEN,
            errmsg,
        })) => Err(ServiceError::Conflict(format!(
            "a tag named {name:?} exists already (WeChat errcode {NAME_TAKEN}: {errmsg})"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Adds (`untag: false`) or removes the users of a tag, 50 openids a call.
#[tracing::instrument(skip_all, fields(account = %account_id, tag_id, untag))]
pub async fn tag_users(
    svc: &Services,
    account_id: &AccountId,
    tag_id: u64,
    open_ids: &[String],
    untag: bool,
) -> Result<Tagged, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    if open_ids.is_empty() {
        return Err(ServiceError::Validation(
            "open_ids: at least one openid is needed".into(),
        ));
    }
    if let Some((i, id)) = open_ids.iter().enumerate().find(|(_, id)| !is_open_id(id)) {
        return Err(ServiceError::Validation(format!(
            "open_ids[{i}] {:?} is not an openid (1 to 64 characters of letters, digits, '-' \
             and '_')",
            crate::domain::Untrusted(id)
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<&String> = open_ids.iter().filter(|id| seen.insert(*id)).collect();
    let mut batches = 0;
    for chunk in unique.chunks(TAG_BATCH) {
        if untag {
            tags::untag_users(&svc.tokens, &account, tag_id, chunk).await?;
        } else {
            tags::tag_users(&svc.tokens, &account, tag_id, chunk).await?;
        }
        batches += 1;
    }
    tracing::info!(users = unique.len(), batches, "tag members changed");
    Ok(Tagged {
        users: unique.len(),
        batches,
    })
}

fn check_name(name: &str) -> Result<(), ServiceError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_TAG_NAME || name.chars().any(char::is_control) {
        return Err(ServiceError::Validation(format!(
            "name: a tag name is 1 to {MAX_TAG_NAME} characters, got {chars}"
        )));
    }
    Ok(())
}

/// Refuses WeChat's reserved tags before any call (WeChat would answer 45058).
fn not_reserved(tag_id: u64) -> Result<(), ServiceError> {
    if tag_id <= MAX_RESERVED_TAG {
        return Err(ServiceError::Validation(format!(
            "tag_id: {tag_id} is one of WeChat's reserved tags (0, 1, 2), which cannot be \
             renamed or deleted"
        )));
    }
    Ok(())
}

/// The errcodes of changing one tag, as the caller needs them.
fn tag_refusal(tag_id: u64, name: Option<&str>, e: TokenError) -> ServiceError {
    match e {
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => match errcode {
            NO_SUCH_TAG => ServiceError::NotFound(format!(
                "no tag {tag_id} on this account (WeChat errcode {errcode}: {errmsg})"
            )),
            NAME_TAKEN => ServiceError::Conflict(format!(
                "a tag named {:?} exists already (WeChat errcode {errcode}: {errmsg})",
                name.unwrap_or_default()
            )),
            TOO_MANY_FOLLOWERS => ServiceError::Precondition(format!(
                "tag {tag_id} has more than 100,000 followers: WeChat deletes it only after they \
                 are untagged (errcode {errcode}: {errmsg})"
            )),
            RESERVED => ServiceError::Validation(format!(
                "tag {tag_id} is reserved by WeChat (errcode {errcode}: {errmsg})"
            )),
            _ => ServiceError::WeChat(ApiError::Refused { errcode, errmsg }),
        },
        e => e.into(),
    }
}

/// `tags/get`: every tag of the account, WeChat's reserved ones included, by id.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn list_tags(
    svc: &Services,
    account_id: &AccountId,
) -> Result<Vec<TagSummary>, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    let mut list: Vec<TagSummary> = tags::list(&svc.tokens, &account)
        .await?
        .tags
        .into_iter()
        .map(|t| TagSummary {
            reserved: t.id <= MAX_RESERVED_TAG,
            id: t.id,
            name: t.name,
            count: t.count,
        })
        .collect();
    list.sort_by_key(|t| t.id);
    Ok(list)
}

/// `tags/update`: renames a tag.
#[tracing::instrument(skip_all, fields(account = %account_id, tag_id))]
pub async fn rename_tag(
    svc: &Services,
    account_id: &AccountId,
    tag_id: u64,
    name: &str,
) -> Result<(), ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    not_reserved(tag_id)?;
    check_name(name)?;
    tags::update(&svc.tokens, &account, tag_id, name)
        .await
        .map_err(|e| tag_refusal(tag_id, Some(name), e))?;
    tracing::info!("tag renamed");
    Ok(())
}

/// `tags/delete`: deletes a tag (its followers lose it).
#[tracing::instrument(skip_all, fields(account = %account_id, tag_id))]
pub async fn delete_tag(
    svc: &Services,
    account_id: &AccountId,
    tag_id: u64,
) -> Result<(), ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    not_reserved(tag_id)?;
    tags::delete(&svc.tokens, &account, tag_id)
        .await
        .map_err(|e| tag_refusal(tag_id, None, e))?;
    tracing::info!("tag deleted");
    Ok(())
}

/// `tags/getidlist`: the tag ids one follower carries.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn user_tags(
    svc: &Services,
    account_id: &AccountId,
    open_id: &str,
) -> Result<Vec<u64>, ServiceError> {
    let account = svc.account(account_id)?.clone();
    mp_only(&account)?;
    if !is_open_id(open_id) {
        return Err(ServiceError::Validation(format!(
            "open_id {:?} is not an openid (1 to 64 characters of letters, digits, '-' and '_')",
            crate::domain::Untrusted(open_id)
        )));
    }
    match tags::user_tags(&svc.tokens, &account, open_id).await {
        Ok(t) => Ok(t.tagid_list),
        Err(TokenError::Api(ApiError::Refused { errcode, errmsg }))
            if NOT_A_FOLLOWER.contains(&errcode) =>
        {
            Err(ServiceError::NotFound(format!(
                "{:?} is not an openid of this account (WeChat errcode {errcode}: {errmsg})",
                crate::domain::Untrusted(open_id)
            )))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tags_are_refused_before_wechat() {
        for id in 0..=2 {
            assert!(
                matches!(not_reserved(id), Err(ServiceError::Validation(m)) if m.contains("reserved"))
            );
        }
        assert!(not_reserved(3).is_ok());
        assert!(not_reserved(100).is_ok());
    }

    #[test]
    fn tag_errcodes_become_the_callers_answers() {
        let refused = |errcode| {
            TokenError::Api(ApiError::Refused {
                errcode,
                errmsg: "x".into(),
            })
        };
        assert!(matches!(
            tag_refusal(7, None, refused(45159)),
            ServiceError::NotFound(_)
        ));
        assert!(matches!(
            tag_refusal(7, Some("a"), refused(45157)),
            ServiceError::Conflict(_)
        ));
        assert!(matches!(
            tag_refusal(7, None, refused(45057)),
            ServiceError::Precondition(_)
        ));
        assert!(matches!(
            tag_refusal(7, None, refused(45058)),
            ServiceError::Validation(_)
        ));
        assert!(matches!(
            tag_refusal(7, None, refused(40013)),
            ServiceError::WeChat(_)
        ));
    }
}
