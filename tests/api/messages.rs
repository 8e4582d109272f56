//! Customer-service messages (issue 15, item 4): every type of `message/custom/send` in the
//! shape WeChat documents (客服接口-发消息), the typing indicator, and the 48-hour window: an
//! interaction recorded from a real callback opens it, a follower without one is refused 409
//! `outside_window` before any call to WeChat (unless the caller overrides), and WeChat's own
//! 45015 is answered the same. WeChat is the fake of `support::fake_wechat`.

use std::time::Duration;

use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{SendMessageRequest, SendTypingRequest};

use crate::support::app::{now, spawn_app, unique_msg_id, AppOptions, TestApp};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};

const WAIT: Duration = Duration::from_secs(20);
const CUSTOM_SEND: &str = "/cgi-bin/message/custom/send";
const CUSTOM_TYPING: &str = "/cgi-bin/message/custom/typing";

async fn app(wechat: &FakeWeChat, crm: &FakeCrm) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    (spawn_app(opts, dir.path()).await, dir)
}

async fn send(app: &TestApp, account: &str, body: &Value) -> (u16, Value) {
    app.admin("POST", &format!("/accounts/{account}/messages"), Some(body))
        .await
}

/// A message from `from` sent `ago` seconds before now, as WeChat posts it.
fn text_from(from: &str, ago: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content>\
         <MsgId>{}</MsgId></xml>",
        now() - ago,
        unique_msg_id()
    )
}

fn event_from(from: &str, event: &str, key: &str) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>event</MsgType><Event>{event}</Event><EventKey>{key}</EventKey></xml>",
        now()
    )
}

/// Posts a callback and waits until the CRM has it: the forwarder records the interaction
/// before it delivers.
async fn callback(app: &TestApp, crm: &FakeCrm, from: &str, xml: &str) {
    let before = crm.wait_for(|_| true, WAIT).await.len();
    assert_eq!(app.post_plain("acme-plain", xml).await.status(), 200);
    crm.wait_for(
        |evs| evs.len() > before && evs.iter().any(|e| e.open_id == from),
        WAIT,
    )
    .await;
}

#[tokio::test]
async fn every_message_type_reaches_wechat_in_the_shape_it_documents() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app(&wechat, &crm).await;
    // (what the caller sends, what WeChat receives under the type's name)
    let cases = [
        json!({"text": {"content": "你好"}}),
        json!({"image": {"media_id": "MEDIA_ID"}}),
        json!({"voice": {"media_id": "MEDIA_ID"}}),
        json!({"video": {"media_id": "MEDIA_ID", "thumb_media_id": "MEDIA_ID",
            "title": "TITLE", "description": "DESCRIPTION"}}),
        json!({"music": {"title": "MUSIC_TITLE", "description": "MUSIC_DESCRIPTION",
            "musicurl": "https://example.com/m.mp3", "hqmusicurl": "https://example.com/hq.mp3",
            "thumb_media_id": "THUMB_MEDIA_ID"}}),
        json!({"news": {"articles": [{"title": "Happy Day", "description": "Is Really A Happy Day",
            "url": "https://example.com/a", "picurl": "https://example.com/a.jpg"}]}}),
        json!({"mpnews": {"media_id": "MEDIA_ID"}}),
        json!({"mpnewsarticle": {"article_id": "ARTICLE_ID"}}),
        json!({"msgmenu": {"head_content": "您对本次服务是否满意呢? ",
            "list": [{"id": "101", "content": "满意"}, {"id": "102", "content": "不满意"}],
            "tail_content": "欢迎再次光临"}}),
        json!({"miniprogrampage": {"title": "title", "appid": "appid", "pagepath": "pagepath",
            "thumb_media_id": "thumb_media_id"}}),
        json!({"wxcard": {"card_id": "123dsdajkasd231jhksad"}}),
    ];
    for (i, message) in cases.iter().enumerate() {
        let (status, body) = send(
            &app,
            "acme-plain",
            &json!({"to_user": "oTypes", "message": message, "ignore_window": true}),
        )
        .await;
        assert_eq!(status, 200, "{message}: {body}");
        let (msgtype, content) = message.as_object().unwrap().iter().next().unwrap();
        assert_eq!(body["msgtype"], *msgtype);
        let sent = &wechat.requests_to(CUSTOM_SEND)[i];
        let mut expected = json!({"touser": "oTypes", "msgtype": msgtype});
        expected[msgtype] = content.clone();
        assert_eq!(sent.body, expected);
    }
}

#[tokio::test]
async fn invalid_messages_are_refused_naming_the_field_before_any_call() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app(&wechat, &crm).await;
    for (message, named) in [
        (
            json!({"video": {"media_id": "M"}}),
            "message.video.thumb_media_id",
        ),
        (
            json!({"news": {"articles": [{"title": "a", "url": "https://a"},
                {"title": "b", "url": "https://b"}]}}),
            "45008",
        ),
        (json!({"text": {"content": ""}}), "message.text.content"),
        (json!({"link": {"title": "x"}}), "\"link\""),
        (
            json!({"msgmenu": {"list": [{"id": "1"}]}}),
            "message.msgmenu.list[0].content",
        ),
    ] {
        let (status, body) = send(
            &app,
            "acme-plain",
            &json!({"to_user": "oX", "message": message, "ignore_window": true}),
        )
        .await;
        assert_eq!(status, 400, "{message}: {body}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(named), "{named}: {text}");
    }
    assert_eq!(wechat.count(CUSTOM_SEND), 0);
}

