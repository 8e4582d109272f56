//! Media as WeChat takes it (素材管理): which kind, where it goes, and the limits WeChat
//! documents for each, checked before any call so that a file WeChat would refuse never leaves
//! the gateway, and the refusal names WeChat's limit.
//!
//! Official Accounts: a temporary upload (`media/upload`, kept by WeChat for 3 days) or a
//! permanent one (`material/add_material`): image 10 MB (bmp, png, jpeg, jpg, gif), voice 2 MB
//! (temporary: amr, mp3; permanent: mp3, wma, wav, amr), video 10 MB (mp4), thumb 64 KB (jpg);
//! an image inside an article body (`media/uploadimg`): jpg or png, under 1 MB. WeCom
//! (`media/upload`, `media/upload_attachment`, temporary for 3 days): image 10 MB (jpg, png),
//! voice 2 MB (amr), video 10 MB (mp4), file 20 MB (any type).

use std::time::Duration;

use super::Platform;

/// How long WeChat keeps a temporary media id ("临时素材 ... 保存3天").
pub const TEMPORARY_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600);

const KB: usize = 1024;
const MB: usize = 1024 * 1024;

/// The largest file any destination takes (WeCom's files): what a stream may carry in all.
pub const MAX_BYTES: usize = 20 * MB;

/// The kind of a media file, as WeChat's `type` parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Voice,
    Video,
    Thumb,
    /// WeCom only.
    File,
}

impl MediaKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "image" => Self::Image,
            "voice" => Self::Voice,
            "video" => Self::Video,
            "thumb" => Self::Thumb,
            "file" => Self::File,
            other => {
                return Err(format!(
                    "type {other:?}: one of image, voice, video, thumb (Official Accounts) or \
                     file (WeCom)"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::Thumb => "thumb",
            Self::File => "file",
        }
    }
}

/// Where an upload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Official Account `media/upload`: a media id for 3 days.
    Temporary,
    /// Official Account `material/add_material`: kept until deleted.
    Permanent,
    /// Official Account `media/uploadimg`: a URL for an image inside an article body.
    ArticleImage,
    /// WeCom `media/upload`: a media id for 3 days.
    WeCom,
    /// WeCom `media/upload_attachment` (1: moments, 2: product album): a media id for 3 days.
    WeComAttachment(u8),
}

impl Destination {
    /// The key part of the de-duplication record.
    pub fn key(self) -> String {
        match self {
            Self::Temporary => "temp".into(),
            Self::Permanent => "perm".into(),
            Self::ArticleImage => "img".into(),
            Self::WeCom => "wecom".into(),
            Self::WeComAttachment(n) => format!("wecom-att{n}"),
        }
    }

    /// Whether WeChat forgets the media id after [`TEMPORARY_LIFETIME`].
    pub fn temporary(self) -> bool {
        matches!(
            self,
            Self::Temporary | Self::WeCom | Self::WeComAttachment(_)
        )
    }

    /// The WeChat API, for errors.
    pub fn api(self) -> &'static str {
        match self {
            Self::Temporary | Self::WeCom => "media/upload",
            Self::Permanent => "material/add_material",
            Self::ArticleImage => "media/uploadimg",
            Self::WeComAttachment(_) => "media/upload_attachment",
        }
    }
}

