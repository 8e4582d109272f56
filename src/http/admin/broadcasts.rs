//! The broadcast routes of the admin API, under
//! `/admin/v1/accounts/{account}/broadcasts`: create a job, read it, cancel it, preview a
//! message, delete the sent articles, through [`crate::services::broadcast`].
//!
//! A broadcast body can list hundreds of thousands of openids, far over `http.max_body_bytes`
//! (sized for callbacks): the create route takes its body within `broadcasts.max_body_bytes`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody, LargeJsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use super::schemas::{BroadcastAudience, BroadcastMessage};
use crate::domain::broadcast::Broadcast;
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::broadcast::{self, JobView, SendBroadcast};

/// The token, then the account and the job: every `/broadcasts/{job_id}` route.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum JobErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "unknown account or job")]
    UnknownJob(ErrorBody),
    #[response(status = 503, description = "the store is unavailable: retry later")]
    Unavailable(ErrorBody),
}

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/broadcasts", web::post().to(create))
        .route(
            "/accounts/{account}/broadcasts/preview",
            web::post().to(preview),
        )
        .route(
            "/accounts/{account}/broadcasts/{job_id}",
            web::get().to(get),
        )
        .route(
            "/accounts/{account}/broadcasts/{job_id}",
            web::delete().to(delete),
        )
        .route(
            "/accounts/{account}/broadcasts/{job_id}/cancel",
            web::post().to(cancel),
        )
}

/// The create body, as the contract shows it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendBroadcastBody)]
pub(crate) struct Body {
    #[schema(value_type = BroadcastAudience)]
    audience: Value,
    #[schema(value_type = BroadcastMessage)]
    message: Value,
    /// Makes the request idempotent: the same id again answers the same job.
    client_msg_id: Option<String>,
}

/// A job answered to its create request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedBroadcast {
    #[serde(flatten)]
    job: JobView,
    /// False when an earlier request with this `client_msg_id` made the job.
    created: bool,
}

/// A preview sent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PreviewSent {
    open_id: String,
    /// WeChat's msg_id of the preview, when it gave one.
    msg_id: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/broadcasts",
    operation_id = "sendBroadcast",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 202, description = "a new job: `{\"job_id\", \"status\", \"batches\": [...], \"created\": true}`", body = CreatedBroadcast),
        (status = 200, description = "the job an earlier request with this `client_msg_id` made (`\"created\": false`)", body = CreatedBroadcast),
        (status = 400, description = "invalid audience or message (a one-person audience included)", body = ErrorBody),
        (status = 413, description = "body over broadcasts.max_body_bytes", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    LargeJsonBody(body): LargeJsonBody<Body>,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    let platform = state.services.account(&account)?.platform;
    let broadcast = Broadcast::parse(platform, &body.audience, &body.message)
        .map_err(ServiceError::Validation)?;
    let (job, created) = broadcast::create_job(
        &state.services,
        &account,
        &actor,
        SendBroadcast {
            broadcast,
            client_msg_id: body.client_msg_id,
        },
    )
    .await?;
    let answer = CreatedBroadcast { job, created };
    Ok(if created {
        HttpResponse::Accepted().json(answer)
    } else {
        HttpResponse::Ok().json(answer)
    })
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/broadcasts/{job_id}",
    operation_id = "getBroadcast",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("job_id" = String, Path, description = "the job id the create route answered"),
    ),
    responses(
        (status = 200, description = "`{\"job_id\", \"status\", \"batches\": [{\"msg_id\", \"status\", \"total\", \"sent\", \"errors\", ...}]}`", body = JobView),
        JobErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, job_id) = path.into_inner();
    let job = broadcast::get_job(&state.services, &account_id(&account)?, &job_id).await?;
    Ok(HttpResponse::Ok().json(job))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PreviewBroadcastBody)]
pub(crate) struct PreviewBody {
    open_id: String,
    #[schema(value_type = BroadcastMessage)]
    message: Value,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/broadcasts/preview",
    operation_id = "previewBroadcast",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = PreviewBody, content_type = "application/json"),
    responses(
        (status = 200, description = "`{\"open_id\", \"msg_id\"}`: sent to that follower only (mass/preview)", body = PreviewSent),
        (status = 400, description = "invalid openid or message, or a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn preview(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<PreviewBody>,
) -> Result<HttpResponse, ServiceError> {
    let msg_id = broadcast::preview(
        &state.services,
        &account_id(&path)?,
        &body.open_id,
        &body.message,
    )
    .await?;
    tracing::info!(actor = %actor, "broadcast previewed");
    Ok(HttpResponse::Ok().json(PreviewSent {
        open_id: body.open_id,
        msg_id,
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/broadcasts/{job_id}",
    operation_id = "deleteBroadcast",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("job_id" = String, Path, description = "the job id the create route answered"),
    ),
    responses(
        (status = 200, description = "the job, every sent batch `\"deleted\": true` (mass/delete)", body = JobView),
        (status = 400, description = "not an mpnews or mpvideo job, or a WeCom account", body = ErrorBody),
        (status = 409, description = "the job is still sending", body = ErrorBody),
        JobErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, job_id) = path.into_inner();
    let job = broadcast::delete_job(&state.services, &account_id(&account)?, &job_id).await?;
    tracing::info!(actor = %actor, job_id = %job_id, "broadcast deleted");
    Ok(HttpResponse::Ok().json(job))
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/broadcasts/{job_id}/cancel",
    operation_id = "cancelBroadcast",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("job_id" = String, Path, description = "the job id the create route answered"),
    ),
    responses(
        (status = 200, description = "the job: queued batches `\"cancelled\"`, a batch being sent still `\"sending\"` (its attempt finishes and its result is kept); the job is `\"cancelled\"` once nothing is pending. Cancelling again answers the same", body = JobView),
        (status = 409, description = "the job has nothing left to send (sent, finished or failed)", body = ErrorBody),
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
        broadcast::cancel_job(&state.services, &account_id(&account)?, &job_id, &actor).await?;
    Ok(HttpResponse::Ok().json(job))
}
