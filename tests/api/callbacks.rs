//! Callbacks in, events out: every message and event type, every refusal, retries, outages.

use std::time::Duration;

use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::{self, Platform};

use crate::support::app::{
    app_with_crm, now, spawn_app, text_xml, unique_msg_id, AppOptions, MP_KEY, NEW_KEY,
};
use crate::support::crm::FakeCrm;

const WAIT: Duration = Duration::from_secs(20);

fn event_xml(from: &str, event: &str, extra: &str) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>event</MsgType><Event>{event}</Event>{extra}</xml>",
        now()
    )
}

#[tokio::test]
async fn url_verification_echoes_echostr_only_when_the_signature_holds() {
    let (app, _crm, _dir) = app_with_crm().await;
    let ts = now().to_string();
    let sig = wechat_gateway::wechat::crypto::signature("pamtest", &ts, "n1");
    let ok = app.verify_url("acme-mp", &sig, &ts, "n1", "hello123").await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "hello123");

    let forged = app
        .verify_url("acme-mp", &"0".repeat(40), &ts, "n1", "x")
        .await;
    assert_eq!(forged.status(), 401);
    assert_eq!(
        app.get("/wechat/mp/nobody?signature=a&timestamp=1&nonce=1&echostr=1")
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn wecom_url_verification_answers_the_decrypted_echostr() {
    let (app, _crm, _dir) = app_with_crm().await;
    let echostr = app.encrypt_for("acme-work", "1616140317555161061", None);
    let ts = now().to_string();
    let sig = wechat_gateway::wechat::crypto::msg_signature("QDG6eK", &ts, "n2", &echostr);
    let resp = app.verify_url("acme-work", &sig, &ts, "n2", &echostr).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "1616140317555161061");

    let resp = app
        .verify_url("acme-work", "deadbeef", &ts, "n2", &echostr)
        .await;
    assert_eq!(resp.status(), 401);
    app.stop().await;
}

/// One sample of every Official Account message and event, with a check of its event.
/// A callback body and the check its forwarded event must pass.
type Sample = (String, Box<dyn Fn(&pb::Event) -> bool>);

