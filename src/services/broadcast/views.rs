//! The views both transports answer: a job and its batches as the admin API and gRPC show
//! them, with each status derived from the stored batch and the result WeChat reported.

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::broadcast::ChatType;
use crate::domain::Platform;
use crate::store::{Store, StoreError};
use crate::wechat::account::Account;

use super::model::{BatchResult, BatchStatus, Job, Target};
use super::persist::{batch_key, read_result};

/// A job as `GET .../broadcasts/{job_id}` and `GetBroadcast` show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = BroadcastJob)]
pub struct JobView {
    pub job_id: String,
    pub status: &'static str,
    pub created_at: u64,
    pub actor: String,
    pub client_msg_id: Option<String>,
    pub msgtype: String,
    /// `{"tag_id": N}`, `{"all": true}`, `{"open_ids": <count>}`,
    /// `{"external_user_ids": <count>, "sender": "..", "tag_filter"?, "allow_select"?}` or
    /// `{"chat_type": "group", "chat_ids": <count>, "sender": ".."}` (a count of 0: none
    /// listed).
    #[schema(value_type = Object)]
    pub audience: Value,
    pub batches: Vec<BatchView>,
    /// Unix seconds; null unless cancelled.
    pub cancelled_at: Option<u64>,
    pub cancelled_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = BroadcastBatch)]
pub struct BatchView {
    pub index: usize,
    pub client_msg_id: String,
    pub size: usize,
    pub status: &'static str,
    /// A number on Official Accounts, WeCom's msgid string on WeCom; null until sent.
    #[schema(schema_with = msg_id_schema)]
    pub msg_id: Value,
    pub total: Option<i64>,
    pub filtered: Option<i64>,
    pub sent: Option<i64>,
    pub errors: Option<i64>,
    pub wechat_status: Option<String>,
    pub result_source: Option<String>,
    pub attempts: u32,
    pub already_sent: bool,
    /// WeCom: found in WeCom's record after an attempt whose answer was lost.
    pub reconciled: bool,
    pub error: Option<String>,
    pub fail_list: Vec<String>,
    pub pending_confirmation: Vec<String>,
    pub deleted: bool,
}

/// `msg_id` in the OpenAPI document: an integer, a string or null.
fn msg_id_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Integer))
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "A number on Official Accounts, WeCom's msgid string on WeCom; null until sent.",
        ))
        .build()
        .into()
}

