//! A message to one user: a customer-service message on an Official Account
//! (`message/custom/send`, within 48 hours of the user's last interaction) with its typing
//! indicator (`message/custom/typing`), and an application message to one member on WeCom
//! (`message/send`).

use serde::{Deserialize, Serialize};

use crate::domain::message::TypingCommand;
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::{Empty, Typed};

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
    message: Typed<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agentid: Option<i64>,
}

/// `cgi-bin/message/custom/send`: a customer-service message to a follower.
pub async fn custom_send(
    tokens: &TokenAuthority,
    account: &Account,
    to_user: &str,
    message: Typed<'_>,
) -> Result<Empty, TokenError> {
    let body = Send {
        touser: to_user,
        message,
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

#[derive(Serialize)]
struct Typing<'a> {
    touser: &'a str,
    command: TypingCommand,
}

/// `cgi-bin/message/custom/typing`: "typing..." shown to the follower, or taken away.
pub async fn custom_typing(
    tokens: &TokenAuthority,
    account: &Account,
    to_user: &str,
    command: TypingCommand,
) -> Result<Empty, TokenError> {
    let body = Typing {
        touser: to_user,
        command,
    };
    tokens
        .post(
            account,
            "message/custom/typing",
            "/cgi-bin/message/custom/typing",
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
    message: Typed<'_>,
) -> Result<WorkSent, TokenError> {
    let body = Send {
        touser: to_user,
        message,
        agentid: Some(account.agent_id),
    };
    tokens
        .post(account, "message/send", "/cgi-bin/message/send", &body)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_body_names_the_msgtype_and_only_wecom_names_its_application() {
        let content = json!({"content": "hi"});
        let text = Send {
            touser: "o1",
            message: Typed {
                msgtype: "text",
                body: &content,
            },
            agentid: None,
        };
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            json!({"touser": "o1", "msgtype": "text", "text": {"content": "hi"}})
        );
        let media = json!({"media_id": "M"});
        let image = Send {
            touser: "u1",
            message: Typed {
                msgtype: "image",
                body: &media,
            },
            agentid: Some(1000002),
        };
        assert_eq!(
            serde_json::to_value(&image).unwrap(),
            json!({"touser": "u1", "msgtype": "image", "image": {"media_id": "M"},
                "agentid": 1000002})
        );
        let typing = Typing {
            touser: "o1",
            command: TypingCommand::CancelTyping,
        };
        assert_eq!(
            serde_json::to_value(&typing).unwrap(),
            json!({"touser": "o1", "command": "CancelTyping"})
        );
    }
}
