//! What WeChat reports back, matched to the recipient by msgid: TEMPLATESENDJOBFINISH
//! (`Status` `success`, `failed:user block`, `failed: system failed`; developers.weixin.qq.com/
//! doc/offiaccount/Message_Management/Template_Message_Interface.html, "事件推送"), on the
//! forwarder's side before delivery: the event gets `template_send_job_id` and the recipient
//! its result. A notice's subscribe_msg_sent_event (`MsgID`, `ErrorCode` 0 when sent) is
//! matched the same way.

use std::sync::Arc;

use async_trait::async_trait;

use crate::outbox::Decorate;
use crate::pb::{self, event::Kind};
use crate::store::{DocWrite, Store, StoreError};

use super::model::{page_key, unix_now, Reported, MSG_IDS, RESULTS};

/// The forwarder's step that attaches template send results to their jobs.
pub struct TemplateAttachment {
    store: Arc<dyn Store>,
}

impl TemplateAttachment {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Decorate for TemplateAttachment {
    async fn decorate(&self, events: &mut [pb::Event]) {
        for event in events.iter_mut() {
            // (msgid, what the job records, WeChat's words)
            let reports: Vec<(i64, &'static str, String)> = match &event.kind {
                Some(Kind::TemplateSendFinished(t)) => {
                    vec![(t.msg_id, template_status(&t.status), t.status.clone())]
                }
                Some(Kind::SubscribeNoticeSent(s)) => s
                    .results
                    .iter()
                    .map(|r| {
                        let status = if r.error_code == 0 {
                            "delivered"
                        } else {
                            "failed"
                        };
                        (r.msg_id, status, r.error_status.clone())
                    })
                    .collect(),
                _ => continue,
            };
            for (msg_id, status, raw) in reports {
                match attach(&*self.store, &event.account_id, msg_id, status, &raw).await {
                    Ok(Some(job_id)) => event.template_send_job_id = job_id,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(event_id = %event.id, error = %e,
                        "cannot attach a template send result to its job"),
                }
            }
        }
    }
}

/// TEMPLATESENDJOBFINISH's `Status` as the job reports it.
pub(super) fn template_status(raw: &str) -> &'static str {
    let squashed: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match squashed.as_str() {
        "success" => "delivered",
        "failed:userblock" => "user_block",
        "failed:systemfailed" => "system_failed",
        _ => "failed",
    }
}

/// Records the result on the recipient the msgid names; the job id, or `None` when the msgid
/// is not a gateway job's. Idempotent: a retried delivery writes the same.
async fn attach(
    store: &dyn Store,
    account: &str,
    msg_id: i64,
    status: &str,
    raw: &str,
) -> Result<Option<String>, StoreError> {
    let Some(index) = MSG_IDS.get(store, account, &msg_id.to_string()).await? else {
        return Ok(None);
    };
    let key = page_key(&index.job_id, index.page);
    let reported = Reported {
        status: status.into(),
        raw: raw.to_owned(),
        at: unix_now(),
    };
    loop {
        let stored = RESULTS.read(store, account, &key).await?;
        let (mut map, write) = match stored {
            Some(s) => (s.value?, DocWrite::IfEquals(s.bytes)),
            None => (Default::default(), DocWrite::IfAbsent),
        };
        if map
            .get(&index.index)
            .is_some_and(|r: &Reported| r.raw == raw)
        {
            break;
        }
        map.insert(index.index, reported.clone());
        if RESULTS.put(store, account, &key, &map, write).await? {
            break;
        }
    }
    Ok(Some(index.job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_statuses_are_named() {
        // The three Status values of TEMPLATESENDJOBFINISH as the page documents them.
        assert_eq!(template_status("success"), "delivered");
        assert_eq!(template_status("failed:user block"), "user_block");
        assert_eq!(template_status("failed: system failed"), "system_failed");
        assert_eq!(template_status("something else"), "failed");
    }
}