#[tokio::test]
async fn the_48_hour_window_opens_with_an_interaction_and_is_checked_before_calling_wechat() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app(&wechat, &crm).await;
    let hello = json!({"text": {"content": "hello"}});

    // Nothing from this follower: refused, and WeChat never called.
    let (status, body) = send(
        &app,
        "acme-plain",
        &json!({"to_user": "oQuiet", "message": hello}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    assert_eq!(wechat.count(CUSTOM_SEND), 0);

    // A VIEW click is not an interaction WeChat counts; a message 49 hours old is outside.
    callback(
        &app,
        &crm,
        "oViewer",
        &event_from("oViewer", "VIEW", "https://example.com"),
    )
    .await;
    callback(&app, &crm, "oLate", &text_from("oLate", 49 * 3600)).await;
    for quiet in ["oViewer", "oLate"] {
        let (status, body) = send(
            &app,
            "acme-plain",
            &json!({"to_user": quiet, "message": hello}),
        )
        .await;
        assert_eq!(status, 409, "{quiet}: {body}");
    }
    assert_eq!(wechat.count(CUSTOM_SEND), 0);

    // A message, a CLICK: each opens the window.
    callback(&app, &crm, "oTalker", &text_from("oTalker", 60)).await;
    callback(
        &app,
        &crm,
        "oClicker",
        &event_from("oClicker", "CLICK", "V1001"),
    )
    .await;
    for talker in ["oTalker", "oClicker"] {
        let (status, body) = send(
            &app,
            "acme-plain",
            &json!({"to_user": talker, "message": hello}),
        )
        .await;
        assert_eq!(status, 200, "{talker}: {body}");
    }
    assert_eq!(wechat.count(CUSTOM_SEND), 2);

    // The caller may override; WeChat's own 45015 is the same 409.
    wechat.inject(CUSTOM_SEND, Injected::Errcode(45015), 1);
    let (status, body) = send(
        &app,
        "acme-plain",
        &json!({"to_user": "oQuiet", "message": hello, "ignore_window": true}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "outside_window");
    let (status, _) = send(
        &app,
        "acme-plain",
        &json!({"to_user": "oQuiet", "message": hello, "ignore_window": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(wechat.count(CUSTOM_SEND), 4);

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused = metrics
        .lines()
        .find(|l| l.starts_with("wgw_custom_messages_outside_window_total{account=\"acme-plain\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: f64 = refused.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 4.0, "{refused}");
}

#[tokio::test]
async fn typing_and_grpc_follow_the_same_window() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app(&wechat, &crm).await;
    callback(&app, &crm, "oTyping", &text_from("oTyping", 5)).await;

    let (status, body) = app
        .admin(
            "POST",
            "/accounts/acme-plain/messages/typing",
            Some(&json!({"to_user": "oTyping", "command": "Typing"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        wechat.requests_to(CUSTOM_TYPING)[0].body,
        json!({"touser": "oTyping", "command": "Typing"})
    );
    let (status, _) = app
        .admin(
            "POST",
            "/accounts/acme-plain/messages/typing",
            Some(&json!({"to_user": "oNobody", "command": "CancelTyping"})),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = app
        .admin(
            "POST",
            "/accounts/acme-work/messages/typing",
            Some(&json!({"to_user": "zhangsan", "command": "Typing"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count(CUSTOM_TYPING), 1);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let menu = r#"{"msgmenu": {"head_content": "h", "list": [{"id": "1", "content": "yes"}]}}"#;
    let refused = gateway
        .send_message(SendMessageRequest {
            account_id: "acme-plain".into(),
            to_user: "oNobody".into(),
            message_json: menu.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.metadata().get("wgw-error-code").unwrap(),
        "outside_window"
    );
    assert_eq!(wechat.count(CUSTOM_SEND), 0);
    gateway
        .send_message(SendMessageRequest {
            account_id: "acme-plain".into(),
            to_user: "oTyping".into(),
            message_json: menu.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        wechat.requests_to(CUSTOM_SEND)[0].body,
        json!({"touser": "oTyping", "msgtype": "msgmenu",
            "msgmenu": {"head_content": "h", "list": [{"id": "1", "content": "yes"}]}})
    );
    gateway
        .send_typing(SendTypingRequest {
            account_id: "acme-plain".into(),
            to_user: "oTyping".into(),
            typing: false,
            ignore_window: false,
        })
        .await
        .unwrap();
    assert_eq!(
        wechat.requests_to(CUSTOM_TYPING)[1].body["command"],
        "CancelTyping"
    );
}
