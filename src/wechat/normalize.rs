//! Maps WeChat's message and event names to [`pb::Event`]: the only place in the gateway that
//! knows them. Anything not modelled becomes an `Unknown` event with the raw XML.
//!
//! Names and fields follow WeChat's documentation: for Official Accounts "接收普通消息",
//! "接收事件推送", "自定义菜单事件推送", "群发接口 / 事件推送群发结果" and "模板消息 / 事件推送"
//! (developers.weixin.qq.com/doc/offiaccount); for WeCom "接收消息" (path/90239), "接收事件"
//! (path/90240), "通讯录回调通知" (path/90970) and "客户联系 / 事件格式" (path/92130).

use std::str::FromStr;
use std::time::SystemTime;

use sha1::{Digest, Sha1};

use crate::domain::{AccountId, Platform};
use crate::pb::{self, event::Kind};
use crate::wechat::xml::{Document, XmlError};

/// Separates the parts of the de-duplication key. The XML reader refuses every C0 control
/// character but tab, LF and CR, so it cannot occur inside a value and two different keys can
/// never hash the same bytes.
const SEP: u8 = 0x1f;

/// The event-specific elements that tell two same-second events of one sender apart, in the
/// order they enter the de-duplication key. WeCom sends every contact event as `sys`, so a
/// member adding two customers in one second differs only by ExternalUserID; ChatId,
/// UpdateDetail, Id and TagId do the same for group chats, departments and tags.
const EVENT_KEY_FIELDS: [&str; 10] = [
    "EventKey",
    "ChangeType",
    "ExternalUserID",
    "UserID",
    "AgentID",
    "MsgID",
    "ChatId",
    "UpdateDetail",
    "Id",
    "TagId",
];

/// Builds the event of one decrypted callback, with its stable id.
///
/// The id is the lowercase hex SHA-1 of the account id and the de-duplication key, each part
/// followed by the byte 0x1f (which the XML reader never lets into a value):
/// - a message (MsgType other than `event`, with a MsgId): `msg`, MsgId. WeChat documents MsgId
///   as the key to de-duplicate its retries with;
/// - an event (or a message without MsgId): `event`, MsgType, FromUserName, CreateTime, Event,
///   then EventKey, ChangeType, ExternalUserID, UserID, AgentID, MsgID (of MASSSENDJOBFINISH
///   and TEMPLATESENDJOBFINISH), ChatId, UpdateDetail, Id and TagId (empty when absent), so that
///   distinct same-second WeCom events are not merged while a retry, byte for byte the same,
///   gets the same id.
///
/// Errors: FromUserName, CreateTime or MsgType missing ([`XmlError::Missing`]); a numeric
/// element that does not parse ([`XmlError::BadNumber`]). An unknown MsgType, Event or
/// ChangeType is not an error: it becomes `Kind::Unknown` with the raw XML.
pub fn normalize(
    account: &AccountId,
    platform: Platform,
    doc: &Document,
    raw_xml: &str,
    received_at: SystemTime,
) -> Result<pb::Event, XmlError> {
    let from = required(doc, "FromUserName")?;
    let create_time: i64 = parse_number("CreateTime", required(doc, "CreateTime")?)?;
    let msg_type = required(doc, "MsgType")?;
    let is_event = msg_type.eq_ignore_ascii_case("event");
    let event_name = if is_event { text(doc, "Event") } else { "" };
    let agent_id: i64 = number(doc, "AgentID")?;

    let event = if is_event {
        EventName::parse(event_name, platform)
    } else {
        None
    };
    let kind = match event {
        Some(event) => event_kind(event, event_name, doc)?,
        None if is_event => None,
        None => message_kind(msg_type, doc)?,
    };
    let kind = kind.unwrap_or_else(|| {
        Kind::Unknown(pb::Unknown {
            msg_type: msg_type.to_owned(),
            event: event_name.to_owned(),
            raw_xml: raw_xml.to_owned(),
        })
    });

    let (open_id, user_id, external_user_id) = match platform {
        Platform::Mp => (from, "", ""),
        Platform::Work => {
            // Contact events come from `sys` and name the member in UserID.
            let contact_event = matches!(
                event,
                Some(
                    EventName::ChangeContact
                        | EventName::ChangeExternalContact
                        | EventName::ChangeExternalChat
                )
            );
            let user = if contact_event || from == "sys" {
                text(doc, "UserID")
            } else {
                from
            };
            ("", user, text(doc, "ExternalUserID"))
        }
    };

    Ok(pb::Event {
        id: event_id(
            account,
            doc,
            msg_type,
            is_event,
            from,
            create_time,
            event_name,
        ),
        account_id: account.as_str().to_owned(),
        platform: match platform {
            Platform::Mp => pb::Platform::Mp,
            Platform::Work => pb::Platform::Work,
        } as i32,
        occurred_at: Some(pb::Timestamp {
            seconds: create_time,
            nanos: 0,
        }),
        received_at: Some(received_at.into()),
        open_id: open_id.to_owned(),
        union_id: String::new(),
        reply_rule_id: String::new(),
        profile: None,
        follow_user: Vec::new(),
        sync_id: String::new(),
        user_id: user_id.to_owned(),
        external_user_id: external_user_id.to_owned(),
        to_user_name: text(doc, "ToUserName").to_owned(),
        agent_id,
        // Filled by the components that know the gateway's QR codes and broadcast jobs.
        label: String::new(),
        broadcast_job_id: String::new(),
        template_send_job_id: String::new(),
        kind: Some(kind),
    })
}

/// The stable id; see [`normalize`].
fn event_id(
    account: &AccountId,
    doc: &Document,
    msg_type: &str,
    is_event: bool,
    from: &str,
    create_time: i64,
    event_name: &str,
) -> String {
    let mut h = Sha1::new();
    let mut part = |bytes: &[u8]| {
        h.update(bytes);
        h.update([SEP]);
    };
    part(account.as_str().as_bytes());
    match doc.child("MsgId").filter(|id| !is_event && !id.is_empty()) {
        Some(msg_id) => {
            part(b"msg");
            part(msg_id.as_bytes());
        }
        None => {
            part(b"event");
            part(msg_type.as_bytes());
            part(from.as_bytes());
            part(create_time.to_string().as_bytes());
            part(event_name.as_bytes());
            for field in EVENT_KEY_FIELDS {
                part(text(doc, field).as_bytes());
            }
        }
    }
    hex::encode(h.finalize())
}

/// The event names the gateway models. WeChat writes some in upper case (`CLICK`, `SCAN`),
/// WeCom in lower case (`click`), and SDKs disagree: they are matched case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventName {
    Subscribe,
    Unsubscribe,
    Scan,
    Location,
    Click,
    View,
    ScanCode,
    Pictures,
    LocationSelect,
    MassSendJobFinish,
    TemplateSendJobFinish,
    EnterAgent,
    ChangeContact,
    ChangeExternalContact,
    ChangeExternalChat,
    ChangeExternalTag,
    SubscribeMsgPopup,
    SubscribeMsgChange,
    SubscribeMsgSent,
}

/// Event name, model, and the only platform that sends it (`None`: both).
const EVENT_NAMES: &[(&str, EventName, Option<Platform>)] = &[
    ("subscribe", EventName::Subscribe, None),
    ("unsubscribe", EventName::Unsubscribe, None),
    ("LOCATION", EventName::Location, None),
    ("CLICK", EventName::Click, None),
    ("VIEW", EventName::View, None),
    ("scancode_push", EventName::ScanCode, None),
    ("scancode_waitmsg", EventName::ScanCode, None),
    ("pic_sysphoto", EventName::Pictures, None),
    ("pic_photo_or_album", EventName::Pictures, None),
    ("pic_weixin", EventName::Pictures, None),
    ("location_select", EventName::LocationSelect, None),
    ("SCAN", EventName::Scan, Some(Platform::Mp)),
    (
        "MASSSENDJOBFINISH",
        EventName::MassSendJobFinish,
        Some(Platform::Mp),
    ),
    (
        "TEMPLATESENDJOBFINISH",
        EventName::TemplateSendJobFinish,
        Some(Platform::Mp),
    ),
    ("enter_agent", EventName::EnterAgent, Some(Platform::Work)),
    (
        "change_contact",
        EventName::ChangeContact,
        Some(Platform::Work),
    ),
    (
        "change_external_contact",
        EventName::ChangeExternalContact,
        Some(Platform::Work),
    ),
    (
        "change_external_chat",
        EventName::ChangeExternalChat,
        Some(Platform::Work),
    ),
    (
        "change_external_tag",
        EventName::ChangeExternalTag,
        Some(Platform::Work),
    ),
    (
        "subscribe_msg_popup_event",
        EventName::SubscribeMsgPopup,
        Some(Platform::Mp),
    ),
    (
        "subscribe_msg_change_event",
        EventName::SubscribeMsgChange,
        Some(Platform::Mp),
    ),
    (
        "subscribe_msg_sent_event",
        EventName::SubscribeMsgSent,
        Some(Platform::Mp),
    ),
];

impl EventName {
    fn parse(name: &str, platform: Platform) -> Option<Self> {
        EVENT_NAMES
            .iter()
            .find(|(n, _, only)| n.eq_ignore_ascii_case(name) && only.is_none_or(|p| p == platform))
            .map(|(_, e, _)| *e)
    }
}

