//! The sandbox's customer-service messages (`message/custom/send`, `message/custom/typing`):
//! every documented type is accepted, with WeChat's errcodes for what it refuses. The sandbox
//! cannot know the follower's last interaction (the gateway checks the 48-hour window itself),
//! so it never answers 45015.

use serde_json::Value;

use super::model::{err, ok, str_of};

/// Each type of `custom/send` and the fields WeChat requires in it.
const REQUIRED: &[(&str, &[&str])] = &[
    ("text", &["content"]),
    ("image", &["media_id"]),
    ("voice", &["media_id"]),
    ("video", &["media_id", "thumb_media_id"]),
    ("music", &["musicurl", "hqmusicurl", "thumb_media_id"]),
    ("news", &["articles"]),
    ("mpnews", &["media_id"]),
    ("mpnewsarticle", &["article_id"]),
    ("msgmenu", &["list"]),
    (
        "miniprogrampage",
        &["title", "appid", "pagepath", "thumb_media_id"],
    ),
    ("wxcard", &["card_id"]),
];

/// `custom/send`: 40003 without a recipient, 40008 for an unknown type, 40007 for a media
/// message without its media_id, 45008 for a news message of more than one article, 44002
/// ("empty post data") for a missing field.
pub fn custom_send(body: &Value) -> Value {
    if str_of(body, "touser").is_empty() {
        return err(40003, "invalid openid");
    }
    let msgtype = str_of(body, "msgtype");
    let Some((_, required)) = REQUIRED.iter().find(|(t, _)| *t == msgtype) else {
        return err(40008, "invalid message type");
    };
    let content = &body[msgtype];
    for field in *required {
        let missing = match &content[field] {
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => true,
        };
        if missing && field.ends_with("media_id") {
            return err(40007, "invalid media_id");
        }
        if missing {
            return err(44002, "empty post data");
        }
    }
    if msgtype == "news" && content["articles"].as_array().map_or(0, Vec::len) > 1 {
        return err(45008, "article size out of limit");
    }
    ok()
}

/// `custom/typing`: "Typing" or "CancelTyping" (40001-style refusals aside, 40003 without a
/// recipient, 40035 for another command).
pub fn custom_typing(body: &Value) -> Value {
    if str_of(body, "touser").is_empty() {
        return err(40003, "invalid openid");
    }
    match str_of(body, "command") {
        "Typing" | "CancelTyping" => ok(),
        _ => err(40035, "invalid parameter: command"),
    }
}
