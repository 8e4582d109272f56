//! Official Account mass sends (群发): to a tag or every follower (`message/mass/sendall`), to
//! a list of openids (`message/mass/send`), a preview to one follower, the delete of a sent
//! article, and the status of a send (`message/mass/get`).
//!
//! A send carries a `clientmsgid`: WeChat answers 45065 with the earlier send's `msg_id` when
//! one with the same id was made within 24 hours, so a send may be repeated safely
//! ([`Sent::already_sent`]).

use serde::{Deserialize, Serialize};

use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::{Empty, Typed, ALREADY_SENT};

/// One send, to whoever it goes.
#[derive(Debug, Clone, Copy)]
pub struct Send<'a> {
    pub message: Typed<'a>,
    /// `send_ignore_reprint`: send an mpnews even when WeChat judges it a reprint.
    pub ignore_reprint: bool,
    pub clientmsgid: &'a str,
}

/// The answer of `mass/sendall` and `mass/send`.
#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    /// 0, or 45065 (see [`Self::already_sent`]).
    #[serde(default)]
    errcode: i64,
    pub msg_id: i64,
    #[serde(default)]
    pub msg_data_id: Option<i64>,
}

impl Sent {
    /// WeChat had sent this `clientmsgid` already (an attempt whose answer was lost): `msg_id`
    /// is that send's.
    pub fn already_sent(&self) -> bool {
        self.errcode == ALREADY_SENT
    }
}

/// The answer of `mass/preview`.
#[derive(Debug, Clone, Deserialize)]
pub struct Previewed {
    #[serde(default)]
    pub msg_id: Option<i64>,
}

/// The answer of `mass/get`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    /// `SENDING`, `SEND_SUCCESS`, `SEND_FAIL`, `DELETE`.
    pub msg_status: String,
}

#[derive(Serialize)]
struct SendAll<'a> {
    filter: Filter,
    #[serde(flatten)]
    send: Wire<'a>,
}

#[derive(Serialize)]
struct Filter {
    is_to_all: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag_id: Option<u64>,
}

#[derive(Serialize)]
struct SendTo<'a> {
    touser: &'a [String],
    #[serde(flatten)]
    send: Wire<'a>,
}

/// The fields every send has.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(flatten)]
    message: Typed<'a>,
    send_ignore_reprint: u8,
    clientmsgid: &'a str,
}

impl<'a> From<&Send<'a>> for Wire<'a> {
    fn from(send: &Send<'a>) -> Self {
        Self {
            message: send.message,
            send_ignore_reprint: u8::from(send.ignore_reprint),
            clientmsgid: send.clientmsgid,
        }
    }
}

#[derive(Serialize)]
struct Preview<'a> {
    touser: &'a str,
    #[serde(flatten)]
    message: Typed<'a>,
}

#[derive(Serialize)]
struct Delete {
    msg_id: i64,
    /// 0: every article of the send.
    article_idx: u32,
}

#[derive(Serialize)]
struct Get {
    msg_id: i64,
}

/// `cgi-bin/message/mass/sendall`: to the followers with tag `tag_id`, or to every follower.
pub async fn send_all(
    tokens: &TokenAuthority,
    account: &Account,
    tag_id: Option<u64>,
    send: &Send<'_>,
) -> Result<Sent, TokenError> {
    let body = SendAll {
        filter: Filter {
            is_to_all: tag_id.is_none(),
            tag_id,
        },
        send: send.into(),
    };
    tokens
        .post(
            account,
            "mass/sendall",
            "/cgi-bin/message/mass/sendall",
            &body,
        )
        .await
}

/// `cgi-bin/message/mass/send`: to a list of openids (2 to 10,000).
pub async fn send_to(
    tokens: &TokenAuthority,
    account: &Account,
    open_ids: &[String],
    send: &Send<'_>,
) -> Result<Sent, TokenError> {
    let body = SendTo {
        touser: open_ids,
        send: send.into(),
    };
    tokens
        .post(account, "mass/send", "/cgi-bin/message/mass/send", &body)
        .await
}

/// `cgi-bin/message/mass/preview`: the message to one follower.
pub async fn preview(
    tokens: &TokenAuthority,
    account: &Account,
    open_id: &str,
    message: Typed<'_>,
) -> Result<Previewed, TokenError> {
    let body = Preview {
        touser: open_id,
        message,
    };
    tokens
        .post(
            account,
            "mass/preview",
            "/cgi-bin/message/mass/preview",
            &body,
        )
        .await
}

/// `cgi-bin/message/mass/delete`: every article of a sent mpnews or mpvideo shows as deleted.
pub async fn delete(
    tokens: &TokenAuthority,
    account: &Account,
    msg_id: i64,
) -> Result<Empty, TokenError> {
    let body = Delete {
        msg_id,
        article_idx: 0,
    };
    tokens
        .post(
            account,
            "mass/delete",
            "/cgi-bin/message/mass/delete",
            &body,
        )
        .await
}

/// `cgi-bin/message/mass/get`: the status of a send.
pub async fn get(
    tokens: &TokenAuthority,
    account: &Account,
    msg_id: i64,
) -> Result<Status, TokenError> {
    tokens
        .post(
            account,
            "mass/get",
            "/cgi-bin/message/mass/get",
            &Get { msg_id },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_send_names_its_audience_and_nests_the_message_under_its_type() {
        let body = json!({"media_id": "M"});
        let send = Send {
            message: Typed {
                msgtype: "mpnews",
                body: &body,
            },
            ignore_reprint: true,
            clientmsgid: "c-1",
        };
        let to_tag = SendAll {
            filter: Filter {
                is_to_all: false,
                tag_id: Some(7),
            },
            send: (&send).into(),
        };
        assert_eq!(
            serde_json::to_value(&to_tag).unwrap(),
            json!({"filter": {"is_to_all": false, "tag_id": 7}, "msgtype": "mpnews",
                "mpnews": {"media_id": "M"}, "send_ignore_reprint": 1, "clientmsgid": "c-1"})
        );
        let to_all = SendAll {
            filter: Filter {
                is_to_all: true,
                tag_id: None,
            },
            send: (&send).into(),
        };
        assert_eq!(
            serde_json::to_value(&to_all).unwrap()["filter"],
            json!({"is_to_all": true})
        );
        let open_ids = ["o1".to_owned(), "o2".to_owned()];
        let to_list = SendTo {
            touser: &open_ids,
            send: (&send).into(),
        };
        assert_eq!(
            serde_json::to_value(&to_list).unwrap(),
            json!({"touser": ["o1", "o2"], "msgtype": "mpnews", "mpnews": {"media_id": "M"},
                "send_ignore_reprint": 1, "clientmsgid": "c-1"})
        );
    }
}