fn message_kind(msg_type: &str, doc: &Document) -> Result<Option<Kind>, XmlError> {
    let msg_id = || number::<i64>(doc, "MsgId");
    let is = |name: &str| msg_type.eq_ignore_ascii_case(name);
    Ok(Some(if is("text") {
        Kind::Text(pb::TextMessage {
            msg_id: msg_id()?,
            content: owned(doc, "Content"),
        })
    } else if is("image") {
        Kind::Image(pb::ImageMessage {
            msg_id: msg_id()?,
            pic_url: owned(doc, "PicUrl"),
            media_id: owned(doc, "MediaId"),
        })
    } else if is("voice") {
        Kind::Voice(pb::VoiceMessage {
            msg_id: msg_id()?,
            media_id: owned(doc, "MediaId"),
            format: owned(doc, "Format"),
            recognition: owned(doc, "Recognition"),
        })
    } else if is("video") || is("shortvideo") {
        Kind::Video(pb::VideoMessage {
            msg_id: msg_id()?,
            media_id: owned(doc, "MediaId"),
            thumb_media_id: owned(doc, "ThumbMediaId"),
            short_video: is("shortvideo"),
        })
    } else if is("location") {
        Kind::Location(pb::LocationMessage {
            msg_id: msg_id()?,
            latitude: float(doc, "Location_X")?,
            longitude: float(doc, "Location_Y")?,
            scale: number(doc, "Scale")?,
            label: owned(doc, "Label"),
        })
    } else if is("link") {
        Kind::Link(pb::LinkMessage {
            msg_id: msg_id()?,
            title: owned(doc, "Title"),
            description: owned(doc, "Description"),
            url: owned(doc, "Url"),
        })
    } else {
        return Ok(None);
    }))
}

fn event_kind(
    event: EventName,
    event_name: &str,
    doc: &Document,
) -> Result<Option<Kind>, XmlError> {
    let key = || owned(doc, "EventKey");
    let change_type = text(doc, "ChangeType");
    Ok(Some(match event {
        EventName::Subscribe => Kind::Subscribe(pb::Subscribe {
            // Through a parametric QR code the key is `qrscene_` + the scene; a plain follow
            // (or one with another key, e.g. `last_trade_no_...` after a payment) has none.
            scene: text(doc, "EventKey")
                .strip_prefix("qrscene_")
                .unwrap_or_default()
                .to_owned(),
            ticket: owned(doc, "Ticket"),
        }),
        EventName::Unsubscribe => Kind::Unsubscribe(pb::Unsubscribe::default()),
        EventName::Scan => Kind::Scan(pb::Scan {
            scene: key(),
            ticket: owned(doc, "Ticket"),
        }),
        EventName::Location => Kind::LocationReport(pb::LocationReport {
            latitude: float(doc, "Latitude")?,
            longitude: float(doc, "Longitude")?,
            precision: float(doc, "Precision")?,
        }),
        EventName::Click => Kind::MenuClick(pb::MenuClick { key: key() }),
        EventName::View => Kind::MenuView(pb::MenuView {
            url: key(),
            menu_id: owned(doc, "MenuId"),
        }),
        EventName::ScanCode => Kind::ScanCode(pb::ScanCodeResult {
            event: event_name.to_owned(),
            key: key(),
            scan_type: nested(doc, "ScanType"),
            scan_result: nested(doc, "ScanResult"),
        }),
        EventName::Pictures => Kind::Pictures(pb::PicturesSent {
            event: event_name.to_owned(),
            key: key(),
            pic_md5_sums: doc.get_all("PicMd5Sum").map(str::to_owned).collect(),
        }),
        EventName::LocationSelect => Kind::LocationSelected(pb::LocationSelected {
            key: key(),
            latitude: nested_float(doc, "Location_X")?,
            longitude: nested_float(doc, "Location_Y")?,
            scale: nested_number(doc, "Scale")?,
            label: nested(doc, "Label"),
            poiname: nested(doc, "Poiname"),
        }),
        EventName::MassSendJobFinish => Kind::MassSendFinished(pb::MassSendFinished {
            msg_id: number(doc, "MsgID")?,
            status: owned(doc, "Status"),
            total_count: number(doc, "TotalCount")?,
            filter_count: number(doc, "FilterCount")?,
            sent_count: number(doc, "SentCount")?,
            error_count: number(doc, "ErrorCount")?,
        }),
        EventName::TemplateSendJobFinish => Kind::TemplateSendFinished(pb::TemplateSendFinished {
            msg_id: number(doc, "MsgID")?,
            status: owned(doc, "Status"),
        }),
        EventName::SubscribeMsgPopup => Kind::SubscribeNoticePopup(pb::SubscribeNoticePopup {
            choices: subscribe_choices(doc)?,
        }),
        EventName::SubscribeMsgChange => Kind::SubscribeNoticeChange(pb::SubscribeNoticeChange {
            choices: subscribe_choices(doc)?,
        }),
        EventName::SubscribeMsgSent => Kind::SubscribeNoticeSent(pb::SubscribeNoticeSent {
            results: subscribe_results(doc)?,
        }),
        EventName::EnterAgent => Kind::EnterAgent(pb::EnterAgent { key: key() }),
        EventName::ChangeContact => match change_type {
            "create_user" | "update_user" | "delete_user" => {
                Kind::ContactChange(pb::ContactChange {
                    change_type: change_type.to_owned(),
                    id: owned(doc, "UserID"),
                    new_user_id: owned(doc, "NewUserID"),
                    name: owned(doc, "Name"),
                    departments: list(text(doc, "Department")),
                    parent_id: String::new(),
                })
            }
            "create_party" | "update_party" | "delete_party" => {
                Kind::ContactChange(pb::ContactChange {
                    change_type: change_type.to_owned(),
                    id: owned(doc, "Id"),
                    new_user_id: String::new(),
                    name: owned(doc, "Name"),
                    departments: Vec::new(),
                    parent_id: owned(doc, "ParentId"),
                })
            }
            "update_tag" => Kind::TagChange(pb::TagChange {
                tag_id: owned(doc, "TagId"),
                add_user_items: list(text(doc, "AddUserItems")),
                del_user_items: list(text(doc, "DelUserItems")),
                add_party_items: list(text(doc, "AddPartyItems")),
                del_party_items: list(text(doc, "DelPartyItems")),
            }),
            _ => return Ok(None),
        },
        EventName::ChangeExternalContact => match change_type {
            "add_external_contact"
            | "edit_external_contact"
            | "del_external_contact"
            | "add_half_external_contact"
            | "del_follow_user"
            | "transfer_fail" => Kind::ExternalContactChange(pb::ExternalContactChange {
                change_type: change_type.to_owned(),
                user_id: owned(doc, "UserID"),
                external_user_id: owned(doc, "ExternalUserID"),
                state: owned(doc, "State"),
                welcome_code: owned(doc, "WelcomeCode"),
                fail_reason: owned(doc, "FailReason"),
            }),
            _ => return Ok(None),
        },
        EventName::ChangeExternalChat => match change_type {
            "create" | "update" | "dismiss" => Kind::ExternalChatChange(pb::ExternalChatChange {
                change_type: change_type.to_owned(),
                chat_id: owned(doc, "ChatId"),
                update_detail: owned(doc, "UpdateDetail"),
                join_scene: number(doc, "JoinScene")?,
                quit_scene: number(doc, "QuitScene")?,
                mem_change_cnt: number(doc, "MemChangeCnt")?,
                // MemChangeList/Item (the only Items of this callback).
                mem_change_list: doc.get_all("Item").map(str::to_owned).collect(),
            }),
            _ => return Ok(None),
        },
        // 92130 企业客户标签创建/变更/删除/重排事件: Id, TagType (tag or tag_group), StrategyId.
        EventName::ChangeExternalTag => match change_type {
            "create" | "update" | "delete" | "shuffle" => Kind::CorpTagChange(pb::CorpTagChange {
                change_type: change_type.to_owned(),
                id: owned(doc, "Id"),
                tag_type: owned(doc, "TagType"),
                strategy_id: owned(doc, "StrategyId"),
            }),
            _ => return Ok(None),
        },
    }))
}

/// A top-level element that every callback carries.
fn required<'a>(doc: &'a Document, name: &'static str) -> Result<&'a str, XmlError> {
    doc.child(name).ok_or(XmlError::Missing(name))
}

/// A top-level element's text, empty when absent.
fn text<'a>(doc: &'a Document, name: &str) -> &'a str {
    doc.child(name).unwrap_or_default()
}

