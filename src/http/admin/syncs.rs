//! The audience sync routes of the admin API, under `/admin/v1/accounts/{account}/syncs`:
//! start a sync, read its progress, through [`crate::services::sync`].

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::{IntoResponses, ToSchema};

use super::extract::{Actor, JsonBody};
use super::responses::AccountErrors;
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::sync::{self, SyncView};

/// The token, then the account and the sync: `GET .../syncs/{sync_id}`.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum SyncErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "`forbidden`: the token's scope does not allow this account"
    )]
    Forbidden(ErrorBody),
    #[response(status = 404, description = "unknown account or sync")]
    UnknownSync(ErrorBody),
    #[response(status = 503, description = "the store is unavailable: retry later")]
    Unavailable(ErrorBody),
}

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/syncs", web::post().to(start))
        .route("/accounts/{account}/syncs/{sync_id}", web::get().to(get))
        .route(
            "/accounts/{account}/syncs/{sync_id}/cancel",
            web::post().to(cancel),
        )
}

/// What to sync.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StartSyncBody)]
pub(crate) struct Body {
    /// `followers` on an Official Account, `external_contacts` on WeCom.
    #[schema(pattern = "^(followers|external_contacts)$")]
    kind: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/syncs",
    operation_id = "startSync",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 202, description = "started: `{\"sync_id\", \"status\": \"running\", ...}`; the runner reads the audience in the background", body = SyncView),
        (status = 400, description = "a kind that is not the platform's (`followers` on an Official Account, `external_contacts` on WeCom)", body = ErrorBody),
        (status = 409, description = "`conflict`: a sync is running on this account (one at a time)", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn start(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Body>,
) -> Result<HttpResponse, ServiceError> {
    let view = sync::start_sync(&state.services, &account_id(&path)?, &actor, &body.kind).await?;
    Ok(HttpResponse::Accepted().json(view))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/syncs/{sync_id}",
    operation_id = "getSync",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("sync_id" = String, Path, description = "the sync id the start route answered"),
    ),
    responses(
        (status = 200, description = "`{\"sync_id\", \"status\", \"pages\", \"users\", \"failures\", ...}`", body = SyncView),
        SyncErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, sync_id) = path.into_inner();
    let view = sync::get_sync(&state.services, &account_id(&account)?, &sync_id).await?;
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/syncs/{sync_id}/cancel",
    operation_id = "cancelSync",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("sync_id" = String, Path, description = "the sync id the start route answered"),
    ),
    responses(
        (status = 200, description = "the sync, `\"status\": \"cancelled\"` (again: the same)", body = SyncView),
        (status = 409, description = "`conflict`: the sync has finished or failed: nothing to cancel", body = ErrorBody),
        SyncErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, sync_id) = path.into_inner();
    let view = sync::cancel_sync(&state.services, &account_id(&account)?, &actor, &sync_id).await?;
    Ok(HttpResponse::Ok().json(view))
}
