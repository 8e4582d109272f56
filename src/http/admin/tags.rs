//! The user-tag routes of the admin API, so that a CRM segment becomes a tag that
//! one broadcast reaches: create a tag, add and remove its users (50 openids per WeChat call),
//! through [`crate::services::tags`].
//!
//! A segment can be long: the member routes take their body within
//! `broadcasts.max_body_bytes`, like a broadcast audience.
//!
//! The rest of tag management (issue 14): list the tags, rename or delete one (WeChat's
//! reserved tags 0, 1 and 2 refused before any call), and one follower's tags.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody, LargeJsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::tags;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/tags", web::post().to(create))
        .route(
            "/accounts/{account}/tags/{tag_id}/members",
            web::post().to(add_members),
        )
        .route(
            "/accounts/{account}/tags/{tag_id}/members",
            web::delete().to(remove_members),
        )
        .route("/accounts/{account}/tags", web::get().to(list))
        .route("/accounts/{account}/tags/{tag_id}", web::put().to(rename))
        .route(
            "/accounts/{account}/tags/{tag_id}",
            web::delete().to(delete),
        )
        .route(
            "/accounts/{account}/users/{open_id}/tags",
            web::get().to(user_tags),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateTagBody)]
pub(crate) struct CreateBody {
    /// 1 to 30 characters.
    name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TagMembersBody)]
pub(crate) struct MembersBody {
    open_ids: Vec<String>,
}

/// A tag created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagCreated {
    /// WeChat's tag id.
    tag_id: u64,
    name: String,
}

/// The members added to or removed from a tag.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagMembersChanged {
    tag_id: u64,
    /// Distinct openids sent.
    users: usize,
    /// WeChat calls made (50 openids a call).
    batches: usize,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/tags",
    operation_id = "createTag",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the tag created", body = TagCreated),
        (status = 400, description = "invalid name, or a WeCom account", body = ErrorBody),
        (status = 409, description = "a tag with this name exists (45157)", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<HttpResponse, ServiceError> {
    let tag_id = tags::create_tag(&state.services, &account_id(&path)?, &body.name).await?;
    tracing::info!(actor = %actor, tag_id, "tag created");
    Ok(HttpResponse::Ok().json(TagCreated {
        tag_id,
        name: body.name,
    }))
}

/// The errors of adding and removing members. Tagging is idempotent on WeChat's side, so a
/// request refused halfway (some batches done) may be sent again whole.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum MembersErrors {
    #[response(status = 400, description = "invalid openids, or a WeCom account")]
    Invalid(ErrorBody),
    #[response(
        status = 502,
        description = "WeChat refused (its errcode and errmsg in the message); the request may be repeated"
    )]
    Refused(ErrorBody),
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/tags/{tag_id}/members",
    operation_id = "addTagMembers",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = u64, Path, description = "WeChat's tag id"),
    ),
    request_body(content = MembersBody, content_type = "application/json"),
    responses(
        (status = 200, description = "tagged (batchtagging, 50 a call)", body = TagMembersChanged),
        AccountErrors, WeChatErrors, MembersErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_members(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
    LargeJsonBody(body): LargeJsonBody<MembersBody>,
) -> Result<HttpResponse, ServiceError> {
    members(actor, state, path, body, false).await
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/tags/{tag_id}/members",
    operation_id = "removeTagMembers",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = u64, Path, description = "WeChat's tag id"),
    ),
    request_body(content = MembersBody, content_type = "application/json"),
    responses(
        (status = 200, description = "untagged (batchuntagging, 50 a call)", body = TagMembersChanged),
        AccountErrors, WeChatErrors, MembersErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove_members(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
    LargeJsonBody(body): LargeJsonBody<MembersBody>,
) -> Result<HttpResponse, ServiceError> {
    members(actor, state, path, body, true).await
}

async fn members(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
    body: MembersBody,
    untag: bool,
) -> Result<HttpResponse, ServiceError> {
    let (account, tag_id) = path.into_inner();
    let done = tags::tag_users(
        &state.services,
        &account_id(&account)?,
        tag_id,
        &body.open_ids,
        untag,
    )
    .await?;
    tracing::info!(actor = %actor, tag_id, users = done.users, untag, "tag members changed");
    Ok(HttpResponse::Ok().json(TagMembersChanged {
        tag_id,
        users: done.users,
        batches: done.batches,
    }))
}

/// One tag of the account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagView {
    tag_id: u64,
    name: String,
    /// Followers carrying the tag, as WeChat counts them.
    count: u64,
    /// One of WeChat's own tags (0, 1, 2; 2 is 星标组): it cannot be renamed or deleted.
    reserved: bool,
}

