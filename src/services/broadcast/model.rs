//! The stored shapes of a broadcast job: the document kinds, the job and the state of each
//! batch, what WeChat reported for a batch, and the index from WeChat's msg_id back to its
//! batch. Each is one of the store's documents (the module documentation says which), declared
//! here as a typed kind: JSON, except the idempotency key's job id and the active marker, which
//! have always been stored as plain bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::broadcast::ChatType;
use crate::store::docs::{Marker, Utf8};
use crate::store::{kinds, DocKind};

/// The jobs, by job id.
pub(super) const JOBS: DocKind<Job> = DocKind::new(kinds::BROADCAST_JOB);
/// The recipients of each batch, by [`super::persist::batch_key`].
pub(super) const RECIPIENTS: DocKind<Vec<String>> = DocKind::new(kinds::BROADCAST_BATCH);
/// A caller's `client_msg_id` → the job id, as plain UTF-8.
pub(super) const CLIENT_MSG_IDS: DocKind<String, Utf8> =
    DocKind::new(kinds::BROADCAST_CLIENT_MSG_ID);
/// The jobs the runner still has work on, by job id: present or not.
pub(super) const ACTIVE: DocKind<(), Marker> = DocKind::new(kinds::BROADCAST_ACTIVE);
/// WeChat's msg_id → its job and batch.
pub(super) const MSG_IDS: DocKind<MsgIndex> = DocKind::new(kinds::BROADCAST_MSG_ID);
/// What WeChat reported for each batch, by [`super::persist::batch_key`].
pub(super) const RESULTS: DocKind<BatchResult> = DocKind::new(kinds::BROADCAST_RESULT);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Target {
    Tag {
        tag_id: u64,
    },
    All,
    OpenIds,
    /// WeCom (`add_msg_template`): the member in whose name it goes, and what the job adds to
    /// each call beside the batch's recipients. Jobs stored before these fields were added
    /// are `single`, unfiltered.
    External {
        sender: String,
        #[serde(default, skip_serializing_if = "is_single")]
        chat_type: ChatType,
        /// `tag_filter` in WeCom's shape.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag_filter: Option<Value>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        allow_select: bool,
    },
}

fn is_single(c: &ChatType) -> bool {
    *c == ChatType::Single
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BatchStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    /// The job was cancelled before this batch was sent.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Batch {
    pub(super) client_msg_id: String,
    /// Recipients; 0 for a tag or everyone (WeChat counts them).
    pub(super) size: usize,
    pub(super) status: BatchStatus,
    pub(super) attempts: u32,
    /// WeChat's msg_id (a number on Official Accounts, WeCom's msgid string).
    #[serde(default)]
    pub(super) msg_id: Option<String>,
    #[serde(default)]
    pub(super) msg_data_id: Option<i64>,
    /// Unix seconds.
    #[serde(default)]
    pub(super) sent_at: Option<u64>,
    /// WeChat answered 45065: the batch had been sent already (by an attempt whose answer was
    /// lost); its msg_id is that send's.
    #[serde(default)]
    pub(super) already_sent: bool,
    /// WeCom: the send of an attempt whose answer was lost, found by [`Runner::reconcile`]
    /// (`already_sent` is set too).
    #[serde(default)]
    pub(super) reconciled: bool,
    /// Unix seconds when the first attempt started, persisted before the call: a WeCom
    /// reconcile searches WeCom's record from there on, so its window covers every attempt.
    #[serde(default)]
    pub(super) attempt_started_at: Option<u64>,
    /// The last failure (errcode and errmsg), kept while retrying and when failed.
    #[serde(default)]
    pub(super) error: Option<String>,
    /// WeCom: external contacts the message cannot reach (`fail_list`).
    #[serde(default)]
    pub(super) fail_list: Vec<String>,
    /// Unix seconds of the last `mass/get` / `get_groupmsg_task` check.
    #[serde(default)]
    pub(super) checked_at: Option<u64>,
    #[serde(default)]
    pub(super) deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Job {
    pub(super) job_id: String,
    pub(super) actor: String,
    pub(super) created_at: u64,
    #[serde(default)]
    pub(super) client_msg_id: Option<String>,
    pub(super) target: Target,
    pub(super) msgtype: String,
    pub(super) body: Value,
    pub(super) ignore_reprint: bool,
    pub(super) batches: Vec<Batch>,
    /// Unix seconds of the cancel, and who cancelled.
    #[serde(default)]
    pub(super) cancelled_at: Option<u64>,
    #[serde(default)]
    pub(super) cancelled_by: Option<String>,
}

/// What WeChat reported for a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct BatchResult {
    /// MASSSENDJOBFINISH `Status` ("send success", "err(10001)", ...), `mass/get`'s
    /// `msg_status` (SEND_SUCCESS, SEND_FAIL, DELETE), or on WeCom "confirmed" / "pending".
    pub(super) status: String,
    #[serde(default)]
    pub(super) total: Option<i64>,
    #[serde(default)]
    pub(super) filtered: Option<i64>,
    #[serde(default)]
    pub(super) sent: Option<i64>,
    #[serde(default)]
    pub(super) errors: Option<i64>,
    /// "callback", "mass/get" or "get_groupmsg_task".
    pub(super) source: String,
    /// WeCom: members who have not yet confirmed the group message.
    #[serde(default)]
    pub(super) pending_confirmation: Vec<String>,
    pub(super) at: u64,
}

impl BatchResult {
    /// Whether nothing more will come: on WeCom only once every member confirmed.
    pub(super) fn is_final(&self) -> bool {
        self.source != "get_groupmsg_task" || self.pending_confirmation.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct MsgIndex {
    pub(super) job_id: String,
    pub(super) batch: usize,
}

impl Job {
    /// A WeCom job's message in `add_msg_template`'s shape (`{"text", "attachments"}`). Jobs
    /// stored before attachments were added kept `msgtype` text or image and the bare body.
    pub(super) fn group_content(&self) -> Value {
        if self.body.get("text").is_some() || self.body.get("attachments").is_some() {
            return self.body.clone();
        }
        match self.msgtype.as_str() {
            "text" => serde_json::json!({ "text": self.body }),
            kind => serde_json::json!({ "attachments": [{ "msgtype": kind, kind: self.body }] }),
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

    /// The plain-bytes kinds read what earlier versions wrote, and write it the same.
    #[test]
    fn the_plain_bytes_kinds_keep_their_stored_bytes() {
        let job_id = "0123456789abcdef01234567".to_owned();
        assert_eq!(CLIENT_MSG_IDS.encode(&job_id), job_id.as_bytes());
        assert_eq!(
            CLIENT_MSG_IDS.decode("key", job_id.as_bytes()).unwrap(),
            job_id
        );
        assert_eq!(ACTIVE.encode(&()), b"1");
        ACTIVE.decode("job", b"1").unwrap();
    }

    #[test]
    fn the_json_kinds_keep_their_stored_bytes() {
        let index = MsgIndex {
            job_id: "j".into(),
            batch: 2,
        };
        assert_eq!(MSG_IDS.encode(&index), br#"{"job_id":"j","batch":2}"#);
        let recipients = vec!["o1".to_owned(), "o2".to_owned()];
        assert_eq!(RECIPIENTS.encode(&recipients), br#"["o1","o2"]"#);
    }
}
