//! The template job rpcs' conversions: a `SendTemplateRequest` parsed with the same rules as
//! the admin body (`crate::domain::template`), and a job view as a `TemplateSendJob`.

use serde_json::{json, Value};
use tonic::Status;

use crate::domain::template::{TemplateKind, TemplateSend};
use crate::error::ServiceError;
use crate::pb;
use crate::services::templates::{JobView, SendTemplate};

pub(super) fn send_request(r: pb::SendTemplateRequest) -> Result<SendTemplate, Status> {
    let kind = if r.subscribe {
        TemplateKind::Subscribe
    } else {
        TemplateKind::Template
    };
    let data: serde_json::Map<String, Value> = r
        .data
        .into_iter()
        .map(|(k, v)| (k, json!({ "value": v })))
        .collect();
    let miniprogram = (!r.miniprogram_appid.is_empty())
        .then(|| json!({"appid": r.miniprogram_appid, "pagepath": r.miniprogram_pagepath}));
    let send = TemplateSend::parse(
        kind,
        &r.template_id,
        &Value::Object(data),
        Some(r.url.as_str()).filter(|u| !u.is_empty()),
        miniprogram.as_ref(),
        &r.open_ids,
    )
    .map_err(|e| Status::from(ServiceError::Validation(e)))?;
    Ok(SendTemplate {
        send,
        client_msg_id: Some(r.client_msg_id).filter(|c| !c.is_empty()),
    })
}

pub(super) fn job_to_pb(job: JobView, created: bool) -> pb::TemplateSendJob {
    let c = &job.counts;
    pb::TemplateSendJob {
        job_id: job.job_id,
        kind: job.kind,
        template_id: job.template_id,
        status: job.status,
        created,
        total: job.total as u64,
        counts: Some(pb::TemplateSendCounts {
            pending: c.pending as u64,
            sent: c.sent as u64,
            failed: c.failed as u64,
            unknown: c.unknown as u64,
            cancelled: c.cancelled as u64,
            delivered: c.delivered as u64,
            user_block: c.user_block as u64,
            system_failed: c.system_failed as u64,
        }),
        recipients: job
            .recipients
            .into_iter()
            .map(|r| pb::TemplateSendRecipient {
                open_id: r.open_id,
                status: r.status,
                msgid: r.msgid.unwrap_or(0),
                errcode: r.errcode.unwrap_or(0),
                error: r.error.unwrap_or_default(),
            })
            .collect(),
        next_offset: job.next_offset.unwrap_or(0) as u64,
        paused_reason: job.paused.map(|p| p.reason).unwrap_or_default(),
    }
}
