//! The customer-service message routes (issue 15, item 4): `POST .../messages` (every type of
//! `custom/send`, or WeCom's `message/send`) and `POST .../messages/typing`, through
//! [`crate::services::message`], which refuses a follower outside the 48-hour window (409
//! `outside_window`) before calling WeChat.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use super::schemas::CustomMessageBody;
use crate::domain::message::{CustomMessage, TypingCommand};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::account_id;
use crate::services::message::{self, Outgoing};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/messages", web::post().to(send))
        .route(
            "/accounts/{account}/messages/typing",
            web::post().to(typing),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SendMessageBody)]
pub(crate) struct SendBody {
    /// The follower's openid (WeCom: the member's userid).
    to_user: String,
    #[schema(value_type = CustomMessageBody)]
    message: Value,
    /// Send even when the gateway has recorded no interaction of the follower in the last
    /// 48 hours (WeChat may still refuse: 45015, answered as 409 `outside_window`).
    #[serde(default)]
    ignore_window: bool,
}

/// A message sent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageSent {
    /// The type sent.
    msgtype: String,
    /// WeCom's msgid; empty on an Official Account.
    msg_id: String,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/messages",
    operation_id = "sendMessage",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = SendBody, content_type = "application/json"),
    responses(
        (status = 200, description = "sent", body = MessageSent),
        (status = 400, description = "invalid recipient or message (the message names the field)", body = ErrorBody),
        (status = 409, description = "`outside_window`: no interaction of the follower in the last 48 hours (checked before calling WeChat; WeChat's 45015 too)", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    let platform = state.services.account(&account)?.platform;
    let message =
        CustomMessage::parse(platform, &body.message).map_err(ServiceError::Validation)?;
    let msgtype = message.msgtype;
    let msg_id = message::send_message(
        &state.services,
        &account,
        &body.to_user,
        Outgoing {
            message,
            ignore_window: body.ignore_window,
        },
    )
    .await?;
    tracing::info!(actor = %actor, msgtype, "customer-service message sent");
    Ok(HttpResponse::Ok().json(MessageSent {
        msgtype: msgtype.to_owned(),
        msg_id,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TypingBody)]
pub(crate) struct TypingBody {
    /// The follower's openid.
    to_user: String,
    /// `Typing` (shown for up to 15 seconds) or `CancelTyping`.
    command: TypingCommand,
    #[serde(default)]
    ignore_window: bool,
}

/// The typing indicator sent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TypingSent {
    command: TypingCommand,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/messages/typing",
    operation_id = "sendTyping",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = TypingBody, content_type = "application/json"),
    responses(
        (status = 200, description = "sent (custom/typing)", body = TypingSent),
        (status = 400, description = "invalid recipient or command, or a WeCom account", body = ErrorBody),
        (status = 409, description = "`outside_window`: no interaction of the follower in the last 48 hours", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn typing(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<TypingBody>,
) -> Result<HttpResponse, ServiceError> {
    message::send_typing(
        &state.services,
        &account_id(&path)?,
        &body.to_user,
        body.command,
        body.ignore_window,
    )
    .await?;
    Ok(HttpResponse::Ok().json(TypingSent {
        command: body.command,
    }))
}
