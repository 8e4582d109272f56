//! A WeCom group message (企业群发, `externalcontact/add_msg_template`): text and up to nine
//! attachments, checked against the limits WeCom documents before any call. No I/O here.
//!
//! developer.work.weixin.qq.com/document/path/92135 ("创建企业群发"): `text.content` at most
//! 4,000 bytes; `attachments` at most 9 ("最多支持添加9个附件"), each `{"msgtype": T, T: {...}}`
//! with T one of
//! - `image`: `media_id` (a temporary upload, `media/upload`) or `pic_url` (an image URL from
//!   the upload-image API); one of them is required, `media_id` wins when both are given;
//! - `link`: `title` (required, at most 128 bytes), `url` (required, at most 2,048 bytes),
//!   `picurl` (at most 2,048 bytes), `desc` (at most 512 bytes);
//! - `miniprogram`: `title` (required, at most 64 bytes), `pic_media_id` (required, the cover,
//!   a temporary upload), `appid` (required, a mini program linked to the corp), `page`
//!   (required);
//! - `video` and `file`: `media_id` (required, a temporary upload).
//!
//! The gateway also takes, wherever WeCom takes a media id, a reference to an upload it made
//! (`POST .../media`): `"sha256": "<the upload's sha256>"` beside an image's, video's or file's
//! fields, `"pic_sha256"` in a miniprogram. The job resolves it to a live media id when it is
//! created, and a job that outlives the 3-day media id uploads the same bytes again
//! (`crate::services::media`). Either way the body kept is WeCom's shape.

use serde_json::{json, Map, Value};

use super::media::MediaKind;

/// `text.content`, in bytes.
pub const MAX_TEXT_BYTES: usize = 4000;
/// Attachments of one group message.
pub const MAX_ATTACHMENTS: usize = 9;
/// `link.title`, in bytes.
pub const MAX_LINK_TITLE: usize = 128;
/// `link.desc`, in bytes.
pub const MAX_LINK_DESC: usize = 512;
/// `link.url` and `link.picurl`, and an image's `pic_url`, in bytes.
pub const MAX_URL: usize = 2048;
/// `miniprogram.title`, in bytes.
pub const MAX_MINIPROGRAM_TITLE: usize = 64;

/// The attachment types and, for each, its media field (with the gateway's upload reference
/// beside it) and the kind of media that field names.
const MEDIA_FIELDS: [(&str, &str, &str, MediaKind); 4] = [
    ("image", "media_id", "sha256", MediaKind::Image),
    ("video", "media_id", "sha256", MediaKind::Video),
    ("file", "media_id", "sha256", MediaKind::File),
    (
        "miniprogram",
        "pic_media_id",
        "pic_sha256",
        MediaKind::Image,
    ),
];

const TYPES: &str = "image, link, miniprogram, video and file";

/// A media field of an attachment: where it is, which kind of media it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaSlot {
    /// The attachment's index.
    pub index: usize,
    pub msgtype: &'static str,
    /// `media_id` or `pic_media_id`.
    pub field: &'static str,
    /// `sha256` or `pic_sha256`: the gateway's reference to one of its uploads.
    pub reference: &'static str,
    pub kind: MediaKind,
}

/// The media field of an attachment of type `msgtype`, if it has one.
pub fn media_slot(index: usize, msgtype: &str) -> Option<MediaSlot> {
    MEDIA_FIELDS
        .iter()
        .find(|(t, ..)| *t == msgtype)
        .map(|&(msgtype, field, reference, kind)| MediaSlot {
            index,
            msgtype,
            field,
            reference,
            kind,
        })
}

/// A group message parsed: text and attachments in WeCom's shape (module comment).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMessage {
    pub text: Option<String>,
    /// `{"msgtype": T, T: {...}}` each.
    pub attachments: Vec<Value>,
}

