//! The callback path's error type and its one mapping to HTTP status, in the order WeChat's
//! reply rules need: forged or stale → 401; unreadable → 400; unknown account → 404;
//! not stored → 503 so WeChat retries. The match is exhaustive on purpose: a new variant does
//! not build until its status is decided.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use thiserror::Error;

use crate::store::StoreError;
use crate::wechat::crypto::CryptoError;
use crate::wechat::xml::XmlError;

#[derive(Debug, Error)]
pub enum CallbackError {
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    #[error("this endpoint is for {expected} accounts; {account:?} is not one")]
    WrongPlatform {
        account: String,
        expected: &'static str,
    },
    #[error("missing query parameter {0:?}")]
    MissingParam(&'static str),
    #[error("signature does not verify")]
    BadSignature,
    #[error("timestamp {0:?} is not a number of seconds")]
    BadTimestamp(String),
    #[error(
        "timestamp is {skew_seconds} s away from the gateway's clock (allowed: {max_seconds} s)"
    )]
    StaleTimestamp { skew_seconds: u64, max_seconds: u64 },
    #[error("{0}")]
    ModeRefused(&'static str),
    #[error("cannot parse XML: {0}")]
    Xml(#[from] XmlError),
    #[error("cannot decrypt: {0}")]
    Decrypt(#[from] CryptoError),
    #[error("the event could not be stored; WeChat will retry: {0}")]
    Store(#[from] StoreError),
}

impl ResponseError for CallbackError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::UnknownAccount(_) | Self::WrongPlatform { .. } => StatusCode::NOT_FOUND,
            Self::BadSignature | Self::StaleTimestamp { .. } => StatusCode::UNAUTHORIZED,
            Self::MissingParam(_)
            | Self::BadTimestamp(_)
            | Self::ModeRefused(_)
            | Self::Xml(_)
            | Self::Decrypt(_) => StatusCode::BAD_REQUEST,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::MissingParam(_) | Self::BadTimestamp(_) | Self::ModeRefused(_) => "bad_request",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp { .. } => "stale",
            Self::Xml(_) => "bad_xml",
            Self::Decrypt(_) => "bad_encryption",
            Self::Store(_) => "store_unavailable",
        }
    }
}

/// The admin API's error type. Every answer is `{"error": {"code", "message"}}` with the status
/// the contract fixes (400 validation, 401 token, 404 unknown, 409 conflict, 502 WeChat, 503
/// store). Exhaustive, like the callback map, so a new variant must pick its status here.
#[derive(Debug, Error)]
pub enum AdminError {
    #[error("missing or malformed Authorization header: expected \"Bearer <token>\"")]
    MissingToken,
    #[error("the bearer token is not one of admin.tokens")]
    BadToken,
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("WeChat refused: errcode {errcode}: {errmsg}")]
    WeChat { errcode: i64, errmsg: String },
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl AdminError {
    /// The machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::BadToken => "invalid_token",
            Self::Validation(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::WeChat { .. } => "wechat_error",
            Self::Store(_) => "store_unavailable",
        }
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::WeChat { .. } => StatusCode::BAD_GATEWAY,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::MissingToken | Self::BadToken) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        }))
    }
}
