//! `GET /admin/v1/openapi.json`: the OpenAPI 3.1 description of the admin API, generated from
//! the handlers' `#[utoipa::path]` annotations, so it cannot drift from the routes silently.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

use super::admin::Actor;

/// Every admin error: `{"error": {"code", "message"}}` (see `crate::error::AdminError`).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_request`, `missing_token`, `not_found`, `wechat_error`.
    code: String,
    /// For people; on a WeChat refusal it carries WeChat's errcode and errmsg.
    message: String,
}

// The error sets for `responses(...)`: a handler lists its success response, the sets that
// apply, then the errors that are its own, so that an answer many routes share is described
// once. The variants only describe responses (handlers answer `AdminError`): nothing builds one.

/// The token: every admin route.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum TokenErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
}

/// The token, then the account: every `/accounts/{account}/...` route.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum AccountErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "unknown account")]
    UnknownAccount(ErrorBody),
    #[response(status = 503, description = "the store is unavailable: retry later")]
    Unavailable(ErrorBody),
}

/// The store: the routes outside `/accounts/{account}` that read or write it.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum StoreErrors {
    #[response(status = 503, description = "the store is unavailable: retry later")]
    Unavailable(ErrorBody),
}

/// WeChat's refusal: the routes that call the WeChat API.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum WeChatErrors {
    #[response(
        status = 502,
        description = "WeChat refused (its errcode and errmsg in the message)"
    )]
    Refused(ErrorBody),
    #[response(
        status = 503,
        description = "WeChat is busy (-1 after the retries), the account's access token cannot be \
                       fetched, or the store is unavailable: retry later"
    )]
    Busy(ErrorBody),
    #[response(
        status = 504,
        description = "WeChat did not answer within wechat.timeout_ms"
    )]
    Unreachable(ErrorBody),
}

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
        super::admin::list_dead_letters,
        super::admin::replay_dead_letter,
        super::admin_qrcodes::create,
        super::admin_menu::get,
        super::admin_menu::put,
        super::admin_menu::delete,
        super::admin_menu::validate,
        super::admin_menu::versions,
        super::admin_menu::restore,
        super::admin_menu::add_conditional,
        super::admin_menu::delete_conditional,
        super::admin_menu::try_match,
        super::admin_replies::list,
        super::admin_replies::create,
        super::admin_replies::put,
        super::admin_replies::delete,
        super::admin_replies::get_welcome,
        super::admin_replies::put_welcome,
        super::admin_replies::delete_welcome,
        super::links::create,
        super::links::list,
        super::admin_broadcasts::create,
        super::admin_broadcasts::get,
        super::admin_broadcasts::preview,
        super::admin_broadcasts::delete,
        super::admin_broadcasts::cancel,
        super::admin_tags::create,
        super::admin_tags::add_members,
        super::admin_tags::remove_members,
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
    tag = "admin",
    responses(
        (status = 200, description = "the OpenAPI document of the admin API", body = Object),
        TokenErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn openapi_json(_actor: Actor) -> HttpResponse {
    HttpResponse::Ok().json(AdminApi::openapi())
}
