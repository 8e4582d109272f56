//! What WeChat reports back, matched to the batches: MASSSENDJOBFINISH callbacks (the
//! forwarder's side, [`JobAttachment`]), the runner's `mass/get` and `get_groupmsg_task`
//! checks of sent batches, and the WeCom reconcile of a batch whose send answer was lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::broadcast::ChatType;
use crate::domain::group_message::media_ids;
use crate::domain::Platform;
use crate::error::ServiceError;
use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::services::media;
use crate::store::{DocWrite, Store, StoreError};
use crate::wechat::account::Account;
use crate::wechat::api::{groupmsg, mass};

use super::model::{unix_now, BatchResult, Job, Target, MSG_IDS, RESULTS};
use super::persist::{batch_key, load_job, update_job};
use super::runner::{classify, Outcome, Runner, Turn};

/// Slack on each side of a reconcile window, for the clocks of WeCom and this host.
const CLOCK_SKEW: u64 = 300;
/// The widest reconcile window: `get_groupmsg_list_v2` takes at most a month (93338).
const MAX_WINDOW: u64 = 28 * 24 * 3600;
/// Pages read before a reconcile gives up (and tries again later): 100 messages a page.
const MAX_PAGES: usize = 1000;

// ---- the forwarder's side --------------------------------------------------------------------

/// The forwarder's step (after attribution and enrichment) that attaches MASSSENDJOBFINISH
/// callbacks to their broadcast jobs ([`attach_to_jobs`]); given to it at start-up.
pub struct JobAttachment {
    store: Arc<dyn Store>,
}

impl JobAttachment {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Decorate for JobAttachment {
    async fn decorate(&self, events: &mut [pb::Event]) {
        attach_to_jobs(&*self.store, events).await;
    }
}

/// For every MASSSENDJOBFINISH whose msg_id is a batch of a job: sets `broadcast_job_id` and
/// records the batch's result. A lookup that fails leaves the event as it is (and is logged):
/// delivery never waits or fails because of it, and the runner's `mass/get` check covers the
/// result.
async fn attach_to_jobs(store: &dyn Store, events: &mut [pb::Event]) {
    for event in events.iter_mut() {
        let Some(Kind::MassSendFinished(m)) = &event.kind else {
            continue;
        };
        let found = match MSG_IDS
            .read(store, &event.account_id, &m.msg_id.to_string())
            .await
        {
            Ok(Some(stored)) => stored.value.ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(event_id = %event.id, error = %e,
                    "cannot look up the broadcast of a MASSSENDJOBFINISH");
                None
            }
        };
        let Some(index) = found else { continue };
        let result = BatchResult {
            status: m.status.clone(),
            total: Some(m.total_count),
            filtered: Some(m.filter_count),
            sent: Some(m.sent_count),
            errors: Some(m.error_count),
            source: "callback".into(),
            pending_confirmation: Vec::new(),
            at: unix_now(),
        };
        // Always: a retried delivery writes the same, and the callback's report replaces a
        // mass/get status.
        if let Err(e) = RESULTS
            .put(
                store,
                &event.account_id,
                &batch_key(&index.job_id, index.batch),
                &result,
                DocWrite::Always,
            )
            .await
        {
            tracing::warn!(event_id = %event.id, error = %e, "cannot record a broadcast result");
        }
        event.broadcast_job_id = index.job_id;
    }
}

