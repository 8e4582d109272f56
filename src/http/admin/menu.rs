//! The menu routes of the admin API, under `/admin/v1/accounts/{account}/menu`: read
//! (with drift), publish, delete, validate, versions and restore, conditional menus, through
//! [`crate::services::menu`]. Bodies are WeChat's own menu JSON.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use super::schemas::{ConditionalMenu, WeChatMenu};
use crate::domain::menu::Problem;
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::menu;
use crate::store::MenuVersion;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/menu", web::get().to(get))
        .route("/accounts/{account}/menu", web::put().to(put))
        .route("/accounts/{account}/menu", web::delete().to(delete))
        .route(
            "/accounts/{account}/menu/validate",
            web::post().to(validate),
        )
        .route("/accounts/{account}/menu/versions", web::get().to(versions))
        .route(
            "/accounts/{account}/menu/versions/{version}/restore",
            web::post().to(restore),
        )
        .route(
            "/accounts/{account}/menu/conditional",
            web::post().to(add_conditional),
        )
        .route(
            "/accounts/{account}/menu/conditional/{menuid}",
            web::delete().to(delete_conditional),
        )
        .route(
            "/accounts/{account}/menu/trymatch",
            web::post().to(try_match),
        )
}

/// The conflict of a menu change that kept losing the race to another instance.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum MenuChangeErrors {
    #[response(status = 409, description = "another instance kept changing the menu")]
    Conflict(ErrorBody),
}

/// The live menu: WeChat's shape with the gateway's record beside it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LiveMenu {
    /// `button` and, on Official Accounts, `conditionalmenu`, as WeChat answers them.
    #[serde(flatten)]
    #[schema(value_type = WeChatMenu)]
    menu: Map<String, Value>,
    /// The latest version the gateway recorded, if any.
    version: Option<u64>,
    /// The live default menu is not that version (or there is a live menu and no version).
    drift: bool,
}

/// The version a change recorded.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MenuVersionNumber {
    version: u64,
}

/// The verdict of a validation: exactly what a publish would refuse.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MenuVerdict {
    valid: bool,
    problems: Vec<Problem>,
}

/// One recorded version of the default menu.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MenuVersionEntry {
    version: u64,
    /// RFC 3339.
    created_at: String,
    /// The admin token name or gRPC caller that made the change.
    actor: String,
    /// The menu published; null when this version deleted the menu.
    #[schema(value_type = Option<WeChatMenu>)]
    menu: Option<Value>,
    /// The version this one published again, when it is a restore.
    #[serde(skip_serializing_if = "Option::is_none")]
    restored_from: Option<u64>,
}

/// The recorded versions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MenuVersions {
    versions: Vec<MenuVersionEntry>,
}

/// A restore: the new version, and the one it published again.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RestoredMenu {
    version: u64,
    restored_from: u64,
}

/// A conditional menu WeChat created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConditionalMenuCreated {
    menuid: String,
}

/// A conditional menu WeChat deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConditionalMenuDeleted {
    menuid: String,
    /// Always true.
    deleted: bool,
}

/// `GET .../menu`: the live menu in WeChat's shape, with `version` (the latest recorded) and
/// `drift` (the live menu is not that version).
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/menu",
    operation_id = "getMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the live menu in WeChat's shape, with `version` and `drift`", body = LiveMenu),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let live = menu::live_menu(&state.services, &account_id(&path)?).await?;
    let menu = match live.menu {
        Value::Object(menu) => menu,
        _ => Map::new(),
    };
    Ok(HttpResponse::Ok().json(LiveMenu {
        menu,
        version: live.version,
        drift: live.drift,
    }))
}

/// `PUT .../menu`: validated, published, recorded: `{"version": N}`.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/menu",
    operation_id = "setMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = WeChatMenu, description = "WeChat's menu JSON: `{\"button\": [...]}`", content_type = "application/json"),
    responses(
        (status = 200, description = "published and recorded as this version", body = MenuVersionNumber),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors, WeChatErrors, MenuChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<HttpResponse, ServiceError> {
    let version = menu::publish(&state.services, &account_id(&path)?, &actor, body).await?;
    Ok(HttpResponse::Ok().json(MenuVersionNumber { version }))
}

/// `DELETE .../menu`: the deletion is recorded as a version too.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/menu",
    operation_id = "deleteMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "deleted; the deletion is recorded as this version", body = MenuVersionNumber),
        AccountErrors, WeChatErrors, MenuChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let version = menu::delete(&state.services, &account_id(&path)?, &actor).await?;
    Ok(HttpResponse::Ok().json(MenuVersionNumber { version }))
}

