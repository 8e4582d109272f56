//! The tracked-link routes of the admin API: create a link and list an account's links
//! (`POST`/`GET /admin/v1/accounts/{account}/links`), through [`crate::services::links`]. The
//! public routes a follower opens (`/l/...`) are `crate::http::links`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::AccountErrors;
use crate::error::ErrorBody;
use crate::error::ServiceError;
use crate::http::AppState;
use crate::services::account_id;
use crate::services::links;

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope.service(
        web::resource("/accounts/{account}/links")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
}

/// The JSON body of `POST .../links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateLinkBody)]
pub(crate) struct Body {
    /// An https URL on one of `links.allowed_domains` (or a subdomain of one).
    target: String,
    #[serde(default)]
    label: String,
}

/// A tracked link.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Link {
    code: String,
    /// The short URL to hand out: `<links.public_base_url>/l/<account>/<code>`.
    url: String,
    target: String,
    label: String,
}

impl From<links::CreatedLink> for Link {
    fn from(l: links::CreatedLink) -> Self {
        Self {
            code: l.code,
            url: l.url,
            target: l.target,
            label: l.label,
        }
    }
}

/// The links of an account, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LinkList {
    links: Vec<Link>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/links",
    operation_id = "createLink",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 200, description = "the link created", body = Link),
        (status = 400, description = "a target off the allowed domains, not https, with userinfo or a port; a bad label", body = ErrorBody),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<Body>,
) -> Result<HttpResponse, ServiceError> {
    let link = links::create_link(
        &state.services,
        &account_id(&path)?,
        &actor,
        &body.target,
        &body.label,
    )
    .await?;
    Ok(HttpResponse::Ok().json(Link::from(link)))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/links",
    operation_id = "listLinks",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    responses(
        (status = 200, description = "the links, oldest first", body = LinkList),
        AccountErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ServiceError> {
    let all = links::list_links(&state.services, &account_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(LinkList {
        links: all.into_iter().map(Link::from).collect(),
    }))
}
