//! The callback path's error type and its one mapping to HTTP status, in the order WeChat's
//! reply rules need: forged or stale → 401; unreadable → 400; unknown account → 404;
//! not stored → 503 so WeChat retries. The match is exhaustive on purpose: a new variant does
//! not build until its status is decided.
//!
//! The use cases' error type ([`ServiceError`]: what `crate::services` answers, and what the
//! admin API and the gRPC `Gateway` service answer in turn) and its two maps, to HTTP and to
//! `tonic::Status`, side by side and exhaustive.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use thiserror::Error;
use utoipa::ToSchema;

use crate::domain::Untrusted;
use crate::store::StoreError;
use crate::wechat::api::ApiError;
use crate::wechat::envelope::EnvelopeError;
use crate::wechat::tokens::TokenError;
use crate::wechat::xml::XmlError;

#[derive(Debug, Error)]
pub enum CallbackError {
    #[error("unknown account \"{}\"", Untrusted(.0))]
    UnknownAccount(String),
    #[error("this endpoint is for {expected} accounts; \"{}\" is not one", Untrusted(.account))]
    WrongPlatform {
        account: String,
        expected: &'static str,
    },
    /// The request did not open: its query, clock, signature or encryption.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The message of a plain request (a decrypted one that does not read is
    /// [`EnvelopeError::Undecryptable`], so that it names nothing).
    #[error("cannot parse XML: {0}")]
    Xml(#[from] XmlError),
    /// A plain-mode `signature` that came before with another body
    /// (`crate::services::plain_signatures`): a forgery under a captured signature.
    #[error("this signature was already used with another body")]
    SignatureReused,
    #[error("the event could not be stored; WeChat will retry: {0}")]
    Store(#[from] StoreError),
    /// Over a concurrency limit (`callbacks.max_in_flight*`): refused before anything was read
    /// or stored, so that WeChat retries instead of waiting past its 5-second deadline.
    #[error("too many callbacks in flight for this {}; WeChat will retry", .0.as_str())]
    Overloaded(LimitScope),
    /// The body was not complete within `http.body_timeout_ms` (`crate::http::body`).
    #[error("the request body was not complete within http.body_timeout_ms")]
    BodyTimeout,
}

/// Which concurrency limit refused a callback (`crate::http::limits`): the instance's, or one
/// account's. Here, below the HTTP adapter, because [`CallbackError::Overloaded`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Account,
    Instance,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Instance => "instance",
        }
    }
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownAccount(_) | Self::WrongPlatform { .. } => StatusCode::NOT_FOUND,
            Self::Envelope(e) => match e {
                EnvelopeError::BadSignature | EnvelopeError::StaleTimestamp { .. } => {
                    StatusCode::UNAUTHORIZED
                }
                EnvelopeError::MissingParam(_)
                | EnvelopeError::DuplicateParam(_)
                | EnvelopeError::BadTimestamp(_)
                | EnvelopeError::ModeRefused(_)
                | EnvelopeError::Xml(_)
                | EnvelopeError::Undecryptable => StatusCode::BAD_REQUEST,
            },
            Self::Xml(_) => StatusCode::BAD_REQUEST,
            Self::SignatureReused => StatusCode::UNAUTHORIZED,
            Self::Store(_) | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}

impl CallbackError {
    /// Short label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::UnknownAccount(_) | Self::WrongPlatform { .. } => "unknown_account",
            Self::Envelope(e) => match e {
                EnvelopeError::MissingParam(_)
                | EnvelopeError::DuplicateParam(_)
                | EnvelopeError::BadTimestamp(_)
                | EnvelopeError::ModeRefused(_) => "bad_request",
                EnvelopeError::BadSignature => "bad_signature",
                EnvelopeError::StaleTimestamp { .. } => "stale",
                EnvelopeError::Xml(_) => "bad_xml",
                EnvelopeError::Undecryptable => "bad_encryption",
            },
            Self::Xml(_) => "bad_xml",
            Self::SignatureReused => "reused_signature",
            Self::Store(_) => "store_unavailable",
            Self::Overloaded(_) => "overloaded",
            Self::BodyTimeout => "body_timeout",
        }
    }
}

/// The use cases' error type: every way a use case (`crate::services`) or the door in front of
/// it (token, request body, account id) can refuse, for the admin API and the gRPC `Gateway`
/// service alike, so that no handler writes an error of its own. Every HTTP answer is `{"error": {"code",
/// "message"}}` with the status the contract fixes (400 validation, 401 token, 403 outside the token's scope, 404 unknown, 409
/// conflict, 413 body too large, 502 WeChat refused, 503 store); WeChat being away is 503 (busy)
/// or 504 (unreachable). Exhaustive, like the callback map, so a new variant must pick its HTTP
/// status and its gRPC code here.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("missing or malformed Authorization header: expected \"Bearer <token>\"")]
    MissingToken,
    #[error("the bearer token is not one of admin.tokens")]
    BadToken,
    /// A valid token outside its scope (`accounts`, `read_only`): the message says which rule
    /// refused, never the token.
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{0}")]
    Validation(String),
    /// The request body is over the limit named (a setting such as `http.max_body_bytes`).
    #[error("the request body is larger than {limit}")]
    PayloadTooLarge { limit: &'static str },
    /// The body was not complete within `http.body_timeout_ms` (`crate::http::body`).
    #[error("the request body was not complete within http.body_timeout_ms")]
    BodyTimeout,
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already, or this request lost a race for it (try again).
    #[error("{0}")]
    Conflict(String),
    /// The state of the thing does not allow this (a finished job cannot be cancelled): the
    /// same 409 over HTTP, but `FAILED_PRECONDITION` over gRPC, since nothing "already exists".
    #[error("{0}")]
    Precondition(String),
    /// A customer-service message to a follower whose last interaction is more than 48 hours
    /// ago (or unknown): refused before calling WeChat, and WeChat's own 45015 ("response out of
    /// time limit") answered the same. 409 over HTTP, `FAILED_PRECONDITION` over gRPC.
    #[error("{0}")]
    OutsideWindow(String),
    /// A WeChat API call failed; the variant says how.
    #[error("{0}")]
    WeChat(#[from] ApiError),
    /// Another instance is refreshing the access token and did not finish in time.
    #[error("{0}")]
    TokenUnavailable(String),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl From<TokenError> for ServiceError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Api(e) => Self::WeChat(e),
            TokenError::Store(e) => Self::Store(e),
            e @ TokenError::Wait(_) => Self::TokenUnavailable(e.to_string()),
        }
    }
}

