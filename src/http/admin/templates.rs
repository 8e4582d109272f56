//! The template message and subscription notice routes of the admin API, under
//! `/admin/v1/accounts/{account}`: the account's templates, template-send and subscribe-send
//! jobs (create, read with a page of recipients, cancel), through
//! [`crate::services::templates`]. Create bodies take `broadcasts.max_body_bytes`, as a
//! broadcast's openid list does.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::broadcasts::JobErrors;
use super::extract::{Actor, LargeJsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::domain::template::{TemplateKind, TemplateSend};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::account_id;
use crate::services::templates::{self, JobView, SendTemplate, TemplateView};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/templates", web::get().to(list))
        .route(
            "/accounts/{account}/template-sends",
            web::post().to(create_template),
        )
        .route(
            "/accounts/{account}/subscribe-sends",
            web::post().to(create_subscribe),
        )
        .route(
            "/accounts/{account}/template-sends/{job_id}",
            web::get().to(get),
        )
        .route(
            "/accounts/{account}/template-sends/{job_id}/cancel",
            web::post().to(cancel),
        )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// `template` (template messages, the default) or `subscribe` (subscription notices).
    kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TemplateList {
    templates: Vec<TemplateView>,
}

/// The audience: followers by openid.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateAudience {
    open_ids: Vec<String>,
}

/// A mini program page to open instead of (or besides) the URL.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub(crate) struct MiniProgram {
    appid: String,
    pagepath: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendTemplateBody)]
pub(crate) struct TemplateBody {
    template_id: String,
    /// `{"field": {"value": "..."}}` for every field the template names (a plain string is
    /// taken as the value).
    #[schema(value_type = Object)]
    data: Value,
    /// Opened when the follower taps the message (http or https).
    url: Option<String>,
    #[schema(value_type = Option<MiniProgram>)]
    miniprogram: Option<Value>,
    audience: TemplateAudience,
    /// Makes the request idempotent, and keys WeChat's per-recipient de-duplication.
    client_msg_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendSubscribeBody)]
pub(crate) struct SubscribeBody {
    template_id: String,
    #[schema(value_type = Object)]
    data: Value,
    /// The page (an http or https URL) the notice opens.
    page: Option<String>,
    #[schema(value_type = Option<MiniProgram>)]
    miniprogram: Option<Value>,
    audience: TemplateAudience,
    client_msg_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedTemplateSend {
    #[serde(flatten)]
    job: JobView,
    /// False when an earlier request with this `client_msg_id` made the job.
    created: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// The first recipient to list (0 by default).
    offset: Option<usize>,
    /// How many recipients to list (100 by default, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/templates",
    operation_id = "listTemplates",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration"), ListQuery),
    responses(
        (status = 200, description = "`{\"templates\": [{\"template_id\", \"kind\", \"title\", \"content\", \"example\", \"fields\": [{\"name\", \"max_chars\"}]}]}`", body = TemplateList),
        (status = 400, description = "an unknown kind, or a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ServiceError> {
    let kind = match query.kind.as_deref() {
        None | Some("template") => TemplateKind::Template,
        Some("subscribe") => TemplateKind::Subscribe,
        Some(other) => {
            return Err(ServiceError::Validation(format!(
                "kind {other:?} is neither template nor subscribe"
            )))
        }
    };
    let found = templates::list_templates(&state.services, &account_id(&path)?, kind).await?;
    Ok(HttpResponse::Ok().json(TemplateList { templates: found }))
}

async fn create(
    actor: Actor,
    state: &AppState,
    account: &str,
    send: TemplateSend,
    client_msg_id: Option<String>,
) -> Result<HttpResponse, ServiceError> {
    let (job, created) = templates::create_job(
        &state.services,
        &account_id(account)?,
        &actor,
        SendTemplate {
            send,
            client_msg_id,
        },
    )
    .await?;
    let answer = CreatedTemplateSend { job, created };
    Ok(if created {
        HttpResponse::Accepted().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/template-sends",
    operation_id = "sendTemplate",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = TemplateBody, content_type = "application/json"),
    responses(
        (status = 202, description = "a new job (`\"created\": true`)", body = CreatedTemplateSend),
        (status = 200, description = "the job an earlier request with this `client_msg_id` made", body = CreatedTemplateSend),
        (status = 400, description = "an unknown template, a field missing or too long, a bad URL or audience", body = ErrorBody),
        (status = 413, description = "body over broadcasts.max_body_bytes", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_template(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    LargeJsonBody(body): LargeJsonBody<TemplateBody>,
) -> Result<HttpResponse, ServiceError> {
    let send = TemplateSend::parse(
        TemplateKind::Template,
        &body.template_id,
        &body.data,
        body.url.as_deref(),
        body.miniprogram.as_ref(),
        &body.audience.open_ids,
    )
    .map_err(ServiceError::Validation)?;
    create(actor, &state, &path, send, body.client_msg_id).await
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/subscribe-sends",
    operation_id = "sendSubscribeNotice",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = SubscribeBody, content_type = "application/json"),
    responses(
        (status = 202, description = "a new job (`\"created\": true`); read it at `.../template-sends/{job_id}`", body = CreatedTemplateSend),
        (status = 200, description = "the job an earlier request with this `client_msg_id` made", body = CreatedTemplateSend),
        (status = 400, description = "an unknown template, a field missing or too long, a bad page or audience", body = ErrorBody),
        (status = 413, description = "body over broadcasts.max_body_bytes", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_subscribe(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    LargeJsonBody(body): LargeJsonBody<SubscribeBody>,
) -> Result<HttpResponse, ServiceError> {
    let send = TemplateSend::parse(
        TemplateKind::Subscribe,
        &body.template_id,
        &body.data,
        body.page.as_deref(),
        body.miniprogram.as_ref(),
        &body.audience.open_ids,
    )
    .map_err(ServiceError::Validation)?;
    create(actor, &state, &path, send, body.client_msg_id).await
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/template-sends/{job_id}",
    operation_id = "getTemplateSend",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("job_id" = String, Path, description = "the job id the create route answered"),
        PageQuery,
    ),
    responses(
        (status = 200, description = "the job, its counts and a page of recipients with their status", body = JobView),
        JobErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ServiceError> {
    let (account, job_id) = path.into_inner();
    let job = templates::get_job(
        &state.services,
        &account_id(&account)?,
        &job_id,
        query.offset.unwrap_or(0),
        query.limit.unwrap_or(100),
    )
    .await?;
    Ok(HttpResponse::Ok().json(job))
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/template-sends/{job_id}/cancel",
    operation_id = "cancelTemplateSend",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("job_id" = String, Path, description = "the job id the create route answered"),
    ),
    responses(
        (status = 200, description = "the job: recipients not yet sent are never sent; it is `cancelled` once nothing is in flight. Cancelling again answers the same", body = JobView),
        (status = 409, description = "the job has nothing left to send", body = ErrorBody),
        JobErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, job_id) = path.into_inner();
    let job =
        templates::cancel_job(&state.services, &account_id(&account)?, &job_id, &actor).await?;
    Ok(HttpResponse::Ok().json(job))
}
