//! What the transports answer about a job: its status, counts over every recipient (what the
//! runner recorded, and what WeChat reported back), and a page of recipients.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{Store, StoreError};

use super::jobs::kind_name;
use super::model::{
    page_key, Counts, Job, PageStatus, RecipientStatus, Reported, PAGES, PAGE_SIZE, RESULTS,
};

#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq, Eq)]
pub struct CountsView {
    /// Not sent yet.
    pub pending: usize,
    /// Accepted by WeChat (a msgid), whatever it reported since.
    pub sent: usize,
    /// Refused for that follower (errcode).
    pub failed: usize,
    /// An attempt whose outcome is unknown, not repeated (see the docs).
    pub unknown: usize,
    pub cancelled: usize,
    /// Of the sent: TEMPLATESENDJOBFINISH `success` (or a notice's sent event with no error).
    pub delivered: usize,
    /// Of the sent: `failed:user block`.
    pub user_block: usize,
    /// Of the sent: `failed: system failed`, or another failure WeChat reported.
    pub system_failed: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipientView {
    pub open_id: String,
    /// `pending`, `sent`, `failed`, `unknown`, `cancelled`, or once WeChat reported on a sent
    /// one: `delivered`, `user_block`, `system_failed`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PauseView {
    /// Unix seconds.
    pub until: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub job_id: String,
    /// `template` or `subscribe`.
    pub kind: String,
    pub template_id: String,
    /// `queued`, `sending`, `paused` (a quota answer), `cancelling`, `finished` (every
    /// recipient settled), `cancelled`.
    pub status: String,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    pub total: usize,
    pub counts: CountsView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// Recipients from `offset`, in the order of the request.
    pub recipients: Vec<RecipientView>,
    pub offset: usize,
    /// The `offset` of the next page of recipients; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

pub(super) fn reported_bucket(status: &str) -> &'static str {
    match status {
        "delivered" => "delivered",
        "user_block" => "user_block",
        _ => "system_failed",
    }
}

fn status(job: &Job) -> &'static str {
    let open = job
        .pages
        .iter()
        .any(|p| matches!(p.status, PageStatus::Queued | PageStatus::Sending));
    match (open, job.cancelled_at.is_some()) {
        (true, true) => "cancelling",
        (true, false) if job.paused.is_some() => "paused",
        (true, false) if job.pages.iter().all(|p| p.status == PageStatus::Queued) => "queued",
        (true, false) => "sending",
        (false, true) => "cancelled",
        (false, false) => "finished",
    }
}

pub(super) async fn view(
    store: &dyn Store,
    account: &str,
    job: &Job,
    offset: usize,
    limit: usize,
) -> Result<JobView, StoreError> {
    let mut settled = Counts::default();
    for p in &job.pages {
        settled.add(&p.counts);
    }
    let mut counts = CountsView {
        pending: job.total.saturating_sub(settled.settled()),
        sent: settled.sent,
        failed: settled.failed,
        unknown: settled.unknown,
        cancelled: settled.cancelled,
        ..Default::default()
    };
    // What WeChat reported, over every page with a sent recipient.
    let sent_pages: Vec<usize> = (0..job.pages.len())
        .filter(|&i| job.pages[i].counts.sent > 0)
        .collect();
    let reads = sent_pages.iter().map(|&i| {
        let key = page_key(&job.job_id, i);
        async move { RESULTS.get(store, account, &key).await }
    });
    let mut reported: std::collections::HashMap<
        usize,
        std::collections::BTreeMap<usize, Reported>,
    > = Default::default();
    for (i, r) in sent_pages
        .iter()
        .zip(futures::future::join_all(reads).await)
    {
        let Some(results) = r? else { continue };
        for rep in results.values() {
            match reported_bucket(&rep.status) {
                "delivered" => counts.delivered += 1,
                "user_block" => counts.user_block += 1,
                _ => counts.system_failed += 1,
            }
        }
        reported.insert(*i, results);
    }
    let mut recipients = Vec::new();
    let end = offset.saturating_add(limit).min(job.total);
    let mut at = offset;
    while at < end {
        let (p, first) = (at / PAGE_SIZE, at % PAGE_SIZE);
        let Some(page) = PAGES.get(store, account, &page_key(&job.job_id, p)).await? else {
            break;
        };
        let cancelled_page = job.pages[p].status == PageStatus::Cancelled;
        for (k, r) in page.recipients.iter().enumerate().skip(first) {
            if at >= end {
                break;
            }
            let mut status = match r.status {
                RecipientStatus::Pending if cancelled_page => "cancelled".to_owned(),
                RecipientStatus::Pending => "pending".to_owned(),
                RecipientStatus::Sent => "sent".to_owned(),
                RecipientStatus::Failed => "failed".to_owned(),
                RecipientStatus::Unknown => "unknown".to_owned(),
                RecipientStatus::Cancelled => "cancelled".to_owned(),
            };
            if let Some(rep) = reported.get(&p).and_then(|m| m.get(&k)) {
                status = reported_bucket(&rep.status).to_owned();
            }
            recipients.push(RecipientView {
                open_id: r.open_id.clone(),
                status,
                msgid: r.msgid,
                errcode: r.errcode,
                error: r.error.clone(),
                attempts: r.attempts,
            });
            at += 1;
        }
    }
    Ok(JobView {
        job_id: job.job_id.clone(),
        kind: kind_name(job.kind).into(),
        template_id: job.template_id.clone(),
        status: status(job).into(),
        created_at: job.created_at,
        finished_at: job.finished_at,
        cancelled_at: job.cancelled_at,
        client_msg_id: job.client_msg_id.clone(),
        total: job.total,
        counts,
        paused: job.paused.as_ref().map(|p| PauseView {
            until: p.until,
            reason: p.reason.clone(),
        }),
        recipients,
        offset,
        next_offset: (limit > 0 && end < job.total).then_some(end),
    })
}
