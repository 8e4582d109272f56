//! The conversions between the messages of `gateway.proto` and the use cases' inputs and
//! answers (`crate::services`), in one place, so that each rpc of [`super::gateway`] reads:
//! authenticate, convert at the door, call the use case the admin API calls, convert back.
//!
//! A request that is missing a field or names an unknown one is refused with
//! `ServiceError::Validation` naming the field (`INVALID_ARGUMENT`, like the admin API's 400).

use crate::domain::autoreply::{Matcher, Reply, Rule};
use crate::domain::broadcast::{
    Audience, Broadcast, BroadcastAudience, BroadcastMessage, ChatType, ExternalAudience,
};
use crate::domain::message::CustomMessage;
use crate::domain::scene::SceneInput;
use crate::domain::Platform;
use crate::error::ServiceError;
use crate::pb::{
    self, create_qr_code_request, reply_content, send_broadcast_request, send_message_request,
};
use crate::services::autoreply::StoredRule;
use crate::services::broadcast::{JobView, SendBroadcast};
use crate::services::h5::JsapiSignature;
use crate::services::links::CreatedLink;
use crate::services::menu::LiveMenu;
use crate::services::qrcode::{CreateQrCode, QrCode};
use crate::services::tags::{TagSummary, Tagged};

// QR codes.

impl TryFrom<pb::CreateQrCodeRequest> for CreateQrCode {
    type Error = ServiceError;

    fn try_from(r: pb::CreateQrCodeRequest) -> Result<Self, ServiceError> {
        let scene = match r.scene {
            Some(create_qr_code_request::Scene::SceneId(id)) => SceneInput::Id(id.into()),
            Some(create_qr_code_request::Scene::SceneStr(s)) => SceneInput::Str(s),
            None => {
                return Err(ServiceError::Validation(
                    "scene: set scene_id or scene_str".into(),
                ))
            }
        };
        Ok(Self {
            scene,
            permanent: r.permanent,
            expire_seconds: (r.expire_seconds != 0).then_some(r.expire_seconds.into()),
            label: r.label,
            metadata: r.metadata.into_iter().collect(),
            users: r.users,
            welcome: r.welcome.map(|w| reply_from_pb(w, "welcome")).transpose()?,
        })
    }
}

impl From<QrCode> for pb::CreateQrCodeResponse {
    fn from(code: QrCode) -> Self {
        Self {
            scene: code.scene,
            ticket: code.ticket,
            url: code.url,
            image_url: code.image_url,
            expire_at: code
                .expire_at
                .map(|seconds| pb::Timestamp { seconds, nanos: 0 }),
        }
    }
}

// Customer-service messages.

/// The message of a `SendMessageRequest`: its `message` oneof (text or image) or its
/// `message_json` (any type, as the admin API's body), exactly one of them.
pub(crate) fn custom_message(
    platform: Platform,
    oneof: Option<send_message_request::Message>,
    message_json: &str,
) -> Result<CustomMessage, ServiceError> {
    let v = match (oneof, message_json.is_empty()) {
        (Some(_), false) => {
            return Err(ServiceError::Validation(
                "message: set either text/image or message_json, not both".into(),
            ))
        }
        (Some(send_message_request::Message::Text(t)), true) => {
            serde_json::json!({"text": {"content": t.content}})
        }
        (Some(send_message_request::Message::Image(i)), true) => {
            serde_json::json!({"image": {"media_id": i.media_id}})
        }
        (None, false) => serde_json::from_str(message_json)
            .map_err(|e| ServiceError::Validation(format!("message_json: not JSON: {e}")))?,
        (None, true) => {
            return Err(ServiceError::Validation(
                "message: set text, image or message_json".into(),
            ))
        }
    };
    CustomMessage::parse(platform, &v).map_err(ServiceError::Validation)
}

// Menus.

/// `SetMenuRequest.menu_json`: WeChat's own menu JSON, as the admin API's body.
pub(crate) fn menu_json(s: &str) -> Result<serde_json::Value, ServiceError> {
    serde_json::from_str(s)
        .map_err(|e| ServiceError::Validation(format!("menu_json: not JSON: {e}")))
}

impl From<LiveMenu> for pb::GetMenuResponse {
    fn from(live: LiveMenu) -> Self {
        Self {
            menu_json: live.menu.to_string(),
            version: live.version.unwrap_or(0),
            drift: live.drift,
        }
    }
}

// Auto-reply rules and welcomes.

