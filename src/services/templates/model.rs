//! The stored shapes of a template job: the job with the state of each page of recipients,
//! a page with each recipient's status, the index from WeChat's msgid back to a recipient, and
//! what WeChat reported for the recipients of a page.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::template::TemplateKind;
use crate::store::docs::{Marker, Utf8};
use crate::store::{kinds, DocKind};

pub(super) const JOBS: DocKind<Job> = DocKind::new(kinds::TEMPLATE_JOB);
/// By [`page_key`].
pub(super) const PAGES: DocKind<Page> = DocKind::new(kinds::TEMPLATE_PAGE);
pub(super) const CLIENT_MSG_IDS: DocKind<String, Utf8> =
    DocKind::new(kinds::TEMPLATE_CLIENT_MSG_ID);
pub(super) const ACTIVE: DocKind<(), Marker> = DocKind::new(kinds::TEMPLATE_ACTIVE);
pub(super) const MSG_IDS: DocKind<MsgIndex> = DocKind::new(kinds::TEMPLATE_MSG_ID);
/// By [`page_key`]: recipient index in the page → what WeChat reported.
pub(super) const RESULTS: DocKind<BTreeMap<usize, Reported>> = DocKind::new(kinds::TEMPLATE_RESULT);

/// Recipients per page document.
pub(super) const PAGE_SIZE: usize = 100;

pub(super) fn page_key(job_id: &str, page: usize) -> String {
    format!("{job_id}-{page}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum PageStatus {
    Queued,
    Sending,
    /// Every recipient settled.
    Done,
    /// Cancelled before any of its recipients was sent.
    Cancelled,
}

/// How many recipients of a page are in each settled status (pending = size − the rest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Counts {
    pub(super) sent: usize,
    pub(super) failed: usize,
    pub(super) unknown: usize,
    pub(super) cancelled: usize,
}

impl Counts {
    pub(super) fn settled(&self) -> usize {
        self.sent + self.failed + self.unknown + self.cancelled
    }

    pub(super) fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.cancelled += other.cancelled;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PageState {
    pub(super) size: usize,
    pub(super) status: PageStatus,
    #[serde(default)]
    pub(super) counts: Counts,
}

/// A quota answer paused the job until then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Pause {
    pub(super) until: u64,
    pub(super) reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Job {
    pub(super) job_id: String,
    pub(super) kind: TemplateKind,
    pub(super) actor: String,
    pub(super) created_at: u64,
    #[serde(default)]
    pub(super) client_msg_id: Option<String>,
    pub(super) template_id: String,
    /// The request as WeChat takes it, without `touser` and `client_msg_id`.
    pub(super) message: Value,
    pub(super) total: usize,
    pub(super) pages: Vec<PageState>,
    #[serde(default)]
    pub(super) cancelled_at: Option<u64>,
    #[serde(default)]
    pub(super) cancelled_by: Option<String>,
    #[serde(default)]
    pub(super) paused: Option<Pause>,
    /// Unix seconds when every recipient was settled.
    #[serde(default)]
    pub(super) finished_at: Option<u64>,
}

impl Job {
    /// The `client_msg_id` key recipients' ids derive from: the caller's, or the job id.
    pub(super) fn dedup_key(&self) -> &str {
        self.client_msg_id.as_deref().unwrap_or(&self.job_id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RecipientStatus {
    Pending,
    /// WeChat accepted it (with a msgid).
    Sent,
    /// WeChat refused it for this follower (43004 not subscribed, 40003 bad openid, ...).
    Failed,
    /// An attempt whose outcome is unknown and that cannot be repeated safely: a notice
    /// (`bizsend` has no de-duplication key), or a template message whose client_msg_id
    /// window (10 minutes) has passed.
    Unknown,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Recipient {
    pub(super) open_id: String,
    pub(super) status: RecipientStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) msgid: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) errcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) attempts: u32,
}

/// The recipients `[from, to)` of a page are being sent since `at` (unix seconds): written
/// before the first call, cleared once their outcomes are written. Found after a crash, it
/// names the recipients whose send may have reached WeChat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Window {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Page {
    pub(super) recipients: Vec<Recipient>,
    #[serde(default)]
    pub(super) window: Option<Window>,
}

impl Page {
    pub(super) fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.recipients {
            match r.status {
                RecipientStatus::Pending => {}
                RecipientStatus::Sent => c.sent += 1,
                RecipientStatus::Failed => c.failed += 1,
                RecipientStatus::Unknown => c.unknown += 1,
                RecipientStatus::Cancelled => c.cancelled += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MsgIndex {
    pub(super) job_id: String,
    pub(super) page: usize,
    pub(super) index: usize,
}

/// What WeChat reported for one sent recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Reported {
    /// `delivered`, `user_block`, `system_failed` (TEMPLATESENDJOBFINISH), or `failed` with
    /// the raw status.
    pub(super) status: String,
    /// WeChat's own words (`Status`, or a notice's `ErrorStatus`).
    pub(super) raw: String,
    pub(super) at: u64,
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
