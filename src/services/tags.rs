//! Segments as tags: the CRM turns a large segment into a user tag, then broadcasts
//! to the tag with one `mass/sendall`. `tags/create` makes the tag; `tags/members/batchtagging`
//! and `batchuntagging` take at most 50 openids a call (WeChat answers 40032 beyond), so a list
//! is sent in batches of 50. Tagging is idempotent on WeChat's side, so a request that failed
//! half-way can simply be made again.

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
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_TAG_NAME || name.chars().any(char::is_control) {
        return Err(ServiceError::Validation(format!(
            "name: a tag name is 1 to {MAX_TAG_NAME} characters, got {chars}"
        )));
    }
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
