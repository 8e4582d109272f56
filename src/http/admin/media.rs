//! The media and draft routes (issue 15, item 3), through [`crate::services::media`]:
//! `POST .../media` (multipart: a temporary or permanent upload, WeCom's `media/upload` and
//! `media/upload_attachment`), `POST .../media/article-images` (`media/uploadimg`),
//! `DELETE .../media/{media_id}` (`material/del_material`), and `POST .../drafts`,
//! `GET` and `DELETE .../drafts/{media_id}` (`draft/add`, `draft/get`, `draft/delete`).
//!
//! A multipart body is read as it streams, up to WeChat's largest limit (20 MB, a WeCom file),
//! not `http.max_body_bytes`; the kind's own limit is checked before any call to WeChat.

use actix_multipart::Multipart;
use actix_web::{web, HttpResponse};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{Actor, JsonBody};
use super::responses::{AccountErrors, WeChatErrors};
use crate::domain::media::{Destination, MediaKind, MAX_BYTES};
use crate::error::{ErrorBody, ServiceError};
use crate::http::AppState;
use crate::services::account_id;
use crate::services::media::{self, MediaUploaded, NewMedia};

pub(super) fn routes(scope: actix_web::Scope) -> actix_web::Scope {
    scope
        .route("/accounts/{account}/media", web::post().to(upload))
        .route(
            "/accounts/{account}/media/article-images",
            web::post().to(article_image),
        )
        .route(
            "/accounts/{account}/media/{media_id}",
            web::delete().to(delete_material),
        )
        .route("/accounts/{account}/drafts", web::post().to(add_draft))
        .route(
            "/accounts/{account}/drafts/{media_id}",
            web::get().to(get_draft),
        )
        .route(
            "/accounts/{account}/drafts/{media_id}",
            web::delete().to(delete_draft),
        )
}

/// The longest text field of an upload form.
const MAX_FIELD: usize = 4096;

/// The form of `POST .../media`.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "describes the multipart form; the handler reads it as it streams"
)]
pub(crate) struct UploadForm {
    /// `image`, `voice`, `video` or `thumb`; on WeCom `image`, `voice`, `video` or `file`.
    r#type: String,
    /// The file; its name's extension is its format (WeChat reads it).
    #[schema(value_type = String, format = Binary)]
    media: Vec<u8>,
    /// Official Accounts: `true` for permanent material (`material/add_material`); otherwise
    /// temporary (`media/upload`, 3 days).
    permanent: Option<bool>,
    /// A permanent video's title and introduction.
    title: Option<String>,
    introduction: Option<String>,
    /// WeCom: `1` (moments) or `2` (product album) for `media/upload_attachment`.
    attachment_type: Option<u8>,
}

/// The form of `POST .../media/article-images`.
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "describes the multipart form; the handler reads it as it streams"
)]
pub(crate) struct ArticleImageForm {
    /// A jpg or png under 1MB.
    #[schema(value_type = String, format = Binary)]
    media: Vec<u8>,
}

/// What a multipart body held.
#[derive(Default)]
struct Form {
    fields: Vec<(String, String)>,
    file: Option<(String, Vec<u8>)>,
}