/// `POST .../menu/validate`: the verdict a publish would give, publishing nothing.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/validate",
    operation_id = "validateMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = WeChatMenu, description = "WeChat's menu JSON: `{\"button\": [...]}`", content_type = "application/json"),
    responses(
        (status = 200, description = "the verdict; nothing is published", body = MenuVerdict),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn validate(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<HttpResponse, ServiceError> {
    let problems = menu::validate(&state.services, &account_id(&path)?, &body)?;
    Ok(HttpResponse::Ok().json(MenuVerdict {
        valid: problems.is_empty(),
        problems,
    }))
}

impl From<MenuVersion> for MenuVersionEntry {
    fn from(v: MenuVersion) -> Self {
        let created_at = prost_types::Timestamp {
            seconds: v.created_at as i64,
            nanos: 0,
        };
        Self {
            version: v.version,
            created_at: created_at.to_string(),
            actor: v.actor,
            menu: v.menu,
            restored_from: v.restored_from,
        }
    }
}

/// `GET .../menu/versions`, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/menu/versions",
    operation_id = "listMenuVersions",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the recorded versions, oldest first", body = MenuVersions),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn versions(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let versions = menu::versions(&state.services, &account_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(MenuVersions {
        versions: versions.into_iter().map(MenuVersionEntry::from).collect(),
    }))
}

/// `POST .../menu/versions/{version}/restore`: `{"version": <new>, "restored_from": n}`.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/versions/{version}/restore",
    operation_id = "restoreMenuVersion",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("version" = u64, Path, description = "the version to publish again")),
    responses(
        (status = 200, description = "published again as a new version", body = RestoredMenu),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors, WeChatErrors, MenuChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn restore(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, n) = path.into_inner();
    let n: u64 = n
        .parse()
        .map_err(|_| ServiceError::Validation(format!("version: {n:?} is not a version number")))?;
    let version = menu::restore(&state.services, &account_id(&account)?, &actor, n).await?;
    Ok(HttpResponse::Ok().json(RestoredMenu {
        version,
        restored_from: n,
    }))
}

/// `POST .../menu/conditional`: `{"button": [...], "matchrule": {...}}` → `{"menuid"}`.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/conditional",
    operation_id = "addConditionalMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = ConditionalMenu, description = "`{\"button\": [...], \"matchrule\": {...}}`", content_type = "application/json"),
    responses(
        (status = 200, description = "the menuid WeChat gave it", body = ConditionalMenuCreated),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors, WeChatErrors, MenuChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_conditional(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<HttpResponse, ServiceError> {
    let menuid = menu::add_conditional(&state.services, &account_id(&path)?, &actor, body).await?;
    Ok(HttpResponse::Ok().json(ConditionalMenuCreated { menuid }))
}

/// `DELETE .../menu/conditional/{menuid}`.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/menu/conditional/{menuid}",
    operation_id = "deleteConditionalMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("menuid" = String, Path, description = "WeChat's menuid")),
    responses(
        (status = 200, description = "deleted", body = ConditionalMenuDeleted),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors, WeChatErrors, MenuChangeErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_conditional(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, menuid) = path.into_inner();
    menu::delete_conditional(&state.services, &account_id(&account)?, &actor, &menuid).await?;
    Ok(HttpResponse::Ok().json(ConditionalMenuDeleted {
        menuid,
        deleted: true,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TryMatch {
    user_id: String,
}

/// `POST .../menu/trymatch`: `{"user_id"}` → the menu that user sees, `{"button": [...]}`.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/trymatch",
    operation_id = "tryMatchMenu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = TryMatch, content_type = "application/json"),
    responses(
        (status = 200, description = "the menu that user sees, `{\"button\": [...]}`", body = WeChatMenu),
        (status = 400, description = "invalid request", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn try_match(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<TryMatch>,
) -> Result<HttpResponse, ServiceError> {
    let answer = menu::try_match(&state.services, &account_id(&path)?, &body.user_id).await?;
    Ok(HttpResponse::Ok().json(answer))
}
