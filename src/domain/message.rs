//! A customer-service message (客服消息, `message/custom/send`) as a caller writes it:
//! `{"<msgtype>": {...}}`, one type, with the fields WeChat documents for that type ("客服接口 -
//! 发消息"). [`CustomMessage::parse`] checks each field before any call, keeps only the
//! documented fields, and rebuilds the body WeChat expects, so that what goes on the wire is
//! exactly the documented shape.
//!
//! The types: text, image, voice, video, music, news (one article: "图文消息条数限制在1条以内,
//! 如果图文数超过1,则将会返回错误码45008"), mpnews (a draft's or material's media_id),
//! mpnewsarticle (a published article's article_id), msgmenu (a menu of replies the follower
//! taps), miniprogrampage and wxcard. On WeCom (`message/send`, an application message) the
//! gateway sends text, image, voice and file, whose shapes are the same there.

use serde_json::{Map, Value};

use super::Platform;

/// Longest text content, in characters (WeChat's limit is 2048 bytes for some clients;
/// characters are what a caller can count).
pub const MAX_TEXT_CHARS: usize = 2048;
/// WeChat's media ids are 64 characters today; anything past 128 is not one.
const MAX_ID: usize = 128;
/// Titles and descriptions: WeChat truncates rather than refuses, but a field past this is
/// a mistake worth naming.
const MAX_LABEL: usize = 512;
/// URLs (music, news, picurl).
const MAX_URL: usize = 2048;
/// The rows of a msgmenu: WeChat documents none, this keeps one on a phone screen.
const MAX_MENU_ROWS: usize = 10;

/// Whether a field must be there.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// What a string field holds: its longest length.
#[derive(Clone, Copy)]
enum Field {
    Id,
    Label,
    Url,
}

impl Field {
    fn max(self) -> usize {
        match self {
            Self::Id => MAX_ID,
            Self::Label => MAX_LABEL,
            Self::Url => MAX_URL,
        }
    }
}

use Field::{Id, Label, Url};
use Need::{Optional, Required};

/// The types whose body is flat strings, with their fields as the documentation lists them.
/// One field of a type: its name, whether it is required, what it holds.
type Spec = (&'static str, Need, Field);

const FLAT: &[(&str, &[Spec])] = &[
    ("image", &[("media_id", Required, Id)]),
    ("voice", &[("media_id", Required, Id)]),
    (
        "video",
        &[
            ("media_id", Required, Id),
            ("thumb_media_id", Required, Id),
            ("title", Optional, Label),
            ("description", Optional, Label),
        ],
    ),
    (
        "music",
        &[
            ("title", Optional, Label),
            ("description", Optional, Label),
            ("musicurl", Required, Url),
            ("hqmusicurl", Required, Url),
            ("thumb_media_id", Required, Id),
        ],
    ),
    ("mpnews", &[("media_id", Required, Id)]),
    ("mpnewsarticle", &[("article_id", Required, Id)]),
    (
        "miniprogrampage",
        &[
            ("title", Required, Label),
            ("appid", Required, Id),
            ("pagepath", Required, Url),
            ("thumb_media_id", Required, Id),
        ],
    ),
    ("wxcard", &[("card_id", Required, Id)]),
    ("file", &[("media_id", Required, Id)]),
];

/// The fields of the one article of a `news` message.
const NEWS_ARTICLE: &[Spec] = &[
    ("title", Required, Label),
    ("description", Optional, Label),
    ("url", Required, Url),
    ("picurl", Optional, Url),
];

/// Every type, in the order the refusals list them.
pub const OFFICIAL_ACCOUNT_TYPES: &[&str] = &[
    "text",
    "image",
    "voice",
    "video",
    "music",
    "news",
    "mpnews",
    "mpnewsarticle",
    "msgmenu",
    "miniprogrampage",
    "wxcard",
];

/// What WeCom's `message/send` takes from the gateway (the shapes are the same as above).
pub const WECOM_TYPES: &[&str] = &["text", "image", "voice", "file"];

/// The typing indicator's two commands (`custom/typing`), as WeChat spells them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum TypingCommand {
    Typing,
    CancelTyping,
}

/// A checked customer-service message: its `msgtype` and the body WeChat expects under it.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMessage {
    pub msgtype: &'static str,
    pub body: Value,
}

impl CustomMessage {
    /// A text message (gRPC's `TextContent`), checked like any other.
    pub fn text(content: &str) -> Result<Self, String> {
        Self::parse(
            Platform::Mp,
            &serde_json::json!({ "text": { "content": content } }),
        )
    }

