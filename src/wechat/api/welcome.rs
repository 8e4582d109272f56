//! WeCom's contact welcome (`externalcontact/send_welcome_msg`): the greeting of a customer who
//! just added a member through a contact-me code, sent with the single-use `welcome_code` of the
//! callback within 20 seconds.

use serde::Serialize;

use crate::domain::autoreply::Reply;
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::Empty;

/// The body: text as `text`, an image or an article as an attachment.
#[derive(Debug, Serialize)]
struct SendWelcome<'a> {
    welcome_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attachments: Vec<Attachment<'a>>,
}

#[derive(Debug, Serialize)]
struct Text<'a> {
    content: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(tag = "msgtype", rename_all = "lowercase")]
enum Attachment<'a> {
    Image { image: Image<'a> },
    Link { link: Link<'a> },
}

#[derive(Debug, Serialize)]
struct Image<'a> {
    media_id: &'a str,
}

#[derive(Debug, Serialize)]
struct Link<'a> {
    title: &'a str,
    picurl: &'a str,
    desc: &'a str,
    url: &'a str,
}

impl<'a> SendWelcome<'a> {
    fn new(welcome_code: &'a str, reply: &'a Reply) -> Self {
        let (text, attachment) = match reply {
            Reply::Text { content } => (Some(Text { content }), None),
            Reply::Image { media_id } => (
                None,
                Some(Attachment::Image {
                    image: Image { media_id },
                }),
            ),
            Reply::News {
                title,
                description,
                pic_url,
                url,
            } => (
                None,
                Some(Attachment::Link {
                    link: Link {
                        title,
                        picurl: pic_url,
                        desc: description,
                        url,
                    },
                }),
            ),
        };
        Self {
            welcome_code,
            text,
            attachments: attachment.into_iter().collect(),
        }
    }
}

/// WeCom `cgi-bin/externalcontact/send_welcome_msg`: greets the customer with `reply` (41051:
/// someone else greeted them already).
pub async fn send_welcome_msg(
    tokens: &TokenAuthority,
    account: &Account,
    welcome_code: &str,
    reply: &Reply,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "externalcontact/send_welcome_msg",
            "/cgi-bin/externalcontact/send_welcome_msg",
            &SendWelcome::new(welcome_code, reply),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reply: &Reply) -> serde_json::Value {
        serde_json::to_value(SendWelcome::new("WC", reply)).unwrap()
    }

    #[test]
    fn welcome_bodies_follow_send_welcome_msg() {
        let text = body(&Reply::Text {
            content: "hi".into(),
        });
        assert_eq!(
            text,
            serde_json::json!({"welcome_code": "WC", "text": {"content": "hi"}})
        );
        let image = body(&Reply::Image {
            media_id: "M".into(),
        });
        assert_eq!(
            image,
            serde_json::json!({"welcome_code": "WC",
                "attachments": [{"msgtype": "image", "image": {"media_id": "M"}}]})
        );
        let news = body(&Reply::News {
            title: "T".into(),
            description: "D".into(),
            pic_url: "https://p".into(),
            url: "https://u".into(),
        });
        assert_eq!(news["attachments"][0]["msgtype"], "link");
        assert_eq!(news["attachments"][0]["link"]["desc"], "D");
        assert_eq!(news["attachments"][0]["link"]["picurl"], "https://p");
        assert_eq!(news["attachments"][0]["link"]["title"], "T");
        assert_eq!(news["attachments"][0]["link"]["url"], "https://u");
        assert!(news.get("text").is_none());
    }
}
