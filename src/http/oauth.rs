//! The H5 OAuth entry, the public side (issue 14): the routes a follower's browser opens, on the
//! public listener beside the tracked links (`crate::http::links`), through
//! [`crate::services::h5`].
//!
//! - `GET /oauth/{account}?scope=snsapi_base|snsapi_userinfo&return=URL`: a 302 into WeChat's
//!   web OAuth with a signed `state`; a return URL outside `links.allowed_domains` is a 400 page.
//! - `GET /oauth/{account}/callback?scope&return&code&state`: where WeChat sends the browser
//!   back; a 302 to the return URL with the identity token in `identity_token`.
//!
//! Every refusal is a small HTML page (the reader is a person in WeChat's browser) with the
//! status of [`status`], and counts in `wgw_identity_oauth_total{account,outcome}`.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::links::redirect;
use super::AppState;
use crate::domain::Untrusted;
use crate::services::h5::{self, Callback, OAuthError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/oauth/{account}", web::get().to(start))
        .route("/oauth/{account}/callback", web::get().to(callback));
}

/// The one map of the entry's refusals to HTTP status.
fn status(e: &OAuthError) -> StatusCode {
    match e {
        OAuthError::UnknownAccount => StatusCode::NOT_FOUND,
        OAuthError::NotSupported
        | OAuthError::BadRequest(_)
        | OAuthError::BadState(_)
        | OAuthError::Replayed => StatusCode::BAD_REQUEST,
        OAuthError::Off(_) | OAuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::WeChat(_) => StatusCode::BAD_GATEWAY,
    }
}

fn page(e: &OAuthError) -> HttpResponse {
    let text = html_escape(&e.to_string());
    HttpResponse::build(status(e))
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Sign-in failed</title><p>{text}</p>"
        ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn count(account: &str, state: &AppState, outcome: &'static str) {
    // Only configured accounts get a series: the label set stays bounded.
    if state.accounts.contains_key(account) {
        metrics::counter!("wgw_identity_oauth_total", "account" => account.to_owned(),
            "outcome" => outcome)
        .increment(1);
    }
}

fn query(req: &HttpRequest) -> HashMap<String, String> {
    web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

#[tracing::instrument(skip_all, fields(account = %Untrusted(path.as_str())))]
async fn start(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str);
    match h5::start_oauth(&state.services, &path, get("scope"), get("return")) {
        Ok(location) => {
            count(&path, &state, "redirected");
            redirect(&location)
        }
        Err(e) => {
            tracing::info!(error = %e, "OAuth entry refused");
            count(&path, &state, e.outcome());
            page(&e)
        }
    }
}

#[tracing::instrument(skip_all, fields(account = %Untrusted(path.as_str())))]
async fn callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let q = query(&req);
    let get = |k: &str| q.get(k).map(String::as_str);
    let cb = Callback {
        scope: get("scope"),
        return_url: get("return"),
        code: get("code"),
        state: get("state"),
    };
    match h5::finish_oauth(&state.services, &path, cb).await {
        Ok(location) => {
            count(&path, &state, "identified");
            redirect(&location)
        }
        Err(e) => {
            tracing::warn!(error = %e, "OAuth callback refused");
            count(&path, &state, e.outcome());
            page(&e)
        }
    }
}
