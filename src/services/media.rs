//! Media and drafts (issue 15, item 3): uploads to WeChat checked against its limits first
//! (`crate::domain::media`), de-duplicated by content hash, and the drafts an mpnews broadcast
//! sends.
//!
//! De-duplication: each upload is recorded per account under its destination, kind and the
//! SHA-256 of its bytes; the same bytes again answer the recorded media id with no call to
//! WeChat. A permanent upload is kept until deleted. A temporary one (WeChat keeps it 3 days)
//! is recorded for a little less than that, so that a media id about to lapse is not handed
//! out: after it, the same bytes are uploaded again. The bytes of a temporary upload are kept
//! too, so that a broadcast that resumes after WeChat forgot its media id (40007) uploads them
//! again and sends with the new id ([`refresh`]), rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::media::{check, Destination, MediaKind, TEMPORARY_LIFETIME};
use crate::domain::{AccountId, Platform};
use crate::error::ServiceError;
use crate::store::docs::{DocKind, Raw};
use crate::store::{kinds, DocWrite};
use crate::wechat::account::Account;
use crate::wechat::api::media::{self as api, MediaFile};

use super::Services;

/// A temporary media id is handed out again only while it has at least this long to live.
const EXPIRY_MARGIN: Duration = Duration::from_secs(3600);

/// One upload, as recorded for de-duplication.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MediaRecord {
    /// Empty for `media/uploadimg`, which answers only a URL.
    pub media_id: String,
    pub url: String,
    pub kind: MediaKind,
    /// `temp`, `perm`, `img`, `wecom`, `wecom-att1`, `wecom-att2`.
    pub destination: String,
    pub filename: String,
    pub sha256: String,
    pub size: usize,
    pub created_at: u64,
    /// Unix seconds when WeChat forgets a temporary media id.
    pub expires_at: Option<u64>,
}

const MEDIA: DocKind<MediaRecord> = DocKind::new(kinds::MEDIA);
const MEDIA_BLOB: DocKind<Vec<u8>, Raw> = DocKind::new(kinds::MEDIA_BLOB);
const MEDIA_ID: DocKind<MediaRecord> = DocKind::new(kinds::MEDIA_ID);

/// What a caller uploads.
#[derive(Debug, Clone)]
pub struct NewMedia {
    pub kind: MediaKind,
    pub destination: Destination,
    pub filename: String,
    pub bytes: Vec<u8>,
    /// A permanent video's title and introduction.
    pub title: String,
    pub introduction: String,
}

/// An upload's answer: its record, and whether it was already there.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MediaUploaded {
    pub media_id: String,
    /// A permanent image's or an article image's URL.
    pub url: String,
    #[schema(value_type = String)]
    pub kind: MediaKind,
    pub destination: String,
    pub sha256: String,
    pub size: usize,
    /// Unix seconds when a temporary media id lapses (absent for permanent media).
    pub expires_at: Option<u64>,
    /// True when the same bytes were uploaded before: nothing was sent to WeChat.
    pub reused: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hex SHA-256 of the bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn dedup_key(destination: Destination, kind: MediaKind, sha: &str) -> String {
    format!("{}:{}:{sha}", destination.key(), kind.as_str())
}

