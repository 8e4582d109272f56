//! The admin handlers' extractors: who is asking (the domain [`Actor`], from the bearer token,
//! allowed by the token's scope for the route's `{account}` and the method; or just the
//! authenticated [`Caller`] where no account is concerned) and what they sent ([`JsonBody`] within `http.max_body_bytes`, [`LargeJsonBody`] within
//! `broadcasts.max_body_bytes`). Each one fails with a `ServiceError`, so a refused request is
//! answered in the admin API's JSON shape like any other error.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::domain::access::{bearer, match_token, Access, Caller};
pub(crate) use crate::domain::Actor;
use crate::error::ServiceError;
use crate::http::{body, AppState};
use crate::services::authorize;

/// The authenticated operator: the `name` of the admin token presented, when its scope allows
/// this request: the account of the path (`{account}`; a route without one spans every account)
/// and the method (GET and HEAD read; every other method writes).
impl FromRequest for Actor {
    type Error = ServiceError;
    type Future = Ready<Result<Self, ServiceError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|caller| {
            let access = match *req.method() {
                Method::GET | Method::HEAD => Access::Read,
                _ => Access::Write,
            };
            let route = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
            authorize(
                &caller,
                req.match_info().get("account"),
                access,
                &format!("{} {route}", req.method()),
            )
        }))
    }
}

/// Any valid admin token, whatever its scope: for what concerns no account's data (the OpenAPI
/// document, the 404 of an unknown admin path).
impl FromRequest for Caller {
    type Error = ServiceError;
    type Future = Ready<Result<Self, ServiceError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ServiceError> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(ServiceError::MissingToken)?;
    let tokens = state(req).admin_tokens.iter().map(|t| (t, &t.token));
    match_token(tokens, presented)
        .map(|t| Caller::new(&t.name, t.scope.clone()))
        .ok_or(ServiceError::BadToken)
}

fn state(req: &HttpRequest) -> &AppState {
    req.app_data::<web::Data<AppState>>()
        .expect("AppState is registered on the App")
}

/// A JSON body of at most `http.max_body_bytes` (the `PayloadConfig` of the App), the limit of
/// every admin route but the few that take audiences.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ServiceError;
    type Future = LocalBoxFuture<'static, Result<Self, ServiceError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes
                .await
                .map_err(|e| match e.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => ServiceError::PayloadTooLarge {
                        limit: "http.max_body_bytes",
                    },
                    Some(e) if body::is_timeout(e) => ServiceError::BodyTimeout,
                    _ => ServiceError::Validation(format!("cannot read the body: {e}")),
                })?;
            parse(&bytes).map(Self)
        })
    }
}

/// A JSON body of at most `broadcasts.max_body_bytes`: a broadcast audience or a CRM segment can
/// list hundreds of thousands of openids, far over `http.max_body_bytes` (sized for callbacks).
pub struct LargeJsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for LargeJsonBody<T> {
    type Error = ServiceError;
    type Future = LocalBoxFuture<'static, Result<Self, ServiceError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = state(req).services.broadcasts.config().max_body_bytes;
        let mut payload = payload.take();
        Box::pin(async move {
            let mut bytes = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| {
                    if body::is_timeout(&e) {
                        ServiceError::BodyTimeout
                    } else {
                        ServiceError::Validation(format!("cannot read the body: {e}"))
                    }
                })?;
                if bytes.len() + chunk.len() > limit {
                    return Err(ServiceError::PayloadTooLarge {
                        limit: "broadcasts.max_body_bytes",
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            parse(&bytes).map(Self)
        })
    }
}

/// Every admin route answers a body that is not the JSON it expects the same way (400).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(body)
        .map_err(|e| ServiceError::Validation(format!("invalid JSON body: {e}")))
}