/// A reply, which must have its content set; `at` names the field in the refusal.
fn reply_from_pb(r: pb::ReplyContent, at: &str) -> Result<Reply, ServiceError> {
    Ok(match r.content {
        Some(reply_content::Content::Text(t)) => Reply::Text { content: t.content },
        Some(reply_content::Content::Image(i)) => Reply::Image {
            media_id: i.media_id,
        },
        Some(reply_content::Content::News(n)) => Reply::News {
            title: n.title,
            description: n.description,
            pic_url: n.pic_url,
            url: n.url,
        },
        None => {
            return Err(ServiceError::Validation(format!(
                "{at}: set text, image or news"
            )))
        }
    })
}

impl From<&Reply> for pb::ReplyContent {
    fn from(r: &Reply) -> Self {
        let content = match r {
            Reply::Text { content } => reply_content::Content::Text(pb::TextContent {
                content: content.clone(),
            }),
            Reply::Image { media_id } => reply_content::Content::Image(pb::ImageContent {
                media_id: media_id.clone(),
            }),
            Reply::News {
                title,
                description,
                pic_url,
                url,
            } => reply_content::Content::News(pb::NewsArticle {
                title: title.clone(),
                description: description.clone(),
                pic_url: pic_url.clone(),
                url: url.clone(),
            }),
        };
        Self {
            content: Some(content),
        }
    }
}

/// `PutReplyRuleRequest.rule`, which must be set.
impl TryFrom<Option<pb::ReplyRule>> for Rule {
    type Error = ServiceError;

    fn try_from(r: Option<pb::ReplyRule>) -> Result<Self, ServiceError> {
        let r = r.ok_or_else(|| ServiceError::Validation("rule: required".into()))?;
        let value = r.match_value;
        let matcher = match r.match_kind.as_str() {
            "exact" => Matcher::Exact(value),
            "prefix" => Matcher::Prefix(value),
            "contains" => Matcher::Contains(value),
            "regex" => Matcher::Regex(value),
            "click" => Matcher::Click(value),
            other => {
                return Err(ServiceError::Validation(format!(
                    "rule.match_kind: {other:?} is not exact, prefix, contains, regex or click"
                )))
            }
        };
        let reply = reply_from_pb(
            r.reply.ok_or_else(|| {
                ServiceError::Validation("rule.reply: set text, image or news".into())
            })?,
            "rule.reply",
        )?;
        Ok(Self {
            id: r.id,
            matcher,
            reply,
            priority: r.priority,
            enabled: r.enabled.unwrap_or(true),
        })
    }
}

impl From<&StoredRule> for pb::ReplyRule {
    fn from(s: &StoredRule) -> Self {
        let (kind, value) = match &s.rule.matcher {
            Matcher::Exact(v) => ("exact", v),
            Matcher::Prefix(v) => ("prefix", v),
            Matcher::Contains(v) => ("contains", v),
            Matcher::Regex(v) => ("regex", v),
            Matcher::Click(v) => ("click", v),
        };
        Self {
            id: s.rule.id.clone(),
            match_kind: kind.to_owned(),
            match_value: value.clone(),
            reply: Some((&s.rule.reply).into()),
            priority: s.rule.priority,
            enabled: Some(s.rule.enabled),
            created_at_ms: s.created_at_ms as i64,
            updated_at_ms: s.updated_at_ms as i64,
            actor: s.actor.clone(),
        }
    }
}

// Tracked links.

impl From<CreatedLink> for pb::CreateLinkResponse {
    fn from(l: CreatedLink) -> Self {
        Self {
            code: l.code,
            url: l.url,
            target: l.target,
            label: l.label,
        }
    }
}

// User tags.

impl From<Vec<TagSummary>> for pb::ListTagsResponse {
    fn from(tags: Vec<TagSummary>) -> Self {
        Self {
            tags: tags
                .into_iter()
                .map(|t| pb::TagInfo {
                    tag_id: t.id,
                    name: t.name,
                    count: t.count,
                    reserved: t.reserved,
                })
                .collect(),
        }
    }
}

impl From<JsapiSignature> for pb::GetJsapiSignatureResponse {
    fn from(s: JsapiSignature) -> Self {
        let (agent_signature, agent_id) = s.agent.unwrap_or_default();
        Self {
            app_id: s.app_id,
            timestamp: s.timestamp,
            nonce_str: s.nonce_str,
            signature: s.signature,
            agent_signature,
            agent_id,
        }
    }
}

impl From<Tagged> for pb::TagUsersResponse {
    fn from(done: Tagged) -> Self {
        Self {
            users: done.users as u64,
            batches: done.batches as u64,
        }
    }
}

// Broadcasts.

/// `message_json` of the broadcast requests: the message as the admin API's body has it.
pub(crate) fn message_json(s: &str) -> Result<serde_json::Value, ServiceError> {
    serde_json::from_str(s)
        .map_err(|e| ServiceError::Validation(format!("message_json: not JSON: {e}")))
}

