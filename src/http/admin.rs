//! The admin API under `/admin/v1`, for operators. Every route requires a bearer token from
//! `admin.tokens`; the token's name is the actor recorded in logs.
//!
//! Issue 2 brings the dead-letter routes: events the CRM refused, to inspect and replay;
//! issue 3 the QR codes ([`super::admin_qrcodes`]); issue 4 the menus ([`super::admin_menu`]).

use actix_web::body::EitherBody;
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::openapi::{ErrorBody, StoreErrors, TokenErrors};
use super::AppState;
use crate::domain::match_token;
use crate::error::AdminError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    let scope = web::scope("/admin/v1")
        .route("/openapi.json", web::get().to(super::openapi::openapi_json))
        .route("/dead-letters", web::get().to(list_dead_letters))
        .route(
            "/dead-letters/{event_id}/replay",
            web::post().to(replay_dead_letter),
        );
    let scope = super::links::admin_routes(scope);
    cfg.service(
        super::admin_replies::routes(super::admin_tags::routes(super::admin_broadcasts::routes(
            super::admin_menu::routes(super::admin_qrcodes::routes(scope)),
        )))
        // Unknown admin paths still demand a token first, so they reveal nothing.
        .default_service(web::to(not_found))
        .wrap(ErrorHandlers::new().handler(StatusCode::PAYLOAD_TOO_LARGE, too_large_as_json)),
    );
}

/// actix answers an oversize body itself, in plain text; the admin API answers JSON everywhere.
fn too_large_as_json<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let body = HttpResponse::PayloadTooLarge().json(serde_json::json!({
        "error": {
            "code": "payload_too_large",
            "message": "the request body is larger than http.max_body_bytes",
        }
    }));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, body).map_body(|_, b| EitherBody::right(b)),
    ))
}

/// Parses an admin request body; every admin route answers a bad one the same way (400).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|e| AdminError::Validation(format!("invalid JSON body: {e}")))
}

/// The authenticated operator: the `name` of the admin token presented.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl FromRequest for Actor {
    type Error = AdminError;
    type Future = std::future::Ready<Result<Self, AdminError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Actor, AdminError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the App");
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AdminError::MissingToken)?;
    let presented = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AdminError::MissingToken)?;
    let tokens = state
        .admin_tokens
        .iter()
        .map(|t| (t.name.as_str(), &t.token));
    match_token(tokens, presented)
        .map(|name| Actor(name.to_owned()))
        .ok_or(AdminError::BadToken)
}

async fn not_found(_actor: Actor, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    Err(AdminError::NotFound(format!(
        "no admin route {} {}",
        req.method(),
        req.path()
    )))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// How many, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// `GET /admin/v1/dead-letters?limit=N`: events the CRM refused, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/dead-letters",
    tag = "admin",
    params(ListQuery),
    responses(
        (status = 200, description = "`{\"dead_letters\": [{\"event_id\", \"account_id\", \"reason\", \"failed_at\", \"event\"}]}`", body = Object),
        (status = 400, description = "limit out of range", body = ErrorBody),
        TokenErrors,
        StoreErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_dead_letters(
    actor: Actor,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, AdminError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::Validation(format!(
            "limit must be 1 to 1000, got {limit}"
        )));
    }
    let letters = state.store.dead_letters(limit).await?;
    tracing::info!(actor = %actor.0, count = letters.len(), "dead letters listed");
    let items: Vec<_> = letters
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "event_id": d.event.id,
                "account_id": d.event.account_id,
                "reason": d.reason,
                "failed_at": d.failed_at,
                "event": d.event,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dead_letters": items })))
}

/// `POST /admin/v1/dead-letters/{event_id}/replay`: back into the outbox, same id.
#[utoipa::path(
    post,
    path = "/admin/v1/dead-letters/{event_id}/replay",
    tag = "admin",
    params(("event_id" = String, Path, description = "the dead letter's event id")),
    responses(
        (status = 200, description = "`{\"event_id\", \"replayed\": true}`", body = Object),
        (status = 404, description = "no such dead letter", body = ErrorBody),
        TokenErrors,
        StoreErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay_dead_letter(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id = path.into_inner();
    if !state.store.replay_dead_letter(&id).await? {
        return Err(AdminError::NotFound(format!(
            "no dead letter with event id {id:?}"
        )));
    }
    tracing::info!(actor = %actor.0, event_id = %id, "dead letter replayed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "event_id": id, "replayed": true })))
}