/// What WeCom's record says about a batch in doubt.
pub(super) enum Reconciled {
    /// The lost attempt created this group message.
    Found(String),
    /// No group message of this batch: the attempt did not land.
    NotLanded,
}
impl Runner {
    /// WeCom: whether an earlier attempt of batch `i`, whose answer was lost, created the
    /// group message. `add_msg_template` has no idempotency key, so WeCom's own record is read
    /// (developer.work.weixin.qq.com/document/path/93338):
    ///
    /// - `get_groupmsg_list_v2` (`chat_type` single, `start_time`/`end_time` in unix seconds,
    ///   at most a month apart, `filter_type` 0 = created by the enterprise, which is what the
    ///   API creates, `limit` at most 100, `cursor` → `next_cursor`, empty on the last page)
    ///   lists the group messages created since the first attempt. Not filtered by `creator`:
    ///   the page documents that messages created through the API do not carry one, so a
    ///   `creator` filter could hide the very message looked for.
    /// - A candidate has this job's content (`text.content`, or the image's `media_id` in
    ///   `attachments`) and a msgid no other batch recorded (`bcast-msgid`).
    /// - `get_groupmsg_send_result` (`msgid`, `userid` = the sender, `limit` at most 1000,
    ///   `cursor`) lists its `send_list` (`external_userid`, `userid`, `status`): it is this
    ///   batch's send when every contact listed is one of this batch's recipients. The batches
    ///   of a job are disjoint, so a message of another batch, or of another job to other
    ///   contacts, has a contact that is not ours.
    ///
    /// Every page is read before concluding: a failed read is `Err(Retry)` (nothing is sent
    /// while unsure), a refused list `Err(Failed)`.
    pub(super) async fn reconcile(
        &self,
        account: &Account,
        job: &Job,
        i: usize,
    ) -> Result<Reconciled, Outcome> {
        let Target::External {
            sender, chat_type, ..
        } = &job.target
        else {
            return Ok(Reconciled::NotLanded);
        };
        let id = account.id.as_str();
        let recipients: HashSet<String> = self.recipients(id, job, i).await?.into_iter().collect();
        let content = job.group_content();
        // Media ids → the bytes behind them, so that a media id uploaded again is the same.
        let mut canon: HashMap<String, String> = HashMap::new();
        let since = job.batches[i].attempt_started_at.unwrap_or(job.created_at);
        let end = unix_now() + CLOCK_SKEW;
        let start = since
            .saturating_sub(CLOCK_SKEW)
            .max(end.saturating_sub(MAX_WINDOW));
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let list = groupmsg::get_groupmsg_list_v2(
                &self.svc.tokens,
                account,
                chat_type.as_str(),
                start,
                end,
                &cursor,
            )
            .await
            .map_err(classify)?;
            for m in list.group_msg_list {
                let listed = serde_json::json!({"attachments": m.attachments});
                for (_, media_id) in media_ids(&content).into_iter().chain(media_ids(&listed)) {
                    if canon.contains_key(&media_id) {
                        continue;
                    }
                    let hash = media::upload_hash(&self.svc, account, &media_id)
                        .await
                        .map_err(|e| Outcome::Retry(e.to_string()))?;
                    canon.insert(media_id.clone(), hash.unwrap_or(media_id));
                }
                if !same_content(&content, m.text.as_ref(), &m.attachments, &canon) {
                    continue;
                }
                match MSG_IDS.read(self.store(), id, &m.msgid).await {
                    Ok(Some(stored)) => {
                        let ours = stored
                            .value
                            .is_ok_and(|x| x.job_id == job.job_id && x.batch == i);
                        if ours {
                            // Recorded before a crash that came before the job's update.
                            return Ok(Reconciled::Found(m.msgid));
                        }
                        continue; // another batch's send
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Outcome::Retry(e.to_string())),
                }
                if self
                    .sends_to(account, sender, *chat_type, &m.msgid, &recipients)
                    .await?
                {
                    tracing::info!(account = id, job_id = %job.job_id, batch = i,
                        msgid = %m.msgid, "a lost WeCom group message was found");
                    return Ok(Reconciled::Found(m.msgid));
                }
            }
            if list.next_cursor.is_empty() {
                return Ok(Reconciled::NotLanded);
            }
            cursor = list.next_cursor;
        }
        Err(Outcome::Retry(format!(
            "get_groupmsg_list_v2 had more than {MAX_PAGES} pages; not sent again while unsure"
        )))
    }

    /// Whether the group message `msgid` goes, in `sender`'s name, to this batch's recipients
    /// only (`get_groupmsg_send_result`, every page: each entry's `external_userid`, or its
    /// `chat_id` for a message to customer groups). A batch that lists no recipients (a tag
    /// filter alone, every group of the sender) takes any message of the sender with its
    /// content. A refusal means the sender has no task in that message, so it is not ours; a
    /// failed read is `Err(Retry)`.
    async fn sends_to(
        &self,
        account: &Account,
        sender: &str,
        chat_type: ChatType,
        msgid: &str,
        recipients: &HashSet<String>,
    ) -> Result<bool, Outcome> {
        let mut cursor = String::new();
        let mut any = false;
        for _ in 0..MAX_PAGES {
            let page = match groupmsg::get_groupmsg_send_result(
                &self.svc.tokens,
                account,
                msgid,
                sender,
                &cursor,
            )
            .await
            {
                Ok(page) => page,
                Err(e) => {
                    return match classify(e) {
                        Outcome::Failed(_) => Ok(false),
                        other => Err(other),
                    }
                }
            };
            for s in &page.send_list {
                let to = match chat_type {
                    ChatType::Single => &s.external_userid,
                    ChatType::Group => &s.chat_id,
                };
                if !recipients.is_empty() && !recipients.contains(to) {
                    return Ok(false);
                }
                any = true;
            }
            if page.next_cursor.is_empty() {
                return Ok(any);
            }
            cursor = page.next_cursor;
        }
        Err(Outcome::Retry(format!(
            "get_groupmsg_send_result had more than {MAX_PAGES} pages; not sent again while unsure"
        )))
    }

    /// Sent batches without a final result get checked once `check_after` passed since they
    /// were sent (or last checked). `Done` once every sent batch has its final result.
    pub(super) async fn check_results(
        &mut self,
        account: &Arc<Account>,
        job_id: &str,
        held: &CancellationToken,
    ) -> Result<Turn, ServiceError> {
        let id = account.id.as_str();
        let Some((job, _)) = load_job(self.store(), id, job_id).await? else {
            return Ok(Turn::Later);
        };
        let check_after = self.cfg().check_after.as_secs();
        let now = unix_now();
        // The earliest next check, in seconds from now.
        let mut open: Option<u64> = None;
        let mut wait = |secs: u64| open = Some(open.map_or(secs, |o: u64| o.min(secs)));
        for (i, batch) in job.batches.iter().enumerate() {
            let Some(msg_id) = batch.msg_id.as_deref() else {
                continue; // failed or cancelled
            };
            let key = batch_key(job_id, i);
            let stored = RESULTS.read(self.store(), id, &key).await?;
            let (result, stored) = match stored {
                Some(s) => (Some(s.value?), Some(s.bytes)),
                None => (None, None),
            };
            if result.as_ref().is_some_and(BatchResult::is_final) {
                continue;
            }
            let since = batch.checked_at.or(batch.sent_at).unwrap_or(now);
            if now < since + check_after {
                wait(since + check_after - now);
                continue;
            }
            if held.is_cancelled() {
                return Ok(Turn::Stopped);
            }
            let checked = match account.platform {
                Platform::Mp => self.mass_get(account, msg_id).await,
                Platform::Work => self.groupmsg_task(account, msg_id).await,
            };
            update_job(self.store(), id, job_id, |j| {
                j.batches[i].checked_at = Some(now)
            })
            .await?;
            match checked {
                Ok(Some(result)) => {
                    // The runner never replaces a result (the callback's is the full one),
                    // except its own WeCom confirmation status, and that only if nobody
                    // changed it meanwhile (a DELETE's "cancelled" stays).
                    let write = match stored {
                        Some(old) => DocWrite::IfEquals(old),
                        None => DocWrite::IfAbsent,
                    };
                    RESULTS.put(self.store(), id, &key, &result, write).await?;
                    if !result.is_final() {
                        wait(check_after);
                    }
                }
                Ok(None) => wait(check_after),
                Err(e) => {
                    tracing::info!(account = id, job_id, batch = i, error = %e,
                        "cannot check a broadcast batch; checking again later");
                    wait(check_after);
                }
            }
        }
        Ok(match open {
            None => Turn::Done,
            // Results come in through callbacks meanwhile; a look once a minute retires a job
            // whose results are all in without waiting for the check.
            Some(secs) => Turn::WaitUntil(Instant::now() + Duration::from_secs(secs.clamp(1, 60))),
        })
    }

    /// `mass/get`: `None` while WeChat is still sending.
    async fn mass_get(
        &self,
        account: &Account,
        msg_id: &str,
    ) -> Result<Option<BatchResult>, ServiceError> {
        let msg_id: i64 = msg_id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("msg_id {msg_id:?}")))?;
        let s = mass::get(&self.svc.tokens, account, msg_id).await?;
        Ok((s.msg_status != "SENDING").then(|| BatchResult {
            status: s.msg_status,
            source: "mass/get".into(),
            at: unix_now(),
            ..Default::default()
        }))
    }

    /// WeCom `get_groupmsg_task`: which members have confirmed (status 2) the group message.
    async fn groupmsg_task(
        &self,
        account: &Account,
        msgid: &str,
    ) -> Result<Option<BatchResult>, ServiceError> {
        let t = groupmsg::get_groupmsg_task(&self.svc.tokens, account, msgid).await?;
        let pending: Vec<String> = t
            .task_list
            .into_iter()
            .filter(|t| t.status != 2)
            .map(|t| t.userid)
            .collect();
        Ok(Some(BatchResult {
            status: if pending.is_empty() {
                "confirmed"
            } else {
                "pending"
            }
            .into(),
            source: "get_groupmsg_task".into(),
            pending_confirmation: pending,
            at: unix_now(),
            ..Default::default()
        }))
    }
}

