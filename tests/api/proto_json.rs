//! Events leaving as JSON (the stdout sink, the dead-letter listing) are in the canonical proto3
//! JSON mapping: Google's protobuf library for Python reads them back into the same message.

use std::time::Duration;

use serde_json::Value;
use wechat_gateway::outbox::sink::write_json_line;
use wechat_gateway::pb::{self, event::Kind};
use wechat_gateway::wechat::crypto;

use crate::support::app::{app_with_crm, config_toml, now, text_xml, AppOptions, MP_TOKEN};
use crate::support::process::GatewayProcess;
use crate::support::python::{protobuf_python, python_reads_events};

/// A MsgId above 2^53: a JSON number would lose it in JavaScript, a string keeps it.
const BIG_MSG_ID: u64 = (1 << 62) + 12_345;

fn json_line(event: &pb::Event) -> String {
    let mut out = Vec::new();
    write_json_line(event, &mut out).unwrap();
    let line = String::from_utf8(out).unwrap();
    line.strip_suffix('\n').unwrap().to_owned()
}

/// One event of every kind, with every field type of the proto at a value that is not its
/// default (64-bit extremes, doubles, repeated fields, nested messages, timestamps with nanos).
fn every_kind() -> Vec<pb::Event> {
    let ts = |seconds, nanos| Some(pb::Timestamp { seconds, nanos });
    let base = pb::Event {
        id: "0123456789abcdef0123456789abcdef01234567".into(),
        account_id: "acme-mp".into(),
        platform: pb::Platform::Mp as i32,
        occurred_at: ts(1_348_831_860, 0),
        received_at: ts(1_348_831_861, 123_456_789),
        open_id: "oUser".into(),
        union_id: "uUnion".into(),
        user_id: "zhangsan".into(),
        external_user_id: "wmExternal".into(),
        to_user_name: "gh_123".into(),
        agent_id: i64::MAX,
        label: "spring expo 春季".into(),
        broadcast_job_id: "job-1".into(),
        template_send_job_id: String::new(),
        reply_rule_id: "welcome:default".into(),
        profile: Some(pb::UserProfile {
            subscribe_scene: "ADD_SCENE_QR_CODE".into(),
            qr_scene_str: "expo".into(),
            tag_ids: vec![2, -1, i64::MIN],
            subscribed_at: ts(1_600_000_000, 0),
            fetched_at: ts(-62_135_596_800, 1),
            name: "Ann".into(),
        }),
        follow_user: vec![pb::FollowUser {
            user_id: "zhangsan".into(),
            remark: "met at the expo".into(),
            description: String::new(),
            created_at: ts(1_764_547_200, 0),
            tags: vec![pb::FollowUserTag {
                tag_id: "etHot".into(),
                tag_name: "Hot".into(),
                group_name: "Lead level".into(),
                r#type: 1,
            }],
            add_way: 1,
            state: "expo".into(),
            oper_user_id: "zhangsan".into(),
            remark_corp_name: String::new(),
            remark_mobiles: vec!["13800000000".into()],
        }],
        sync_id: "sync-1".into(),
        kind: None,
    };
    let kinds = vec![
        Kind::Text(pb::TextMessage {
            msg_id: i64::MAX,
            content: "hello \"world\"\n<xml/> 你好".into(),
        }),
        Kind::Image(pb::ImageMessage {
            msg_id: BIG_MSG_ID as i64,
            pic_url: "https://mmbiz.qpic.cn/x".into(),
            media_id: "m".into(),
        }),
        Kind::Voice(pb::VoiceMessage {
            msg_id: -1,
            media_id: "m".into(),
            format: "amr".into(),
            recognition: "r".into(),
        }),
        Kind::Video(pb::VideoMessage {
            msg_id: 1,
            media_id: "m".into(),
            thumb_media_id: "t".into(),
            short_video: true,
        }),
        Kind::Location(pb::LocationMessage {
            msg_id: 2,
            latitude: 23.134521,
            longitude: -113.358803,
            scale: 20,
            label: "位置信息".into(),
        }),
        Kind::Link(pb::LinkMessage {
            msg_id: 3,
            title: "t".into(),
            description: "d".into(),
            url: "https://example.com/".into(),
        }),
        Kind::Subscribe(pb::Subscribe {
            scene: "expo".into(),
            ticket: "TICKET".into(),
        }),
        Kind::Unsubscribe(pb::Unsubscribe { data_purged: true }),
        Kind::Scan(pb::Scan {
            scene: "42".into(),
            ticket: "T".into(),
        }),
        Kind::LocationReport(pb::LocationReport {
            latitude: 1e-7,
            longitude: 179.999999,
            precision: 65.0,
        }),
        Kind::MenuClick(pb::MenuClick {
            key: "V1001".into(),
        }),
        Kind::MenuView(pb::MenuView {
            url: "https://example.com/".into(),
            menu_id: "208379533".into(),
        }),
        Kind::ScanCode(pb::ScanCodeResult {
            event: "scancode_push".into(),
            key: "k".into(),
            scan_type: "qrcode".into(),
            scan_result: "1".into(),
        }),
        Kind::Pictures(pb::PicturesSent {
            event: "pic_weixin".into(),
            key: "k".into(),
            pic_md5_sums: vec!["a".into(), "b".into()],
        }),
        Kind::LocationSelected(pb::LocationSelected {
            key: "k".into(),
            latitude: 23.0,
            longitude: 113.0,
            scale: -1,
            label: "l".into(),
            poiname: "p".into(),
        }),
        Kind::MassSendFinished(pb::MassSendFinished {
            msg_id: BIG_MSG_ID as i64,
            status: "send success".into(),
            total_count: 100,
            filter_count: 80,
            sent_count: 75,
            error_count: 5,
        }),
        Kind::TemplateSendFinished(pb::TemplateSendFinished {
            msg_id: 200_163_836,
            status: "success".into(),
        }),
        Kind::EnterAgent(pb::EnterAgent { key: "k".into() }),
        Kind::ContactChange(pb::ContactChange {
            change_type: "create_user".into(),
            id: "zhangsan".into(),
            new_user_id: "zhangsan001".into(),
            name: "张三".into(),
            departments: vec!["1".into(), "2".into()],
            parent_id: "1".into(),
        }),
        Kind::ExternalContactChange(pb::ExternalContactChange {
            change_type: "add_external_contact".into(),
            user_id: "zhangsan".into(),
            external_user_id: "wm".into(),
            state: "expo".into(),
            welcome_code: "W".into(),
            fail_reason: "customer_refused".into(),
        }),
        Kind::ExternalChatChange(pb::ExternalChatChange {
            change_type: "update".into(),
            chat_id: "wr".into(),
            update_detail: "add_member".into(),
            join_scene: 1,
            quit_scene: 0,
            mem_change_cnt: i64::MIN,
            mem_change_list: vec!["wmA".into(), "lisi".into()],
        }),
        Kind::CorpTagChange(pb::CorpTagChange {
            change_type: "delete".into(),
            id: "etT".into(),
            tag_type: "tag".into(),
            strategy_id: "1".into(),
        }),
        Kind::GroupMemberJoined(pb::GroupMemberJoined {
            chat_id: "wr".into(),
            member_id: "wmA".into(),
            member_type: 2,
            joined_at: ts(1_700_000_000, 0),
            join_scene: 3,
            invitor: "zhangsan".into(),
            state: "expo".into(),
            name: "A".into(),
            group_nickname: "a".into(),
            union_id: "uA".into(),
            chat_name: "VIP".into(),
            owner: "zhangsan".into(),
        }),
        Kind::GroupMemberLeft(pb::GroupMemberLeft {
            chat_id: "wr".into(),
            member_id: "lisi".into(),
            left_at: ts(1_700_000_001, 0),
            quit_scene: 1,
        }),
        Kind::TagChange(pb::TagChange {
            tag_id: "1".into(),
            add_user_items: vec!["a".into()],
            del_user_items: vec!["b".into()],
            add_party_items: vec!["1".into()],
            del_party_items: vec!["2".into()],
        }),
        Kind::LinkClick(pb::LinkClick {
            code: "abc".into(),
            label: "l".into(),
            target: "https://example.com/".into(),
            anonymous: true,
        }),
        Kind::FollowerSnapshot(pb::FollowerSnapshot {
            open_id: "oUser".into(),
            union_id: "uUnion".into(),
            subscribed_at: ts(1_600_000_000, 0),
            subscribe_scene: "ADD_SCENE_QR_CODE".into(),
            qr_scene: i64::MIN,
            qr_scene_str: "expo".into(),
            tag_ids: vec![2, 100],
            remark: "vip 贵宾".into(),
            language: "zh_CN".into(),
            group_id: 0,
        }),
        Kind::ExternalContactSnapshot(pb::ExternalContactSnapshot {
            external_user_id: "wmExternal".into(),
            union_id: "uUnion".into(),
            name: "Customer".into(),
            r#type: 2,
            corp_name: "Acme".into(),
            corp_full_name: "Acme Ltd".into(),
            position: "buyer".into(),
            gender: 1,
            avatar: "http://wx.qlogo.cn/a/0".into(),
            follow_users: vec![pb::FollowUser {
                user_id: "zhangsan".into(),
                remark: "r".into(),
                description: "d".into(),
                created_at: ts(1_700_000_000, 0),
                tags: vec![pb::FollowUserTag {
                    tag_id: "et1".into(),
                    tag_name: String::new(),
                    group_name: String::new(),
                    r#type: 1,
                }],
                add_way: 201,
                state: "spring-expo".into(),
                oper_user_id: "zhangsan".into(),
                remark_corp_name: "Acme".into(),
                remark_mobiles: vec!["13800000000".into()],
            }],
        }),
        Kind::Unknown(pb::Unknown {
            msg_type: "event".into(),
            event: "new_thing".into(),
            raw_xml: "<xml><A><![CDATA[x]]></A></xml>".into(),
        }),
    ];
    let mut events: Vec<pb::Event> = kinds
        .into_iter()
        .map(|kind| pb::Event {
            kind: Some(kind),
            ..base.clone()
        })
        .collect();
    // And the sparse ends: a WeCom event with no kind and nothing else set.
    events.push(pb::Event {
        platform: pb::Platform::Work as i32,
        ..Default::default()
    });
    events
}