/// A job as every broadcast rpc answers it; `created` only for the request that made it.
pub(crate) fn job_to_pb(job: JobView, created: bool) -> pb::BroadcastJob {
    let count = |v: Option<i64>| v.unwrap_or(-1);
    pb::BroadcastJob {
        job_id: job.job_id,
        status: job.status.to_owned(),
        created,
        msgtype: job.msgtype,
        client_msg_id: job.client_msg_id.unwrap_or_default(),
        cancelled_at: job.cancelled_at.unwrap_or(0),
        batches: job
            .batches
            .into_iter()
            .map(|b| pb::BroadcastBatch {
                index: b.index as u32,
                status: b.status.to_owned(),
                msg_id: match b.msg_id {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                },
                client_msg_id: b.client_msg_id,
                size: b.size as u64,
                total: count(b.total),
                filtered: count(b.filtered),
                sent: count(b.sent),
                errors: count(b.errors),
                wechat_status: b.wechat_status.unwrap_or_default(),
                already_sent: b.already_sent,
                reconciled: b.reconciled,
                error: b.error.unwrap_or_default(),
                fail_list: b.fail_list,
                pending_confirmation: b.pending_confirmation,
                deleted: b.deleted,
                attempts: b.attempts,
            })
            .collect(),
    }
}

/// The typed audience arrives as the domain's: each openid, external_userid and sender is
/// checked here by the rules (and in the words) the admin API's JSON parse uses. Whether the
/// account's platform takes it is the use case's to check.
impl TryFrom<pb::SendBroadcastRequest> for SendBroadcast {
    type Error = ServiceError;

    fn try_from(r: pb::SendBroadcastRequest) -> Result<Self, ServiceError> {
        use send_broadcast_request::Audience as Pb;
        let v = ServiceError::Validation;
        let Some(audience) = r.audience else {
            return Err(v("audience: set tag_id, all, open_ids or external".into()));
        };
        let message_json = message_json(&r.message_json)?;
        let audience = match audience {
            Pb::TagId(tag_id) => BroadcastAudience::Followers(Audience::Tag(tag_id)),
            Pb::All(all) => BroadcastAudience::Followers(Audience::all(all).map_err(v)?),
            Pb::OpenIds(list) => {
                BroadcastAudience::Followers(Audience::open_ids(list.open_ids).map_err(v)?)
            }
            Pb::External(e) => BroadcastAudience::External(external_audience(e).map_err(v)?),
        };
        let message = BroadcastMessage::parse_for(&audience, &message_json).map_err(v)?;
        Ok(Self {
            broadcast: Broadcast { audience, message },
            client_msg_id: (!r.client_msg_id.is_empty()).then_some(r.client_msg_id),
        })
    }
}

/// A WeCom audience by the rules (and in the words) of the admin API's JSON.
fn external_audience(e: pb::ExternalAudience) -> Result<ExternalAudience, String> {
    ExternalAudience {
        chat_type: ChatType::parse(&e.chat_type)?,
        external_user_ids: e.external_user_ids,
        chat_ids: e.chat_ids,
        sender: e.sender,
        tag_filter: e.tag_filter.into_iter().map(|g| g.tag_ids).collect(),
        allow_select: e.allow_select,
    }
    .check()
}

/// An audience sync as `StartSync` and `GetSync` answer it.
pub(crate) fn sync_to_pb(view: crate::services::sync::SyncView) -> pb::Sync {
    let at = |seconds: u64| pb::Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: 0,
    };
    pb::Sync {
        sync_id: view.sync_id,
        account_id: view.account,
        kind: view.kind.to_owned(),
        status: view.status.to_owned(),
        pages: view.pages,
        users: view.users,
        failures: view.failures,
        left: view.left,
        pauses: view.pauses,
        last_error: view.last_error.unwrap_or_default(),
        created_at: Some(at(view.created_at)),
        updated_at: Some(at(view.updated_at)),
        finished_at: view.finished_at.map(at),
        paused_until: view.paused_until.map(at),
        actor: view.actor,
    }
}