/// Whether a group message listed by `get_groupmsg_list_v2` has this job's content (`content`
/// in `add_msg_template`'s shape): the same text (or none), and the same attachments in the
/// same order, each of the same type with every field both show equal. A media id is compared
/// by what `canon` maps it to (the hash of the gateway's upload, so that the same bytes
/// uploaded again match); a field the list leaves out (or shows in place of one, such as an
/// image's `pic_url`) does not count against it: the recipients then decide.
fn same_content(
    content: &Value,
    text: Option<&Value>,
    attachments: &[Value],
    canon: &HashMap<String, String>,
) -> bool {
    let text_of = |t: Option<&Value>| {
        t.and_then(|t| t.get("content"))
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
    };
    if text_of(content.get("text")) != text_of(text) {
        return false;
    }
    let ours = content["attachments"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if ours.len() != attachments.len() {
        return false;
    }
    let same_media =
        |a: &str, b: &str| a == b || canon.get(a).is_some_and(|x| Some(x) == canon.get(b));
    ours.iter().zip(attachments).all(|(mine, listed)| {
        let Some(kind) = mine["msgtype"].as_str() else {
            return false;
        };
        if listed["msgtype"] != kind {
            return false;
        }
        let Some(fields) = listed[kind].as_object() else {
            return true;
        };
        fields.iter().all(
            |(k, v)| match (mine[kind].get(k).and_then(Value::as_str), v.as_str()) {
                (Some(a), Some(b)) if k == "media_id" || k == "pic_media_id" => same_media(a, b),
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(msgtype: &str, body: Value) -> Job {
        Job {
            job_id: "j".into(),
            actor: "ops".into(),
            created_at: 0,
            client_msg_id: None,
            target: Target::External {
                sender: "zhangsan".into(),
                chat_type: ChatType::Single,
                tag_filter: None,
                allow_select: false,
            },
            msgtype: msgtype.into(),
            body,
            ignore_reprint: false,
            batches: Vec::new(),
            cancelled_at: None,
            cancelled_by: None,
        }
    }

    #[test]
    fn a_listed_group_message_is_a_candidate_only_with_the_jobs_content() {
        let none = HashMap::new();
        let same = |j: &Job, text: Option<&Value>, attachments: &[Value]| {
            same_content(&j.group_content(), text, attachments, &none)
        };
        // Jobs stored before attachments (msgtype text or image, the bare body).
        let text = job("text", json!({"content": "新品上市"}));
        assert!(same(&text, Some(&json!({"content": "新品上市"})), &[]));
        assert!(!same(&text, Some(&json!({"content": "other"})), &[]));
        assert!(!same(&text, None, &[]));
        let image = json!({"msgtype": "image", "image": {"media_id": "IMG"}});
        assert!(!same(
            &text,
            Some(&json!({"content": "新品上市"})),
            std::slice::from_ref(&image)
        ));
        let img = job("image", json!({"media_id": "IMG"}));
        assert!(same(&img, None, &[image]));
        assert!(same(
            &img,
            Some(&json!({"content": ""})),
            &[json!({"msgtype": "image", "image": {"pic_url": "http://p.qpic.cn/x"}})]
        ));
        assert!(!same(
            &img,
            None,
            &[json!({"msgtype": "image", "image": {"media_id": "OTHER"}})]
        ));
        assert!(!same(&img, None, &[]));
    }

    #[test]
    fn every_attachment_type_takes_part_in_the_content_check() {
        let attachments = json!([
            {"msgtype": "image", "image": {"media_id": "IMG"}},
            {"msgtype": "link", "link": {"title": "T", "url": "https://e.com", "desc": "D"}},
            {"msgtype": "miniprogram", "miniprogram": {"title": "M", "pic_media_id": "PIC",
                "appid": "wx1", "page": "/p.html"}},
            {"msgtype": "video", "video": {"media_id": "VID"}},
            {"msgtype": "file", "file": {"media_id": "FILE"}},
        ]);
        let j = job(
            "text+image+link+miniprogram+video+file",
            json!({"text": {"content": "hi"}, "attachments": attachments}),
        );
        let content = j.group_content();
        let listed: Vec<Value> = attachments.as_array().unwrap().clone();
        let text = json!({"content": "hi"});
        let none = HashMap::new();
        assert!(same_content(&content, Some(&text), &listed, &none));
        // Each attachment's change, one at a time, makes it another message.
        for (i, kind, field, value) in [
            (0, "image", "media_id", "IMG2"),
            (1, "link", "title", "T2"),
            (1, "link", "url", "https://other.com"),
            (2, "miniprogram", "pic_media_id", "PIC2"),
            (2, "miniprogram", "appid", "wx2"),
            (3, "video", "media_id", "VID2"),
            (4, "file", "media_id", "FILE2"),
        ] {
            let mut changed = listed.clone();
            changed[i][kind][field] = json!(value);
            assert!(
                !same_content(&content, Some(&text), &changed, &none),
                "{kind}.{field}"
            );
        }
        let mut reordered = listed.clone();
        reordered.swap(3, 4);
        assert!(!same_content(&content, Some(&text), &reordered, &none));
        assert!(!same_content(&content, Some(&text), &listed[..4], &none));
        // A media id uploaded again (the same bytes) is the same media.
        let mut reuploaded = listed.clone();
        reuploaded[4]["file"]["media_id"] = json!("FILE-NEW");
        let canon: HashMap<String, String> = [("FILE", "sha-f"), ("FILE-NEW", "sha-f")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert!(!same_content(&content, Some(&text), &reuploaded, &none));
        assert!(same_content(&content, Some(&text), &reuploaded, &canon));
    }
}
