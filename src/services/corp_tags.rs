//! WeCom corp tags (企业客户标签) and the tags on a customer: the tag library in groups
//! (`get_corp_tag_list`, `add_corp_tag`, `edit_corp_tag`, `del_corp_tag`) and `mark_tag`, for the
//! admin API (`/corp-tags`, `/external-contacts/{id}/tags`) and gRPC (`ListCorpTags`, ...).
//!
//! Every input is parsed first ([`crate::domain::wecom`]), so an invalid request never reaches
//! WeCom; these are WeCom features, so an Official Account is answered 400 before anything else.
//! WeCom's refusals that name the caller's mistake are mapped to what they mean: an unknown tag
//! or group id (40068) or a customer who is not the member's (84061, 40096) is a 404, a name
//! WeCom refuses (40071) a 409, a missing id (41017) a 400; any other code stays a 502 with
//! WeCom's errcode and errmsg.

use crate::domain::wecom::{
    CorpTag, CorpTagGroup, CorpTagName, MarkTags, NewCorpTags, TagGroupRef, WeComId,
};
use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::wechat::account::Account;
use crate::wechat::api::{corp_tags, ApiError};
use crate::wechat::tokens::TokenError;

use super::Services;

/// 40068: 不合法的标签ID (the tag or group does not exist).
const INVALID_TAG_ID: i64 = 40068;
/// 40071: 不合法的标签名字 (refused, or taken in the group).
const INVALID_TAG_NAME: i64 = 40071;
/// 41017: 缺少tagid参数.
const MISSING_TAG_ID: i64 = 41017;
/// 84061: 不存在外部联系人的关联关系 (the customer is not this member's).
const NO_RELATION: i64 = 84061;
/// 40096: 不合法的外部联系人userid.
const INVALID_EXTERNAL_USER: i64 = 40096;
/// 60111: userid not found.
const NO_SUCH_USER: i64 = 60111;

/// The account, when it is a WeCom application.
pub(super) fn work_only<'s>(
    svc: &'s Services,
    account_id: &AccountId,
    feature: &str,
) -> Result<&'s std::sync::Arc<Account>, ServiceError> {
    let account = svc.account(account_id)?;
    match account.platform {
        Platform::Work => Ok(account),
        Platform::Mp => Err(ServiceError::Validation(format!(
            "account {:?} is an Official Account: {feature} are a WeCom (企业微信) feature; use a \
             platform = \"work\" account",
            account_id.as_str()
        ))),
    }
}

/// Maps WeCom's refusals that mean "the caller's mistake"; everything else as usual.
pub(super) fn refusal(e: TokenError, context: &str) -> ServiceError {
    match e {
        TokenError::Api(ApiError::Refused { errcode, errmsg }) => {
            let msg = format!("{context} (WeCom errcode {errcode}: {errmsg})");
            match errcode {
                INVALID_TAG_ID | NO_RELATION | INVALID_EXTERNAL_USER | NO_SUCH_USER => {
                    ServiceError::NotFound(msg)
                }
                INVALID_TAG_NAME => ServiceError::Conflict(msg),
                MISSING_TAG_ID => ServiceError::Validation(msg),
                _ => ApiError::Refused { errcode, errmsg }.into(),
            }
        }
        e => e.into(),
    }
}

fn group_view(g: corp_tags::TagGroup) -> CorpTagGroup {
    CorpTagGroup {
        group_id: g.group_id,
        group_name: g.group_name,
        create_time: g.create_time,
        order: g.order,
        deleted: g.deleted,
        tags: g
            .tag
            .into_iter()
            .map(|t| CorpTag {
                id: t.id,
                name: t.name,
                create_time: t.create_time,
                order: t.order,
                deleted: t.deleted,
            })
            .collect(),
    }
}

/// `get_corp_tag_list`: every group (or those named, and the groups of the tags named).
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn list(
    svc: &Services,
    account_id: &AccountId,
    tag_ids: &[String],
    group_ids: &[String],
) -> Result<Vec<CorpTagGroup>, ServiceError> {
    let account = work_only(svc, account_id, "corp tags")?.clone();
    let ids = |field, raw| {
        crate::domain::wecom::id_list(
            field,
            raw,
            crate::domain::wecom::MAX_TAG_IDS,
            "a corp tag id",
        )
        .map(|v| v.into_iter().map(WeComId::into_string).collect::<Vec<_>>())
        .map_err(ServiceError::Validation)
    };
    let tag_ids = ids("tag_ids", tag_ids)?;
    let group_ids = ids("group_ids", group_ids)?;
    let answer = corp_tags::list(&svc.tokens, &account, &tag_ids, &group_ids)
        .await
        .map_err(|e| refusal(e, "cannot list the corp tags"))?;
    Ok(answer.tag_group.into_iter().map(group_view).collect())
}

