//! actix-web adapters: WeChat callbacks ([`callbacks`]), the admin API ([`admin`], a folder:
//! one file per resource and its OpenAPI document), the public tracked-link routes a follower
//! opens ([`links`]), the H5 OAuth entry ([`oauth`]) and operations ([`health`]). Each handler extracts, calls the layer below,
//! and maps errors in `crate::error`. The callback handlers first take a slot of
//! [`limits`] (per account and per instance), or answer 503.

pub mod admin;
pub mod body;
pub mod callbacks;
pub mod health;
pub mod limits;
pub mod links;
pub mod oauth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::AdminToken;
use crate::services::Services;
use crate::store::Store;
use crate::wechat::account::Account;

/// Shared by every actix worker.
pub struct AppState {
    pub accounts: HashMap<String, Arc<Account>>,
    pub store: Arc<dyn Store>,
    pub max_clock_skew: Option<Duration>,
    pub metrics: PrometheusHandle,
    pub admin_tokens: Vec<AdminToken>,
    /// The use cases behind the admin routes (shared with the gRPC `Gateway` service).
    pub services: Arc<Services>,
    /// Callbacks in flight, per account and in all (`callbacks.max_in_flight*`).
    pub callback_limits: limits::CallbackLimits,
}

/// `X-Content-Type-Options: nosniff` on every answer (issue 18): a callback URL echoes the
/// `echostr` it is given as text, and no browser may sniff that (or any error text) into HTML.
pub fn nosniff() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// Registers every route of the gateway on an actix `App`: one listener (`http.listen`) for all
/// when `http.admin_listen` is not set.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    public_routes(cfg);
    admin_routes(cfg);
}

/// What WeChat, followers and load balancers reach (`http.listen`): callbacks, the tracked
/// links, `/healthz` and `/readyz`. Nothing here takes an admin token.
pub fn public_routes(cfg: &mut actix_web::web::ServiceConfig) {
    callbacks::routes(cfg);
    health::routes(cfg);
    links::routes(cfg);
    oauth::routes(cfg);
}

/// What operators reach: the admin API and `/metrics`, alone on `http.admin_listen` when it is
/// set, so that exposing the callbacks does not expose them.
pub fn admin_routes(cfg: &mut actix_web::web::ServiceConfig) {
    admin::routes(cfg);
    health::metrics_routes(cfg);
}
