//! The stored shapes of an audience sync (its document and the account's `current` marker) and
//! the view both transports answer.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::domain::Platform;
use crate::error::ServiceError;
use crate::store::{kinds, DocKind};

/// The syncs, by sync id.
pub(super) const SYNCS: DocKind<SyncDoc> = DocKind::new(kinds::SYNC);
/// The sync running on the account, under [`CURRENT_ID`].
pub(super) const CURRENT: DocKind<Current> = DocKind::new(kinds::SYNC_CURRENT);
pub(super) const CURRENT_ID: &str = "current";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncKind {
    Followers,
    ExternalContacts,
}

impl SyncKind {
    /// The `kind` of a start request, for an account of `platform`: checked before anything is
    /// written or called.
    pub fn parse(raw: &str, platform: Platform) -> Result<Self, ServiceError> {
        let kind = match raw {
            "followers" => Self::Followers,
            "external_contacts" => Self::ExternalContacts,
            other => {
                return Err(ServiceError::Validation(format!(
                    "kind: \"{}\" is not \"followers\" or \"external_contacts\"",
                    crate::domain::Untrusted(other)
                )))
            }
        };
        match (kind, platform) {
            (Self::Followers, Platform::Mp) | (Self::ExternalContacts, Platform::Work) => Ok(kind),
            (Self::Followers, Platform::Work) => Err(ServiceError::Validation(
                "kind: \"followers\" is for an Official Account; a WeCom account syncs \
                 \"external_contacts\""
                    .into(),
            )),
            (Self::ExternalContacts, Platform::Mp) => Err(ServiceError::Validation(
                "kind: \"external_contacts\" is for a WeCom account; an Official Account syncs \
                 \"followers\""
                    .into(),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Followers => "followers",
            Self::ExternalContacts => "external_contacts",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Running,
    /// Waiting out a quota or an unreachable WeChat until `paused_until`; resumes by itself.
    Paused,
    Finished,
    /// WeChat refused the list itself (`last_error` says how).
    Failed,
    /// Cancelled (`POST .../syncs/{sync_id}/cancel`, gRPC `CancelSync`) before it finished.
    Cancelled,
}

impl SyncStatus {
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a sync goes on from (module comment of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "list", rename_all = "snake_case")]
pub(super) enum Cursor {
    Followers {
        /// What the current `user/get` page was asked with (empty: the first page).
        next_openid: String,
        /// Openids of that page already done.
        done: usize,
    },
    ExternalContacts {
        /// `get_follow_user_list`, once read.
        members: Option<Vec<String>>,
        /// The member being read.
        member: usize,
        /// `batch/get_by_user`'s cursor of that member's next page (empty: the first).
        cursor: String,
    },
}

impl Cursor {
    pub(super) fn start(kind: SyncKind) -> Self {
        match kind {
            SyncKind::Followers => Self::Followers {
                next_openid: String::new(),
                done: 0,
            },
            SyncKind::ExternalContacts => Self::ExternalContacts {
                members: None,
                member: 0,
                cursor: String::new(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SyncDoc {
    pub(super) sync_id: String,
    pub(super) kind: SyncKind,
    pub(super) actor: String,
    /// Unix seconds; also every snapshot's `occurred_at`.
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    #[serde(default)]
    pub(super) finished_at: Option<u64>,
    pub(super) status: SyncStatus,
    #[serde(default)]
    pub(super) pages: u64,
    #[serde(default)]
    pub(super) users: u64,
    #[serde(default)]
    pub(super) failures: u64,
    #[serde(default)]
    pub(super) left: u64,
    #[serde(default)]
    pub(super) pauses: u64,
    /// Consecutive pauses: the next pause is `backoff_min · 2^this`.
    #[serde(default)]
    pub(super) backoff_step: u32,
    /// Unix milliseconds.
    #[serde(default)]
    pub(super) paused_until: Option<u64>,
    #[serde(default)]
    pub(super) last_error: Option<String>,
    pub(super) cursor: Cursor,
}

/// `sync-current/current`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Current {
    pub(super) sync_id: String,
    /// Unix seconds when it was claimed.
    pub(super) at: u64,
}

/// A sync as `GET .../syncs/{sync_id}` and `GetSync` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Sync)]
pub struct SyncView {
    pub sync_id: String,
    pub account: String,
    /// `followers` or `external_contacts`.
    pub kind: &'static str,
    /// `running`, `paused` (resumes by itself at `paused_until`), `finished`, `failed` or
    /// `cancelled`.
    pub status: &'static str,
    /// List pages done: `user/get` pages (up to 10,000 openids) or `batch/get_by_user` pages.
    pub pages: u64,
    /// Snapshot events recorded: each person (WeCom: each customer–member pair) once.
    pub users: u64,
    /// WeChat refusals skipped: a batch of 100 openids or one member's customers.
    pub failures: u64,
    /// Followers listed by `user/get` who had unfollowed by `user/info/batchget`: no event.
    pub left: u64,
    /// Pauses so far (quota, busy or unreachable WeChat).
    pub pauses: u64,
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
    pub finished_at: Option<u64>,
    pub paused_until: Option<u64>,
    /// The admin token name or gRPC caller that started it.
    pub actor: String,
}

impl SyncView {
    pub(super) fn of(account: &str, doc: &SyncDoc) -> Self {
        Self {
            sync_id: doc.sync_id.clone(),
            account: account.to_owned(),
            kind: doc.kind.as_str(),
            status: doc.status.as_str(),
            pages: doc.pages,
            users: doc.users,
            failures: doc.failures,
            left: doc.left,
            pauses: doc.pauses,
            last_error: doc.last_error.clone(),
            created_at: doc.created_at,
            updated_at: doc.updated_at,
            finished_at: doc.finished_at,
            paused_until: doc
                .paused_until
                .filter(|_| doc.status == SyncStatus::Paused)
                .map(|ms| ms.div_ceil(1000)),
            actor: doc.actor.clone(),
        }
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_must_name_one_the_platform_has() {
        assert_eq!(
            SyncKind::parse("followers", Platform::Mp).unwrap(),
            SyncKind::Followers
        );
        assert_eq!(
            SyncKind::parse("external_contacts", Platform::Work).unwrap(),
            SyncKind::ExternalContacts
        );
        for (raw, platform) in [
            ("followers", Platform::Work),
            ("external_contacts", Platform::Mp),
            ("everyone", Platform::Mp),
            ("", Platform::Work),
        ] {
            assert!(matches!(
                SyncKind::parse(raw, platform),
                Err(ServiceError::Validation(_))
            ));
        }
    }

    #[test]
    fn a_sync_document_keeps_its_cursor_through_json() {
        let doc = SyncDoc {
            sync_id: "s".into(),
            kind: SyncKind::ExternalContacts,
            actor: "ops".into(),
            created_at: 1,
            updated_at: 2,
            finished_at: None,
            status: SyncStatus::Paused,
            pages: 3,
            users: 4,
            failures: 0,
            left: 0,
            pauses: 1,
            backoff_step: 1,
            paused_until: Some(9),
            last_error: Some("quota".into()),
            cursor: Cursor::ExternalContacts {
                members: Some(vec!["zhangsan".into()]),
                member: 0,
                cursor: "c1".into(),
            },
        };
        let bytes = SYNCS.encode(&doc);
        assert_eq!(SYNCS.decode("s", &bytes).unwrap(), doc);
    }
}