/// WeChat's limit for a kind at a destination: the largest size and the extensions taken
/// (empty: any).
fn limit(
    platform: Platform,
    destination: Destination,
    kind: MediaKind,
) -> Option<(usize, &'static str, &'static [&'static str])> {
    use Destination::*;
    use MediaKind::*;
    Some(match (platform, destination, kind) {
        (Platform::Mp, ArticleImage, Image) => (MB, "1MB", &["jpg", "jpeg", "png"]),
        (Platform::Mp, Temporary | Permanent, Image) => {
            (10 * MB, "10MB", &["bmp", "png", "jpeg", "jpg", "gif"])
        }
        (Platform::Mp, Temporary, Voice) => (2 * MB, "2MB", &["amr", "mp3"]),
        (Platform::Mp, Permanent, Voice) => (2 * MB, "2MB", &["mp3", "wma", "wav", "amr"]),
        (Platform::Mp, Temporary | Permanent, Video) => (10 * MB, "10MB", &["mp4"]),
        (Platform::Mp, Temporary | Permanent, Thumb) => (64 * KB, "64KB", &["jpg", "jpeg"]),
        (Platform::Work, WeCom | WeComAttachment(_), Image) => {
            (10 * MB, "10MB", &["jpg", "jpeg", "png"])
        }
        (Platform::Work, WeCom, Voice) => (2 * MB, "2MB", &["amr"]),
        (Platform::Work, WeCom | WeComAttachment(_), Video) => (10 * MB, "10MB", &["mp4"]),
        (Platform::Work, WeCom | WeComAttachment(_), File) => (20 * MB, "20MB", &[]),
        _ => return None,
    })
}

/// The largest size WeChat takes for this kind here (what a stream may carry), or why the kind
/// cannot go there.
pub fn max_size(
    platform: Platform,
    destination: Destination,
    kind: MediaKind,
) -> Result<usize, String> {
    limit(platform, destination, kind)
        .map(|(max, _, _)| max)
        .ok_or_else(|| {
            format!(
                "{} cannot take a {} on {} accounts",
                destination.api(),
                kind.as_str(),
                platform.as_str()
            )
        })
}

/// Checks a file against WeChat's limits (module comment), naming the limit it breaks.
pub fn check(
    platform: Platform,
    destination: Destination,
    kind: MediaKind,
    filename: &str,
    size: usize,
) -> Result<(), String> {
    let (max, shown, formats) = limit(platform, destination, kind).ok_or_else(|| {
        format!(
            "{} cannot take a {} on {} accounts",
            destination.api(),
            kind.as_str(),
            platform.as_str()
        )
    })?;
    if filename.is_empty() || filename.len() > 128 || filename.chars().any(char::is_control) {
        return Err(
            "the file needs a name of 1 to 128 characters (its extension is its format)".into(),
        );
    }
    if size == 0 {
        return Err("the file is empty".into());
    }
    if size > max {
        return Err(format!(
            "WeChat's limit for a {} ({}) is {shown}; this file is {size} bytes",
            kind.as_str(),
            destination.api()
        ));
    }
    if !formats.is_empty() {
        let ext = filename
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        if !formats.contains(&ext.as_str()) {
            return Err(format!(
                "WeChat takes a {} ({}) only as {}; {filename:?} is not one",
                kind.as_str(),
                destination.api(),
                formats.join(", ")
            ));
        }
    }
    Ok(())
}

/// The content type to send for a file name (WeChat reads the extension; this is courtesy).
pub fn content_type(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "mp3" => "audio/mpeg",
        "amr" => "audio/amr",
        "wav" => "audio/wav",
        "wma" => "audio/x-ms-wma",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_in_its_refusal() {
        use Destination::*;
        use MediaKind::*;
        let e = check(Platform::Mp, Temporary, Thumb, "t.jpg", 64 * 1024 + 1).unwrap_err();
        assert!(e.contains("64KB"), "{e}");
        assert!(check(Platform::Mp, Temporary, Thumb, "t.jpg", 64 * 1024).is_ok());
        let e = check(Platform::Mp, Temporary, Voice, "v.mp3", 2 * MB + 1).unwrap_err();
        assert!(e.contains("2MB"), "{e}");
        let e = check(Platform::Mp, ArticleImage, Image, "a.gif", 10).unwrap_err();
        assert!(e.contains("jpg, jpeg, png"), "{e}");
        let e = check(Platform::Mp, ArticleImage, Image, "a.png", MB + 1).unwrap_err();
        assert!(e.contains("1MB"), "{e}");
        let e = check(Platform::Mp, Permanent, Video, "v.avi", 10).unwrap_err();
        assert!(e.contains("mp4"), "{e}");
        assert!(check(Platform::Mp, Permanent, Voice, "v.WAV", 10).is_ok());
        assert!(check(Platform::Mp, Temporary, Voice, "v.wav", 10).is_err());
        assert!(check(Platform::Work, WeCom, File, "report.pdf", 20 * MB).is_ok());
        assert!(check(Platform::Mp, Temporary, File, "report.pdf", 10).is_err());
        assert!(check(Platform::Mp, Temporary, Image, "x.png", 0).is_err());
    }
}