    /// Parses `{"<msgtype>": {...}}` for a platform (see the module comment).
    pub fn parse(platform: Platform, v: &Value) -> Result<Self, String> {
        let types = match platform {
            Platform::Mp => OFFICIAL_ACCOUNT_TYPES,
            Platform::Work => WECOM_TYPES,
        };
        let Some(obj) = v.as_object() else {
            return Err(
                "message must be an object such as {\"text\": {\"content\": \"...\"}}".into(),
            );
        };
        let mut entries = obj.iter();
        let (Some((name, value)), None) = (entries.next(), entries.next()) else {
            return Err(format!(
                "message must name exactly one type, one of {}",
                types.join(", ")
            ));
        };
        let Some(&msgtype) = types.iter().find(|t| *t == name) else {
            return Err(format!(
                "message type {name:?} is not one this account can send; the types are {}",
                types.join(", ")
            ));
        };
        let Some(fields) = value.as_object() else {
            return Err(format!("message.{msgtype} must be an object"));
        };
        let at = format!("message.{msgtype}");
        let body = match msgtype {
            "text" => {
                let content = string(fields, &at, "content")?.unwrap_or_default();
                let chars = content.chars().count();
                if chars == 0 || chars > MAX_TEXT_CHARS {
                    return Err(format!(
                        "{at}.content: 1 to {MAX_TEXT_CHARS} characters, got {chars}"
                    ));
                }
                only(fields, &at, &["content"])?;
                serde_json::json!({ "content": content })
            }
            "news" => news(fields, &at)?,
            "msgmenu" => msgmenu(fields, &at)?,
            _ => {
                let (_, spec) = FLAT
                    .iter()
                    .find(|(t, _)| *t == msgtype)
                    .expect("every listed type has a spec");
                flat(fields, &at, spec)?
            }
        };
        Ok(Self { msgtype, body })
    }
}

/// The string field `name`, when there; an error when it is there and not a string.
fn string<'a>(
    fields: &'a Map<String, Value>,
    at: &str,
    name: &str,
) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{at}.{name} must be a string")),
    }
}

