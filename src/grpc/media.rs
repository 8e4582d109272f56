//! `UploadMedia`: a media upload as a client stream (issue 15, item 3). The first message is
//! the metadata, the rest the file's bytes; each message is within `grpc.max_message_bytes`
//! (tonic refuses a longer one), and the file in all within WeChat's limit for its kind, checked
//! as the chunks arrive, so a file WeChat would refuse is neither buffered whole nor sent.
//! Then the same use case as `POST .../media` ([`crate::services::media::upload`]).

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::domain::access::{Access, Caller};
use crate::domain::media::{check, max_size, Destination, MediaKind};
use crate::error::ServiceError;
use crate::pb::{self, upload_media_request::Part};
use crate::services::media::{self, MediaUploaded, NewMedia};
use crate::services::{account_id, authorize, Services};

pub async fn upload_media(
    svc: &Services,
    request: Request<Streaming<pb::UploadMediaRequest>>,
) -> Result<Response<pb::UploadMediaResponse>, Status> {
    let caller = request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or(ServiceError::MissingToken)?;
    let mut stream = request.into_inner();
    let meta = match stream.next().await {
        Some(Ok(pb::UploadMediaRequest {
            part: Some(Part::Metadata(meta)),
        })) => meta,
        Some(Err(status)) => return Err(status),
        _ => {
            return Err(ServiceError::Validation(
                "the first message of UploadMedia must be its metadata".into(),
            )
            .into())
        }
    };
    let actor = authorize(
        &caller,
        Some(&meta.account_id),
        Access::Write,
        "UploadMedia",
    )?;
    let account = account_id(&meta.account_id)?;
    let platform = svc.account(&account)?.platform;
    let (kind, destination) = if meta.article_image {
        (MediaKind::Image, Destination::ArticleImage)
    } else {
        let kind = MediaKind::parse(&meta.r#type).map_err(ServiceError::Validation)?;
        let attachment = (meta.attachment_type != 0).then(|| meta.attachment_type.to_string());
        (
            kind,
            media::destination(platform, meta.permanent, attachment.as_deref())?,
        )
    };
    let max = max_size(platform, destination, kind).map_err(ServiceError::Validation)?;
    let mut bytes = Vec::new();
    while let Some(message) = stream.next().await {
        match message?.part {
            Some(Part::Chunk(chunk)) => {
                if bytes.len() + chunk.len() > max {
                    // Refused as the limit is crossed, naming it.
                    let e = check(
                        platform,
                        destination,
                        kind,
                        &meta.filename,
                        bytes.len() + chunk.len(),
                    )
                    .err()
                    .unwrap_or_else(|| format!("over WeChat's limit of {max} bytes"));
                    return Err(ServiceError::Validation(e).into());
                }
                bytes.extend_from_slice(&chunk);
            }
            Some(Part::Metadata(_)) => {
                return Err(ServiceError::Validation(
                    "UploadMedia takes its metadata once, first".into(),
                )
                .into())
            }
            None => {}
        }
    }
    tracing::info!(actor = %actor, size = bytes.len(), "UploadMedia");
    let uploaded = media::upload(
        svc,
        &account,
        NewMedia {
            kind,
            destination,
            filename: meta.filename,
            bytes,
            title: meta.title,
            introduction: meta.introduction,
        },
    )
    .await?;
    Ok(Response::new(uploaded.into()))
}

impl From<MediaUploaded> for pb::UploadMediaResponse {
    fn from(u: MediaUploaded) -> Self {
        Self {
            media_id: u.media_id,
            url: u.url,
            r#type: u.kind.as_str().to_owned(),
            destination: u.destination,
            sha256: u.sha256,
            size: u.size as u64,
            expires_at: u.expires_at.map(|s| pb::Timestamp {
                seconds: s as i64,
                nanos: 0,
            }),
            reused: u.reused,
        }
    }
}