#[test]
fn every_kind_of_event_in_proto3_json_is_read_back_by_python_protobuf_as_the_same_message() {
    let events = every_kind();
    let lines: Vec<String> = events.iter().map(json_line).collect();
    // The canonical mapping, as the proto3 JSON specification writes it.
    let text: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(text["platform"], "PLATFORM_MP", "{text}");
    assert_eq!(text["text"]["msgId"], "9223372036854775807", "{text}");
    assert_eq!(text["agentId"], "9223372036854775807", "{text}");
    assert_eq!(text["occurredAt"], "2012-09-28T11:31:00Z", "{text}");
    assert_eq!(
        text["receivedAt"], "2012-09-28T11:31:01.123456789Z",
        "{text}"
    );
    assert_eq!(text["profile"]["tagIds"][2], "-9223372036854775808");
    let click: Value = serde_json::from_str(&lines[10]).unwrap();
    assert_eq!(click["menuClick"]["key"], "V1001", "{click}");

    let Some(read) = python_reads_events(&lines) else {
        return;
    };
    for (back, sent) in read.iter().zip(&events) {
        assert_eq!(back, sent, "{}", json_line(sent));
    }
}

/// A plain-mode callback, signed as WeChat signs it, to a gateway process.
async fn post_plain(addr: std::net::SocketAddr, xml: String) -> u16 {
    let ts = now().to_string();
    let sig = crypto::signature(MP_TOKEN, &ts, "nonce1");
    reqwest::Client::new()
        .post(format!("http://{addr}/wechat/mp/acme-plain"))
        .query(&[
            ("signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", "nonce1"),
        ])
        .body(xml)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_stdout_line_of_the_gateway_is_read_back_by_python_protobuf_with_its_64_bit_msg_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    // No CRM endpoint: the forwarder writes each event to stdout.
    let opts = AppOptions::embedded(&dir.path().join("data"));
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let gateway = GatewayProcess::start(&config);
    let xml = text_xml("oStdout", "to stdout", BIG_MSG_ID);
    assert_eq!(post_plain(gateway.addr, xml).await, 200);

    let line = gateway
        .stdout
        .recv_timeout(Duration::from_secs(20))
        .expect("the event is printed");
    assert!(
        line.contains(&format!("\"msgId\":\"{BIG_MSG_ID}\"")),
        "the MsgId is a string: {line}"
    );
    assert!(line.contains("\"platform\":\"PLATFORM_MP\""), "{line}");
    let Some(read) = python_reads_events(std::slice::from_ref(&line)) else {
        return;
    };
    let event = &read[0];
    assert_eq!(event.account_id, "acme-plain");
    assert_eq!(event.open_id, "oStdout");
    assert_eq!(event.platform, pb::Platform::Mp as i32);
    assert!(event.occurred_at.is_some_and(|t| t.seconds > 0));
    assert_eq!(
        event.kind,
        Some(Kind::Text(pb::TextMessage {
            msg_id: BIG_MSG_ID as i64,
            content: "to stdout".into(),
        }))
    );
    // Rust writes the message Python read exactly as it printed it.
    assert_eq!(json_line(event), line);
}

