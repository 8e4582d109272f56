//! Media and drafts (素材管理, 草稿箱) on Official Accounts, and WeCom's temporary media:
//! uploads as `multipart/form-data` with the file under `media`, the rest as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::media::{content_type, Destination, MediaKind};
use crate::wechat::account::Account;
use crate::wechat::tokens::{TokenAuthority, TokenError};

use super::{Empty, Upload};

/// What an upload answers: a media id (with a URL for a permanent image), or only a URL
/// (`media/uploadimg`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Uploaded {
    #[serde(default)]
    pub media_id: String,
    /// WeChat's answer names a thumb's id `thumb_media_id` on `media/upload`.
    #[serde(default)]
    pub thumb_media_id: String,
    #[serde(default)]
    pub url: String,
    /// Unix seconds, on temporary uploads.
    #[serde(default)]
    pub created_at: serde_json::Value,
}

impl Uploaded {
    pub fn id(&self) -> &str {
        if self.media_id.is_empty() {
            &self.thumb_media_id
        } else {
            &self.media_id
        }
    }
}

/// A file to upload: its name (whose extension WeChat reads) and bytes, and for a permanent
/// video its title and introduction (`description`).
#[derive(Debug, Clone)]
pub struct MediaFile<'a> {
    pub kind: MediaKind,
    pub filename: &'a str,
    pub bytes: &'a [u8],
    pub title: &'a str,
    pub introduction: &'a str,
}

/// Uploads a file to `destination` (`crate::domain::media::Destination`).
pub async fn upload(
    tokens: &TokenAuthority,
    account: &Account,
    destination: Destination,
    file: &MediaFile<'_>,
) -> Result<Uploaded, TokenError> {
    let mut fields = Vec::new();
    if destination == Destination::Permanent && file.kind == MediaKind::Video {
        // add_material's video: description={"title": ..., "introduction": ...}.
        let description =
            serde_json::json!({"title": file.title, "introduction": file.introduction});
        fields.push(("description", description.to_string()));
    }
    let upload = Upload {
        field: "media",
        filename: file.filename.to_owned(),
        content_type: content_type(file.filename),
        bytes: file.bytes.to_vec(),
        fields,
    };
    let kind = file.kind.as_str();
    match destination {
        Destination::Temporary | Destination::WeCom => {
            tokens
                .upload(
                    account,
                    "media/upload",
                    "/cgi-bin/media/upload",
                    &[("type", kind)],
                    &upload,
                )
                .await
        }
        Destination::Permanent => {
            tokens
                .upload(
                    account,
                    "material/add_material",
                    "/cgi-bin/material/add_material",
                    &[("type", kind)],
                    &upload,
                )
                .await
        }
        Destination::ArticleImage => {
            tokens
                .upload(
                    account,
                    "media/uploadimg",
                    "/cgi-bin/media/uploadimg",
                    &[],
                    &upload,
                )
                .await
        }
        Destination::WeComAttachment(n) => {
            let attachment_type = n.to_string();
            tokens
                .upload(
                    account,
                    "media/upload_attachment",
                    "/cgi-bin/media/upload_attachment",
                    &[("media_type", kind), ("attachment_type", &attachment_type)],
                    &upload,
                )
                .await
        }
    }
}

#[derive(Serialize)]
struct MediaId<'a> {
    media_id: &'a str,
}

/// `material/del_material`: deletes a permanent media.
pub async fn delete_material(
    tokens: &TokenAuthority,
    account: &Account,
    media_id: &str,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "material/del_material",
            "/cgi-bin/material/del_material",
            &MediaId { media_id },
        )
        .await
}

#[derive(Debug, Deserialize)]
pub struct DraftAdded {
    pub media_id: String,
}

/// `draft/add`: `{"articles": [...]}` → the draft's media_id (what an mpnews broadcast sends).
pub async fn add_draft(
    tokens: &TokenAuthority,
    account: &Account,
    articles: &[Value],
) -> Result<DraftAdded, TokenError> {
    tokens
        .post(
            account,
            "draft/add",
            "/cgi-bin/draft/add",
            &serde_json::json!({ "articles": articles }),
        )
        .await
}

#[derive(Debug, Deserialize)]
pub struct Draft {
    #[serde(default)]
    pub news_item: Vec<Value>,
}

/// `draft/get`: the articles of a draft.
pub async fn get_draft(
    tokens: &TokenAuthority,
    account: &Account,
    media_id: &str,
) -> Result<Draft, TokenError> {
    tokens
        .post(
            account,
            "draft/get",
            "/cgi-bin/draft/get",
            &MediaId { media_id },
        )
        .await
}

/// `draft/delete`.
pub async fn delete_draft(
    tokens: &TokenAuthority,
    account: &Account,
    media_id: &str,
) -> Result<Empty, TokenError> {
    tokens
        .post(
            account,
            "draft/delete",
            "/cgi-bin/draft/delete",
            &MediaId { media_id },
        )
        .await
}
