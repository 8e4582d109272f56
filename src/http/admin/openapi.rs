//! `GET /admin/v1/openapi.json`: the OpenAPI 3.1 description of the admin API, generated from
//! the handlers' `#[utoipa::path]` annotations, so it cannot drift from the routes silently.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::responses::TokenErrors;
use super::schemas::OpenApiDocument;
use crate::domain::access::Caller;
use crate::error::{ErrorBody, ErrorDetail};

/// The bearer scheme every admin route demands (`admin.tokens`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "wechat-gateway admin API"),
    paths(
        super::dead_letters::list_dead_letters,
        super::dead_letters::replay_dead_letter,
        super::qrcodes::create,
        super::menu::get,
        super::menu::put,
        super::menu::delete,
        super::menu::validate,
        super::menu::versions,
        super::menu::restore,
        super::menu::add_conditional,
        super::menu::delete_conditional,
        super::menu::try_match,
        super::replies::list,
        super::replies::create,
        super::replies::put,
        super::replies::delete,
        super::replies::get_welcome,
        super::replies::put_welcome,
        super::replies::delete_welcome,
        super::links::create,
        super::links::list,
        super::broadcasts::create,
        super::broadcasts::get,
        super::broadcasts::preview,
        super::broadcasts::delete,
        super::broadcasts::cancel,
        super::tags::create,
        super::tags::add_members,
        super::tags::remove_members,
        super::corp_tags::list,
        super::corp_tags::create,
        super::corp_tags::edit,
        super::corp_tags::delete,
        super::corp_tags::mark,
        super::group_chats::list,
        super::group_chats::get,
        super::group_chats::create_join_way,
        super::syncs::start,
        super::syncs::get,
        super::syncs::cancel,
        super::tags::list,
        super::tags::rename,
        super::tags::delete,
        super::tags::user_tags,
        super::h5::jsapi_signature,
        super::templates::list,
        super::templates::create_template,
        super::templates::create_subscribe,
        super::templates::get,
        super::templates::cancel,
        super::messages::send,
        super::messages::typing,
        super::media::upload,
        super::media::article_image,
        super::media::delete_material,
        super::media::add_draft,
        super::media::get_draft,
        super::media::delete_draft,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags((name = "admin", description = "operator routes under /admin/v1"))
)]
pub struct AdminApi;

/// `GET /admin/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/admin/v1/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "admin",
    responses(
        (status = 200, description = "the OpenAPI document of the admin API", body = OpenApiDocument),
        TokenErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn openapi_json(_caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(AdminApi::openapi())
}