/// `add_corp_tag`: answers the group with the tags created.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn create(
    svc: &Services,
    account_id: &AccountId,
    actor: &crate::domain::Actor,
    req: NewCorpTags,
) -> Result<CorpTagGroup, ServiceError> {
    let account = work_only(svc, account_id, "corp tags")?.clone();
    let (group_id, group_name) = match &req.group {
        TagGroupRef::Id(id) => (Some(id.as_str()), None),
        TagGroupRef::Name(name) => (None, Some(name.as_str())),
    };
    let body = corp_tags::NewTags {
        group_id,
        group_name,
        order: req.group_order,
        tag: req
            .tags
            .iter()
            .map(|(name, order)| corp_tags::NewTag {
                name: name.as_str(),
                order: *order,
            })
            .collect(),
    };
    let added = corp_tags::add(&svc.tokens, &account, &body)
        .await
        .map_err(|e| refusal(e, "WeCom refused the tags"))?;
    let group = group_view(added.tag_group);
    tracing::info!(group_id = %group.group_id, tags = group.tags.len(), "corp tags created");
    Ok(group)
}

/// `edit_corp_tag`: a tag's or a group's new name and/or order (at least one).
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn edit(
    svc: &Services,
    account_id: &AccountId,
    actor: &crate::domain::Actor,
    id: &str,
    name: Option<&str>,
    order: Option<u32>,
) -> Result<(), ServiceError> {
    let account = work_only(svc, account_id, "corp tags")?.clone();
    let id = WeComId::issued("tag_id", id, "a corp tag or group id")
        .map_err(ServiceError::Validation)?;
    let name = name
        .map(|n| CorpTagName::parse("name", n))
        .transpose()
        .map_err(ServiceError::Validation)?;
    if name.is_none() && order.is_none() {
        return Err(ServiceError::Validation(
            "name or order: nothing to change".into(),
        ));
    }
    corp_tags::edit(
        &svc.tokens,
        &account,
        id.as_str(),
        name.as_ref().map(CorpTagName::as_str),
        order,
    )
    .await
    .map_err(|e| refusal(e, &format!("no corp tag or group {:?}", id.as_str())))?;
    tracing::info!(id = id.as_str(), "corp tag edited");
    Ok(())
}

/// What [`delete`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Tag,
    Group,
}

impl Deleted {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tag => "tag",
            Self::Group => "tag_group",
        }
    }
}

/// `del_corp_tag` of a tag, or of a group with all its tags. WeCom's call must say which the id
/// is, so the library is read first: an id in neither is a 404 and nothing is deleted.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn delete(
    svc: &Services,
    account_id: &AccountId,
    actor: &crate::domain::Actor,
    id: &str,
) -> Result<Deleted, ServiceError> {
    let account = work_only(svc, account_id, "corp tags")?.clone();
    let id = WeComId::issued("tag_id", id, "a corp tag or group id")
        .map_err(ServiceError::Validation)?;
    let library = corp_tags::list(&svc.tokens, &account, &[], &[])
        .await
        .map_err(|e| refusal(e, "cannot read the corp tags"))?;
    let live = library.tag_group.iter().filter(|g| !g.deleted);
    let what = if live.clone().any(|g| g.group_id == id.as_str()) {
        Deleted::Group
    } else if live
        .flat_map(|g| g.tag.iter())
        .any(|t| !t.deleted && t.id == id.as_str())
    {
        Deleted::Tag
    } else {
        return Err(ServiceError::NotFound(format!(
            "no corp tag or group {:?}",
            id.as_str()
        )));
    };
    let ids = [id.as_str().to_owned()];
    let (tags, groups): (&[String], &[String]) = match what {
        Deleted::Tag => (&ids, &[]),
        Deleted::Group => (&[], &ids),
    };
    corp_tags::delete(&svc.tokens, &account, tags, groups)
        .await
        .map_err(|e| refusal(e, &format!("no corp tag or group {:?}", id.as_str())))?;
    tracing::info!(id = id.as_str(), what = what.as_str(), "corp tag deleted");
    Ok(what)
}

/// `mark_tag`: the member's customer gets `add` and loses `remove`.
#[tracing::instrument(skip_all, fields(account = %account_id, actor = %actor))]
pub async fn mark(
    svc: &Services,
    account_id: &AccountId,
    actor: &crate::domain::Actor,
    req: &MarkTags,
) -> Result<(), ServiceError> {
    let account = work_only(svc, account_id, "corp tags")?.clone();
    let strings = |ids: &[WeComId]| {
        ids.iter()
            .map(|i| i.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    corp_tags::mark(
        &svc.tokens,
        &account,
        req.user_id.as_str(),
        req.external_user_id.as_str(),
        &strings(&req.add),
        &strings(&req.remove),
    )
    .await
    .map_err(|e| {
        refusal(
            e,
            &format!(
                "cannot tag {:?} as {:?}'s customer",
                req.external_user_id.as_str(),
                req.user_id.as_str()
            ),
        )
    })?;
    tracing::info!(
        added = req.add.len(),
        removed = req.remove.len(),
        "customer tags changed"
    );
    Ok(())
}