/// The `List` items of a subscription-notice popup or change event, in order: each starts at
/// its TemplateId (the reader flattens the containers into their leaves, in document order).
fn subscribe_choices(doc: &Document) -> Result<Vec<pb::SubscribeNoticeChoice>, XmlError> {
    let mut out: Vec<pb::SubscribeNoticeChoice> = Vec::new();
    for (name, value) in doc.iter() {
        match name {
            "TemplateId" => out.push(pb::SubscribeNoticeChoice {
                template_id: value.to_owned(),
                ..Default::default()
            }),
            "SubscribeStatusString" => {
                if let Some(c) = out.last_mut() {
                    c.status = value.to_owned();
                }
            }
            "PopupScene" => {
                if let Some(c) = out.last_mut() {
                    c.popup_scene = optional_number("PopupScene", Some(value))?;
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The `List` items of a subscribe_msg_sent_event, in order.
fn subscribe_results(doc: &Document) -> Result<Vec<pb::SubscribeNoticeResult>, XmlError> {
    let mut out: Vec<pb::SubscribeNoticeResult> = Vec::new();
    for (name, value) in doc.iter() {
        match name {
            "TemplateId" => out.push(pb::SubscribeNoticeResult {
                template_id: value.to_owned(),
                ..Default::default()
            }),
            "MsgID" => {
                if let Some(r) = out.last_mut() {
                    r.msg_id = optional_number("MsgID", Some(value))?;
                }
            }
            "ErrorCode" => {
                if let Some(r) = out.last_mut() {
                    r.error_code = optional_number("ErrorCode", Some(value))?;
                }
            }
            "ErrorStatus" => {
                if let Some(r) = out.last_mut() {
                    r.error_status = value.to_owned();
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn owned(doc: &Document, name: &str) -> String {
    text(doc, name).to_owned()
}

/// An element inside a container (ScanCodeInfo, SendLocationInfo), empty when absent.
fn nested(doc: &Document, name: &str) -> String {
    doc.get(name).unwrap_or_default().to_owned()
}

/// Comma-separated ids (Department, AddUserItems, ...), without empty items.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_number<T: FromStr>(field: &'static str, value: &str) -> Result<T, XmlError> {
    value.trim().parse().map_err(|_| XmlError::BadNumber {
        field,
        value: value.to_owned(),
    })
}

/// An optional numeric element: 0 when absent or empty, an error when it does not parse.
fn optional_number<T: FromStr + Default>(
    field: &'static str,
    value: Option<&str>,
) -> Result<T, XmlError> {
    match value {
        Some(v) if !v.trim().is_empty() => parse_number(field, v),
        _ => Ok(T::default()),
    }
}

fn optional_float(field: &'static str, value: Option<&str>) -> Result<f64, XmlError> {
    let x: f64 = optional_number(field, value)?;
    // "inf" and "NaN" parse, but are no coordinate.
    if x.is_finite() {
        Ok(x)
    } else {
        Err(XmlError::BadNumber {
            field,
            value: value.unwrap_or_default().to_owned(),
        })
    }
}

fn number<T: FromStr + Default>(doc: &Document, field: &'static str) -> Result<T, XmlError> {
    optional_number(field, doc.child(field))
}

fn float(doc: &Document, field: &'static str) -> Result<f64, XmlError> {
    optional_float(field, doc.child(field))
}

fn nested_number<T: FromStr + Default>(doc: &Document, field: &'static str) -> Result<T, XmlError> {
    optional_number(field, doc.get(field))
}

fn nested_float(doc: &Document, field: &'static str) -> Result<f64, XmlError> {
    optional_float(field, doc.get(field))
}

#[cfg(test)]
mod tests {
    //! Sample callbacks are WeChat's own documentation samples, as reproduced by peer SDKs'
    //! tests (cited on each): wechatpy `tests/test_parser.py`, `tests/test_events.py` and
    //! `tests/test_work_parser.py`; WxJava `WxCpXmlMessageTest` (weixin-java-cp); WeCom's
    //! developer.work.weixin.qq.com/document/path/92130 (客户联系 / 事件格式).

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const RECEIVED: u64 = 1_700_000_000;

    fn account() -> AccountId {
        AccountId::parse("acme").unwrap()
    }

    fn run(platform: Platform, xml: &str) -> Result<pb::Event, XmlError> {
        let doc = Document::parse(xml.as_bytes())?;
        normalize(
            &account(),
            platform,
            &doc,
            xml,
            UNIX_EPOCH + Duration::from_secs(RECEIVED),
        )
    }

    fn mp(xml: &str) -> pb::Event {
        run(Platform::Mp, xml).unwrap()
    }

    fn work(xml: &str) -> pb::Event {
        run(Platform::Work, xml).unwrap()
    }

    fn kind(e: &pb::Event) -> &Kind {
        e.kind.as_ref().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    // ---- Official Account messages (接收普通消息) ----

    #[test]
    fn an_official_account_text_message_carries_the_follower_and_its_content() {
        // wechatpy tests/test_parser.py test_parse_text_message.
        let xml = "<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
         <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[text]]></MsgType>
        <Content><![CDATA[this is a test]]></Content>
        <MsgId>1234567890123456</MsgId>
        </xml>";
        let e = mp(xml);
        assert_eq!(
            kind(&e),
            &Kind::Text(pb::TextMessage {
                msg_id: 1234567890123456,
                content: "this is a test".into()
            })
        );
        assert_eq!(e.account_id, "acme");
        assert_eq!(e.platform, pb::Platform::Mp as i32);
        assert_eq!(e.open_id, "fromUser");
        assert_eq!(e.user_id, "");
        assert_eq!(e.external_user_id, "");
        assert_eq!(e.union_id, "");
        assert_eq!(e.to_user_name, "toUser");
        assert_eq!(e.agent_id, 0);
        assert_eq!(e.label, "");
        assert_eq!(e.broadcast_job_id, "");
        assert_eq!(
            e.occurred_at,
            Some(pb::Timestamp {
                seconds: 1348831860,
                nanos: 0
            })
        );
        assert_eq!(
            e.received_at,
            Some(pb::Timestamp {
                seconds: RECEIVED as i64,
                nanos: 0
            })
        );
        assert_eq!(e.id.len(), 40);
        assert!(e
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[test]
    fn an_image_message_carries_the_picture() {
        // wechatpy tests/test_parser.py test_parse_image_message.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[image]]></MsgType>
        <PicUrl><![CDATA[this is a url]]></PicUrl>
        <MediaId><![CDATA[media_id]]></MediaId>
        <MsgId>1234567890123456</MsgId>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Image(pb::ImageMessage {
                msg_id: 1234567890123456,
                pic_url: "this is a url".into(),
                media_id: "media_id".into()
            })
        );
    }

    #[test]
    fn a_voice_message_carries_the_speech_recognition() {
        // The voice sample of 接收普通消息 "开启语音识别后的语音XML数据包"
        // (developers.weixin.qq.com/doc/offiaccount/Message_Management/Receiving_standard_messages.html).
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1357290913</CreateTime>
        <MsgType><![CDATA[voice]]></MsgType>
        <MediaId><![CDATA[media_id]]></MediaId>
        <Format><![CDATA[Format]]></Format>
        <Recognition><![CDATA[腾讯微信团队]]></Recognition>
        <MsgId>1234567890123456</MsgId>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Voice(pb::VoiceMessage {
                msg_id: 1234567890123456,
                media_id: "media_id".into(),
                format: "Format".into(),
                recognition: "腾讯微信团队".into()
            })
        );
    }

    #[test]
    fn video_and_short_video_messages_are_both_videos() {
        // wechatpy tests/test_parser.py test_parse_video_message; the shortvideo sample of
        // 接收普通消息 is the same with MsgType shortvideo.
        let video = "<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1357290913</CreateTime>
        <MsgType><![CDATA[video]]></MsgType>
        <MediaId><![CDATA[media_id]]></MediaId>
        <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>
        <MsgId>1234567890123456</MsgId>
        </xml>";
        let expected = |short_video| {
            Kind::Video(pb::VideoMessage {
                msg_id: 1234567890123456,
                media_id: "media_id".into(),
                thumb_media_id: "thumb_media_id".into(),
                short_video,
            })
        };
        assert_eq!(kind(&mp(video)), &expected(false));
        let short = video.replace("[video]", "[shortvideo]");
        assert_eq!(kind(&mp(&short)), &expected(true));
    }

    #[test]
    fn a_location_message_carries_coordinates_scale_and_label() {
        // wechatpy tests/test_parser.py test_parse_location_message.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1351776360</CreateTime>
        <MsgType><![CDATA[location]]></MsgType>
        <Location_X>23.134521</Location_X>
        <Location_Y>113.358803</Location_Y>
        <Scale>20</Scale>
        <Label><![CDATA[位置信息]]></Label>
        <MsgId>1234567890123456</MsgId>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Location(pb::LocationMessage {
                msg_id: 1234567890123456,
                latitude: 23.134521,
                longitude: 113.358803,
                scale: 20,
                label: "位置信息".into()
            })
        );
    }

    #[test]
    fn a_link_message_carries_title_description_and_url() {
        // wechatpy tests/test_parser.py test_parse_link_message.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1351776360</CreateTime>
        <MsgType><![CDATA[link]]></MsgType>
        <Title><![CDATA[公众平台官网链接]]></Title>
        <Description><![CDATA[公众平台官网链接]]></Description>
        <Url><![CDATA[url]]></Url>
        <MsgId>1234567890123456</MsgId>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Link(pb::LinkMessage {
                msg_id: 1234567890123456,
                title: "公众平台官网链接".into(),
                description: "公众平台官网链接".into(),
                url: "url".into()
            })
        );
    }

    // ---- Official Account events (接收事件推送, 自定义菜单事件推送) ----

    #[test]
    fn a_plain_follow_has_no_scene() {
        // wechatpy tests/test_parser.py test_parse_subscribe_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[FromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe]]></Event>
        </xml>");
        assert_eq!(kind(&e), &Kind::Subscribe(pb::Subscribe::default()));
        assert_eq!(e.open_id, "FromUser");
    }

    #[test]
    fn a_follow_through_a_qr_code_carries_the_scene_without_its_prefix() {
        // wechatpy tests/test_parser.py test_parse_subscribe_scan_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[FromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe]]></Event>
        <EventKey><![CDATA[qrscene_123123]]></EventKey>
        <Ticket><![CDATA[TICKET]]></Ticket>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Subscribe(pb::Subscribe {
                scene: "123123".into(),
                ticket: "TICKET".into()
            })
        );
    }

    #[test]
    fn a_follow_with_a_key_that_is_no_qr_scene_has_no_scene() {
        // wechatpy tests/test_parser.py test_parse_subscribe_event_with_last_trade_no.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[FromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe]]></Event>
        <EventKey><![CDATA[last_trade_no_4008072001201701105817415015]]></EventKey>
        </xml>");
        assert_eq!(kind(&e), &Kind::Subscribe(pb::Subscribe::default()));
    }

    #[test]
    fn an_unfollow_is_an_unsubscribe() {
        // 接收事件推送, 关注/取消关注事件 (the subscribe sample with Event unsubscribe).
        let e = mp("<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>");
        assert_eq!(kind(&e), &Kind::Unsubscribe(pb::Unsubscribe::default()));
    }

    #[test]
    fn a_follower_scanning_a_qr_code_carries_the_scene_as_sent() {
        // wechatpy tests/test_parser.py test_parse_scan_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[FromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[SCAN]]></Event>
        <EventKey><![CDATA[123123]]></EventKey>
        <Ticket><![CDATA[TICKET]]></Ticket>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::Scan(pb::Scan {
                scene: "123123".into(),
                ticket: "TICKET".into()
            })
        );
    }

    #[test]
    fn a_location_report_carries_latitude_longitude_and_precision() {
        // wechatpy tests/test_parser.py test_parse_location_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[LOCATION]]></Event>
        <Latitude>23.137466</Latitude>
        <Longitude>113.352425</Longitude>
        <Precision>119.385040</Precision>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::LocationReport(pb::LocationReport {
                latitude: 23.137466,
                longitude: 113.352425,
                precision: 119.38504
            })
        );
    }

    #[test]
    fn a_menu_click_carries_the_key() {
        // wechatpy tests/test_parser.py test_parse_click_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[FromUser]]></FromUserName>
        <CreateTime>123456789</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[CLICK]]></Event>
        <EventKey><![CDATA[EVENTKEY]]></EventKey>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::MenuClick(pb::MenuClick {
                key: "EVENTKEY".into()
            })
        );
    }

    #[test]
    fn a_menu_link_carries_the_url_and_the_conditional_menu_id() {
        // 自定义菜单事件推送, "点击菜单跳转链接时的事件推送".
        let e = mp("<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event>\
            <EventKey><![CDATA[www.qq.com]]></EventKey><MenuId>MENUID</MenuId></xml>");
        assert_eq!(
            kind(&e),
            &Kind::MenuView(pb::MenuView {
                url: "www.qq.com".into(),
                menu_id: "MENUID".into()
            })
        );
    }

    #[test]
    fn official_account_event_names_match_in_any_case() {
        let e = mp("<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event>\
            <EventKey><![CDATA[K]]></EventKey></xml>");
        assert_eq!(
            kind(&e),
            &Kind::MenuClick(pb::MenuClick { key: "K".into() })
        );
        let e = mp(
            "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime>\
            <MsgType>event</MsgType><Event>Scan</Event><EventKey>7</EventKey></xml>",
        );
        assert!(matches!(kind(&e), Kind::Scan(s) if s.scene == "7"));
    }

    #[test]
    fn scan_code_events_carry_the_scan_result_from_their_container() {
        // wechatpy tests/test_events.py test_scan_code_push_event / test_scan_code_waitmsg_event.
        let push = "<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName>
        <CreateTime>1408090502</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[scancode_push]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType>
        <ScanResult><![CDATA[1]]></ScanResult>
        </ScanCodeInfo>
        </xml>";
        assert_eq!(
            kind(&mp(push)),
            &Kind::ScanCode(pb::ScanCodeResult {
                event: "scancode_push".into(),
                key: "6".into(),
                scan_type: "qrcode".into(),
                scan_result: "1".into()
            })
        );
        let wait = push
            .replace("scancode_push", "scancode_waitmsg")
            .replace("[1]]", "[2]]");
        assert_eq!(
            kind(&mp(&wait)),
            &Kind::ScanCode(pb::ScanCodeResult {
                event: "scancode_waitmsg".into(),
                key: "6".into(),
                scan_type: "qrcode".into(),
                scan_result: "2".into()
            })
        );
    }

    #[test]
    fn picture_events_carry_every_md5_sum() {
        // wechatpy tests/test_events.py test_pic_sysphoto_event, with a second item as in
        // 自定义菜单事件推送's pic_photo_or_album sample.
        let xml = "<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName>
        <CreateTime>1408090651</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[pic_sysphoto]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <SendPicsInfo><Count>2</Count>
        <PicList>
            <item>
            <PicMd5Sum><![CDATA[1b5f7c23b5bf75682a53e7b6d163e185]]></PicMd5Sum>
            </item>
            <item>
            <PicMd5Sum><![CDATA[5a75aaca956d97be686719218f275c6b]]></PicMd5Sum>
            </item>
        </PicList>
        </SendPicsInfo>
        </xml>";
        for name in ["pic_sysphoto", "pic_photo_or_album", "pic_weixin"] {
            let e = mp(&xml.replace("pic_sysphoto", name));
            assert_eq!(
                kind(&e),
                &Kind::Pictures(pb::PicturesSent {
                    event: name.into(),
                    key: "6".into(),
                    pic_md5_sums: strings(&[
                        "1b5f7c23b5bf75682a53e7b6d163e185",
                        "5a75aaca956d97be686719218f275c6b"
                    ])
                })
            );
        }
    }

    #[test]
    fn a_location_selection_carries_the_place() {
        // wechatpy tests/test_events.py test_location_select_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>
        <FromUserName><![CDATA[oMgHVjngRipVsoxg6TuX3vz6glDg]]></FromUserName>
        <CreateTime>1408091189</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[location_select]]></Event>
        <EventKey><![CDATA[6]]></EventKey>
        <SendLocationInfo><Location_X><![CDATA[23]]></Location_X>
        <Location_Y><![CDATA[113]]></Location_Y>
        <Scale><![CDATA[15]]></Scale>
        <Label><![CDATA[广州市海珠区客村艺苑路 106号]]></Label>
        <Poiname><![CDATA[]]></Poiname>
        </SendLocationInfo>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::LocationSelected(pb::LocationSelected {
                key: "6".into(),
                latitude: 23.0,
                longitude: 113.0,
                scale: 15,
                label: "广州市海珠区客村艺苑路 106号".into(),
                poiname: String::new()
            })
        );
    }

    #[test]
    fn a_mass_send_result_carries_its_counts() {
        // 群发接口 "事件推送群发结果" (MsgID, not MsgId), with the CopyrightCheckResult of
        // the current documentation, whose nested Count must not be mistaken for a count.
        let e = mp("<xml>
        <ToUserName><![CDATA[gh_3e8adccde292]]></ToUserName>
        <FromUserName><![CDATA[oR5Gjjl_eiZoUpGozMo7dbBJ362A]]></FromUserName>
        <CreateTime>1394524295</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[MASSSENDJOBFINISH]]></Event>
        <MsgID>1988</MsgID>
        <Status><![CDATA[sendsuccess]]></Status>
        <TotalCount>100</TotalCount>
        <FilterCount>80</FilterCount>
        <SentCount>75</SentCount>
        <ErrorCount>5</ErrorCount>
        <CopyrightCheckResult>
          <Count>2</Count>
          <ResultList><item><ArticleIdx>1</ArticleIdx><AuditState>2</AuditState></item></ResultList>
          <CheckState>2</CheckState>
        </CopyrightCheckResult>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::MassSendFinished(pb::MassSendFinished {
                msg_id: 1988,
                status: "sendsuccess".into(),
                total_count: 100,
                filter_count: 80,
                sent_count: 75,
                error_count: 5
            })
        );
        assert_eq!(e.broadcast_job_id, "");
    }

    #[test]
    fn a_template_send_result_carries_its_status() {
        // wechatpy tests/test_events.py test_template_send_job_finish_event.
        let e = mp("<xml>
        <ToUserName><![CDATA[touser]]></ToUserName>
        <FromUserName><![CDATA[fromuser]]></FromUserName>
        <CreateTime>1395658920</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>
        <MsgID>200163836</MsgID>
        <Status><![CDATA[success]]></Status>
        </xml>");
        assert_eq!(
            kind(&e),
            &Kind::TemplateSendFinished(pb::TemplateSendFinished {
                msg_id: 200163836,
                status: "success".into()
            })
        );
    }

    /// The subscription-notice callbacks of the Service Account documentation,
    /// developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html
    /// ("订阅通知事件推送"): the popup example verbatim; the change and sent examples with the
    /// page's elements and values (the sent one's MsgID is the page's).
    #[test]
    fn subscription_notice_callbacks_carry_each_template_and_the_choice() {
        let popup = mp("<xml>
        <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
        <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
        <CreateTime>1610969440</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe_msg_popup_event]]></Event>
        <SubscribeMsgPopupEvent>
        <List>
        <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
        <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>
        <PopupScene>2</PopupScene>
        </List>
        <List>
        <TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>
        <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>
        <PopupScene>2</PopupScene>
        </List>
        </SubscribeMsgPopupEvent>
        </xml>");
        assert_eq!(popup.open_id, "otFpruAK8D-E6EfStSYonYSBZ8_4");
        let choice = |t: &str, s: &str, scene| pb::SubscribeNoticeChoice {
            template_id: t.into(),
            status: s.into(),
            popup_scene: scene,
        };
        assert_eq!(
            kind(&popup),
            &Kind::SubscribeNoticePopup(pb::SubscribeNoticePopup {
                choices: vec![
                    choice("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "accept", 2),
                    choice("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "reject", 2),
                ]
            })
        );
        let change = mp("<xml>
        <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
        <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
        <CreateTime>1610969440</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe_msg_change_event]]></Event>
        <SubscribeMsgChangeEvent>
        <List>
        <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
        <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>
        </List>
        </SubscribeMsgChangeEvent>
        </xml>");
        assert_eq!(
            kind(&change),
            &Kind::SubscribeNoticeChange(pb::SubscribeNoticeChange {
                choices: vec![choice(
                    "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                    "reject",
                    0
                )]
            })
        );
        let sent = mp("<xml>
        <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>
        <FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>
        <CreateTime>1610969468</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[subscribe_msg_sent_event]]></Event>
        <SubscribeMsgSentEvent>
        <List>
        <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>
        <MsgID>1700827132819554304</MsgID>
        <ErrorCode>0</ErrorCode>
        <ErrorStatus><![CDATA[success]]></ErrorStatus>
        </List>
        </SubscribeMsgSentEvent>
        </xml>");
        assert_eq!(
            kind(&sent),
            &Kind::SubscribeNoticeSent(pb::SubscribeNoticeSent {
                results: vec![pb::SubscribeNoticeResult {
                    template_id: "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc".into(),
                    msg_id: 1700827132819554304,
                    error_code: 0,
                    error_status: "success".into(),
                }]
            })
        );
    }

    // ---- WeCom application messages and events (接收消息, 接收事件) ----

    /// The WeCom application messages of wechatpy tests/test_work_parser.py.
    const WORK_TEXT: &str = "<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
         <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[text]]></MsgType>
        <Content><![CDATA[this is a test]]></Content>
        <MsgId>1234567890123456</MsgId>
        <AgentID>1</AgentID>
        </xml>";

    #[test]
    fn a_wecom_message_carries_the_member_and_the_application() {
        let e = work(WORK_TEXT);
        assert_eq!(
            kind(&e),
            &Kind::Text(pb::TextMessage {
                msg_id: 1234567890123456,
                content: "this is a test".into()
            })
        );
        assert_eq!(e.platform, pb::Platform::Work as i32);
        assert_eq!(e.user_id, "fromUser");
        assert_eq!(e.open_id, "");
        assert_eq!(e.agent_id, 1);
        assert_eq!(e.to_user_name, "toUser");
    }

    #[test]
    fn wecom_application_messages_map_like_official_account_ones() {
        // wechatpy tests/test_work_parser.py test_parse_{image,voice,video,location,link}_message.
        let head = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>1357290913</CreateTime>";
        let tail = "<MsgId>1234567890123456</MsgId><AgentID>1</AgentID></xml>";
        let cases = [
            (
                "<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[this is a url]]></PicUrl>\
                 <MediaId><![CDATA[media_id]]></MediaId>",
                Kind::Image(pb::ImageMessage {
                    msg_id: 1234567890123456,
                    pic_url: "this is a url".into(),
                    media_id: "media_id".into(),
                }),
            ),
            (
                "<MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[media_id]]></MediaId>\
                 <Format><![CDATA[Format]]></Format>",
                Kind::Voice(pb::VoiceMessage {
                    msg_id: 1234567890123456,
                    media_id: "media_id".into(),
                    format: "Format".into(),
                    recognition: String::new(),
                }),
            ),
            (
                "<MsgType><![CDATA[video]]></MsgType><MediaId><![CDATA[media_id]]></MediaId>\
                 <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>",
                Kind::Video(pb::VideoMessage {
                    msg_id: 1234567890123456,
                    media_id: "media_id".into(),
                    thumb_media_id: "thumb_media_id".into(),
                    short_video: false,
                }),
            ),
            (
                "<MsgType><![CDATA[location]]></MsgType><Location_X>23.134521</Location_X>\
                 <Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[位置信息]]></Label>",
                Kind::Location(pb::LocationMessage {
                    msg_id: 1234567890123456,
                    latitude: 23.134521,
                    longitude: 113.358803,
                    scale: 20,
                    label: "位置信息".into(),
                }),
            ),
            (
                "<MsgType><![CDATA[link]]></MsgType><Title><![CDATA[公众平台官网链接]]></Title>\
                 <Description><![CDATA[公众平台官网链接]]></Description><Url><![CDATA[url]]></Url>\
                 <PicUrl><![CDATA[picurl]]></PicUrl>",
                Kind::Link(pb::LinkMessage {
                    msg_id: 1234567890123456,
                    title: "公众平台官网链接".into(),
                    description: "公众平台官网链接".into(),
                    url: "url".into(),
                }),
            ),
        ];
        for (body, expected) in cases {
            let e = work(&format!("{head}{body}{tail}"));
            assert_eq!(kind(&e), &expected);
            assert_eq!((e.user_id.as_str(), e.agent_id), ("fromUser", 1));
        }
    }

    #[test]
    fn a_wecom_application_follow_and_unfollow() {
        // wechatpy tests/test_work_parser.py test_subscribe_event.
        let xml = "
        <xml>
            <ToUserName><![CDATA[toUser]]></ToUserName>
            <FromUserName><![CDATA[UserID]]></FromUserName>
            <CreateTime>1348831860</CreateTime>
            <MsgType><![CDATA[event]]></MsgType>
            <Event><![CDATA[subscribe]]></Event>
            <AgentID>1</AgentID>
        </xml>
        ";
        let e = work(xml);
        assert_eq!(kind(&e), &Kind::Subscribe(pb::Subscribe::default()));
        assert_eq!((e.user_id.as_str(), e.agent_id), ("UserID", 1));
        let e = work(&xml.replace("[subscribe]", "[unsubscribe]"));
        assert_eq!(kind(&e), &Kind::Unsubscribe(pb::Unsubscribe::default()));
    }

    #[test]
    fn entering_a_wecom_application_is_enter_agent() {
        // 接收事件 "进入应用", as in WxJava's / JFinal's enter_agent samples.
        let e = work(
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName>
            <FromUserName><![CDATA[FromUser]]></FromUserName>
            <CreateTime>1408091189</CreateTime>
            <MsgType><![CDATA[event]]></MsgType>
            <Event><![CDATA[enter_agent]]></Event>
            <EventKey><![CDATA[]]></EventKey>
            <AgentID>1</AgentID>
            </xml>",
        );
        assert_eq!(
            kind(&e),
            &Kind::EnterAgent(pb::EnterAgent { key: String::new() })
        );
        assert_eq!((e.user_id.as_str(), e.agent_id), ("FromUser", 1));
    }

    #[test]
    fn wecom_menu_events_are_lower_case() {
        // 接收事件 "点击菜单拉取消息的事件推送" / "点击菜单跳转链接的事件推送".
        let head = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType>";
        let e = work(&format!(
            "{head}<Event><![CDATA[click]]></Event><EventKey><![CDATA[EVENTKEY]]></EventKey>\
             <AgentID>1</AgentID></xml>"
        ));
        assert_eq!(
            kind(&e),
            &Kind::MenuClick(pb::MenuClick {
                key: "EVENTKEY".into()
            })
        );
        let e = work(&format!(
            "{head}<Event><![CDATA[view]]></Event><EventKey><![CDATA[www.qq.com]]></EventKey>\
             <AgentID>1</AgentID></xml>"
        ));
        assert_eq!(
            kind(&e),
            &Kind::MenuView(pb::MenuView {
                url: "www.qq.com".into(),
                menu_id: String::new()
            })
        );
    }

    #[test]
    fn wecom_scan_picture_location_events_map_like_official_account_ones() {
        // WxJava WxCpXmlMessageTest testSendPicsInfo (pic_weixin, two PicList items).
        let pics = work("<xml><ToUserName><![CDATA[wx45a0972125658be9]]></ToUserName>\
            <FromUserName><![CDATA[xiaohe]]></FromUserName><CreateTime>1502012364</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><AgentID>1000004</AgentID>\
            <Event><![CDATA[pic_weixin]]></Event><EventKey><![CDATA[faceSimilarity]]></EventKey>\
            <SendPicsInfo>\
            <PicList><item><PicMd5Sum><![CDATA[aef52ae501537e552725c5d7f99c1741]]></PicMd5Sum></item></PicList>\
            <PicList><item><PicMd5Sum><![CDATA[c4564632a4fab91378c39bea6aad6f9e]]></PicMd5Sum></item></PicList>\
            <Count>2</Count></SendPicsInfo></xml>");
        assert_eq!(
            kind(&pics),
            &Kind::Pictures(pb::PicturesSent {
                event: "pic_weixin".into(),
                key: "faceSimilarity".into(),
                pic_md5_sums: strings(&[
                    "aef52ae501537e552725c5d7f99c1741",
                    "c4564632a4fab91378c39bea6aad6f9e"
                ])
            })
        );
        assert_eq!((pics.user_id.as_str(), pics.agent_id), ("xiaohe", 1000004));

        // 接收事件 scancode_push / location_select / 上报地理位置 with AgentID.
        let head = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>1408090502</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType>";
        let scan = work(&format!(
            "{head}<Event><![CDATA[scancode_push]]></Event><EventKey><![CDATA[6]]></EventKey>\
             <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult>\
             </ScanCodeInfo><AgentID>1</AgentID></xml>"
        ));
        assert!(matches!(kind(&scan), Kind::ScanCode(s) if s.scan_result == "1" && s.key == "6"));
        let select = work(&format!(
            "{head}<Event><![CDATA[location_select]]></Event><EventKey><![CDATA[6]]></EventKey>\
             <SendLocationInfo><Location_X><![CDATA[23]]></Location_X><Location_Y><![CDATA[113]]></Location_Y>\
             <Scale><![CDATA[15]]></Scale><Label><![CDATA[ 广州市海珠区客村艺苑路 106号]]></Label>\
             <Poiname><![CDATA[]]></Poiname></SendLocationInfo><AgentID>1</AgentID></xml>"
        ));
        assert!(matches!(kind(&select), Kind::LocationSelected(l)
            if l.latitude == 23.0 && l.scale == 15 && l.label == " 广州市海珠区客村艺苑路 106号"));
        let report = work(&format!(
            "{head}<Event><![CDATA[LOCATION]]></Event><Latitude>23.104</Latitude>\
             <Longitude>113.320</Longitude><Precision>65.000</Precision><AgentID>1</AgentID>\
             <AppType><![CDATA[wxwork]]></AppType></xml>"
        ));
        assert_eq!(
            kind(&report),
            &Kind::LocationReport(pb::LocationReport {
                latitude: 23.104,
                longitude: 113.32,
                precision: 65.0
            })
        );
    }

    // ---- WeCom contact events (通讯录回调通知) ----

    /// create_user of 通讯录回调通知, as reproduced in Go and Java WeCom SDKs' comments.
    const CREATE_USER: &str = "<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType>create_user</ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<Name><![CDATA[张三]]></Name>
	<Department><![CDATA[1,2,3]]></Department>
	<MainDepartment>1</MainDepartment>
	<IsLeaderInDept><![CDATA[1,0,0]]></IsLeaderInDept>
	<Position><![CDATA[产品经理]]></Position>
	<Mobile>13800000000</Mobile>
	<Gender>1</Gender>
	<Status>1</Status>
	<ExtAttr>
		<Item>
		<Name><![CDATA[爱好]]></Name>
		<Type>0</Type>
		<Text>
			<Value><![CDATA[旅游]]></Value>
		</Text>
		</Item>
	</ExtAttr>
