//! The WeCom customer-group routes of the admin API: the groups (`/group-chats`, paged by
//! cursor), one group with its members (`/group-chats/{chat_id}`), and group join codes
//! (`/group-chat-join-ways`), through [`crate::services::group_chats`]. On an Official Account
//! they answer 400.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::domain::scene::SceneInput;
use crate::domain::wecom::{GroupChat, GroupChatPage, GroupChatQuery};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::account_id;
use crate::services::group_chats::{self, CreateJoinWay};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/group-chats", web::get().to(list))
        .route(
            "/accounts/{account}/group-chats/{chat_id}",
            web::get().to(get),
        )
        .route(
            "/accounts/{account}/group-chat-join-ways",
            web::post().to(create_join_way),
        )
}

/// The errors of every customer-group route besides the account's and WeCom's.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum GroupChatErrors {
    #[response(
        status = 400,
        description = "invalid input, or an Official Account: customer groups are a WeCom feature"
    )]
    Invalid(ErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Comma-separated userids: only the groups these members own (at most 100).
    owner: Option<String>,
    /// 0 (default) every normal group, 1 owner left, 2 inheritance in progress, 3 inherited.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000 groups a page (default 100).
    limit: Option<String>,
}

fn number<T: std::str::FromStr>(field: &str, raw: Option<&str>) -> Result<Option<T>, ServiceError> {
    raw.map(|s| {
        s.parse().map_err(|_| {
            ServiceError::Validation(format!(
                "{field}: {:?} is not a number",
                crate::domain::Untrusted(s)
            ))
        })
    })
    .transpose()
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/group-chats",
    operation_id = "listGroupChats",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ListQuery,
    ),
    responses(
        (status = 200, description = "one page of customer groups (groupchat/list)", body = GroupChatPage),
        GroupChatErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    let owners: Vec<String> = query
        .owner
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let q = GroupChatQuery::parse(
        number("status", query.status.as_deref())?,
        &owners,
        query.cursor.as_deref(),
        number("limit", query.limit.as_deref())?,
    )
    .map_err(ServiceError::Validation)?;
    let page = group_chats::list(&state.services, &account, &q).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/group-chats/{chat_id}",
    operation_id = "getGroupChat",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("chat_id" = String, Path, description = "the customer group's chat_id"),
    ),
    responses(
        (status = 200, description = "the group and its members (groupchat/get)", body = GroupChat),
        (status = 404, description = "no such group (40050)", body = ErrorBody),
        GroupChatErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, chat_id) = path.into_inner();
    let chat = group_chats::get(&state.services, &account_id(&account)?, &chat_id).await?;
    Ok(HttpResponse::Ok().json(chat))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateGroupChatJoinWayBody)]
pub(crate) struct JoinWayBody {
    /// The scene joins carry as `state` (1 to 30 characters; a number is written as text):
    /// the scene registry of QR codes, so the join events carry its label.
    #[schema(schema_with = scene_schema)]
    scene: serde_json::Value,
    #[serde(default)]
    label: String,
    /// 1 to 5 customer groups (chat_id).
    chat_ids: Vec<String>,
    /// WeCom's remark of the code, at most 30 characters.
    #[serde(default)]
    remark: String,
    /// When the groups are full, WeCom creates a new group named room_base_name + room_base_id.
    #[serde(default)]
    auto_create_room: bool,
    #[serde(default)]
    room_base_name: String,
    room_base_id: Option<u32>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn scene_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Integer).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
        )))
        .description(Some(
            "The join code's state: a string, or an integer written as text.",
        ))
        .build()
        .into()
}

/// The code made.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JoinWayCreated {
    /// The state its joins carry.
    scene: String,
    /// WeCom's config_id of the code.
    config_id: String,
    /// The QR code image.
    qr_code: String,
    chat_ids: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/group-chat-join-ways",
    operation_id = "createGroupChatJoinWay",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = JoinWayBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the code (add_join_way, get_join_way)", body = JoinWayCreated),
        GroupChatErrors, AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_join_way(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<JoinWayBody>,
) -> Result<HttpResponse, ServiceError> {
    let scene = match &body.scene {
        serde_json::Value::String(s) => SceneInput::Str(s.clone()),
        serde_json::Value::Number(n) => SceneInput::Id(
            n.as_i64()
                .ok_or_else(|| ServiceError::Validation(format!("scene: {n} is not an integer")))?,
        ),
        other => {
            return Err(ServiceError::Validation(format!(
                "scene: must be a string or an integer, got {other}"
            )))
        }
    };
    let way = group_chats::create_join_way(
        &state.services,
        &account_id(&path)?,
        &actor,
        CreateJoinWay {
            scene,
            label: body.label,
            chat_ids: body.chat_ids,
            remark: body.remark,
            auto_create_room: body.auto_create_room,
            room_base_name: body.room_base_name,
            room_base_id: body.room_base_id,
            metadata: body.metadata,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(JoinWayCreated {
        scene: way.scene,
        config_id: way.config_id,
        qr_code: way.qr_code,
        chat_ids: way.chat_ids,
    }))
}