pub(super) async fn view(
    store: &dyn Store,
    account_id: &str,
    account: &Account,
    job: &Job,
) -> Result<JobView, StoreError> {
    let mut batches = Vec::with_capacity(job.batches.len());
    for (i, b) in job.batches.iter().enumerate() {
        let result = match b.status {
            BatchStatus::Sent => read_result(store, account_id, &batch_key(&job.job_id, i)).await?,
            _ => None,
        };
        let finished = result.as_ref().is_some_and(BatchResult::is_final);
        let r = result.clone().unwrap_or_default();
        batches.push(BatchView {
            index: i,
            client_msg_id: b.client_msg_id.clone(),
            size: b.size,
            status: match b.status {
                BatchStatus::Queued => "queued",
                BatchStatus::Sending => "sending",
                BatchStatus::Sent if finished => "finished",
                BatchStatus::Sent => "sent",
                BatchStatus::Failed => "failed",
                BatchStatus::Cancelled => "cancelled",
            },
            msg_id: match (&b.msg_id, account.platform) {
                (None, _) => Value::Null,
                (Some(m), Platform::Mp) => m.parse::<i64>().map_or(json!(m), |n| json!(n)),
                (Some(m), Platform::Work) => json!(m),
            },
            total: r.total,
            filtered: r.filtered,
            sent: r.sent,
            errors: r.errors,
            wechat_status: result.as_ref().map(|r| r.status.clone()),
            result_source: result.as_ref().map(|r| r.source.clone()),
            attempts: b.attempts,
            already_sent: b.already_sent,
            reconciled: b.reconciled,
            error: b.error.clone(),
            fail_list: b.fail_list.clone(),
            pending_confirmation: match (&job.target, &result) {
                (_, Some(r)) if r.source == "get_groupmsg_task" => r.pending_confirmation.clone(),
                // Until checked, the sender has yet to confirm the group message.
                (Target::External { sender, .. }, None) if b.status == BatchStatus::Sent => {
                    vec![sender.clone()]
                }
                _ => Vec::new(),
            },
            deleted: b.deleted,
        });
    }
    Ok(JobView {
        job_id: job.job_id.clone(),
        status: job_status(&batches, job.cancelled_at.is_some()),
        created_at: job.created_at,
        actor: job.actor.clone(),
        client_msg_id: job.client_msg_id.clone(),
        msgtype: job.msgtype.clone(),
        audience: match &job.target {
            Target::Tag { tag_id } => json!({ "tag_id": tag_id }),
            Target::All => json!({ "all": true }),
            Target::OpenIds => {
                json!({ "open_ids": job.batches.iter().map(|b| b.size).sum::<usize>() })
            }
            Target::External {
                sender,
                chat_type,
                tag_filter,
                allow_select,
            } => {
                let listed = job.batches.iter().map(|b| b.size).sum::<usize>();
                let mut audience = match chat_type {
                    ChatType::Single => json!({ "external_user_ids": listed, "sender": sender }),
                    ChatType::Group => {
                        json!({ "chat_type": "group", "chat_ids": listed, "sender": sender })
                    }
                };
                if let Some(filter) = tag_filter {
                    audience["tag_filter"] = filter.clone();
                }
                if *allow_select {
                    audience["allow_select"] = json!(true);
                }
                audience
            }
        },
        batches,
        cancelled_at: job.cancelled_at,
        cancelled_by: job.cancelled_by.clone(),
    })
}

fn job_status(batches: &[BatchView], cancelled: bool) -> &'static str {
    let has = |s: &str| batches.iter().any(|b| b.status == s);
    if batches.iter().all(|b| b.status == "queued") {
        "queued"
    } else if has("queued") || has("sending") {
        "sending"
    } else if cancelled {
        "cancelled"
    } else if batches.iter().all(|b| b.status == "failed") {
        "failed"
    } else if has("sent") {
        "sent"
    } else {
        "finished"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(status: &'static str) -> BatchView {
        BatchView {
            index: 0,
            client_msg_id: String::new(),
            size: 2,
            status,
            msg_id: Value::Null,
            total: None,
            filtered: None,
            sent: None,
            errors: None,
            wechat_status: None,
            result_source: None,
            attempts: 0,
            already_sent: false,
            reconciled: false,
            error: None,
            fail_list: Vec::new(),
            pending_confirmation: Vec::new(),
            deleted: false,
        }
    }

    #[test]
    fn a_job_status_follows_its_batches() {
        let status = |list: &[&'static str], cancelled| {
            job_status(
                &list.iter().map(|s| batch(s)).collect::<Vec<_>>(),
                cancelled,
            )
        };
        let s = |list: &[&'static str]| status(list, false);
        assert_eq!(s(&["queued", "queued"]), "queued");
        assert_eq!(s(&["sent", "queued"]), "sending");
        assert_eq!(s(&["sending"]), "sending");
        assert_eq!(s(&["sent", "failed"]), "sent");
        assert_eq!(s(&["finished", "failed"]), "finished");
        assert_eq!(s(&["failed", "failed"]), "failed");
        // Cancelled: once nothing is pending, whatever was sent.
        assert_eq!(status(&["sending", "cancelled"], true), "sending");
        assert_eq!(status(&["sent", "cancelled"], true), "cancelled");
        assert_eq!(status(&["cancelled", "cancelled"], true), "cancelled");
    }
}
