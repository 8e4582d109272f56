//! The admin API under `/admin/v1`, for operators. Every route requires a bearer token from
//! `admin.tokens`; the token's name is the actor recorded in logs.
//!
//! This module only wires the routes; each resource lives in its own file and calls the same
//! use cases (`crate::services`) as the gRPC `Gateway` service:
//!
//! - [`dead_letters`]: events the CRM refused, to inspect and replay;
//! - [`links`]: tracked links (the public `/l/` routes a follower opens are
//!   `crate::http::links`);
//! - [`qrcodes`], [`menu`], [`broadcasts`], [`tags`], [`replies`] (auto-replies and welcomes);
//! - [`corp_tags`] (WeCom corp tags, the tags on a customer) and [`group_chats`] (WeCom
//!   customer groups and their join codes);
//! - [`h5`]: the JS-SDK signature of H5 pages (the public `/oauth/` entry is `crate::http::oauth`);
//! - [`openapi`]: the OpenAPI document of all of them ([`schemas`]: the named schemas of the
//!   JSON passed through as WeChat or the proto defines it).
//!
//! Handlers take their inputs through [`extract`] (the actor from the bearer token, JSON bodies
//! within their size limit) and answer errors as `crate::error::ServiceError`, whose one HTTP map
//! writes every error body; [`responses`] describes those bodies to the OpenAPI document.

mod broadcasts;
mod corp_tags;
mod dead_letters;
mod extract;
mod group_chats;
mod h5;
mod links;
mod media;
mod menu;
mod messages;
mod openapi;
mod qrcodes;
mod replies;
pub(crate) mod responses;
mod schemas;
mod syncs;
mod tags;
mod templates;

use actix_web::web;

/// The OpenAPI document of the admin API, as `GET /admin/v1/openapi.json` serves it: also
/// written out by `examples/openapi.rs` for `scripts/validate-openapi`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    <openapi::AdminApi as utoipa::OpenApi>::openapi()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    let scope =
        web::scope("/admin/v1").route("/openapi.json", web::get().to(openapi::openapi_json));
    let scope = [
        dead_letters::routes,
        links::routes,
        qrcodes::routes,
        menu::routes,
        broadcasts::routes,
        tags::routes,
        replies::routes,
        corp_tags::routes,
        group_chats::routes,
        syncs::routes,
        h5::routes,
        templates::routes,
        messages::routes,
        media::routes,
    ]
    .into_iter()
    .fold(scope, |scope, resource| resource(scope));
    // Unknown admin paths still demand a token first, so they reveal nothing.
    cfg.service(scope.default_service(web::to(responses::unknown_route)));
}
