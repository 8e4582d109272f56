//! Identity on H5 pages, the operators' and the CRM's side (issue 14): the JS-SDK signature a
//! page's `wx.config` needs, through [`crate::services::h5`]. The public OAuth entry a follower
//! opens is `crate::http::oauth`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::{account_id, h5};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope.route(
        "/accounts/{account}/jsapi-signature",
        web::post().to(jsapi_signature),
    )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JsapiSignatureBody {
    /// The page's full URL (`location.href`); anything from `#` on is not signed.
    url: String,
}

/// What `wx.config` (and on WeCom `wx.agentConfig`) takes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JsapiSignature {
    /// `appId`: the Official Account's appid, or the WeCom corp id.
    app_id: String,
    /// `timestamp` (unix seconds).
    timestamp: i64,
    /// `nonceStr`.
    nonce_str: String,
    /// `signature`: hex SHA-1 of `jsapi_ticket=..&noncestr=..&timestamp=..&url=..`.
    signature: String,
    /// WeCom only: the `wx.agentConfig` signature (same timestamp and nonce).
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_signature: Option<String>,
    /// WeCom only: `agentid` of `wx.agentConfig`.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent_id: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/jsapi-signature",
    operation_id = "getJsapiSignature",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = JsapiSignatureBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the wx.config signature of the page", body = JsapiSignature),
        (status = 400, description = "not an http(s) URL", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn jsapi_signature(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<JsapiSignatureBody>,
) -> Result<HttpResponse, ServiceError> {
    let signed = h5::jsapi_signature(&state.services, &account_id(&path)?, &body.url).await?;
    let (agent_signature, agent_id) = signed.agent.unzip();
    Ok(HttpResponse::Ok().json(JsapiSignature {
        app_id: signed.app_id,
        timestamp: signed.timestamp,
        nonce_str: signed.nonce_str,
        signature: signed.signature,
        agent_signature,
        agent_id,
    }))
}
