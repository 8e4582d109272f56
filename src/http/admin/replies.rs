//! Keyword auto-reply rules and the account's default welcome, through
//! [`crate::services::autoreply`]:
//!
//! - `GET /admin/v1/accounts/{account}/reply-rules` → `{"rules": [...]}` in evaluation order;
//! - `POST .../reply-rules` creates one (`id` optional: generated), 409 when the id is taken;
//! - `PUT .../reply-rules/{id}` creates or replaces one; `DELETE .../reply-rules/{id}`;
//! - `GET | PUT | DELETE .../welcome`: the welcome of followers who came through no code with a
//!   welcome of its own (the body of PUT is the reply itself).
//!
//! A rule is `{"id", "match": {"kind": "exact"|"prefix"|"contains"|"regex"|"click", "value"},
//! "reply": {"text": {"content"}} | {"image": {"media_id"}} | {"news": {"title", "description",
//! "pic_url", "url"}}, "priority", "enabled"}`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, StoreErrors, TokenErrors};
use crate::domain::autoreply::{Matcher, Reply, Rule};
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::autoreply::{self, StoredRule, StoredWelcome};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .service(
            web::resource("/accounts/{account}/reply-rules")
                .route(web::get().to(list))
                .route(web::post().to(create)),
        )
        .service(
            web::resource("/accounts/{account}/reply-rules/{id}")
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        )
        .service(
            web::resource("/accounts/{account}/welcome")
                .route(web::get().to(get_welcome))
                .route(web::put().to(put_welcome))
                .route(web::delete().to(delete_welcome)),
        )
}

/// A rule as the admin API receives it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplyRuleBody)]
pub(crate) struct RuleBody {
    /// 1 to 64 of `[A-Za-z0-9_-]`; generated when left out of a POST.
    #[serde(default)]
    id: String,
    /// `{"kind": "exact" | "prefix" | "contains" | "regex" | "click", "value": "..."}`.
    #[serde(rename = "match")]
    matcher: Matcher,
    /// `{"text": {"content"}}`, `{"image": {"media_id"}}` or
    /// `{"news": {"title", "description", "pic_url", "url"}}`.
    reply: Reply,
    /// Highest first; equal priorities: the oldest rule first.
    #[serde(default)]
    priority: i32,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn enabled() -> bool {
    true
}

/// The rules of an account, in evaluation order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplyRules {
    rules: Vec<StoredRule>,
}

/// A rule deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplyRuleDeleted {
    id: String,
    /// Always true.
    deleted: bool,
}

/// The account's default welcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Welcome {
    /// The reply sent to a new follower.
    welcome: Reply,
    /// Unix milliseconds of the last change.
    updated_at_ms: u64,
    /// The admin token name or gRPC caller of the last change.
    actor: String,
}

impl From<StoredWelcome> for Welcome {
    fn from(w: StoredWelcome) -> Self {
        Self {
            welcome: w.reply,
            updated_at_ms: w.updated_at_ms,
            actor: w.actor,
        }
    }
}

/// The default welcome deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WelcomeDeleted {
    /// Always true.
    deleted: bool,
}

impl RuleBody {
    fn into_rule(self) -> Rule {
        Rule {
            id: self.id,
            matcher: self.matcher,
            reply: self.reply,
            priority: self.priority,
            enabled: self.enabled,
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/reply-rules",
    operation_id = "listReplyRules",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the rules in evaluation order", body = ReplyRules),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let rules = autoreply::list_rules(&state.services, &account_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(ReplyRules { rules }))
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/reply-rules",
    operation_id = "createReplyRule",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = RuleBody, content_type = "application/json"),
    responses(
        (status = 201, description = "the rule as stored", body = StoredRule),
        (status = 400, description = "invalid rule (the message names the problem)", body = ErrorBody),
        (status = 409, description = "a rule with this id exists", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<RuleBody>,
) -> Result<HttpResponse, ServiceError> {
    let stored = autoreply::create_rule(
        &state.services,
        &account_id(&path)?,
        &actor,
        body.into_rule(),
    )
    .await?;
    Ok(HttpResponse::Created().json(stored))
}

#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/reply-rules/{id}",
    operation_id = "putReplyRule",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("id" = String, Path, description = "the rule id")),
    request_body(content = RuleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the rule as stored (replaced)", body = StoredRule),
        (status = 201, description = "the rule as stored (created)", body = StoredRule),
        (status = 400, description = "invalid rule (the message names the problem)", body = ErrorBody),
        (status = 409, description = "the rule kept changing under the request", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    JsonBody(mut body): JsonBody<RuleBody>,
) -> Result<HttpResponse, ServiceError> {
    let (account, id) = path.into_inner();
    if body.id.is_empty() {
        body.id = id.clone();
    } else if body.id != id {
        return Err(ServiceError::Validation(format!(
            "id: the body says {:?} but the path says {:?}",
            crate::domain::Untrusted(&body.id),
            crate::domain::Untrusted(&id)
        )));
    }
    let (stored, created) = autoreply::put_rule(
        &state.services,
        &account_id(&account)?,
        &actor,
        body.into_rule(),
    )
    .await?;
    Ok(if created {
        HttpResponse::Created().json(stored)
    } else {
        HttpResponse::Ok().json(stored)
    })
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/reply-rules/{id}",
    operation_id = "deleteReplyRule",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ("id" = String, Path, description = "the rule id")),
    responses(
        (status = 200, description = "deleted", body = ReplyRuleDeleted),
        (status = 404, description = "unknown account or rule", body = ErrorBody),
        TokenErrors,
        StoreErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, id) = path.into_inner();
    autoreply::delete_rule(&state.services, &account_id(&account)?, &actor, &id).await?;
    Ok(HttpResponse::Ok().json(ReplyRuleDeleted { id, deleted: true }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/welcome",
    operation_id = "getWelcome",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the default welcome", body = Welcome),
        (status = 404, description = "unknown account, or no default welcome", body = ErrorBody),
        TokenErrors,
        StoreErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_welcome(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    match autoreply::welcome(&state.services, &account_id(&path)?).await? {
        Some(w) => Ok(HttpResponse::Ok().json(Welcome::from(w))),
        None => Err(ServiceError::NotFound("no default welcome is set".into())),
    }
}

#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{account}/welcome",
    operation_id = "putWelcome",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Reply, description = "the reply: `{\"text\": {\"content\"}}`, `{\"image\": {\"media_id\"}}` or `{\"news\": {...}}`", content_type = "application/json"),
    responses(
        (status = 200, description = "the default welcome as stored", body = Welcome),
        (status = 400, description = "invalid reply (the message names the problem)", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_welcome(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(reply): JsonBody<Reply>,
) -> Result<HttpResponse, ServiceError> {
    let stored =
        autoreply::put_welcome(&state.services, &account_id(&path)?, &actor, reply).await?;
    Ok(HttpResponse::Ok().json(Welcome::from(stored)))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/welcome",
    operation_id = "deleteWelcome",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "deleted", body = WelcomeDeleted),
        (status = 404, description = "unknown account, or no default welcome", body = ErrorBody),
        TokenErrors,
        StoreErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_welcome(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    autoreply::delete_welcome(&state.services, &account_id(&path)?, &actor).await?;
    Ok(HttpResponse::Ok().json(WelcomeDeleted { deleted: true }))
}