/// Refuses a field not in `known`, so that a misspelt field is not silently dropped.
fn only(fields: &Map<String, Value>, at: &str, known: &[&str]) -> Result<(), String> {
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{at}.{k} is not a field WeChat documents here; the fields are {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// The fields of `spec`, checked, in the order of `spec`.
fn flat(fields: &Map<String, Value>, at: &str, spec: &[Spec]) -> Result<Value, String> {
    let known: Vec<&str> = spec.iter().map(|(n, _, _)| *n).collect();
    only(fields, at, &known)?;
    let mut out = Map::new();
    for &(name, need, kind) in spec {
        match string(fields, at, name)? {
            Some(s) if !s.is_empty() => {
                let chars = s.chars().count();
                if chars > kind.max() {
                    return Err(format!(
                        "{at}.{name}: at most {} characters, got {chars}",
                        kind.max()
                    ));
                }
                if s.chars().any(char::is_control) && !matches!(kind, Field::Label) {
                    return Err(format!("{at}.{name} must not contain control characters"));
                }
                out.insert(name.to_owned(), Value::String(s.to_owned()));
            }
            _ if need == Need::Required => {
                return Err(format!("{at}.{name} is required (a non-empty string)"));
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

/// `{"articles": [one article]}`.
fn news(fields: &Map<String, Value>, at: &str) -> Result<Value, String> {
    only(fields, at, &["articles"])?;
    let articles = match fields.get("articles") {
        Some(Value::Array(a)) => a,
        _ => return Err(format!("{at}.articles must be an array of one article")),
    };
    if articles.len() != 1 {
        return Err(format!(
            "{at}.articles: WeChat sends exactly 1 article in a customer-service news message \
             (more is errcode 45008), got {}",
            articles.len()
        ));
    }
    let Some(article) = articles[0].as_object() else {
        return Err(format!("{at}.articles[0] must be an object"));
    };
    let article = flat(article, &format!("{at}.articles[0]"), NEWS_ARTICLE)?;
    Ok(serde_json::json!({ "articles": [article] }))
}

/// `{"head_content", "list": [{"id", "content"}], "tail_content"}`.
fn msgmenu(fields: &Map<String, Value>, at: &str) -> Result<Value, String> {
    only(fields, at, &["head_content", "list", "tail_content"])?;
    let list = match fields.get("list") {
        Some(Value::Array(l)) if !l.is_empty() && l.len() <= MAX_MENU_ROWS => l,
        _ => {
            return Err(format!(
                "{at}.list must be an array of 1 to {MAX_MENU_ROWS} rows {{\"id\", \"content\"}}"
            ))
        }
    };
    let mut rows = Vec::with_capacity(list.len());
    for (i, row) in list.iter().enumerate() {
        let Some(row) = row.as_object() else {
            return Err(format!("{at}.list[{i}] must be an object"));
        };
        rows.push(flat(
            row,
            &format!("{at}.list[{i}]"),
            &[("id", Required, Id), ("content", Required, Label)],
        )?);
    }
    let mut out = Map::new();
    if let Some(head) = string(fields, at, "head_content")? {
        out.insert("head_content".into(), Value::String(head.to_owned()));
    }
    out.insert("list".into(), Value::Array(rows));
    if let Some(tail) = string(fields, at, "tail_content")? {
        out.insert("tail_content".into(), Value::String(tail.to_owned()));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mp(v: Value) -> Result<CustomMessage, String> {
        CustomMessage::parse(Platform::Mp, &v)
    }

    #[test]
    fn every_documented_type_parses_to_its_documented_body() {
        let cases = [
            json!({"text": {"content": "hi"}}),
            json!({"image": {"media_id": "M"}}),
            json!({"voice": {"media_id": "M"}}),
            json!({"video": {"media_id": "M", "thumb_media_id": "T", "title": "t", "description": "d"}}),
            json!({"music": {"title": "t", "description": "d", "musicurl": "http://m/1.mp3",
                "hqmusicurl": "http://m/1hq.mp3", "thumb_media_id": "T"}}),
            json!({"news": {"articles": [{"title": "t", "description": "d", "url": "https://a/1",
                "picurl": "https://a/1.jpg"}]}}),
            json!({"mpnews": {"media_id": "M"}}),
            json!({"mpnewsarticle": {"article_id": "A"}}),
            json!({"msgmenu": {"head_content": "h", "list": [{"id": "101", "content": "yes"}],
                "tail_content": "t"}}),
            json!({"miniprogrampage": {"title": "t", "appid": "wx1", "pagepath": "pages/i",
                "thumb_media_id": "T"}}),
            json!({"wxcard": {"card_id": "C"}}),
        ];
        for case in cases {
            let (name, body) = case.as_object().unwrap().iter().next().unwrap();
            let m = mp(case.clone()).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(m.msgtype, name);
            assert_eq!(&m.body, body, "{case}");
        }
    }

    #[test]
    fn missing_unknown_and_oversized_fields_are_named() {
        let e = mp(json!({"video": {"media_id": "M"}})).unwrap_err();
        assert!(
            e.contains("message.video.thumb_media_id is required"),
            "{e}"
        );
        let e = mp(json!({"image": {"media_id": "M", "mediaid": "x"}})).unwrap_err();
        assert!(e.contains("message.image.mediaid"), "{e}");
        let e = mp(json!({"text": {"content": "x".repeat(2049)}})).unwrap_err();
        assert!(e.contains("1 to 2048"), "{e}");
        let e = mp(json!({"news": {"articles": [
            {"title": "a", "url": "https://a"}, {"title": "b", "url": "https://b"}]}}))
        .unwrap_err();
        assert!(e.contains("45008"), "{e}");
        let e = mp(json!({"msgmenu": {"list": []}})).unwrap_err();
        assert!(e.contains("1 to 10 rows"), "{e}");
        let e = mp(json!({"link": {"title": "x"}})).unwrap_err();
        assert!(e.contains("not one this account can send"), "{e}");
        let e = mp(json!({"text": {"content": "a"}, "image": {"media_id": "M"}})).unwrap_err();
        assert!(e.contains("exactly one type"), "{e}");
    }

    #[test]
    fn wecom_sends_only_its_own_types() {
        assert!(CustomMessage::parse(Platform::Work, &json!({"file": {"media_id": "M"}})).is_ok());
        let e = CustomMessage::parse(
            Platform::Work,
            &json!({"msgmenu": {"list": [{"id": "1", "content": "a"}]}}),
        )
        .unwrap_err();
        assert!(e.contains("text, image, voice, file"), "{e}");
        assert!(mp(json!({"file": {"media_id": "M"}})).is_err());
    }
}