impl GroupMessage {
    /// Parses `{"text": {"content": ".."}, "attachments": [...]}` (either part may be left
    /// out, not both), or the earlier single-image form `{"image": {"media_id": ".."}}`.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let Some(obj) = v.as_object() else {
            return Err(
                "message must be an object such as {\"text\": {\"content\": \"...\"}, \
                        \"attachments\": [...]}"
                    .into(),
            );
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "text" | "attachments" | "image"))
        {
            return Err(format!(
                "message.{k} cannot be sent to WeCom external contacts; a group message \
                 (externalcontact/add_msg_template) is \"text\" and \"attachments\" of type \
                 {TYPES}"
            ));
        }
        let text = match obj.get("text") {
            None => None,
            Some(t) => {
                let content = t
                    .get("content")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .ok_or("message.text.content must be a non-empty string")?;
                if content.len() > MAX_TEXT_BYTES {
                    return Err(format!(
                        "message.text.content is {} bytes; WeCom takes at most {MAX_TEXT_BYTES} \
                         bytes (add_msg_template)",
                        content.len()
                    ));
                }
                Some(content.to_owned())
            }
        };
        let mut raw: Vec<Value> = match obj.get("attachments") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err("message.attachments must be an array".into()),
        };
        if let Some(image) = obj.get("image") {
            if obj.contains_key("attachments") {
                return Err("message.image: put the image in message.attachments".into());
            }
            raw.push(json!({"msgtype": "image", "image": image}));
        }
        if raw.len() > MAX_ATTACHMENTS {
            return Err(format!(
                "message.attachments has {} attachments; WeCom takes at most {MAX_ATTACHMENTS} \
                 (add_msg_template)",
                raw.len()
            ));
        }
        if text.is_none() && raw.is_empty() {
            return Err(
                "message needs text, attachments or both: {\"text\": {\"content\": \"...\"}, \
                 \"attachments\": [...]}"
                    .into(),
            );
        }
        let attachments = raw
            .iter()
            .enumerate()
            .map(|(i, a)| attachment(i, a))
            .collect::<Result<_, _>>()?;
        Ok(Self { text, attachments })
    }

    /// The body kept by the job: `{"text": {"content"}, "attachments": [...]}`, each part only
    /// when present.
    pub fn body(&self) -> Value {
        let mut body = json!({});
        if let Some(text) = &self.text {
            body["text"] = json!({ "content": text });
        }
        if !self.attachments.is_empty() {
            body["attachments"] = Value::Array(self.attachments.clone());
        }
        body
    }

    /// What the job shows as its `msgtype`: `text`, or the attachment types after it, joined by
    /// `+` (`text+image+link`).
    pub fn msgtype(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if self.text.is_some() {
            parts.push("text");
        }
        parts.extend(
            self.attachments
                .iter()
                .map(|a| a["msgtype"].as_str().unwrap_or_default()),
        );
        parts.join("+")
    }

    /// Every media field that names an upload of the gateway by its hash, with the hash.
    pub fn upload_references(&self) -> Vec<(MediaSlot, String)> {
        self.attachments
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let slot = media_slot(i, a["msgtype"].as_str()?)?;
                let sha = a[slot.msgtype].get(slot.reference)?.as_str()?;
                Some((slot, sha.to_owned()))
            })
            .collect()
    }

    /// Replaces the upload reference of `slot` with the media id it resolved to.
    pub fn resolve(&mut self, slot: MediaSlot, media_id: &str) {
        if let Some(fields) = self.attachments[slot.index][slot.msgtype].as_object_mut() {
            fields.remove(slot.reference);
            fields.insert(slot.field.to_owned(), Value::String(media_id.to_owned()));
        }
    }
}

