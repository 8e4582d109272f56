//! What the admin API answers when it refuses: the error sets the handlers' OpenAPI annotations
//! share (each describing [`ErrorBody`], which lives beside the one HTTP map of
//! [`ServiceError`] in `crate::error`), and the answer to a path no route serves.

use actix_web::{HttpRequest, HttpResponse};
use utoipa::IntoResponses;

use crate::domain::access::Caller;
use crate::error::ErrorBody;
use crate::error::ServiceError;

// The error sets for `responses(...)`: a handler lists its success response, the sets that
// apply, then the errors that are its own, so that an answer many routes share is described
// once. The variants only describe responses (handlers answer `ServiceError`): nothing builds one.

/// The token: every admin route.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum TokenErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "`forbidden`: the token's scope does not allow this (its `accounts`, or \
                       `read_only` and a method other than GET)"
    )]
    Forbidden(ErrorBody),
}

/// The token, then the account: every `/accounts/{account}/...` route.
#[derive(IntoResponses)]
#[expect(dead_code, reason = "describes responses; nothing builds it")]
pub(crate) enum AccountErrors {
    #[response(status = 401, description = "no or bad token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "`forbidden`: the token's scope does not allow this (its `accounts`, or \
                       `read_only` and a method other than GET)"
    )]
    Forbidden(ErrorBody),
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

/// Any path under `/admin/v1` that no route serves: a 404, after the token like every route.
pub(super) async fn unknown_route(
    _caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ServiceError> {
    Err(ServiceError::NotFound(format!(
        "no admin route {} {}",
        req.method(),
        req.path()
    )))
}