/// Every tag of the account.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagList {
    /// By id.
    tags: Vec<TagView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RenameTagBody)]
pub(crate) struct RenameBody {
    /// 1 to 30 characters.
    name: String,
}

/// A tag renamed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagRenamed {
    tag_id: u64,
    name: String,
}

/// A tag deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagDeleted {
    tag_id: u64,
    deleted: bool,
}

/// The tags one follower carries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserTagList {
    open_id: String,
    tag_ids: Vec<u64>,
}

/// The errors of renaming and deleting a tag.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum ChangeErrors {
    #[response(
        status = 400,
        description = "a reserved tag (0, 1, 2), an invalid name, or a WeCom account"
    )]
    Invalid(ErrorBody),
    #[response(
        status = 409,
        description = "the name is taken (45157), or the tag has more than 100,000 followers (45057)"
    )]
    Conflict(ErrorBody),
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/tags",
    operation_id = "listTags",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "every tag (tags/get), WeChat's reserved ones included", body = TagList),
        (status = 400, description = "a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let tags = tags::list_tags(&state.services, &account_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(TagList {
        tags: tags
            .into_iter()
            .map(|t| TagView {
                tag_id: t.id,
                name: t.name,
                count: t.count,
                reserved: t.reserved,
            })
            .collect(),
    }))
}

#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/tags/{tag_id}",
    operation_id = "renameTag",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = u64, Path, description = "WeChat's tag id"),
    ),
    request_body(content = RenameBody, content_type = "application/json"),
    responses(
        (status = 200, description = "renamed (tags/update)", body = TagRenamed),
        AccountErrors, WeChatErrors, ChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rename(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
    JsonBody(body): JsonBody<RenameBody>,
) -> Result<HttpResponse, ServiceError> {
    let (account, tag_id) = path.into_inner();
    tags::rename_tag(&state.services, &account_id(&account)?, tag_id, &body.name).await?;
    tracing::info!(actor = %actor, tag_id, "tag renamed");
    Ok(HttpResponse::Ok().json(TagRenamed {
        tag_id,
        name: body.name,
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/tags/{tag_id}",
    operation_id = "deleteTag",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = u64, Path, description = "WeChat's tag id"),
    ),
    responses(
        (status = 200, description = "deleted (tags/delete)", body = TagDeleted),
        AccountErrors, WeChatErrors, ChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, u64)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, tag_id) = path.into_inner();
    tags::delete_tag(&state.services, &account_id(&account)?, tag_id).await?;
    tracing::info!(actor = %actor, tag_id, "tag deleted");
    Ok(HttpResponse::Ok().json(TagDeleted {
        tag_id,
        deleted: true,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/users/{open_id}/tags",
    operation_id = "getUserTags",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("open_id" = String, Path, description = "the follower's openid"),
    ),
    responses(
        (status = 200, description = "the follower's tag ids (tags/getidlist)", body = UserTagList),
        (status = 400, description = "not an openid, or a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn user_tags(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, open_id) = path.into_inner();
    let tag_ids = tags::user_tags(&state.services, &account_id(&account)?, &open_id).await?;
    Ok(HttpResponse::Ok().json(UserTagList { open_id, tag_ids }))
}
