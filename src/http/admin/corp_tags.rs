//! The WeCom corp-tag routes of the admin API: the corp's tag library in groups
//! (`/corp-tags`) and the tags on one customer (`/external-contacts/{external_user_id}/tags`),
//! through [`crate::services::corp_tags`]. On an Official Account they answer 400.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::domain::wecom::{CorpTagGroup, MarkTags, NewCorpTagInput, NewCorpTags};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::{account_id, corp_tags};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/corp-tags", web::get().to(list))
        .route("/accounts/{account}/corp-tags", web::post().to(create))
        .route(
            "/accounts/{account}/corp-tags/{tag_id}",
            web::put().to(edit),
        )
        .route(
            "/accounts/{account}/corp-tags/{tag_id}",
            web::delete().to(delete),
        )
        .route(
            "/accounts/{account}/external-contacts/{external_user_id}/tags",
            web::post().to(mark),
        )
}

/// The errors of every corp-tag route besides the account's and WeCom's.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum CorpTagErrors {
    #[response(
        status = 400,
        description = "invalid input (names of 1 to 30 characters, ids, lists), or an Official \
                       Account: corp tags are a WeCom feature"
    )]
    Invalid(ErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Comma-separated corp tag ids: only these tags (in their groups).
    tag_ids: Option<String>,
    /// Comma-separated tag group ids: only these groups.
    group_ids: Option<String>,
}

fn split(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The corp's tag library.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CorpTagList {
    groups: Vec<CorpTagGroup>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/corp-tags",
    operation_id = "listCorpTags",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "the groups and their tags (get_corp_tag_list)", body = CorpTagList),
        CorpTagErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ServiceError> {
    let groups = corp_tags::list(
        &state.services,
        &account_id(&path)?,
        &split(query.tag_ids.as_deref()),
        &split(query.group_ids.as_deref()),
    )
    .await?;
    Ok(HttpResponse::Ok().json(CorpTagList { groups }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCorpTagBody)]
pub(crate) struct CreateBody {
    /// An existing group to add the tags to; or leave it out and give `group_name`.
    group_id: Option<String>,
    /// A group by name (1 to 30 characters): created, or WeCom adds to the one of that name.
    group_name: Option<String>,
    /// The new group's order (larger first).
    group_order: Option<u32>,
    /// 1 to 100 tags, distinct names of 1 to 30 characters.
    tags: Vec<NewCorpTagInput>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/corp-tags",
    operation_id = "createCorpTags",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the group with the tags created (add_corp_tag)", body = CorpTagGroup),
        (status = 404, description = "no such group (40068)", body = ErrorBody),
        (status = 409, description = "WeCom refused a name (40071: invalid or taken)", body = ErrorBody),
        CorpTagErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    let req = NewCorpTags::parse(
        body.group_id.as_deref(),
        body.group_name.as_deref(),
        body.group_order,
        &body.tags,
    )
    .map_err(ServiceError::Validation)?;
    let group = corp_tags::create(&state.services, &account, &actor, req).await?;
    Ok(HttpResponse::Ok().json(group))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EditCorpTagBody)]
pub(crate) struct EditBody {
    /// The new name, 1 to 30 characters.
    name: Option<String>,
    /// The new order (larger first).
    order: Option<u32>,
}

/// A tag or group changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CorpTagEdited {
    id: String,
    /// Always true.
    updated: bool,
}

#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/corp-tags/{tag_id}",
    operation_id = "editCorpTag",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = String, Path, description = "a corp tag id or a tag group id"),
    ),
    request_body(content = EditBody, content_type = "application/json"),
    responses(
        (status = 200, description = "renamed and/or reordered (edit_corp_tag)", body = CorpTagEdited),
        (status = 404, description = "no such tag or group (40068)", body = ErrorBody),
        (status = 409, description = "WeCom refused the name (40071: invalid or taken)", body = ErrorBody),
        CorpTagErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn edit(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    JsonBody(body): JsonBody<EditBody>,
) -> Result<HttpResponse, ServiceError> {
    let (account, id) = path.into_inner();
    corp_tags::edit(
        &state.services,
        &account_id(&account)?,
        &actor,
        &id,
        body.name.as_deref(),
        body.order,
    )
    .await?;
    Ok(HttpResponse::Ok().json(CorpTagEdited { id, updated: true }))
}

/// A tag or group deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CorpTagDeleted {
    id: String,
    /// `tag`, or `tag_group` (deleted with all its tags).
    deleted: String,
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/corp-tags/{tag_id}",
    operation_id = "deleteCorpTag",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("tag_id" = String, Path, description = "a corp tag id, or a tag group id (deleted with all its tags)"),
    ),
    responses(
        (status = 200, description = "deleted (del_corp_tag)", body = CorpTagDeleted),
        (status = 404, description = "no such tag or group", body = ErrorBody),
        CorpTagErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, id) = path.into_inner();
    let what = corp_tags::delete(&state.services, &account_id(&account)?, &actor, &id).await?;
    Ok(HttpResponse::Ok().json(CorpTagDeleted {
        id,
        deleted: what.as_str().to_owned(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MarkTagsBody)]
pub(crate) struct MarkBody {
    /// The member (userid) whose customer it is.
    userid: String,
    /// Corp tag ids to put on the customer.
    #[serde(default)]
    add: Vec<String>,
    /// Corp tag ids to take off; at least one of add and remove, no id in both.
    #[serde(default)]
    remove: Vec<String>,
}

/// The tags changed on a customer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TagsMarked {
    external_user_id: String,
    userid: String,
    added: usize,
    removed: usize,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/external-contacts/{external_user_id}/tags",
    operation_id = "markCustomerTags",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("external_user_id" = String, Path, description = "the customer's external_userid"),
    ),
    request_body(content = MarkBody, content_type = "application/json"),
    responses(
        (status = 200, description = "tags added and removed (mark_tag)", body = TagsMarked),
        (status = 404, description = "no such tag (40068), or the customer is not the member's (84061)", body = ErrorBody),
        CorpTagErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn mark(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    JsonBody(body): JsonBody<MarkBody>,
) -> Result<HttpResponse, ServiceError> {
    let (account, external_user_id) = path.into_inner();
    let account = account_id(&account)?;
    let req = MarkTags::parse(&external_user_id, &body.userid, &body.add, &body.remove)
        .map_err(ServiceError::Validation)?;
    corp_tags::mark(&state.services, &account, &actor, &req).await?;
    Ok(HttpResponse::Ok().json(TagsMarked {
        external_user_id,
        userid: body.userid,
        added: req.add.len(),
        removed: req.remove.len(),
    }))
}