</xml>";

    #[test]
    fn a_member_created_is_a_contact_change_of_that_member() {
        let e = work(CREATE_USER);
        assert_eq!(
            kind(&e),
            &Kind::ContactChange(pb::ContactChange {
                change_type: "create_user".into(),
                id: "zhangsan".into(),
                new_user_id: String::new(),
                name: "张三".into(),
                departments: strings(&["1", "2", "3"]),
                parent_id: String::new()
            })
        );
        // FromUserName is "sys": the member is UserID.
        assert_eq!(e.user_id, "zhangsan");
        assert_eq!(e.agent_id, 0);
    }

    #[test]
    fn a_member_updated_carries_the_new_user_id_and_not_an_extension_attribute_name() {
        // WxJava WxCpXmlMessageTest testChangeContact (NewUserID), and testExtAttr: an
        // update_user whose only Name is inside ExtAttr.
        let e = work(
            "<xml>
    <ToUserName><![CDATA[toUser]]></ToUserName>
    <FromUserName><![CDATA[sys]]></FromUserName> 
    <CreateTime>1403610513</CreateTime>
    <MsgType><![CDATA[event]]></MsgType>
    <Event><![CDATA[change_contact]]></Event>
    <ChangeType>update_user</ChangeType>
    <UserID><![CDATA[zhangsan]]></UserID>
    <NewUserID><![CDATA[zhangsan001]]></NewUserID>
    <Name><![CDATA[张三]]></Name>
    <Department><![CDATA[1,2,3]]></Department>
</xml>",
        );
        assert!(matches!(kind(&e), Kind::ContactChange(c)
            if c.change_type == "update_user" && c.id == "zhangsan" && c.new_user_id == "zhangsan001"
                && c.name == "张三"));
        let e = work(
            "<xml>\
            <ToUserName><![CDATA[w56c9fe3d50ad1ea2]]></ToUserName>\
            <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1557241961</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
            <ChangeType><![CDATA[update_user]]></ChangeType><UserID><![CDATA[zhangsan]]></UserID>\
            <ExtAttr><Item><Name><![CDATA[爱好]]></Name><Value><![CDATA[111]]></Value>\
            <Text><Value><![CDATA[111]]></Value></Text></Item></ExtAttr>\
            <Address><![CDATA[11111]]></Address></xml>",
        );
        assert!(matches!(kind(&e), Kind::ContactChange(c)
            if c.id == "zhangsan" && c.name.is_empty() && c.departments.is_empty()));
    }

    #[test]
    fn a_member_deleted_is_a_contact_change() {
        let e = work(
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
            <ChangeType>delete_user</ChangeType><UserID><![CDATA[zhangsan]]></UserID></xml>",
        );
        assert_eq!(
            kind(&e),
            &Kind::ContactChange(pb::ContactChange {
                change_type: "delete_user".into(),
                id: "zhangsan".into(),
                ..Default::default()
            })
        );
    }

    #[test]
    fn department_changes_carry_id_name_and_parent() {
        // 通讯录回调通知 create_party / update_party / delete_party.
        let head = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>";
        let create = work(&format!(
            "{head}<ChangeType>create_party</ChangeType><Id>2</Id><Name><![CDATA[张三]]></Name>\
             <ParentId><![CDATA[1]]></ParentId><Order>1</Order></xml>"
        ));
        assert_eq!(
            kind(&create),
            &Kind::ContactChange(pb::ContactChange {
                change_type: "create_party".into(),
                id: "2".into(),
                name: "张三".into(),
                parent_id: "1".into(),
                ..Default::default()
            })
        );
        assert_eq!(create.user_id, "");
        let update = work(&format!(
            "{head}<ChangeType>update_party</ChangeType><Id>2</Id><Name><![CDATA[张三]]></Name>\
             <ParentId><![CDATA[1]]></ParentId></xml>"
        ));
        assert!(matches!(kind(&update), Kind::ContactChange(c) if c.change_type == "update_party"));
        let delete = work(&format!(
            "{head}<ChangeType>delete_party</ChangeType><Id>2</Id></xml>"
        ));
        assert_eq!(
            kind(&delete),
            &Kind::ContactChange(pb::ContactChange {
                change_type: "delete_party".into(),
                id: "2".into(),
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_tag_change_lists_members_and_departments() {
        // 通讯录回调通知 "标签成员变更事件".
        let e = work(
            "<xml>
    <ToUserName><![CDATA[toUser]]></ToUserName>
    <FromUserName><![CDATA[sys]]></FromUserName>
    <CreateTime>1403610513</CreateTime>
    <MsgType><![CDATA[event]]></MsgType>
    <Event><![CDATA[change_contact]]></Event>
    <ChangeType><![CDATA[update_tag]]></ChangeType>
    <TagId>1</TagId>
    <AddUserItems><![CDATA[zhangsan,lisi]]></AddUserItems>
    <DelUserItems><![CDATA[zhangsan1,lisi1]]></DelUserItems>
    <AddPartyItems><![CDATA[1,2]]></AddPartyItems>
    <DelPartyItems><![CDATA[3,4]]></DelPartyItems>
</xml>",
        );
        assert_eq!(
            kind(&e),
            &Kind::TagChange(pb::TagChange {
                tag_id: "1".into(),
                add_user_items: strings(&["zhangsan", "lisi"]),
                del_user_items: strings(&["zhangsan1", "lisi1"]),
                add_party_items: strings(&["1", "2"]),
                del_party_items: strings(&["3", "4"])
            })
        );
    }

    // ---- WeCom customer contact events (客户联系, path/92130) ----

    fn external_contact(change: &str, extra: &str) -> String {
        format!(
            "<xml>
<ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[sys]]></FromUserName>
<CreateTime>1403610513</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[change_external_contact]]></Event>
<ChangeType><![CDATA[{change}]]></ChangeType>
<UserID><![CDATA[zhangsan]]></UserID>
<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>
{extra}
</xml>"
        )
    }

    #[test]
    fn a_customer_added_carries_member_customer_state_and_welcome_code() {
        // 92130 "添加企业客户事件".
        let e = work(&external_contact(
            "add_external_contact",
            "<State><![CDATA[teststate]]></State>\n<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
        ));
        assert_eq!(
            kind(&e),
            &Kind::ExternalContactChange(pb::ExternalContactChange {
                change_type: "add_external_contact".into(),
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA".into(),
                state: "teststate".into(),
                welcome_code: "WELCOMECODE".into(),
                fail_reason: String::new()
            })
        );
        assert_eq!(e.user_id, "zhangsan");
        assert_eq!(e.external_user_id, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA");
        assert_eq!(e.open_id, "");
    }

    #[test]
    fn every_documented_customer_change_is_modelled() {
        // 92130: 编辑企业客户, 外部联系人免验证添加成员, 删除企业客户 (with Source),
        // 删除跟进成员, 客户接替失败.
        for (change, extra) in [
            ("edit_external_contact", ""),
            (
                "add_half_external_contact",
                "<State><![CDATA[teststate]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
            ),
            (
                "del_external_contact",
                "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>",
            ),
            ("del_follow_user", ""),
            (
                "transfer_fail",
                "<FailReason><![CDATA[customer_refused]]></FailReason>",
            ),
        ] {
            let e = work(&external_contact(change, extra));
            let Kind::ExternalContactChange(c) = kind(&e) else {
                panic!("{change}: {:?}", e.kind)
            };
            assert_eq!(c.change_type, change);
            assert_eq!(c.user_id, "zhangsan");
            assert_eq!(c.external_user_id, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA");
            assert_eq!(e.external_user_id, "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA");
            if change == "transfer_fail" {
                assert_eq!(c.fail_reason, "customer_refused");
            }
            if change == "add_half_external_contact" {
                assert_eq!((c.state.as_str(), c.welcome_code.as_str()), ("teststate", "WELCOMECODE"));
            }
        }
    }

    #[test]
    fn a_customer_group_chat_change_carries_its_details() {
        // 92130 "客户群变更事件" (self-built application form).
        let update = "<xml>
<ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[sys]]></FromUserName>
<CreateTime>1403610513</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[change_external_chat]]></Event>
<ChatId><![CDATA[wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ]]></ChatId>
<ChangeType><![CDATA[update]]></ChangeType>
<UpdateDetail><![CDATA[add_member]]></UpdateDetail>
<JoinScene>1</JoinScene>
<QuitScene>0</QuitScene>
<MemChangeCnt>10</MemChangeCnt>
<MemChangeList><Item>Jack</Item><Item>Rose</Item></MemChangeList>
<LastMemVer>9c3f97c2ada667dfb5f6d03308d963e1</LastMemVer>
<CurMemVer>71217227bbd112ecfe3a49c482195cb4</CurMemVer>
</xml>";
        let e = work(update);
        assert_eq!(
            kind(&e),
            &Kind::ExternalChatChange(pb::ExternalChatChange {
                change_type: "update".into(),
                chat_id: "wrx7HUARsKwGRaQBVKPBTcEyzdHA4HrQ".into(),
                update_detail: "add_member".into(),
                join_scene: 1,
                quit_scene: 0,
                mem_change_cnt: 10,
                mem_change_list: vec!["Jack".into(), "Rose".into()],
            })
        );
        assert_eq!(e.user_id, "");
        // 客户群创建事件 / 客户群解散事件 carry only ChatId.
        for change in ["create", "dismiss"] {
            let e = work(&format!(
                "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
                 <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                 <Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[CHAT_ID]]></ChatId>\
                 <ChangeType><![CDATA[{change}]]></ChangeType></xml>"
            ));
            assert_eq!(
                kind(&e),
                &Kind::ExternalChatChange(pb::ExternalChatChange {
                    change_type: change.into(),
                    chat_id: "CHAT_ID".into(),
                    ..Default::default()
                })
            );
        }
    }

    #[test]
    fn a_corp_tag_change_is_typed_for_every_change_type() {
        // 92130 企业客户标签创建事件 (the others differ in ChangeType, and StrategyId).
        let xml = |change: &str, tag_type: &str, strategy: &str| {
            format!(
                "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
                 <FromUserName><![CDATA[sys]]></FromUserName><CreateTime>1403610513</CreateTime>\
                 <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_tag]]></Event>\
                 <Id><![CDATA[TAG_ID]]></Id><TagType><![CDATA[{tag_type}]]></TagType>\
                 <ChangeType><![CDATA[{change}]]></ChangeType>{strategy}</xml>"
            )
        };
        let mut ids = std::collections::HashSet::new();
        for (change, tag_type, strategy) in [
            ("create", "tag", ""),
            ("update", "tag_group", ""),
            ("delete", "tag", "<StrategyId>1</StrategyId>"),
            ("shuffle", "", "<StrategyId>1</StrategyId>"),
        ] {
            let e = work(&xml(change, tag_type, strategy));
            assert_eq!(
                kind(&e),
                &Kind::CorpTagChange(pb::CorpTagChange {
                    change_type: change.into(),
                    id: "TAG_ID".into(),
                    tag_type: tag_type.into(),
                    strategy_id: if strategy.is_empty() { "" } else { "1" }.into(),
                })
            );
            assert!(ids.insert(e.id));
        }
        // A ChangeType WeCom may add later stays unknown, with its XML.
        let later = xml("merge", "tag", "");
        assert!(matches!(kind(&work(&later)), Kind::Unknown(u) if u.raw_xml == later));
        // On an Official Account the event does not exist.
        assert!(matches!(
            kind(&mp(&xml("create", "tag", ""))),
            Kind::Unknown(_)
        ));
    }

    // ---- Unknown kinds and errors ----

    #[test]
    fn an_unknown_message_type_keeps_the_raw_xml() {
        // wechatpy tests/test_parser.py test_parse_unknown_message.
        let xml = "<xml>
        <ToUserName><![CDATA[toUser]]></ToUserName>
        <FromUserName><![CDATA[fromUser]]></FromUserName>
        <CreateTime>1348831860</CreateTime>
        <MsgType><![CDATA[notsure]]></MsgType>
        <MsgId>1234567890123456</MsgId>
        </xml>";
        let e = mp(xml);
        assert_eq!(
            kind(&e),
            &Kind::Unknown(pb::Unknown {
                msg_type: "notsure".into(),
                event: String::new(),
                raw_xml: xml.into()
            })
        );
        assert_eq!(e.open_id, "fromUser");
    }

    #[test]
    fn an_unknown_event_keeps_the_raw_xml_and_its_name() {
        // wechatpy tests/test_events.py test_kf_create_session_event.
        let xml = "<xml>
        <ToUserName><![CDATA[touser]]></ToUserName>
        <FromUserName><![CDATA[fromuser]]></FromUserName>
        <CreateTime>1399197672</CreateTime>
        <MsgType><![CDATA[event]]></MsgType>
        <Event><![CDATA[kf_create_session]]></Event>
        <KfAccount><![CDATA[test1@test]]></KfAccount>
        </xml>";
        assert_eq!(
            kind(&mp(xml)),
            &Kind::Unknown(pb::Unknown {
                msg_type: "event".into(),
                event: "kf_create_session".into(),
                raw_xml: xml.into()
            })
        );
        // An event element missing altogether is kept the same way.
        let bare = "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime>\
                    <MsgType>event</MsgType></xml>";
        assert!(
            matches!(kind(&mp(bare)), Kind::Unknown(u) if u.event.is_empty() && u.raw_xml == bare)
        );
    }

    #[test]
    fn an_unknown_change_type_keeps_the_raw_xml() {
        // WeCom's 上下游 change_chain is not modelled, nor are new ChangeTypes of known events.
        for xml in [
            external_contact("future_change", ""),
            CREATE_USER.replace("create_user", "merge_user"),
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
             <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>\
             <Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[C]]></ChatId>\
             <ChangeType><![CDATA[archive]]></ChangeType></xml>"
                .to_owned(),
        ] {
            let e = work(&xml);
            assert!(
                matches!(kind(&e), Kind::Unknown(u) if u.msg_type == "event" && u.raw_xml == xml),
                "{:?}",
                e.kind
            );
        }
    }

    #[test]
    fn platform_specific_events_are_unknown_on_the_other_platform() {
        let contact = external_contact("add_external_contact", "");
        assert!(
            matches!(kind(&mp(&contact)), Kind::Unknown(u) if u.event == "change_external_contact")
        );
        let mass = "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime>\
                    <MsgType>event</MsgType><Event>MASSSENDJOBFINISH</Event><MsgID>1</MsgID></xml>";
        assert!(matches!(kind(&work(mass)), Kind::Unknown(_)));
    }

    #[test]
    fn a_callback_without_sender_time_or_type_is_refused() {
        let full = "<xml><ToUserName>t</ToUserName><FromUserName>u</FromUserName>\
                    <CreateTime>1</CreateTime><MsgType>text</MsgType><Content>c</Content></xml>";
        assert!(run(Platform::Mp, full).is_ok());
        for (name, without) in [
            (
                "FromUserName",
                full.replace("<FromUserName>u</FromUserName>", ""),
            ),
            ("CreateTime", full.replace("<CreateTime>1</CreateTime>", "")),
            ("MsgType", full.replace("<MsgType>text</MsgType>", "")),
        ] {
            assert_eq!(run(Platform::Work, &without), Err(XmlError::Missing(name)));
        }
        // A name found only inside a container is not the message's own.
        let nested = "<xml><A><FromUserName>u</FromUserName></A><CreateTime>1</CreateTime>\
                      <MsgType>text</MsgType></xml>";
        assert_eq!(
            run(Platform::Mp, nested),
            Err(XmlError::Missing("FromUserName"))
        );
    }

    #[test]
    fn a_number_that_does_not_parse_is_a_clear_error() {
        let head = "<xml><FromUserName>u</FromUserName>";
        for (field, xml) in [
            (
                "CreateTime",
                format!("{head}<CreateTime>yesterday</CreateTime><MsgType>text</MsgType></xml>"),
            ),
            (
                "CreateTime",
                format!("{head}<CreateTime></CreateTime><MsgType>text</MsgType></xml>"),
            ),
            (
                "MsgId",
                format!("{head}<CreateTime>1</CreateTime><MsgType>text</MsgType><MsgId>12ab</MsgId></xml>"),
            ),
            (
                "AgentID",
                format!("{head}<CreateTime>1</CreateTime><MsgType>text</MsgType><AgentID>one</AgentID></xml>"),
            ),
            (
                "Latitude",
                format!("{head}<CreateTime>1</CreateTime><MsgType>event</MsgType><Event>LOCATION</Event><Latitude>north</Latitude></xml>"),
            ),
            (
                "Latitude",
                format!("{head}<CreateTime>1</CreateTime><MsgType>event</MsgType><Event>LOCATION</Event><Latitude>inf</Latitude></xml>"),
            ),
            (
                "TotalCount",
                format!("{head}<CreateTime>1</CreateTime><MsgType>event</MsgType><Event>MASSSENDJOBFINISH</Event><TotalCount>-</TotalCount></xml>"),
            ),
        ] {
            match run(Platform::Mp, &xml) {
                Err(XmlError::BadNumber { field: f, .. }) => assert_eq!(f, field, "{xml}"),
                other => panic!("{xml}: {other:?}"),
            }
        }
        let err = run(
            Platform::Mp,
            &format!("{head}<CreateTime>yesterday</CreateTime><MsgType>text</MsgType></xml>"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "element <CreateTime> is not a valid number: \"yesterday\""
        );
    }

    // ---- Ids ----

    fn sha1_hex(parts: &[&str]) -> String {
        let mut h = Sha1::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([SEP]);
        }
        hex::encode(h.finalize())
    }

    #[test]
    fn a_message_id_is_the_sha1_of_account_and_msg_id() {
        assert_eq!(
            mp(WORK_TEXT).id,
            sha1_hex(&["acme", "msg", "1234567890123456"])
        );
    }

    #[test]
    fn an_event_id_is_the_sha1_of_account_sender_time_and_distinguishing_fields() {
        let xml = external_contact("add_external_contact", "");
        assert_eq!(
            work(&xml).id,
            sha1_hex(&[
                "acme",
                "event",
                "event",
                "sys",
                "1403610513",
                "change_external_contact",
                "",
                "add_external_contact",
                "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA",
                "zhangsan",
                "",
                "",
                "",
                "",
                "",
                "",
            ])
        );
    }

    #[test]
    fn the_same_callback_always_gets_the_same_id() {
        let xml = external_contact("add_external_contact", "<State>s</State>");
        let a = work(&xml);
        let doc = Document::parse(xml.as_bytes()).unwrap();
        let b = normalize(&account(), Platform::Work, &doc, &xml, SystemTime::now()).unwrap();
        assert_eq!(a.id, b.id);
        assert_ne!(a.received_at, b.received_at);
    }

    #[test]
    fn a_retried_message_gets_the_same_id() {
        // WeChat retries with the same MsgId; the retry may be laid out differently (e.g. once
        // plain, once decrypted from safe mode) and arrives later.
        let first = mp(WORK_TEXT);
        let retry = mp(&WORK_TEXT.replace('\n', "").replace("        ", ""));
        assert_eq!(first.id, retry.id);
        let other = mp(&WORK_TEXT.replace("1234567890123456", "1234567890123457"));
        assert_ne!(first.id, other.id);
    }

    #[test]
    fn distinct_same_second_wecom_events_get_distinct_ids() {
        // A member adds two customers in the same second: only ExternalUserID differs.
        let a = work(&external_contact("add_external_contact", ""));
        let b = work(&external_contact("add_external_contact", "").replace(
            "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA",
            "woAJ2GCAAAXtWyujaWJHDDGi0mBBBB",
        ));
        assert_ne!(a.id, b.id);
        // The same customer added, then edited, in one second.
        let c = work(&external_contact("edit_external_contact", ""));
        assert_ne!(a.id, c.id);
        // Two departments created in one second.
        let head = "<xml><FromUserName>sys</FromUserName><CreateTime>1403610513</CreateTime>\
                    <MsgType>event</MsgType><Event>change_contact</Event><ChangeType>create_party</ChangeType>";
        let d1 = work(&format!("{head}<Id>2</Id></xml>"));
        let d2 = work(&format!("{head}<Id>3</Id></xml>"));
        assert_ne!(d1.id, d2.id);
        // The same click from two applications of one corp.
        let click = |agent: u32| {
            work(&format!(
                "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>\
                 <Event>click</Event><EventKey>K</EventKey><AgentID>{agent}</AgentID></xml>"
            ))
        };
        assert_ne!(click(1).id, click(2).id);
    }

    #[test]
    fn the_account_is_part_of_the_id() {
        let doc = Document::parse(WORK_TEXT.as_bytes()).unwrap();
        let other = AccountId::parse("other").unwrap();
        let a = normalize(&account(), Platform::Mp, &doc, WORK_TEXT, SystemTime::now()).unwrap();
        let b = normalize(&other, Platform::Mp, &doc, WORK_TEXT, SystemTime::now()).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(b.account_id, "other");
    }
}

