//! The dead-letter routes of the admin API: events the CRM refused, to inspect
//! (`GET /admin/v1/dead-letters`) and to put back into the outbox
//! (`POST /admin/v1/dead-letters/{event_id}/replay`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::extract::Actor;
use super::responses::{StoreErrors, TokenErrors};
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/dead-letters", web::get().to(list_dead_letters))
        .route(
            "/dead-letters/{event_id}/replay",
            web::post().to(replay_dead_letter),
        )
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
) -> Result<HttpResponse, ServiceError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ServiceError::Validation(format!(
            "limit must be 1 to 1000, got {limit}"
        )));
    }
    let letters = state.store.dead_letters(limit).await?;
    tracing::info!(actor = %actor, count = letters.len(), "dead letters listed");
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
) -> Result<HttpResponse, ServiceError> {
    let id = path.into_inner();
    if !state.store.replay_dead_letter(&id).await? {
        return Err(ServiceError::NotFound(format!(
            "no dead letter with event id {:?}",
            crate::domain::Untrusted(&id)
        )));
    }
    tracing::info!(actor = %actor, event_id = %id, "dead letter replayed");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "event_id": id, "replayed": true })))
}
