//! The user-tag routes of the admin API, so that a CRM segment becomes a tag that
//! one broadcast reaches: create a tag, add and remove its users (50 openids per WeChat call),
//! through [`crate::services::tags`].
//!
//! A segment can be long: the member routes take their body within
//! `broadcasts.max_body_bytes`, like a broadcast audience.

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
