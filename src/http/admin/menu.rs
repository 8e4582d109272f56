//! The menu routes of the admin API, under `/admin/v1/accounts/{account}/menu`: read
//! (with drift), publish, delete, validate, versions and restore, conditional menus, through
//! [`crate::services::menu`]. Bodies are WeChat's own menu JSON.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
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

/// `GET .../menu`: the live menu in WeChat's shape, with `version` (the latest recorded) and
/// `drift` (the live menu is not that version).
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/menu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the live menu in WeChat's shape, with `version` and `drift`", body = Object),
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
    let mut answer = live.menu;
    answer["version"] = json!(live.version);
    answer["drift"] = json!(live.drift);
    Ok(HttpResponse::Ok().json(answer))
}

/// `PUT .../menu`: validated, published, recorded: `{"version": N}`.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/menu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Object, description = "WeChat's menu JSON: `{\"button\": [...]}`", content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"version\": N}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "version": version })))
}

/// `DELETE .../menu`: the deletion is recorded as a version too.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/menu",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "`{\"version\": N}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "version": version })))
}

/// `POST .../menu/validate`: the verdict a publish would give, publishing nothing.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/validate",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Object, description = "WeChat's menu JSON: `{\"button\": [...]}`", content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"valid\": bool, \"problems\": [{\"path\", \"message\"}]}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "valid": problems.is_empty(), "problems": problems })))
}

fn version_json(v: &MenuVersion) -> Value {
    let created_at = prost_types::Timestamp {
        seconds: v.created_at as i64,
        nanos: 0,
    };
    let mut answer = json!({
        "version": v.version,
        "created_at": created_at.to_string(),
        "actor": v.actor,
        "menu": v.menu,
    });
    if let Some(n) = v.restored_from {
        answer["restored_from"] = json!(n);
    }
    answer
}

/// `GET .../menu/versions`, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/menu/versions",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "`{\"versions\": [{\"version\", \"created_at\", \"actor\", \"menu\", \"restored_from\"?}]}`", body = Object),
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
    let versions: Vec<_> = versions.iter().map(version_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "versions": versions })))
}

/// `POST .../menu/versions/{version}/restore`: `{"version": <new>, "restored_from": n}`.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/versions/{version}/restore",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("version" = u64, Path, description = "the version to publish again")),
    responses(
        (status = 200, description = "`{\"version\": <new>, \"restored_from\": n}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "version": version, "restored_from": n })))
}

/// `POST .../menu/conditional`: `{"button": [...], "matchrule": {...}}` → `{"menuid"}`.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/menu/conditional",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Object, description = "`{\"button\": [...], \"matchrule\": {...}}`", content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"menuid\"}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "menuid": menuid })))
}

/// `DELETE .../menu/conditional/{menuid}`.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/menu/conditional/{menuid}",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("menuid" = String, Path, description = "WeChat's menuid")),
    responses(
        (status = 200, description = "`{\"menuid\", \"deleted\": true}`", body = Object),
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
    Ok(HttpResponse::Ok().json(json!({ "menuid": menuid, "deleted": true })))
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
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = TryMatch, content_type = "application/json"),
    responses(
        (status = 200, description = "the menu that user sees, `{\"button\": [...]}`", body = Object),
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