fn count(account: &str, outcome: &'static str) {
    metrics::counter!("wgw_media_uploads_total", "account" => account.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Checks, de-duplicates, uploads (module comment).
#[tracing::instrument(skip_all, fields(account = %account_id, kind = media.kind.as_str()))]
pub async fn upload(
    svc: &Services,
    account_id: &AccountId,
    media: NewMedia,
) -> Result<MediaUploaded, ServiceError> {
    let account = svc.account(account_id)?.clone();
    let id = account.id.as_str();
    if let Err(e) = check(
        account.platform,
        media.destination,
        media.kind,
        &media.filename,
        media.bytes.len(),
    ) {
        count(id, "refused");
        return Err(ServiceError::Validation(e));
    }
    let sha = sha256_hex(&media.bytes);
    let key = dedup_key(media.destination, media.kind, &sha);
    if let Some(record) = MEDIA.get(&*svc.store, id, &key).await? {
        count(id, "reused");
        return Ok(view(record, true));
    }
    let record = match send(svc, &account, &media, &sha).await {
        Ok(r) => r,
        Err(e) => {
            count(id, "failed");
            return Err(e);
        }
    };
    count(id, "uploaded");
    Ok(view(record, false))
}

fn view(r: MediaRecord, reused: bool) -> MediaUploaded {
    MediaUploaded {
        media_id: r.media_id,
        url: r.url,
        kind: r.kind,
        destination: r.destination,
        sha256: r.sha256,
        size: r.size,
        expires_at: r.expires_at,
        reused,
    }
}

/// Uploads to WeChat and records the upload (and a temporary upload's bytes).
async fn send(
    svc: &Services,
    account: &Account,
    media: &NewMedia,
    sha: &str,
) -> Result<MediaRecord, ServiceError> {
    let id = account.id.as_str();
    let file = MediaFile {
        kind: media.kind,
        filename: &media.filename,
        bytes: &media.bytes,
        title: &media.title,
        introduction: &media.introduction,
    };
    let uploaded = api::upload(&svc.tokens, account, media.destination, &file).await?;
    let now = now_secs();
    let temporary = media.destination.temporary();
    let record = MediaRecord {
        media_id: uploaded.id().to_owned(),
        url: uploaded.url.clone(),
        kind: media.kind,
        destination: media.destination.key(),
        filename: media.filename.clone(),
        sha256: sha.to_owned(),
        size: media.bytes.len(),
        created_at: now,
        expires_at: temporary.then(|| now + TEMPORARY_LIFETIME.as_secs()),
    };
    let key = dedup_key(media.destination, media.kind, sha);
    if temporary {
        MEDIA_BLOB
            .put(&*svc.store, id, sha, &media.bytes, DocWrite::Always)
            .await?;
        MEDIA_ID
            .put(&*svc.store, id, &record.media_id, &record, DocWrite::Always)
            .await?;
        MEDIA
            .put_lapsing(
                &*svc.store,
                id,
                &key,
                &record,
                DocWrite::Always,
                TEMPORARY_LIFETIME - EXPIRY_MARGIN,
            )
            .await?;
    } else {
        MEDIA
            .put(&*svc.store, id, &key, &record, DocWrite::Always)
            .await?;
    }
    Ok(record)
}

/// Where an upload goes on this platform: `permanent` (Official Accounts), `attachment_type`
/// (WeCom's `media/upload_attachment`, `1` or `2`).
pub fn destination(
    platform: Platform,
    permanent: bool,
    attachment_type: Option<&str>,
) -> Result<Destination, ServiceError> {
    Ok(match (platform, attachment_type) {
        (Platform::Mp, None) if permanent => Destination::Permanent,
        (Platform::Mp, None) => Destination::Temporary,
        (Platform::Mp, Some(_)) => {
            return Err(ServiceError::Validation(
                "attachment_type is a WeCom field (media/upload_attachment)".into(),
            ))
        }
        (Platform::Work, _) if permanent => {
            return Err(ServiceError::Validation(
                "WeCom keeps uploaded media for 3 days; it has no permanent material".into(),
            ))
        }
        (Platform::Work, None) => Destination::WeCom,
        (Platform::Work, Some("1")) => Destination::WeComAttachment(1),
        (Platform::Work, Some("2")) => Destination::WeComAttachment(2),
        (Platform::Work, Some(other)) => {
            return Err(ServiceError::Validation(format!(
                "attachment_type: 1 (moments) or 2 (product album), not {other:?}"
            )))
        }
    })
}

fn destination_of(key: &str) -> Option<Destination> {
    Some(match key {
        "temp" => Destination::Temporary,
        "wecom" => Destination::WeCom,
        "wecom-att1" => Destination::WeComAttachment(1),
        "wecom-att2" => Destination::WeComAttachment(2),
        _ => return None,
    })
}

/// A live media id for the temporary upload that `media_id` came from: the recorded one while
/// it lives, otherwise the same bytes uploaded again; with `forgotten` (WeChat answered 40007
/// for it) the bytes are uploaded again whatever the record says. `None` when `media_id` is not
/// a temporary upload the gateway made (nothing to do but report WeChat's refusal).
pub async fn refresh(
    svc: &Services,
    account: &Account,
    media_id: &str,
    forgotten: bool,
) -> Result<Option<String>, ServiceError> {
    let id = account.id.as_str();
    let Some(first) = MEDIA_ID.get(&*svc.store, id, media_id).await? else {
        return Ok(None);
    };
    let Some(destination) = destination_of(&first.destination) else {
        return Ok(None);
    };
    let key = dedup_key(destination, first.kind, &first.sha256);
    if !forgotten {
        if let Some(live) = MEDIA.get(&*svc.store, id, &key).await? {
            return Ok(Some(live.media_id));
        }
    } else if let Some(live) = MEDIA.get(&*svc.store, id, &key).await? {
        if live.media_id != media_id {
            // Another attempt uploaded the bytes again already.
            return Ok(Some(live.media_id));
        }
    }
    let Some(bytes) = MEDIA_BLOB.get(&*svc.store, id, &first.sha256).await? else {
        return Ok(None);
    };
    let media = NewMedia {
        kind: first.kind,
        destination,
        filename: first.filename.clone(),
        bytes,
        title: String::new(),
        introduction: String::new(),
    };
    let record = send(svc, account, &media, &first.sha256).await?;
    // The old id leads to the new upload too.
    MEDIA_ID
        .put(&*svc.store, id, media_id, &record, DocWrite::Always)
        .await?;
    count(id, "reuploaded");
    tracing::info!(
        account = id,
        "a temporary media id lapsed; the same bytes were uploaded again"
    );
    Ok(Some(record.media_id))
}

/// The live media id of the WeCom upload of these bytes as `kind` (by its SHA-256, as `POST
/// .../media` answered it): the recorded one while it lives, otherwise the same bytes uploaded
/// again. `None` when the gateway never uploaded them to WeCom.
pub async fn media_id_of_upload(
    svc: &Services,
    account: &Account,
    kind: MediaKind,
    sha256: &str,
) -> Result<Option<String>, ServiceError> {
    let id = account.id.as_str();
    let destinations = [
        Destination::WeCom,
        Destination::WeComAttachment(1),
        Destination::WeComAttachment(2),
    ];
    for destination in destinations {
        let key = dedup_key(destination, kind, sha256);
        if let Some(live) = MEDIA.get(&*svc.store, id, &key).await? {
            return Ok(Some(live.media_id));
        }
    }
    // The record lapsed with the media id: any earlier id of these bytes leads to them.
    for stored in MEDIA_ID.list(&*svc.store, id).await? {
        let Ok(record) = stored.value else { continue };
        let wecom = destination_of(&record.destination).is_some_and(|d| destinations.contains(&d));
        if wecom && record.kind == kind && record.sha256 == sha256 {
            return refresh(svc, account, &stored.id, false).await;
        }
    }
    Ok(None)
}

/// The SHA-256 of the bytes behind a temporary media id the gateway uploaded (or uploaded
/// again), so that two media ids of the same bytes are known to be the same content.
pub async fn upload_hash(
    svc: &Services,
    account: &Account,
    media_id: &str,
) -> Result<Option<String>, ServiceError> {
    Ok(MEDIA_ID
        .get(&*svc.store, account.id.as_str(), media_id)
        .await?
        .map(|r| r.sha256))
}

/// `material/del_material`: deletes a permanent media (and the gateway's record of it).
pub async fn delete_material(
    svc: &Services,
    account_id: &AccountId,
    media_id: &str,
) -> Result<(), ServiceError> {
    let account = mp_account(svc, account_id)?;
    check_id(media_id)?;
    api::delete_material(&svc.tokens, &account, media_id).await?;
    let id = account.id.as_str();
    for stored in MEDIA.list(&*svc.store, id).await? {
        if stored.value.as_ref().is_ok_and(|r| r.media_id == media_id) {
            MEDIA.delete(&*svc.store, id, &stored.id).await?;
        }
    }
    Ok(())
}

fn mp_account(
    svc: &Services,
    account_id: &AccountId,
) -> Result<std::sync::Arc<Account>, ServiceError> {
    let account = svc.account(account_id)?.clone();
    if account.platform != Platform::Mp {
        return Err(ServiceError::Validation(
            "permanent material and drafts are Official Account features".into(),
        ));
    }
    Ok(account)
}

fn check_id(media_id: &str) -> Result<(), ServiceError> {
    if media_id.is_empty() || media_id.len() > 128 || media_id.chars().any(char::is_control) {
        return Err(ServiceError::Validation(
            "media_id: 1 to 128 characters".into(),
        ));
    }
    Ok(())
}

/// The fields of a draft article WeChat documents (草稿箱/新建草稿), with the required ones and
/// the limits checked here.
const ARTICLE_FIELDS: &[&str] = &[
    "article_type",
    "title",
    "author",
    "digest",
    "content",
    "content_source_url",
    "thumb_media_id",
    "need_open_comment",
    "only_fans_can_comment",
    "pic_crop_235_1",
    "pic_crop_1_1",
    "image_info",
    "cover_info",
    "product_info",
];

/// Checks a draft's articles: 1 to 8, each with a title (at most 64 characters), content
/// ("必须少于2万字符,小于1M"), a thumb_media_id for a news article, and no field draft/add does
/// not document.
pub fn check_articles(articles: &[Value]) -> Result<(), String> {
    if articles.is_empty() || articles.len() > 8 {
        return Err(format!("articles: 1 to 8, got {}", articles.len()));
    }
    for (i, a) in articles.iter().enumerate() {
        let at = format!("articles[{i}]");
        let Some(obj) = a.as_object() else {
            return Err(format!("{at} must be an object"));
        };
        if let Some(k) = obj.keys().find(|k| !ARTICLE_FIELDS.contains(&k.as_str())) {
            return Err(format!("{at}.{k} is not a field of draft/add"));
        }
        let text = |name: &str| obj.get(name).and_then(Value::as_str).unwrap_or_default();
        let chars = |name: &str| text(name).chars().count();
        let news = matches!(
            obj.get("article_type").and_then(Value::as_str),
            None | Some("news")
        );
        for (name, max, required) in [
            ("title", 64, true),
            ("content", 19_999, news),
            ("thumb_media_id", 128, news),
        ] {
            if required && text(name).is_empty() {
                return Err(format!("{at}.{name} is required"));
            }
            if chars(name) > max {
                return Err(format!(
                    "{at}.{name}: WeChat's limit is {max} characters, got {}",
                    chars(name)
                ));
            }
        }
        if text("content").len() >= 1024 * 1024 {
            return Err(format!("{at}.content: WeChat's limit is under 1MB"));
        }
    }
    Ok(())
}

/// `draft/add`: the media_id an mpnews broadcast sends.
pub async fn add_draft(
    svc: &Services,
    account_id: &AccountId,
    articles: &[Value],
) -> Result<String, ServiceError> {
    let account = mp_account(svc, account_id)?;
    check_articles(articles).map_err(ServiceError::Validation)?;
    Ok(api::add_draft(&svc.tokens, &account, articles)
        .await?
        .media_id)
}

/// `draft/get`: the draft's articles.
pub async fn get_draft(
    svc: &Services,
    account_id: &AccountId,
    media_id: &str,
) -> Result<Vec<Value>, ServiceError> {
    let account = mp_account(svc, account_id)?;
    check_id(media_id)?;
    Ok(api::get_draft(&svc.tokens, &account, media_id)
        .await?
        .news_item)
}

/// `draft/delete`.
pub async fn delete_draft(
    svc: &Services,
    account_id: &AccountId,
    media_id: &str,
) -> Result<(), ServiceError> {
    let account = mp_account(svc, account_id)?;
    check_id(media_id)?;
    api::delete_draft(&svc.tokens, &account, media_id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_the_fips_180_2_digest() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn draft_articles_are_checked_against_wechats_limits() {
        let ok = serde_json::json!({"title": "t", "content": "<p>c</p>", "thumb_media_id": "T"});
        assert!(check_articles(std::slice::from_ref(&ok)).is_ok());
        assert!(check_articles(&[]).is_err());
        assert!(check_articles(&vec![ok.clone(); 9]).is_err());
        let e = check_articles(&[serde_json::json!({"title": "t", "content": "c"})]).unwrap_err();
        assert!(e.contains("thumb_media_id"), "{e}");
        let e = check_articles(
            &[serde_json::json!({"title": "x".repeat(65), "content": "c",
            "thumb_media_id": "T"})],
        )
        .unwrap_err();
        assert!(e.contains("64"), "{e}");
        let e = check_articles(&[serde_json::json!({"title": "t", "content": "c",
            "thumb_media_id": "T", "show_cover_pic": 1})])
        .unwrap_err();
        assert!(e.contains("show_cover_pic"), "{e}");
    }
}
