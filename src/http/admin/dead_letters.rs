//! The dead-letter routes of the admin API: events the CRM refused, to inspect
//! (`GET /admin/v1/dead-letters`) and to put back into the outbox
//! (`POST /admin/v1/dead-letters/{event_id}/replay`).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Actor;
use super::responses::{StoreErrors, TokenErrors};
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::pb;
use crate::store::DeadLetter;

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

/// The answer of the listing: oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    dead_letters: Vec<DeadLetterEntry>,
}

/// One event the CRM refused.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterEntry {
    event_id: String,
    account_id: String,
    /// Why the CRM refused it.
    reason: String,
    /// Unix seconds when it was dead-lettered.
    failed_at: u64,
    /// The event in the proto3 JSON mapping of `wechat_gateway.v1.Event`, as the stdout sink
    /// writes it.
    #[schema(value_type = super::schemas::Event)]
    event: pb::Event,
}

impl From<DeadLetter> for DeadLetterEntry {
    fn from(d: DeadLetter) -> Self {
        Self {
            event_id: d.event.id.clone(),
            account_id: d.event.account_id.clone(),
            reason: d.reason,
            failed_at: d.failed_at,
            event: d.event,
        }
    }
}

/// The answer of a replay.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Replayed {
    event_id: String,
    /// Always true.
    replayed: bool,
}

/// `GET /admin/v1/dead-letters?limit=N`: events the CRM refused, oldest first.
#[utoipa::path(
    get,
    path = "/admin/v1/dead-letters",
    operation_id = "listDeadLetters",
    tag = "admin",
    params(ListQuery),
    responses(
        (status = 200, description = "the dead letters, oldest first", body = DeadLetterList),
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
    Ok(HttpResponse::Ok().json(DeadLetterList {
        dead_letters: letters.into_iter().map(DeadLetterEntry::from).collect(),
    }))
}

/// `POST /admin/v1/dead-letters/{event_id}/replay`: back into the outbox, same id.
#[utoipa::path(
    post,
    path = "/admin/v1/dead-letters/{event_id}/replay",
    operation_id = "replayDeadLetter",
    tag = "admin",
    params(("event_id" = String, Path, description = "the dead letter's event id")),
    responses(
        (status = 200, description = "back in the outbox", body = Replayed),
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
    Ok(HttpResponse::Ok().json(Replayed {
        event_id: id,
        replayed: true,
    }))
}
