//! Media uploads and drafts as WeChat answers them (素材管理, 草稿箱; WeCom 上传临时素材): a
//! multipart upload is recorded as `{"<field>": "<text>", "media": {"filename", "size",
//! "content"}}` (the file's bytes as lossy UTF-8, for tests to compare), and answered with an id
//! that counts up; an upload without its `media` file part is 41005.

use serde_json::{json, Value};

#[derive(Default)]
pub(super) struct Media {
    uploads: u64,
    drafts: std::collections::HashMap<String, Value>,
}

pub(super) fn handles(path: &str) -> bool {
    matches!(
        path,
        "/cgi-bin/media/upload"
            | "/cgi-bin/media/upload_attachment"
            | "/cgi-bin/media/uploadimg"
            | "/cgi-bin/material/add_material"
            | "/cgi-bin/material/del_material"
            | "/cgi-bin/draft/add"
            | "/cgi-bin/draft/get"
            | "/cgi-bin/draft/delete"
    )
}

/// The body of a `multipart/form-data` request, as recorded (module comment); `None` otherwise.
pub(super) fn form(content_type: &str, body: &[u8]) -> Option<Value> {
    let boundary = content_type.split("boundary=").nth(1)?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut out = serde_json::Map::new();
    let positions: Vec<usize> = text
        .windows(delimiter.len())
        .enumerate()
        .filter(|(_, w)| *w == delimiter.as_bytes())
        .map(|(i, _)| i)
        .collect();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len() + 2..pair[1] - 2];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let value_of = |key: &str| {
            head.split(&format!("{key}=\""))
                .nth(1)
                .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
        };
        let name = value_of("; name").unwrap_or_default();
        match value_of("filename") {
            Some(filename) => out.insert(
                name,
                json!({"filename": filename, "size": content.len(),
                    "content": String::from_utf8_lossy(content)}),
            ),
            None => out.insert(name, json!(String::from_utf8_lossy(content))),
        };
    }
    Some(Value::Object(out))
}

fn error(errcode: i64, errmsg: &str) -> Value {
    json!({"errcode": errcode, "errmsg": errmsg})
}

pub(super) fn answer(
    m: &mut Media,
    path: &str,
    query: &std::collections::HashMap<String, String>,
    body: &Value,
) -> Value {
    let has_file = body["media"]["size"].as_u64().unwrap_or(0) > 0;
    let kind = query.get("type").map(String::as_str).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    match path {
        "/cgi-bin/media/upload"
        | "/cgi-bin/media/upload_attachment"
        | "/cgi-bin/material/add_material"
            if !has_file =>
        {
            error(41005, "media data missing")
        }
        "/cgi-bin/media/upload" => {
            m.uploads += 1;
            let id = format!("media{}", m.uploads);
            if kind == "thumb" {
                json!({"type": kind, "thumb_media_id": id, "created_at": now})
            } else {
                json!({"type": kind, "media_id": id, "created_at": now})
            }
        }
        "/cgi-bin/media/upload_attachment" => {
            m.uploads += 1;
            let kind = query.get("media_type").cloned().unwrap_or_default();
            json!({"errcode": 0, "errmsg": "ok", "type": kind,
                "media_id": format!("attachment{}", m.uploads), "created_at": now})
        }
        "/cgi-bin/material/add_material" => {
            if kind == "video" && body["description"].as_str().is_none() {
                return error(40035, "invalid parameter: description");
            }
            m.uploads += 1;
            let id = format!("perm{}", m.uploads);
            if kind == "image" {
                json!({"media_id": id, "url": format!("http://mmbiz.qpic.cn/mmbiz/{id}/0")})
            } else {
                json!({"media_id": id})
            }
        }
        "/cgi-bin/media/uploadimg" => {
            if !has_file {
                return error(41005, "media data missing");
            }
            m.uploads += 1;
            json!({"url": format!("http://mmbiz.qpic.cn/mmbiz/article{}/0", m.uploads)})
        }
        "/cgi-bin/material/del_material" => json!({"errcode": 0, "errmsg": "ok"}),
        "/cgi-bin/draft/add" => {
            m.uploads += 1;
            let id = format!("draft{}", m.uploads);
            m.drafts.insert(id.clone(), body["articles"].clone());
            json!({"media_id": id})
        }
        "/cgi-bin/draft/get" => match m.drafts.get(body["media_id"].as_str().unwrap_or_default()) {
            Some(articles) => json!({"news_item": articles}),
            None => error(40007, "invalid media_id"),
        },
        "/cgi-bin/draft/delete" => match m
            .drafts
            .remove(body["media_id"].as_str().unwrap_or_default())
        {
            Some(_) => json!({"errcode": 0, "errmsg": "ok"}),
            None => error(40007, "invalid media_id"),
        },
        _ => error(48001, "api unauthorized"),
    }
}