/// Every media id a stored group-message body names, with where it is.
pub fn media_ids(body: &Value) -> Vec<(MediaSlot, String)> {
    body["attachments"]
        .as_array()
        .map(|list| {
            list.iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let slot = media_slot(i, a["msgtype"].as_str()?)?;
                    let id = a[slot.msgtype].get(slot.field)?.as_str()?;
                    Some((slot, id.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One attachment checked, in WeCom's shape (the gateway's upload reference kept).
fn attachment(i: usize, a: &Value) -> Result<Value, String> {
    let at = format!("message.attachments[{i}]");
    let msgtype = a
        .get("msgtype")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.msgtype must be one of {TYPES}"))?;
    let (allowed, required): (&[&str], &[&str]) = match msgtype {
        "image" => (&["media_id", "sha256", "pic_url"], &[]),
        "link" => (&["title", "picurl", "desc", "url"], &["title", "url"]),
        "miniprogram" => (
            &["title", "pic_media_id", "pic_sha256", "appid", "page"],
            &["title", "appid", "page"],
        ),
        "video" | "file" => (&["media_id", "sha256"], &[]),
        other => {
            return Err(format!(
                "{at}.msgtype {other:?}: WeCom group messages take {TYPES}"
            ))
        }
    };
    if let Some(k) = a
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "msgtype" && *k != msgtype).cloned())
    {
        return Err(format!(
            "{at}.{k}: an attachment of type {msgtype} carries only \"msgtype\" and \"{msgtype}\""
        ));
    }
    let fields = a
        .get(msgtype)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{at}.{msgtype} must be an object"))?;
    let at = format!("{at}.{msgtype}");
    let mut out = Map::new();
    for (k, v) in fields {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "{at}.{k} is not a field of a {msgtype} attachment; the fields are {}",
                allowed.join(", ")
            ));
        }
        let s = v
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{at}.{k} must be a non-empty string"))?;
        let limit = match (msgtype, k.as_str()) {
            ("link", "title") => Some(MAX_LINK_TITLE),
            ("link", "desc") => Some(MAX_LINK_DESC),
            ("link", "url" | "picurl") | ("image", "pic_url") => Some(MAX_URL),
            ("miniprogram", "title") => Some(MAX_MINIPROGRAM_TITLE),
            (_, "media_id" | "pic_media_id") => Some(128),
            _ => None,
        };
        if let Some(max) = limit {
            if s.len() > max {
                return Err(format!(
                    "{at}.{k} is {} bytes; WeCom takes at most {max} bytes (add_msg_template)",
                    s.len()
                ));
            }
        }
        if matches!(k.as_str(), "url" | "picurl" | "pic_url")
            && !(s.starts_with("https://") || s.starts_with("http://"))
        {
            return Err(format!("{at}.{k} must be an http:// or https:// URL"));
        }
        if matches!(k.as_str(), "sha256" | "pic_sha256")
            && !(s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "{at}.{k} must be the 64 hex digits of an upload's sha256 (POST .../media)"
            ));
        }
        out.insert(k.clone(), Value::String(s.to_owned()));
    }
    for k in required {
        if !out.contains_key(*k) {
            return Err(format!("{at}.{k} is required"));
        }
    }
    if let Some(slot) = media_slot(i, msgtype) {
        let (id, reference) = (
            out.contains_key(slot.field),
            out.contains_key(slot.reference),
        );
        if id && reference {
            return Err(format!(
                "{at}: give {} or {}, not both",
                slot.field, slot.reference
            ));
        }
        let pic_url = msgtype == "image" && out.contains_key("pic_url");
        if !id && !reference && !pic_url {
            return Err(if msgtype == "image" {
                format!("{at} needs media_id (or sha256 of an upload) or pic_url")
            } else {
                format!(
                    "{at}.{} is required (or {} of an upload)",
                    slot.field, slot.reference
                )
            });
        }
    }
    Ok(json!({ "msgtype": msgtype, msgtype: Value::Object(out) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn every_attachment_type_parses_into_wecoms_shape() {
        let m = GroupMessage::parse(&json!({
            "text": {"content": "新品上市"},
            "attachments": [
                {"msgtype": "image", "image": {"media_id": "M1"}},
                {"msgtype": "image", "image": {"pic_url": "https://p.qpic.cn/x/0"}},
                {"msgtype": "link", "link": {"title": "标题", "url": "https://example.com/a",
                    "picurl": "https://example.com/p.png", "desc": "摘要"}},
                {"msgtype": "miniprogram", "miniprogram": {"title": "小程序", "pic_sha256": SHA,
                    "appid": "wx8bd80126147dfAAA", "page": "/path/index.html"}},
                {"msgtype": "video", "video": {"media_id": "V1"}},
                {"msgtype": "file", "file": {"sha256": SHA}},
            ]
        }))
        .unwrap();
        assert_eq!(m.msgtype(), "text+image+image+link+miniprogram+video+file");
        assert_eq!(m.body()["text"], json!({"content": "新品上市"}));
        assert_eq!(m.body()["attachments"][2]["link"]["desc"], "摘要");
        let refs = m.upload_references();
        assert_eq!(refs.len(), 2);
        assert_eq!((refs[0].0.index, refs[0].0.field), (3, "pic_media_id"));
        assert_eq!((refs[1].0.kind, refs[1].1.as_str()), (MediaKind::File, SHA));
        let mut resolved = m.clone();
        for (slot, _) in refs {
            resolved.resolve(slot, "fresh");
        }
        assert_eq!(
            resolved.attachments[3]["miniprogram"],
            json!({"title": "小程序", "pic_media_id": "fresh", "appid": "wx8bd80126147dfAAA",
                "page": "/path/index.html"})
        );
        let ids = media_ids(&resolved.body());
        assert_eq!(ids.len(), 4, "{ids:?}");
        // The earlier single-image form still parses.
        let old = GroupMessage::parse(&json!({"image": {"media_id": "M"}})).unwrap();
        assert_eq!(old.msgtype(), "image");
        assert_eq!(
            old.body(),
            json!({"attachments": [{"msgtype": "image", "image": {"media_id": "M"}}]})
        );
    }

    #[test]
    fn each_documented_limit_is_named_in_its_refusal() {
        let link = |title: &str, desc: &str| {
            json!({"attachments": [{"msgtype": "link", "link": {"title": title,
                "url": "https://example.com", "desc": desc}}]})
        };
        let image = json!({"msgtype": "image", "image": {"media_id": "M"}});
        for (bad, needle) in [
            (
                json!({"text": {"content": "字".repeat(1334)}}),
                "at most 4000 bytes",
            ),
            (json!({"attachments": vec![image.clone(); 10]}), "at most 9"),
            (link(&"a".repeat(129), "d"), "at most 128 bytes"),
            (link("t", &"d".repeat(513)), "at most 512 bytes"),
            (
                json!({"attachments": [{"msgtype": "miniprogram", "miniprogram": {
                    "title": "x".repeat(65), "pic_media_id": "P", "appid": "wx1", "page": "/p"}}]}),
                "at most 64 bytes",
            ),
            (
                json!({"attachments": [{"msgtype": "miniprogram", "miniprogram": {
                    "title": "t", "appid": "wx1", "page": "/p"}}]}),
                "pic_media_id is required",
            ),
            (
                json!({"attachments": [{"msgtype": "link", "link": {"title": "t"}}]}),
                "link.url is required",
            ),
            (
                json!({"attachments": [{"msgtype": "video", "video": {}}]}),
                "video.media_id is required",
            ),
            (
                json!({"attachments": [{"msgtype": "image", "image": {}}]}),
                "needs media_id",
            ),
            (
                json!({"attachments": [{"msgtype": "file", "file": {"media_id": "F", "sha256": SHA}}]}),
                "not both",
            ),
            (
                json!({"attachments": [{"msgtype": "file", "file": {"sha256": "abc"}}]}),
                "64 hex digits",
            ),
            (
                json!({"attachments": [{"msgtype": "voice", "voice": {"media_id": "V"}}]}),
                "image, link, miniprogram, video and file",
            ),
            (
                json!({"attachments": [{"msgtype": "link", "link": {"title": "t", "url": "ftp://x"}}]}),
                "http",
            ),
            (json!({"mpnews": {"media_id": "M"}}), "cannot be sent"),
            (json!({}), "needs text, attachments or both"),
        ] {
            let err = GroupMessage::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        // At the limits exactly: accepted.
        assert!(GroupMessage::parse(&json!({"text": {"content": "a".repeat(4000)}})).is_ok());
        assert!(GroupMessage::parse(&json!({"attachments": vec![image; 9]})).is_ok());
        assert!(GroupMessage::parse(&link(&"a".repeat(128), &"d".repeat(512))).is_ok());
    }
}
