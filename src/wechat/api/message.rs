//! A message to one user: a customer-service message on an Official Account
//! (`message/custom/send`, within 48 hours of the user's last interaction) and an application
//! message to one member on WeCom (`message/send`).

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::Empty;

/// What either API sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    Text(&'a str),
    Image { media_id: &'a str },
}

/// The answer of WeCom's `message/send`: the recipients it could not reach.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkSent {
    #[serde(default)]
    pub invaliduser: String,
    #[serde(default)]
    pub msgid: String,
}

/// The body of both APIs: `{"touser", "msgtype", "<msgtype>": {...}}`, and WeCom's `agentid`.
#[derive(Serialize)]
struct Send<'a> {
    touser: &'a str,
    #[serde(flatten)]
    content: Wire<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agentid: Option<i64>,
}

#[derive(Serialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum Wire<'a> {
    Text { text: Text<'a> },
    Image { image: Media<'a> },
}

#[derive(Serialize)]
struct Text<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct Media<'a> {
    media_id: &'a str,
}

impl<'a> From<Content<'a>> for Wire<'a> {
    fn from(content: Content<'a>) -> Self {
        match content {
            Content::Text(content) => Self::Text {
                text: Text { content },
            },
            Content::Image { media_id } => Self::Image {
                image: Media { media_id },
            },
        }
    }
}

/// `cgi-bin/message/custom/send`: a customer-service message to a follower.
pub async fn custom_send(
    tokens: &TokenAuthority,
    account: &Account,
    to_user: &str,
    content: Content<'_>,
) -> Result<Empty, TokenError> {
    let body = Send {
        touser: to_user,
        content: content.into(),
        agentid: None,
    };
    tokens
        .post(
            account,
            "message/custom/send",
            "/cgi-bin/message/custom/send",
            &body,
        )
        .await
}

/// WeCom `cgi-bin/message/send`: an application message to one member, from the account's
/// application.
pub async fn send(
    tokens: &TokenAuthority,
    account: &Account,
    to_user: &str,
    content: Content<'_>,
) -> Result<WorkSent, TokenError> {
    let body = Send {
        touser: to_user,
        content: content.into(),
        agentid: Some(account.agent_id),
    };
    tokens
        .post(account, "message/send", "/cgi-bin/message/send", &body)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_msgtype_and_only_wecom_names_its_application() {
        let text = Send {
            touser: "o1",
            content: Content::Text("hi").into(),
            agentid: None,
        };
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            serde_json::json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}})
        );
        let image = Send {
            touser: "u1",
            content: Content::Image { media_id: "M" }.into(),
            agentid: Some(1000002),
        };
        assert_eq!(
            serde_json::to_value(&image).unwrap(),
            serde_json::json!({"touser": "u1", "msgtype": "image", "image": {"media_id": "M"},
                "agentid": 1000002})
        );
    }
}