/// A WeCom corp tag group (`crate::services::corp_tags`) as `ListCorpTags` and `CreateCorpTag`
/// answer it.
pub fn corp_tag_group_to_pb(g: crate::domain::wecom::CorpTagGroup) -> pb::CorpTagGroup {
    pb::CorpTagGroup {
        group_id: g.group_id,
        group_name: g.group_name,
        create_time: g.create_time,
        order: g.order,
        deleted: g.deleted,
        tags: g
            .tags
            .into_iter()
            .map(|t| pb::CorpTag {
                id: t.id,
                name: t.name,
                create_time: t.create_time,
                order: t.order,
                deleted: t.deleted,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Platform;

    fn request(audience: Option<send_broadcast_request::Audience>) -> pb::SendBroadcastRequest {
        pb::SendBroadcastRequest {
            account_id: "acme".into(),
            audience,
            message_json: r#"{"text": {"content": "hi"}}"#.into(),
            client_msg_id: String::new(),
        }
    }

    fn refusal(r: pb::SendBroadcastRequest) -> String {
        match SendBroadcast::try_from(r) {
            Err(ServiceError::Validation(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_send_broadcast_request_arrives_parsed() {
        use send_broadcast_request::Audience as Pb;
        let sent = SendBroadcast::try_from(request(Some(Pb::OpenIds(pb::OpenIdList {
            open_ids: vec!["oA".into(), "oB".into()],
        }))))
        .unwrap();
        assert_eq!(
            sent.broadcast.audience,
            BroadcastAudience::Followers(Audience::OpenIds(vec!["oA".into(), "oB".into()]))
        );
        assert!(
            matches!(&sent.broadcast.message, BroadcastMessage::Mass(m) if m.msgtype == "text")
        );
        assert_eq!(sent.client_msg_id, None);
        let external = SendBroadcast::try_from(request(Some(Pb::External(pb::ExternalAudience {
            external_user_ids: vec!["wmA".into()],
            sender: "zhangsan".into(),
            ..Default::default()
        }))))
        .unwrap();
        assert_eq!(
            external.broadcast.audience.check_platform(Platform::Work),
            Ok(())
        );
        // A group message to customer groups, with an attachment, mapped field by field.
        let group = SendBroadcast::try_from(pb::SendBroadcastRequest {
            message_json: r#"{"text": {"content": "hi"}, "attachments": [
                {"msgtype": "link", "link": {"title": "T", "url": "https://e.com"}}]}"#
                .into(),
            ..request(Some(Pb::External(pb::ExternalAudience {
                sender: "owner".into(),
                chat_type: "group".into(),
                chat_ids: vec!["wrChat1".into()],
                ..Default::default()
            })))
        })
        .unwrap();
        let BroadcastAudience::External(audience) = &group.broadcast.audience else {
            panic!("{group:?}");
        };
        assert_eq!(audience.chat_type, ChatType::Group);
        assert_eq!(audience.chat_ids, ["wrChat1"]);
        assert!(
            matches!(&group.broadcast.message, BroadcastMessage::Group(m) if m.msgtype() == "text+link")
        );
        let filtered = SendBroadcast::try_from(request(Some(Pb::External(pb::ExternalAudience {
            sender: "zhangsan".into(),
            tag_filter: vec![pb::CorpTagFilterGroup {
                tag_ids: vec!["etA".into(), "etB".into()],
            }],
            allow_select: true,
            ..Default::default()
        }))))
        .unwrap();
        let BroadcastAudience::External(audience) = &filtered.broadcast.audience else {
            panic!("{filtered:?}");
        };
        assert_eq!(
            audience.tag_filter_json(),
            Some(serde_json::json!({"group_list": [{"tag_list": ["etA", "etB"]}]}))
        );
        assert!(audience.allow_select);
        let too_many = refusal(request(Some(Pb::External(pb::ExternalAudience {
            sender: "zhangsan".into(),
            tag_filter: vec![pb::CorpTagFilterGroup {
                tag_ids: (0..101).map(|i| format!("et{i}")).collect(),
            }],
            ..Default::default()
        }))));
        assert!(
            too_many.contains("at most") || too_many.contains("1 to 100"),
            "{too_many}"
        );

        assert!(refusal(request(None)).contains("set tag_id, all, open_ids or external"));
        assert!(refusal(request(Some(Pb::All(false)))).contains("all must be true"));
        let bad_id = refusal(request(Some(Pb::OpenIds(pb::OpenIdList {
            open_ids: vec!["o B".into()],
        }))));
        assert!(bad_id.contains("open_ids[0]"), "{bad_id}");
        let no_sender = refusal(request(Some(Pb::External(pb::ExternalAudience {
            external_user_ids: vec!["wmA".into()],
            sender: String::new(),
            ..Default::default()
        }))));
        assert!(no_sender.contains("audience.sender"), "{no_sender}");
        let not_json = refusal(pb::SendBroadcastRequest {
            message_json: "{".into(),
            ..request(Some(Pb::All(true)))
        });
        assert!(not_json.starts_with("message_json: not JSON"), "{not_json}");
    }
}
