//! A message to one user: a customer-service message on an Official Account
//! (`message/custom/send`, every type WeChat has, within 48 hours of the user's last
//! interaction) and its typing indicator, an application message to one member on WeCom
//! (`message/send`).
//!
//! The 48-hour window is checked before calling WeChat, from the interactions the forwarder
//! recorded ([`super::interactions`]): a follower with none inside the window is refused with
//! [`ServiceError::OutsideWindow`] (409 `outside_window`), which saves the call and the
//! account's quota, unless the caller sets `ignore_window` (the gateway may not have seen an
//! interaction that WeChat counts, such as a payment). WeChat's own refusal, 45015, is answered
//! the same way.

use crate::domain::message::{CustomMessage, TypingCommand};
use crate::domain::{AccountId, Platform, Untrusted};
use crate::error::ServiceError;
use crate::wechat::account::Account;
use crate::wechat::api::message as api;
use crate::wechat::api::{ApiError, Typed};
use crate::wechat::tokens::TokenError;

use super::{interactions, Services};

/// WeChat's "response out of time limit": the follower's 48 hours are over.
const OUT_OF_TIME_LIMIT: i64 = 45015;

/// A message to send: what, and whether to skip the window check.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub message: CustomMessage,
    /// Send even when the gateway knows of no interaction in the last 48 hours.
    pub ignore_window: bool,
}

fn check_recipient(to_user: &str) -> Result<(), ServiceError> {
    if to_user.is_empty() || to_user.len() > 64 || to_user.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "to_user: an openid or userid of 1 to 64 characters".into(),
        ));
    }
    Ok(())
}

/// Refuses a follower outside the window (module comment); counted per account.
async fn check_window(
    svc: &Services,
    account: &Account,
    to_user: &str,
    ignore_window: bool,
) -> Result<(), ServiceError> {
    if ignore_window {
        return Ok(());
    }
    let id = account.id.as_str();
    if interactions::last(&*svc.store, id, to_user)
        .await?
        .is_some()
    {
        return Ok(());
    }
    Err(outside_window(id, to_user))
}

fn outside_window(account: &str, to_user: &str) -> ServiceError {
    metrics::counter!("wgw_custom_messages_outside_window_total", "account" => account.to_owned())
        .increment(1);
    ServiceError::OutsideWindow(format!(
        "outside_window: no interaction of \"{}\" in the last 48 hours; WeChat delivers \
         customer-service messages only inside that window (set ignore_window to send anyway)",
        Untrusted(to_user)
    ))
}

/// WeChat's 45015 is the same answer as the gateway's own check.
fn window_refusal(account: &str, to_user: &str, e: TokenError) -> ServiceError {
    match e {
        TokenError::Api(ApiError::Refused {
            errcode: OUT_OF_TIME_LIMIT,
            ..
        }) => outside_window(account, to_user),
        other => other.into(),
    }
}

/// Sends; answers WeCom's msgid (empty on Official Accounts).
#[tracing::instrument(skip_all, fields(account = %account_id, msgtype = out.message.msgtype))]
pub async fn send_message(
    svc: &Services,
    account_id: &AccountId,
    to_user: &str,
    out: Outgoing,
) -> Result<String, ServiceError> {
    let account = svc.account(account_id)?.clone();
    check_recipient(to_user)?;
    let message = Typed {
        msgtype: out.message.msgtype,
        body: &out.message.body,
    };
    match account.platform {
        Platform::Mp => {
            check_window(svc, &account, to_user, out.ignore_window).await?;
            api::custom_send(&svc.tokens, &account, to_user, message)
                .await
                .map_err(|e| window_refusal(account.id.as_str(), to_user, e))?;
            Ok(String::new())
        }
        Platform::Work => {
            let sent = api::send(&svc.tokens, &account, to_user, message).await?;
            if !sent.invaliduser.is_empty() {
                return Err(ServiceError::NotFound(format!(
                    "WeCom does not know the member \"{}\" (or the application may not message them)",
                    Untrusted(to_user)
                )));
            }
            Ok(sent.msgid)
        }
    }
}

/// `custom/typing`: Official Accounts only, inside the window like a message.
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn send_typing(
    svc: &Services,
    account_id: &AccountId,
    to_user: &str,
    command: TypingCommand,
    ignore_window: bool,
) -> Result<(), ServiceError> {
    let account = svc.account(account_id)?.clone();
    if account.platform != Platform::Mp {
        return Err(ServiceError::Validation(
            "the typing indicator is an Official Account feature (custom/typing)".into(),
        ));
    }
    check_recipient(to_user)?;
    check_window(svc, &account, to_user, ignore_window).await?;
    api::custom_typing(&svc.tokens, &account, to_user, command)
        .await
        .map_err(|e| window_refusal(account.id.as_str(), to_user, e))?;
    Ok(())
}