impl Form {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unreadable(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Validation(format!("cannot read the multipart/form-data body: {e}"))
}

/// Reads the form: text fields, and the file under `media`.
async fn read_form(mut multipart: Multipart) -> Result<Form, ServiceError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(unreadable)?;
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(str::to_owned);
        let cap = if name == "media" {
            MAX_BYTES
        } else {
            MAX_FIELD
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(unreadable)?;
            if bytes.len() + chunk.len() > cap {
                return Err(if name == "media" {
                    ServiceError::PayloadTooLarge {
                        limit: "WeChat's largest media limit (20MB)",
                    }
                } else {
                    ServiceError::Validation(format!("field {name:?}: at most {MAX_FIELD} bytes"))
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == "media" {
            let Some(filename) = filename else {
                return Err(ServiceError::Validation(
                    "media: a file part with a filename".into(),
                ));
            };
            form.file = Some((filename, bytes));
        } else {
            let value = String::from_utf8(bytes)
                .map_err(|_| ServiceError::Validation(format!("field {name:?}: not UTF-8")))?;
            form.fields.push((name, value));
        }
    }
    Ok(form)
}

fn flag(form: &Form, name: &str) -> Result<bool, ServiceError> {
    match form.field(name) {
        None | Some("false" | "0" | "") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ServiceError::Validation(format!(
            "{name}: true or false, not {other:?}"
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/media",
    operation_id = "uploadMedia",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "uploaded, or the same bytes found uploaded before (`reused`, no call to WeChat)", body = MediaUploaded),
        (status = 400, description = "a file WeChat would refuse (its limit named: size, format), or a bad field", body = ErrorBody),
        (status = 413, description = "over 20MB, WeChat's largest media limit", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn upload(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    multipart: Multipart,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    let platform = state.services.account(&account)?.platform;
    let form = read_form(multipart).await?;
    let kind = MediaKind::parse(form.field("type").unwrap_or_default())
        .map_err(ServiceError::Validation)?;
    let permanent = flag(&form, "permanent")?;
    let destination = media::destination(platform, permanent, form.field("attachment_type"))?;
    let Some((filename, bytes)) = form.file.clone() else {
        return Err(ServiceError::Validation(
            "media: the file is missing".into(),
        ));
    };
    let uploaded = media::upload(
        &state.services,
        &account,
        NewMedia {
            kind,
            destination,
            filename,
            bytes,
            title: form.field("title").unwrap_or_default().to_owned(),
            introduction: form.field("introduction").unwrap_or_default().to_owned(),
        },
    )
    .await?;
    tracing::info!(actor = %actor, reused = uploaded.reused, "media uploaded");
    Ok(HttpResponse::Ok().json(uploaded))
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/media/article-images",
    operation_id = "uploadArticleImage",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = ArticleImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "the image's URL, for an article body (`url`; `media_id` is empty)", body = MediaUploaded),
        (status = 400, description = "not a jpg or png under 1MB, or a WeCom account", body = ErrorBody),
        (status = 413, description = "over 20MB", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn article_image(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    multipart: Multipart,
) -> Result<HttpResponse, ServiceError> {
    let account = account_id(&path)?;
    state.services.account(&account)?;
    let form = read_form(multipart).await?;
    let Some((filename, bytes)) = form.file else {
        return Err(ServiceError::Validation(
            "media: the file is missing".into(),
        ));
    };
    let uploaded = media::upload(
        &state.services,
        &account,
        NewMedia {
            kind: MediaKind::Image,
            destination: Destination::ArticleImage,
            filename,
            bytes,
            title: String::new(),
            introduction: String::new(),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(uploaded))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/media/{media_id}",
    operation_id = "deleteMaterial",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("media_id" = String, Path, description = "a permanent media id"),
    ),
    responses(
        (status = 200, description = "deleted (material/del_material)", body = Deleted),
        (status = 400, description = "a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_material(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, media_id) = path.into_inner();
    media::delete_material(&state.services, &account_id(&account)?, &media_id).await?;
    Ok(HttpResponse::Ok().json(Deleted {
        media_id,
        deleted: true,
    }))
}

/// Material or a draft deleted.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Deleted {
    media_id: String,
    deleted: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DraftBody {
    /// 1 to 8 articles in draft/add's shape (`title`, `author`, `digest`, `content`,
    /// `content_source_url`, `thumb_media_id`, `need_open_comment`, `only_fans_can_comment`, ...).
    #[schema(value_type = Vec<Object>)]
    articles: Vec<Value>,
}

/// A draft created.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DraftCreated {
    /// What an mpnews broadcast sends: `{"mpnews": {"media_id"}}`.
    media_id: String,
}

/// A draft's articles.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DraftView {
    media_id: String,
    #[schema(value_type = Vec<Object>)]
    news_item: Vec<Value>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{account}/drafts",
    operation_id = "createDraft",
    tag = "admin",
    params(("account" = String, Path, description = "the account id from the configuration")),
    request_body(content = DraftBody, content_type = "application/json"),
    responses(
        (status = 200, description = "created (draft/add)", body = DraftCreated),
        (status = 400, description = "invalid articles (the message names the field and WeChat's limit), or a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add_draft(
    actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<String>,
    JsonBody(body): JsonBody<DraftBody>,
) -> Result<HttpResponse, ServiceError> {
    let media_id = media::add_draft(&state.services, &account_id(&path)?, &body.articles).await?;
    tracing::info!(actor = %actor, "draft created");
    Ok(HttpResponse::Ok().json(DraftCreated { media_id }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{account}/drafts/{media_id}",
    operation_id = "getDraft",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("media_id" = String, Path, description = "the draft's media_id"),
    ),
    responses(
        (status = 200, description = "the draft (draft/get)", body = DraftView),
        (status = 400, description = "a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_draft(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, media_id) = path.into_inner();
    let news_item = media::get_draft(&state.services, &account_id(&account)?, &media_id).await?;
    Ok(HttpResponse::Ok().json(DraftView {
        media_id,
        news_item,
    }))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{account}/drafts/{media_id}",
    operation_id = "deleteDraft",
    tag = "admin",
    params(
        ("account" = String, Path, description = "the account id from the configuration"),
        ("media_id" = String, Path, description = "the draft's media_id"),
    ),
    responses(
        (status = 200, description = "deleted (draft/delete)", body = Deleted),
        (status = 400, description = "a WeCom account", body = ErrorBody),
        AccountErrors, WeChatErrors,
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_draft(
    _actor: Actor,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ServiceError> {
    let (account, media_id) = path.into_inner();
    media::delete_draft(&state.services, &account_id(&account)?, &media_id).await?;
    Ok(HttpResponse::Ok().json(Deleted {
        media_id,
        deleted: true,
    }))
}
