//! The sandbox's media and drafts: uploads (`media/upload`, `material/add_material`,
//! `media/uploadimg`, WeCom's `media/upload` and `media/upload_attachment`) answer ids that
//! count up, as WeChat's shapes; drafts are kept for `draft/get` and `draft/delete`. A
//! multipart body reaches the model as a JSON summary ([`form_summary`]): its text fields, and
//! the file's name and size under `media`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::model::{err, ok, ok_with, str_of};

/// One account's uploads and drafts.
#[derive(Debug, Default)]
pub struct Media {
    uploads: u64,
    drafts: BTreeMap<String, Value>,
}

/// The fields of a `multipart/form-data` body as JSON: `{"<name>": "<text>", "media":
/// {"filename", "size"}}`; `None` when the body is not one.
pub fn form_summary(content_type: &str, body: &[u8]) -> Option<Value> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut out = serde_json::Map::new();
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())?;
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            return Some(Value::Object(out));
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let content_start = head_end + 4;
        let next = find(&rest[content_start..], delimiter.as_bytes())?;
        // The content ends with the CRLF before the next delimiter.
        let content = &rest[content_start..content_start + next.saturating_sub(2)];
        let param = |key: &str| {
            let marker = format!("{key}=\"");
            head.find(&marker).map(|i| {
                let from = i + marker.len();
                head[from..]
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        };
        let name = param(" name")
            .or_else(|| param(";name"))
            .unwrap_or_default();
        match param("filename") {
            Some(filename) => {
                out.insert(name, json!({"filename": filename, "size": content.len()}));
            }
            None => {
                out.insert(
                    name,
                    Value::String(String::from_utf8_lossy(content).into_owned()),
                );
            }
        }
        rest = &rest[content_start + next..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The answer of a media or draft API, or `None` for another path.
pub fn answer(
    media: &mut Media,
    work: bool,
    path: &str,
    query: &std::collections::HashMap<String, String>,
    body: &Value,
    now: u64,
) -> Option<Value> {
    let upload = |media: &mut Media, kind: &str| -> Value {
        if body["media"]["size"].as_u64().unwrap_or(0) == 0 {
            return err(41005, "media data missing");
        }
        media.uploads += 1;
        let id = format!("sandbox-media-{}-{kind}", media.uploads);
        // media/upload names a thumb's id thumb_media_id.
        if kind == "thumb" && !work {
            ok_with(json!({"type": kind, "thumb_media_id": id, "created_at": now}))
        } else {
            ok_with(json!({"type": kind, "media_id": id, "created_at": now}))
        }
    };
    let kind = query.get("type").map_or("", String::as_str);
    Some(match (work, path) {
        (_, "/cgi-bin/media/upload") => match kind {
            "image" | "voice" | "video" | "thumb" if !work => upload(media, kind),
            "image" | "voice" | "video" | "file" if work => upload(media, kind),
            _ => err(40004, "invalid media type"),
        },
        (true, "/cgi-bin/media/upload_attachment") => {
            let kind = query.get("media_type").map_or("", String::as_str);
            match (kind, query.get("attachment_type").map(String::as_str)) {
                ("image" | "video" | "file", Some("1" | "2")) => upload(media, kind),
                _ => err(40004, "invalid media type"),
            }
        }
        (false, "/cgi-bin/material/add_material") => match kind {
            "video" if body["description"].as_str().is_none() => {
                err(40035, "invalid parameter: description")
            }
            "image" | "voice" | "video" | "thumb" => {
                let mut answer = upload(media, kind);
                if let Some(id) = answer.get("media_id").cloned() {
                    if kind == "image" {
                        answer["url"] = json!(format!(
                            "https://mmbiz.qpic.cn/sandbox/{}",
                            id.as_str().unwrap_or_default()
                        ));
                    }
                } else if let Some(id) = answer.get("thumb_media_id").cloned() {
                    answer = ok_with(json!({"media_id": id}));
                }
                answer
            }
            _ => err(40004, "invalid media type"),
        },
        (false, "/cgi-bin/media/uploadimg") => {
            if body["media"]["size"].as_u64().unwrap_or(0) == 0 {
                return Some(err(41005, "media data missing"));
            }
            media.uploads += 1;
            json!({"url": format!("http://mmbiz.qpic.cn/sandbox/article-{}/0", media.uploads)})
        }
        (false, "/cgi-bin/material/del_material") => {
            if str_of(body, "media_id").is_empty() {
                err(40007, "invalid media_id")
            } else {
                ok()
            }
        }
        (false, "/cgi-bin/draft/add") => match body["articles"].as_array() {
            Some(articles) if !articles.is_empty() => {
                media.uploads += 1;
                let id = format!("sandbox-draft-{}", media.uploads);
                media
                    .drafts
                    .insert(id.clone(), Value::Array(articles.clone()));
                json!({"media_id": id})
            }
            _ => err(44002, "empty post data"),
        },
        (false, "/cgi-bin/draft/get") => match media.drafts.get(str_of(body, "media_id")) {
            Some(articles) => json!({"news_item": articles}),
            None => err(40007, "invalid media_id"),
        },
        (false, "/cgi-bin/draft/delete") => match media.drafts.remove(str_of(body, "media_id")) {
            Some(_) => ok(),
            None => err(40007, "invalid media_id"),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_body_reads_as_its_fields_and_the_files_size() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{\"title\":\"t\"}\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"media\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n\x01\x02\x03\r\n--XyZ--\r\n";
        let form = form_summary("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(
            form,
            json!({"description": "{\"title\":\"t\"}", "media": {"filename": "a.jpg", "size": 3}})
        );
        assert!(form_summary("application/json", b"{}").is_none());
    }
}