fn mp_samples(user: &str) -> Vec<Sample> {
    let m = |t: &str, body: &str| {
        format!(
            "<xml><ToUserName>gh_test</ToUserName><FromUserName>{user}</FromUserName><CreateTime>{}</CreateTime>\
             <MsgType>{t}</MsgType>{body}<MsgId>{}</MsgId></xml>",
            now(),
            unique_msg_id()
        )
    };
    vec![
        (m("text", "<Content>你好</Content>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Text(t)) if t.content == "你好"))),
        (m("image", "<PicUrl>http://p/1.jpg</PicUrl><MediaId>m1</MediaId>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Image(i)) if i.media_id == "m1"))),
        (m("voice", "<MediaId>v1</MediaId><Format>amr</Format><Recognition>hi</Recognition>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Voice(v)) if v.format == "amr" && v.recognition == "hi"))),
        (m("video", "<MediaId>vid</MediaId><ThumbMediaId>th</ThumbMediaId>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Video(v)) if !v.short_video && v.thumb_media_id == "th"))),
        (m("shortvideo", "<MediaId>sv</MediaId><ThumbMediaId>th</ThumbMediaId>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Video(v)) if v.short_video))),
        (m("location", "<Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label>Guangzhou</Label>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Location(l)) if (l.latitude - 23.134521).abs() < 1e-9 && l.scale == 20))),
        (m("link", "<Title>T</Title><Description>D</Description><Url>https://x</Url>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Link(l)) if l.url == "https://x"))),
        (event_xml(user, "subscribe", ""), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Subscribe(s)) if s.scene.is_empty()))),
        (event_xml(user, "subscribe", "<EventKey>qrscene_spring-expo</EventKey><Ticket>TK</Ticket>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Subscribe(s)) if s.scene == "spring-expo" && s.ticket == "TK"))),
        (event_xml(user, "unsubscribe", ""), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Unsubscribe(_))))),
        (event_xml(user, "SCAN", "<EventKey>42</EventKey><Ticket>TK</Ticket>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Scan(s)) if s.scene == "42"))),
        (event_xml(user, "LOCATION", "<Latitude>23.1</Latitude><Longitude>113.3</Longitude><Precision>119.3</Precision>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::LocationReport(l)) if (l.precision - 119.3).abs() < 1e-9))),
        (event_xml(user, "CLICK", "<EventKey>K1</EventKey>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::MenuClick(c)) if c.key == "K1"))),
        (event_xml(user, "VIEW", "<EventKey>https://v</EventKey><MenuId>77</MenuId>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::MenuView(v)) if v.url == "https://v" && v.menu_id == "77"))),
        (event_xml(user, "scancode_push", "<EventKey>s1</EventKey><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>R</ScanResult></ScanCodeInfo>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::ScanCode(s)) if s.scan_result == "R"))),
        (event_xml(user, "pic_weixin", "<EventKey>p</EventKey><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>abc</PicMd5Sum></item></PicList></SendPicsInfo>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Pictures(p)) if p.pic_md5_sums == vec!["abc".to_string()]))),
        (event_xml(user, "location_select", "<EventKey>l</EventKey><SendLocationInfo><Location_X>23</Location_X><Location_Y>113</Location_Y><Scale>15</Scale><Label>L</Label><Poiname>P</Poiname></SendLocationInfo>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::LocationSelected(l)) if l.poiname == "P"))),
        (event_xml(user, "MASSSENDJOBFINISH", "<MsgID>1988</MsgID><Status>send success</Status><TotalCount>100</TotalCount><FilterCount>80</FilterCount><SentCount>75</SentCount><ErrorCount>5</ErrorCount>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::MassSendFinished(m)) if m.msg_id == 1988 && m.sent_count == 75))),
        (event_xml(user, "TEMPLATESENDJOBFINISH", "<MsgID>200163836</MsgID><Status>success</Status>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::TemplateSendFinished(t)) if t.status == "success"))),
        (event_xml(user, "some_future_event", "<Foo>bar</Foo>"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::Unknown(u)) if u.raw_xml.contains("<Foo>bar</Foo>")))),
    ]
}

#[tokio::test]
async fn every_official_account_message_and_event_arrives_as_the_right_event() {
    let (app, crm, _dir) = app_with_crm().await;
    // Each sample is sent in plain mode to one account and encrypted (safe mode) to another.
    for (account, user) in [("acme-plain", "oPlainUser"), ("acme-mp", "oSafeUser")] {
        let samples = mp_samples(user);
        for (xml, _) in &samples {
            let resp = if account == "acme-plain" {
                app.post_plain(account, xml).await
            } else {
                app.post_safe(account, xml).await
            };
            assert_eq!(resp.status(), 200, "{account}: {xml}");
            assert_eq!(resp.text().await.unwrap(), "success");
        }
        let events = crm
            .wait_for(
                |evs| evs.iter().filter(|e| e.open_id == user).count() >= samples.len(),
                WAIT,
            )
            .await;
        let mine: Vec<_> = events.iter().filter(|e| e.open_id == user).collect();
        assert_eq!(mine.len(), samples.len(), "one event per callback");
        for ((xml, check), event) in samples.iter().zip(&mine) {
            assert!(check(event), "{account}: wrong event {event:?} for {xml}");
            assert_eq!(event.account_id, account);
            assert_eq!(event.platform, Platform::Mp as i32);
            assert!(event.occurred_at.is_some());
            assert_eq!(event.id.len(), 40);
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn wecom_messages_and_events_arrive_as_the_right_event() {
    let (app, crm, _dir) = app_with_crm().await;
    let w = |body: &str, from: &str| {
        format!(
            "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
             <CreateTime>{}</CreateTime>{body}<AgentID>1000002</AgentID></xml>",
            now()
        )
    };
    let samples: Vec<Sample> = vec![
        (w(&format!("<MsgType>text</MsgType><Content>hi</Content><MsgId>{}</MsgId>", unique_msg_id()), "zhangsan"), Box::new(|e: &pb::Event| e.user_id == "zhangsan" && matches!(&e.kind, Some(Kind::Text(t)) if t.content == "hi"))),
        (w("<MsgType>event</MsgType><Event>enter_agent</Event><EventKey></EventKey>", "zhangsan"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::EnterAgent(_))))),
        (w("<MsgType>event</MsgType><Event>click</Event><EventKey>K2</EventKey>", "zhangsan"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::MenuClick(c)) if c.key == "K2"))),
        (w("<MsgType>event</MsgType><Event>view</Event><EventKey>https://w</EventKey>", "zhangsan"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::MenuView(v)) if v.url == "https://w"))),
        (w("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>create_user</ChangeType><UserID>lisi</UserID><Name>Li Si</Name><Department>1,2</Department>", "sys"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::ContactChange(c)) if c.change_type == "create_user" && c.id == "lisi" && c.departments == vec!["1".to_string(), "2".to_string()]))),
        (w("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_party</ChangeType><Id>7</Id>", "sys"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::ContactChange(c)) if c.change_type == "delete_party" && c.id == "7"))),
        (w("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>update_tag</ChangeType><TagId>3</TagId><AddUserItems>a,b</AddUserItems>", "sys"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::TagChange(t)) if t.tag_id == "3" && t.add_user_items.len() == 2))),
        (w("<MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>zhangsan</UserID><ExternalUserID>wmA</ExternalUserID><State>expo</State><WelcomeCode>WC</WelcomeCode>", "sys"), Box::new(|e: &pb::Event| e.external_user_id == "wmA" && matches!(&e.kind, Some(Kind::ExternalContactChange(c)) if c.state == "expo" && c.welcome_code == "WC"))),
        // Same second, same member, a different external contact: a distinct event, not a retry.
        (w("<MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType><UserID>zhangsan</UserID><ExternalUserID>wmB</ExternalUserID><State>expo</State>", "sys"), Box::new(|e: &pb::Event| e.external_user_id == "wmB")),
        (w("<MsgType>event</MsgType><Event>change_external_contact</Event><ChangeType>transfer_fail</ChangeType><UserID>zhangsan</UserID><ExternalUserID>wmC</ExternalUserID><FailReason>customer_refused</FailReason>", "sys"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::ExternalContactChange(c)) if c.fail_reason == "customer_refused"))),
        (w("<MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>CHAT</ChatId><ChangeType>update</ChangeType><UpdateDetail>add_member</UpdateDetail><JoinScene>1</JoinScene><MemChangeCnt>2</MemChangeCnt>", "sys"), Box::new(|e: &pb::Event| matches!(&e.kind, Some(Kind::ExternalChatChange(c)) if c.chat_id == "CHAT" && c.mem_change_cnt == 2))),
    ];
    for (xml, _) in &samples {
        let resp = app.post_safe("acme-work", xml).await;
        assert_eq!(resp.status(), 200, "{xml}");
    }
    let events = crm.wait_for(|evs| evs.len() >= samples.len(), WAIT).await;
    assert_eq!(events.len(), samples.len());
    for ((xml, check), event) in samples.iter().zip(&events) {
        assert!(check(event), "wrong event {event:?} for {xml}");
        assert_eq!(event.platform, Platform::Work as i32);
        assert_eq!(event.agent_id, 1000002);
    }
    app.stop().await;
}

#[tokio::test]
async fn compatible_mode_and_the_previous_key_during_a_rotation_are_accepted() {
    let (app, crm, _dir) = app_with_crm().await;
    let xml = text_xml("oCompat", "compat", unique_msg_id());
    assert_eq!(app.post_safe("acme-compat", &xml).await.status(), 200);
    // Compatible mode is read from `Encrypt` only: a plain callback is refused (see
    // `envelope::compatible_accounts_read_only_the_signed_encrypt_and_refuse_plain_bodies`).
    assert_eq!(
        app.post_plain(
            "acme-compat",
            &text_xml("oCompat", "plain", unique_msg_id())
        )
        .await
        .status(),
        400
    );
    // WeChat still encrypts with the old key while the rotation propagates.
    let old = app.encrypt_for(
        "acme-rotated",
        &text_xml("oRotated", "old key", unique_msg_id()),
        Some(MP_KEY),
    );
    assert_eq!(
        app.post_encrypted("acme-rotated", &old, now())
            .await
            .status(),
        200
    );
    let new = app.encrypt_for(
        "acme-rotated",
        &text_xml("oRotated", "new key", unique_msg_id()),
        Some(NEW_KEY),
    );
    assert_eq!(
        app.post_encrypted("acme-rotated", &new, now())
            .await
            .status(),
        200
    );
    let events = crm.wait_for(|evs| evs.len() >= 3, WAIT).await;
    let contents: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Text(t)) => Some(t.content.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(contents, ["compat", "old key", "new key"]);
    app.stop().await;
}

#[tokio::test]
async fn forged_stale_misaddressed_and_malformed_callbacks_are_refused_and_produce_no_event() {
    let (app, crm, _dir) = app_with_crm().await;
    let good = text_xml("oAttacker", "x", unique_msg_id());

    // Forged signature (plain and safe).
    let resp = app
        .post_query(
            "/wechat/mp/acme-plain",
            &[
                ("signature", "f".repeat(40).as_str()),
                ("timestamp", &now().to_string()),
                ("nonce", "n"),
            ],
            good.clone(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    let enc = app.encrypt_for("acme-mp", &good, None);
    let ts = now().to_string();
    let body = format!("<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>");
    assert_eq!(
        app.post_envelope("acme-mp", &body, &"0".repeat(40), &ts)
            .await
            .status(),
        401
    );

    // Replayed: a correctly signed request from an hour ago.
    assert_eq!(
        app.post_plain_at("acme-plain", &good, now() - 3600)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_encrypted("acme-mp", &enc, now() - 3600)
            .await
            .status(),
        401
    );

    // Encrypted for another appid: the signature holds but the message is not for this account.
    let other = wechat_gateway::wechat::crypto::MsgCrypto::new(MP_KEY)
        .unwrap()
        .encrypt(good.as_bytes(), "wx0000000000000000");
    let resp = app.post_encrypted("acme-mp", &other, now()).await;
    assert_eq!(resp.status(), 400);
    // One answer for every decrypt failure, naming nothing (see `envelope::every_failure_*`).
    assert_eq!(
        resp.text().await.unwrap(),
        "the encrypted message does not open for this account"
    );

    // Bad padding / not decryptable with the account's key, bad base64.
    let wrong_key = app.encrypt_for("acme-mp", &good, Some(NEW_KEY));
    assert_eq!(
        app.post_encrypted("acme-mp", &wrong_key, now())
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post_encrypted("acme-mp", "!!!not base64!!!", now())
            .await
            .status(),
        400
    );

    // Oversize body.
    let huge = format!("<xml><Content>{}</Content></xml>", "a".repeat(70_000));
    assert_eq!(app.post_plain("acme-plain", &huge).await.status(), 413);

    // DOCTYPE / entity expansion, inside plain and encrypted bodies.
    let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]>\
                <xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime>\
                <MsgType>text</MsgType><Content>&lol2;</Content><MsgId>1</MsgId></xml>";
    assert_eq!(app.post_plain("acme-plain", bomb).await.status(), 400);
    assert_eq!(app.post_safe("acme-mp", bomb).await.status(), 400);
    // Unparseable body, missing required fields.
    assert_eq!(
        app.post_plain("acme-plain", "<xml><Content>unterminated")
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post_plain("acme-plain", "<xml><MsgType>text</MsgType></xml>")
            .await
            .status(),
        400
    );

    // Plain body to a safe-mode account; unknown account.
    assert_eq!(app.post_plain("acme-mp", &good).await.status(), 400);
    assert_eq!(app.post_plain("no-such-account", &good).await.status(), 404);

    // Nothing above produced an event: the next good callback is the first one the CRM sees.
    assert_eq!(
        app.post_plain("acme-plain", &text_xml("oHonest", "ok", unique_msg_id()))
            .await
            .status(),
        200
    );
    let events = crm.wait_for(|evs| !evs.is_empty(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_after = crm.accepted();
    assert_eq!(events.len(), 1);
    assert_eq!(events_after.len(), 1, "{events_after:?}");
    assert_eq!(events_after[0].open_id, "oHonest");
    app.stop().await;
}

#[tokio::test]
async fn a_callback_retried_three_times_yields_one_event() {
    let (app, crm, _dir) = app_with_crm().await;
    let xml = text_xml("oRetry", "once", unique_msg_id());
    for _ in 0..3 {
        let resp = app.post_safe("acme-mp", &xml).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "success");
    }
    // Events are de-duplicated on the same fields for events without MsgId.
    let sub = event_xml("oRetry", "subscribe", "");
    for _ in 0..3 {
        assert_eq!(app.post_safe("acme-mp", &sub).await.status(), 200);
    }
    let sentinel = text_xml("oSentinel", "last", unique_msg_id());
    assert_eq!(app.post_safe("acme-mp", &sentinel).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oSentinel"), WAIT)
        .await;
    let retried: Vec<_> = events.iter().filter(|e| e.open_id == "oRetry").collect();
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert_ne!(retried[0].id, retried[1].id);
    app.stop().await;
}

#[tokio::test]
async fn callbacks_succeed_while_the_crm_is_down_and_arrive_once_it_is_back() {
    let (app, crm, _dir) = app_with_crm().await;
    crm.set_down(true);
    let mut ids = Vec::new();
    for i in 0..30 {
        let msg_id = unique_msg_id();
        ids.push(msg_id);
        let resp = app
            .post_safe("acme-mp", &text_xml("oPatient", &format!("m{i}"), msg_id))
            .await;
        assert_eq!(resp.status(), 200);
    }
    // The forwarder keeps trying while the CRM is down, and nothing is accepted meanwhile.
    let deadline = std::time::Instant::now() + WAIT;
    while crm.calls() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forwarder never retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crm.accepted().is_empty());
    crm.set_down(false);
    let events = crm
        .wait_for(|evs| evs.len() >= 30, Duration::from_secs(60))
        .await;
    let contents: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Text(t)) => Some(t.content.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(contents, expected, "every event, in order per user");
    app.stop().await;
}

#[tokio::test]
async fn retries_sent_to_two_instances_on_one_redis_yield_one_event_id() {
    let url = crate::support::redis::fresh_db_url().await;
    let crm = FakeCrm::start().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), d1.path()).await;
    let b = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), d2.path()).await;
    let xml = text_xml("oTwoInstances", "hello", unique_msg_id());
    // WeChat retries after 5 s without an answer; the retry may reach any instance.
    for app in [&a, &b, &a] {
        let resp = app.post_safe("acme-mp", &xml).await;
        assert_eq!(resp.status(), 200);
    }
    let sentinel = text_xml("oSentinel", "last", unique_msg_id());
    assert_eq!(b.post_safe("acme-mp", &sentinel).await.status(), 200);
    let events = crm
        .wait_for(|evs| evs.iter().any(|e| e.open_id == "oSentinel"), WAIT)
        .await;
    let ids: std::collections::HashSet<_> = events
        .iter()
        .filter(|e| e.open_id == "oTwoInstances")
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "{events:?}");
    assert_eq!(a.get("/readyz").await.status(), 200);
    a.stop().await;
    b.stop().await;
}
