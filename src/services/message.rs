//! A message to one user: a customer-service message on an Official Account
//! (`message/custom/send`, within 48 hours of the user's last interaction), an
//! application message to one member on WeCom (`message/send`).

use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::wechat::api::message::{self as api, Content};

use super::Services;

/// Longest text content accepted, in characters (WeChat's customer-service limit is 2048 bytes
/// of UTF-8 for some clients; characters are what a caller can count).
const MAX_TEXT_CHARS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Image { media_id: String },
}

impl Outgoing {
    fn check(&self) -> Result<(), ServiceError> {
        match self {
            Self::Text(content) => {
                let chars = content.chars().count();
                if chars == 0 || chars > MAX_TEXT_CHARS {
                    return Err(ServiceError::Validation(format!(
                        "text.content: 1 to {MAX_TEXT_CHARS} characters, got {chars}"
                    )));
                }
            }
            Self::Image { media_id } => {
                if media_id.is_empty() || media_id.len() > 128 {
                    return Err(ServiceError::Validation(
                        "image.media_id: 1 to 128 characters".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn content(&self) -> Content<'_> {
        match self {
            Self::Text(content) => Content::Text(content),
            Self::Image { media_id } => Content::Image { media_id },
        }
    }
}

/// Sends; answers WeCom's msgid (empty on Official Accounts).
#[tracing::instrument(skip_all, fields(account = %account_id))]
pub async fn send_message(
    svc: &Services,
    account_id: &AccountId,
    to_user: &str,
    message: Outgoing,
) -> Result<String, ServiceError> {
    let account = svc.account(account_id)?.clone();
    if to_user.is_empty() || to_user.len() > 64 || to_user.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "to_user: an openid or userid of 1 to 64 characters".into(),
        ));
    }
    message.check()?;
    let content = message.content();
    match account.platform {
        Platform::Mp => {
            api::custom_send(&svc.tokens, &account, to_user, content).await?;
            Ok(String::new())
        }
        Platform::Work => {
            let sent = api::send(&svc.tokens, &account, to_user, content).await?;
            if !sent.invaliduser.is_empty() {
                return Err(ServiceError::NotFound(format!(
                    "WeCom does not know the member {to_user:?} (or the application may not \
                     message them)"
                )));
            }
            Ok(sent.msgid)
        }
    }
}