impl ServiceError {
    /// The answer for an account id that names no configured account. An id that does not even
    /// parse as an `AccountId` gets this answer too: it cannot be configured, so it is unknown.
    pub fn unknown_account(id: &str) -> Self {
        Self::NotFound(format!("unknown account \"{}\"", Untrusted(id)))
    }

    /// The machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::BadToken => "invalid_token",
            Self::Forbidden(_) => "forbidden",
            Self::Validation(_) => "invalid_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::NotFound(_) => "not_found",
            // One code for both 409s: HTTP clients already match on it.
            Self::Conflict(_) | Self::Precondition(_) => "conflict",
            Self::OutsideWindow(_) => "outside_window",
            Self::WeChat(e) => match e {
                ApiError::TokenRejected { .. } => "wechat_token_rejected",
                ApiError::QuotaExceeded { .. } => "wechat_quota_exceeded",
                ApiError::IpNotWhitelisted { .. } => "wechat_ip_not_whitelisted",
                ApiError::Busy { .. } => "wechat_busy",
                ApiError::Refused { .. } => "wechat_error",
                ApiError::Unreachable { .. } => "wechat_unreachable",
                ApiError::BadResponse(_) => "wechat_bad_response",
            },
            Self::TokenUnavailable(_) => "token_unavailable",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// The gRPC map: the same decisions as [`ResponseError`] below, in `tonic::Code`s. The
/// machine-readable code travels in the `wgw-error-code` metadata.
impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        use tonic::Code;
        let code = match &e {
            ServiceError::MissingToken | ServiceError::BadToken => Code::Unauthenticated,
            ServiceError::Forbidden(_) => Code::PermissionDenied,
            ServiceError::Validation(_) => Code::InvalidArgument,
            // What tonic itself answers for a message over `max_decoding_message_size`.
            ServiceError::PayloadTooLarge { .. } => Code::OutOfRange,
            // HTTP only (gRPC has its own stream deadlines); the nearest code, should one cross.
            ServiceError::BodyTimeout => Code::DeadlineExceeded,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::Conflict(_) => Code::AlreadyExists,
            ServiceError::Precondition(_) | ServiceError::OutsideWindow(_) => {
                Code::FailedPrecondition
            }
            ServiceError::WeChat(api) => match api {
                // Already retried once with a fresh token.
                ApiError::TokenRejected { .. } => Code::Unavailable,
                ApiError::QuotaExceeded { .. } => Code::ResourceExhausted,
                ApiError::IpNotWhitelisted { .. } | ApiError::Refused { .. } => {
                    Code::FailedPrecondition
                }
                ApiError::Busy { .. } | ApiError::Unreachable { .. } => Code::Unavailable,
                ApiError::BadResponse(_) => Code::Internal,
            },
            ServiceError::TokenUnavailable(_) | ServiceError::Store(_) => Code::Unavailable,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Ok(value) = e.code().parse() {
            status.metadata_mut().insert("wgw-error-code", value);
        }
        status
    }
}

impl ResponseError for ServiceError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::Precondition(_) | Self::OutsideWindow(_) => {
                StatusCode::CONFLICT
            }
            Self::WeChat(e) => match e {
                ApiError::TokenRejected { .. }
                | ApiError::QuotaExceeded { .. }
                | ApiError::IpNotWhitelisted { .. }
                | ApiError::Refused { .. }
                | ApiError::BadResponse(_) => StatusCode::BAD_GATEWAY,
                ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ApiError::Unreachable { .. } => StatusCode::GATEWAY_TIMEOUT,
            },
            Self::TokenUnavailable(_) | Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::MissingToken | Self::BadToken) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(ErrorBody::new(self.code(), self.to_string()))
    }
}

/// The body of every admin error answer, `{"error": {"code", "message"}}`, written by the HTTP
/// map above; here beside it so that this module needs nothing of the HTTP adapter (whose
/// OpenAPI error sets name it).
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

impl ErrorBody {
    pub(crate) fn new(code: &str, message: String) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Machine-readable, e.g. `invalid_request`, `missing_token`, `not_found`, `wechat_error`.
    code: String,
    /// For people; on a WeChat refusal it carries WeChat's errcode and errmsg.
    message: String,
}