/// Property tests, the abuse proofs of SECURITY.md: `normalize` never panics on any document the
/// reader accepts, and an event's id depends only on the callback, never on when it was
/// received.
#[cfg(test)]
mod proptests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    /// Every element name `normalize` reads, and one it does not.
    const NAMES: &str = "ToUserName FromUserName CreateTime MsgType Event EventKey Ticket MsgId \
        MsgID Content PicUrl MediaId Format Recognition ThumbMediaId Location_X Location_Y Scale \
        Label Title Description Url Latitude Longitude Precision MenuId ScanType ScanResult \
        PicMd5Sum Poiname Status TotalCount FilterCount SentCount ErrorCount AgentID ChangeType \
        UserID NewUserID Name Department Id ParentId TagId AddUserItems DelUserItems \
        AddPartyItems DelPartyItems ExternalUserID State WelcomeCode FailReason ChatId \
        UpdateDetail JoinScene QuitScene MemChangeCnt Other";

    /// Values that matter to some branch (`|`-separated): message types, event names, change
    /// types, numbers at and past their limits, non-finite floats, lists.
    const VALUES: &str = "|0|-1| 42 |1348831860|23.134521|9223372036854775807|\
        9223372036854775808|-9223372036854775808|18446744073709551616|1e309|inf|NaN|-0|text|\
        image|voice|video|shortvideo|location|link|event|EVENT|subscribe|unsubscribe|SCAN|\
        LOCATION|CLICK|click|VIEW|view|scancode_push|scancode_waitmsg|pic_sysphoto|\
        pic_photo_or_album|pic_weixin|location_select|MASSSENDJOBFINISH|TEMPLATESENDJOBFINISH|\
        enter_agent|change_contact|change_external_contact|change_external_chat|change_external_tag|shuffle|delete|create_user|\
        update_user|delete_user|create_party|update_party|delete_party|update_tag|\
        add_external_contact|edit_external_contact|del_external_contact|\
        add_half_external_contact|del_follow_user|transfer_fail|create|update|dismiss|qrscene_|\
        qrscene_spring-expo|sys|a,b,,c| , |你好";

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(VALUES.split('|').collect::<Vec<_>>()).prop_map(str::to_owned),
            1 => ".{0,16}",
        ]
    }

    fn field() -> impl Strategy<Value = (String, String)> {
        let names: Vec<_> = NAMES.split_whitespace().collect();
        (prop::sample::select(names).prop_map(str::to_owned), value())
    }

    /// A callback document: the three required fields (each usually present), other fields,
    /// and a container of nested ones (as ScanCodeInfo and SendLocationInfo are).
    fn document() -> impl Strategy<Value = String> {
        (
            prop::option::weighted(0.9, value()),
            prop::option::weighted(0.9, prop_oneof![Just("1700000000".to_owned()), value()]),
            prop::option::weighted(0.9, value()),
            prop::collection::vec(field(), 0..10),
            prop::collection::vec(field(), 0..4),
        )
            .prop_map(|(from, create_time, msg_type, fields, nested)| {
                let mut xml = String::from("<xml>");
                let leaf = |xml: &mut String, name: &str, value: &str| {
                    // Escaped text; what XML cannot carry is left out (the reader refuses it).
                    let value: String = value
                        .chars()
                        .filter(|&c| c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
                        .collect();
                    xml.push_str(&format!(
                        "<{name}>{}</{name}>",
                        quick_xml::escape::escape(value.as_str())
                    ));
                };
                for (name, value) in [
                    ("FromUserName", from),
                    ("CreateTime", create_time),
                    ("MsgType", msg_type),
                ] {
                    if let Some(value) = value {
                        leaf(&mut xml, name, &value);
                    }
                }
                for (name, value) in &fields {
                    leaf(&mut xml, name, value);
                }
                xml.push_str("<SendLocationInfo>");
                for (name, value) in &nested {
                    leaf(&mut xml, name, value);
                }
                xml.push_str("</SendLocationInfo></xml>");
                xml
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn normalize_never_panics_and_ids_depend_only_on_the_callback(xml in document()) {
            let Ok(doc) = Document::parse(xml.as_bytes()) else {
                // Only characters XML refuses (U+FFFE, U+FFFF) are left for the reader to refuse.
                return Ok(());
            };
            let account = AccountId::parse("acme").unwrap();
            for platform in [Platform::Mp, Platform::Work] {
                let at = |s| UNIX_EPOCH + Duration::from_secs(s);
                let first = normalize(&account, platform, &doc, &xml, at(1_700_000_000));
                let later = normalize(&account, platform, &doc, &xml, at(1_800_000_000));
                match (first, later) {
                    (Ok(first), Ok(later)) => {
                        prop_assert_eq!(first.id.len(), 40);
                        prop_assert!(first.id.bytes().all(|b| b.is_ascii_hexdigit()));
                        prop_assert_eq!(&first.id, &later.id);
                        prop_assert_eq!(first.account_id.as_str(), "acme");
                        if let Some(Kind::Unknown(u)) = &first.kind {
                            prop_assert_eq!(&u.raw_xml, &xml);
                        }
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a, b),
                    (a, b) => prop_assert!(false, "not deterministic: {:?} vs {:?}", a, b),
                }
            }
        }
    }
}