#[tokio::test]
async fn a_dead_letter_is_read_back_by_python_protobuf_as_the_event_the_crm_later_receives() {
    // The venv first: made while the app's keep-alive connections sit idle, it would outlast them.
    protobuf_python();
    let (app, crm, _dir) = app_with_crm().await;
    crm.reject_user("oDead", true);
    let resp = app
        .post_plain("acme-plain", &text_xml("oDead", "refused", BIG_MSG_ID + 1))
        .await;
    assert_eq!(resp.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let (status, body) = app.admin("GET", "/dead-letters", None).await;
        assert_eq!(status, 200, "{body}");
        if let Some(entry) = body["dead_letters"].as_array().and_then(|l| l.first()) {
            break entry.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["event"]["openId"], "oDead", "{entry}");
    assert_eq!(
        entry["event"]["text"]["msgId"],
        (BIG_MSG_ID + 1).to_string(),
        "{entry}"
    );
    let Some(read) = python_reads_events(&[entry["event"].to_string()]) else {
        app.stop().await;
        return;
    };
    let dead = read.into_iter().next().unwrap();
    assert_eq!(dead.id, entry["event_id"].as_str().unwrap());

    // Replayed, the same event reaches the CRM in protobuf's binary encoding: the message
    // Python read from the JSON is that one, field by field.
    crm.reject_user("oDead", false);
    let id = entry["event_id"].as_str().unwrap();
    let (status, body) = app
        .admin("POST", &format!("/dead-letters/{id}/replay"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let received = crm
        .wait_for(
            |evs| evs.iter().any(|e| e.open_id == "oDead"),
            Duration::from_secs(20),
        )
        .await;
    let delivered = received.iter().find(|e| e.open_id == "oDead").unwrap();
    assert_eq!(&dead, delivered);
    app.stop().await;
}
