//! Auto-replies and campaign welcomes: rules managed through the admin API and gRPC,
//! answered as the passive reply of the callback (encrypted, in safe mode, with the key that
//! decrypted the request, and signed), recorded in the forwarded event's `reply_rule_id`;
//! welcomes chosen by the QR scene on subscribe, and WeCom contact-me welcomes sent through the
//! fake `send_welcome_msg` with the event's WelcomeCode.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{self, reply_content, ReplyContent};
use wechat_gateway::store::redis::RedisStore;
use wechat_gateway::store::{DocWrite, Documents};
use wechat_gateway::wechat::crypto::{self, MsgCrypto};
use wechat_gateway::wechat::xml::Document;

use crate::support::app::{
    now, spawn_app, AppOptions, TestApp, MP_APP_ID, MP_KEY, MP_TOKEN, NEW_KEY, WORK_CORP_ID,
    WORK_KEY, WORK_TOKEN,
};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const TOKEN: &str = "test-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);
const SEND_WELCOME: &str = "/cgi-bin/externalcontact/send_welcome_msg";

struct Env {
    app: TestApp,
    wechat: FakeWeChat,
    crm: FakeCrm,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(
        AppOptions::embedded(&dir.path().join("data"))
            .wechat(&wechat.base())
            .crm(&crm.endpoint()),
        dir.path(),
    )
    .await;
    Env {
        app,
        wechat,
        crm,
        _dir: dir,
    }
}

/// An admin call with the admin token: status and JSON body.
async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, app.url(&format!("/admin/v1{path}")))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create_rule(app: &TestApp, account: &str, rule: Value) -> Value {
    let (status, body) = admin(
        app,
        Method::POST,
        &format!("/accounts/{account}/reply-rules"),
        Some(rule),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn unique_msg_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (now() << 20) + NEXT.fetch_add(1, Ordering::Relaxed)
}

fn text_xml(from: &str, content: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>\
         <MsgId>{}</MsgId></xml>",
        now(),
        unique_msg_id()
    )
}

fn event_xml(from: &str, event: &str, key: &str) -> String {
    format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{}</CreateTime>\
         <MsgType>event</MsgType><Event>{event}</Event><EventKey>{key}</EventKey></xml>",
        now()
    )
}

/// The reply inside an encrypted answer, as WeChat reads it: `MsgSignature` must be the SHA-1
/// of token, TimeStamp, Nonce and Encrypt, and Encrypt must decrypt with `key` for `receiver`.
fn open_sealed(answer: &str, token: &str, key: &str, receiver: &str) -> Document {
    let envelope = Document::parse(answer.as_bytes())
        .unwrap_or_else(|e| panic!("not an XML answer ({e}): {answer}"));
    let encrypt = envelope.get("Encrypt").expect("Encrypt");
    let (ts, nonce) = (
        envelope.get("TimeStamp").unwrap(),
        envelope.get("Nonce").unwrap(),
    );
    assert_eq!(
        envelope.get("MsgSignature").unwrap(),
        crypto::msg_signature(token, ts, nonce, encrypt),
        "the reply's msg_signature"
    );
    assert_eq!(nonce, "nonce2", "the request's nonce is echoed");
    let plain = MsgCrypto::new(key)
        .unwrap()
        .decrypt(encrypt, receiver)
        .expect("the reply decrypts with this key");
    Document::parse(&plain).unwrap()
}

fn plain_reply(answer: &str) -> Document {
    Document::parse(answer.as_bytes()).unwrap_or_else(|e| panic!("not XML ({e}): {answer}"))
}

/// The text a plain-mode account answers to `content` from `from`: the reply's Content, or
/// `None` when the gateway answered `success`.
async fn plain_answer(app: &TestApp, account: &str, xml: &str) -> Option<String> {
    let resp = app.post_plain(account, xml).await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    if body == "success" {
        return None;
    }
    let doc = plain_reply(&body);
    Some(doc.get("Content").unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_keyword_reply_arrives_encrypted_inside_the_callback_answer_and_the_event_names_its_rule()
{
    let env = env().await;
    let rule = create_rule(
        &env.app,
        "acme-mp",
        json!({"id": "price", "match": {"kind": "contains", "value": "报价"},
               "reply": {"text": {"content": "请留下电话，<顾问> & 您联系 ]]> 谢谢"}}}),
    )
    .await;
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["actor"], "ops");

    let xml = text_xml("oLead1", "想要一份报价");
    let resp = env.app.post_safe("acme-mp", &xml).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("xml"));
    let answer = resp.text().await.unwrap();
    let reply = open_sealed(&answer, MP_TOKEN, MP_KEY, MP_APP_ID);
    assert_eq!(reply.get("ToUserName"), Some("oLead1"));
    assert_eq!(reply.get("FromUserName"), Some("gh_test"));
    assert_eq!(reply.get("MsgType"), Some("text"));
    assert_eq!(
        reply.get("Content"),
        Some("请留下电话，<顾问> & 您联系 ]]> 谢谢")
    );
    let create_time: u64 = reply.get("CreateTime").unwrap().parse().unwrap();
    assert!(create_time.abs_diff(now()) <= 5);

    // WeChat retries when the answer is late: the retry gets the reply again (and is not
    // forwarded twice).
    let encrypt = env.app.encrypt_for("acme-mp", &xml, None);
    let again = env.app.post_encrypted("acme-mp", &encrypt, now()).await;
    let again = open_sealed(&again.text().await.unwrap(), MP_TOKEN, MP_KEY, MP_APP_ID);
    assert_eq!(again.get("Content"), reply.get("Content"));

    // Text that no rule matches is answered `success`, and its event names no rule.
    let other = env
        .app
        .post_safe("acme-mp", &text_xml("oLead2", "你好"))
        .await;
    assert_eq!(other.text().await.unwrap(), "success");

    let events = env.crm.wait_for(|evs| evs.len() >= 2, WAIT).await;
    let of = |open_id: &str| events.iter().find(|e| e.open_id == open_id).unwrap();
    assert_eq!(of("oLead1").reply_rule_id, "price");
    assert_eq!(of("oLead2").reply_rule_id, "");
    env.app.stop().await;
}

#[tokio::test]
async fn priorities_and_the_on_off_switch_decide_which_rule_answers_in_plain_mode() {
    let env = env().await;
    let app = &env.app;
    create_rule(
        app,
        "acme-plain",
        json!({"id": "general", "match": {"kind": "prefix", "value": "Demo"}, "priority": 1,
               "reply": {"text": {"content": "general"}}}),
    )
    .await;
    create_rule(
        app,
        "acme-plain",
        json!({"id": "vip", "match": {"kind": "exact", "value": "demo please"}, "priority": 10,
               "reply": {"text": {"content": "vip"}}}),
    )
    .await;
    // Same priority as "general", created later: it loses the tie.
    create_rule(
        app,
        "acme-plain",
        json!({"id": "late", "match": {"kind": "contains", "value": "demo"}, "priority": 1,
               "reply": {"text": {"content": "late"}}}),
    )
    .await;

    let (status, list) = admin(app, Method::GET, "/accounts/acme-plain/reply-rules", None).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["vip", "general", "late"], "evaluation order");

    let ask = |content: &'static str| {
        let xml = text_xml("oPlain", content);
        async move { plain_answer(app, "acme-plain", &xml).await }
    };
    assert_eq!(ask("  DEMO please ").await.as_deref(), Some("vip"));
    assert_eq!(ask("demo tomorrow").await.as_deref(), Some("general"));
    assert_eq!(ask("a demo").await.as_deref(), Some("late"));

    // Switching "vip" off (PUT replaces the rule) hands its messages to the next rule.
    let (status, vip) = admin(
        app,
        Method::PUT,
        "/accounts/acme-plain/reply-rules/vip",
        Some(
            json!({"match": {"kind": "exact", "value": "demo please"}, "priority": 10,
                    "enabled": false, "reply": {"text": {"content": "vip"}}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{vip}");
    assert_eq!(vip["enabled"], false);
    assert_eq!(ask("demo please").await.as_deref(), Some("general"));

    // Deleting the others leaves only the disabled one: `success`.
    for id in ["general", "late"] {
        let (status, _) = admin(
            app,
            Method::DELETE,
            &format!("/accounts/acme-plain/reply-rules/{id}"),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    assert_eq!(ask("demo please").await, None);
    env.app.stop().await;
}

#[tokio::test]
async fn regex_and_menu_click_rules_answer_with_an_image_and_a_news_article() {
    let env = env().await;
    let app = &env.app;
    create_rule(
        app,
        "acme-plain",
        json!({"id": "phone", "match": {"kind": "regex", "value": r"^1[3-9]\d{9}$"},
               "reply": {"image": {"media_id": "MEDIA_QR_CARD"}}}),
    )
    .await;
    create_rule(
        app,
        "acme-plain",
        json!({"id": "menu-news", "match": {"kind": "click", "value": "V1001_NEWS"},
               "reply": {"news": {"title": "Spring catalogue", "description": "2026 models",
                         "pic_url": "https://cdn.example.com/c.jpg",
                         "url": "https://example.com/catalogue?a=1&b=2"}}}),
    )
    .await;

    let resp = app
        .post_plain("acme-plain", &text_xml("oPhone", "13800138000"))
        .await;
    let image = plain_reply(&resp.text().await.unwrap());
    assert_eq!(image.get("MsgType"), Some("image"));
    assert_eq!(image.get("MediaId"), Some("MEDIA_QR_CARD"));
    assert_eq!(image.get("ToUserName"), Some("oPhone"));
    // One digit short: no match.
    assert_eq!(
        plain_answer(app, "acme-plain", &text_xml("oPhone", "1380013800")).await,
        None
    );

    let resp = app
        .post_plain("acme-plain", &event_xml("oClick", "CLICK", "V1001_NEWS"))
        .await;
    let news = plain_reply(&resp.text().await.unwrap());
    assert_eq!(news.get("MsgType"), Some("news"));
    assert_eq!(news.get("ArticleCount"), Some("1"));
    assert_eq!(news.get("Title"), Some("Spring catalogue"));
    assert_eq!(news.get("Description"), Some("2026 models"));
    assert_eq!(news.get("PicUrl"), Some("https://cdn.example.com/c.jpg"));
    assert_eq!(
        news.get("Url"),
        Some("https://example.com/catalogue?a=1&b=2")
    );
    // A click key never answers a text with the same words.
    assert_eq!(
        plain_answer(app, "acme-plain", &text_xml("oClick", "V1001_NEWS")).await,
        None
    );

    let events = env.crm.wait_for(|evs| evs.len() >= 4, WAIT).await;
    let rules: Vec<_> = events.iter().map(|e| e.reply_rule_id.as_str()).collect();
    assert!(
        rules.contains(&"phone") && rules.contains(&"menu-news"),
        "{rules:?}"
    );
    env.app.stop().await;
}

#[tokio::test]
async fn invalid_rules_are_refused_with_a_400_naming_the_problem() {
    let env = env().await;
    let app = &env.app;
    let post = |body: Value| {
        admin(
            app,
            Method::POST,
            "/accounts/acme-mp/reply-rules",
            Some(body),
        )
    };
    let cases = [
        (
            json!({"match": {"kind": "regex", "value": "(unclosed"}, "reply": {"text": {"content": "x"}}}),
            "regular expression",
        ),
        (
            json!({"match": {"kind": "exact", "value": "  "}, "reply": {"text": {"content": "x"}}}),
            "match.value must not be empty",
        ),
        (
            // 683 × 3 bytes = 2049 bytes: one over WeChat's passive text limit.
            json!({"match": {"kind": "exact", "value": "k"}, "reply": {"text": {"content": "长".repeat(683)}}}),
            "2048 bytes",
        ),
        (
            json!({"id": "welcome:x", "match": {"kind": "exact", "value": "k"}, "reply": {"text": {"content": "x"}}}),
            "only letters",
        ),
        (
            json!({"match": {"kind": "exact", "value": "k"}, "reply": {"news": {"title": "t", "url": "javascript:alert(1)"}}}),
            "reply.news.url",
        ),
        (
            json!({"match": {"kind": "fuzzy", "value": "k"}, "reply": {"text": {"content": "x"}}}),
            "unknown variant",
        ),
        (
            json!({"match": {"kind": "exact", "value": "k"}, "reply": {"text": {"content": "x"}}, "colour": 1}),
            "unknown field",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let (_, list) = admin(app, Method::GET, "/accounts/acme-mp/reply-rules", None).await;
    assert_eq!(list["rules"], json!([]), "nothing was stored");

    let ok = json!({"id": "dup", "match": {"kind": "exact", "value": "k"}, "reply": {"text": {"content": "x"}}});
    assert_eq!(post(ok.clone()).await.0, 201);
    let (status, conflict) = post(ok).await;
    assert_eq!(status, 409, "{conflict}");
    let generated = create_rule(
        app,
        "acme-mp",
        json!({"match": {"kind": "exact", "value": "g"}, "reply": {"text": {"content": "x"}}}),
    )
    .await;
    assert!(!generated["id"].as_str().unwrap().is_empty());
    let (status, _) = admin(
        app,
        Method::DELETE,
        "/accounts/acme-mp/reply-rules/nope",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(app, Method::GET, "/accounts/nobody/reply-rules", None).await;
    assert_eq!(status, 404);
    let (status, mismatch) = admin(
        app,
        Method::PUT,
        "/accounts/acme-mp/reply-rules/a",
        Some(json!({"id": "b", "match": {"kind": "exact", "value": "k"}, "reply": {"text": {"content": "x"}}})),
    )
    .await;
    assert_eq!(status, 400, "{mismatch}");
    let (status, _) = env
        .app
        .http
        .get(env.app.url("/admin/v1/accounts/acme-mp/reply-rules"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 401, "the routes demand the admin token");
    env.app.stop().await;
}

#[tokio::test]
async fn a_request_encrypted_with_the_previous_key_is_answered_with_the_previous_key() {
    let env = env().await;
    let app = &env.app;
    create_rule(
        app,
        "acme-rotated",
        json!({"id": "hi", "match": {"kind": "exact", "value": "hi"}, "reply": {"text": {"content": "hello"}}}),
    )
    .await;
    // WeChat still encrypts with the previous key during a rotation.
    let old = app.encrypt_for("acme-rotated", &text_xml("oRot", "hi"), Some(MP_KEY));
    let answer = app.post_encrypted("acme-rotated", &old, now()).await;
    let answer = answer.text().await.unwrap();
    let reply = open_sealed(&answer, MP_TOKEN, MP_KEY, MP_APP_ID);
    assert_eq!(reply.get("Content"), Some("hello"));
    let encrypt = Document::parse(answer.as_bytes()).unwrap();
    assert!(
        MsgCrypto::new(NEW_KEY)
            .unwrap()
            .decrypt(encrypt.get("Encrypt").unwrap(), MP_APP_ID)
            .is_err(),
        "not encrypted with the new key, which WeChat does not use yet"
    );
    // Once WeChat switched, the reply follows.
    let new = app.encrypt_for("acme-rotated", &text_xml("oRot", "hi"), Some(NEW_KEY));
    let answer = app.post_encrypted("acme-rotated", &new, now()).await;
    let reply = open_sealed(&answer.text().await.unwrap(), MP_TOKEN, NEW_KEY, MP_APP_ID);
    assert_eq!(reply.get("Content"), Some("hello"));
    env.app.stop().await;
}

#[tokio::test]
async fn compatible_mode_answers_an_encrypted_request_encrypted_and_refuses_a_plain_one() {
    let env = env().await;
    let app = &env.app;
    create_rule(
        app,
        "acme-compat",
        json!({"id": "hi", "match": {"kind": "exact", "value": "hi"}, "reply": {"text": {"content": "hello"}}}),
    )
    .await;
    let sealed = app
        .post_safe("acme-compat", &text_xml("oCompat", "hi"))
        .await;
    let reply = open_sealed(&sealed.text().await.unwrap(), MP_TOKEN, MP_KEY, MP_APP_ID);
    assert_eq!(reply.get("Content"), Some("hello"));
    // Compatible mode is read from `Encrypt` only: a plain request is refused, not answered.
    let plain = app
        .post_plain("acme-compat", &text_xml("oCompat", "hi"))
        .await;
    assert_eq!(plain.status(), 400);
    env.app.stop().await;
}

#[tokio::test]
async fn a_wecom_member_message_is_answered_encrypted_from_the_corp() {
    let env = env().await;
    let app = &env.app;
    create_rule(
        app,
        "acme-work",
        json!({"id": "leave", "match": {"kind": "prefix", "value": "请假"}, "reply": {"text": {"content": "请在审批里提交"}}}),
    )
    .await;
    let xml = format!(
        "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[请假两天]]></Content>\
         <MsgId>{}</MsgId><AgentID>1000002</AgentID></xml>",
        now(),
        unique_msg_id()
    );
    let answer = app.post_safe("acme-work", &xml).await;
    assert_eq!(answer.status(), 200);
    let reply = open_sealed(
        &answer.text().await.unwrap(),
        WORK_TOKEN,
        WORK_KEY,
        WORK_CORP_ID,
    );
    assert_eq!(reply.get("ToUserName"), Some("zhangsan"));
    assert_eq!(reply.get("FromUserName"), Some(WORK_CORP_ID));
    assert_eq!(reply.get("Content"), Some("请在审批里提交"));
    env.app.stop().await;
}

#[tokio::test]
async fn a_qr_code_with_a_welcome_greets_its_followers_and_everyone_else_gets_the_default() {
    let env = env().await;
    let app = &env.app;
    // No default yet: a plain follow is answered `success`.
    assert_eq!(
        plain_answer(app, "acme-plain", &event_xml("oEarly", "subscribe", "")).await,
        None
    );
    let (status, welcome) = admin(
        app,
        Method::PUT,
        "/accounts/acme-plain/welcome",
        Some(json!({"text": {"content": "欢迎关注"}})),
    )
    .await;
    assert_eq!(status, 200, "{welcome}");
    let (status, bad) = admin(
        app,
        Method::PUT,
        "/accounts/acme-plain/welcome",
        Some(json!({"text": {"content": ""}})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("welcome.text.content"));
    let (status, got) = admin(app, Method::GET, "/accounts/acme-plain/welcome", None).await;
    assert_eq!(
        (status, &got["welcome"]),
        (200, &json!({"text": {"content": "欢迎关注"}}))
    );

    let qr = |body: Value| {
        admin(
            app,
            Method::POST,
            "/accounts/acme-plain/qrcodes",
            Some(body),
        )
    };
    let (status, code) = qr(json!({"scene": "spring-expo", "label": "Spring Expo",
        "welcome": {"text": {"content": "Welcome to the Spring Expo! Booth 7 has a gift for you."}}}))
    .await;
    assert_eq!(status, 200, "{code}");
    let (status, code) = qr(json!({"scene": 42, "permanent": true, "label": "Flyer"})).await;
    assert_eq!(status, 200, "{code}");
    let (status, refused) =
        qr(json!({"scene": "bad", "welcome": {"image": {"media_id": ""}}})).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("welcome.image.media_id"));

    let expo = plain_answer(
        app,
        "acme-plain",
        &event_xml("oExpo", "subscribe", "qrscene_spring-expo"),
    )
    .await;
    assert_eq!(
        expo.as_deref(),
        Some("Welcome to the Spring Expo! Booth 7 has a gift for you.")
    );
    let flyer = plain_answer(
        app,
        "acme-plain",
        &event_xml("oFlyer", "subscribe", "qrscene_42"),
    )
    .await;
    assert_eq!(
        flyer.as_deref(),
        Some("欢迎关注"),
        "a scene without a welcome"
    );
    let search = plain_answer(app, "acme-plain", &event_xml("oSearch", "subscribe", "")).await;
    assert_eq!(search.as_deref(), Some("欢迎关注"));
    // An existing follower scanning the expo code is not welcomed again.
    assert_eq!(
        plain_answer(app, "acme-plain", &event_xml("oFan", "SCAN", "spring-expo")).await,
        None
    );

    let events = env.crm.wait_for(|evs| evs.len() >= 5, WAIT).await;
    let of = |open_id: &str| events.iter().find(|e| e.open_id == open_id).unwrap();
    assert_eq!(of("oExpo").reply_rule_id, "welcome:spring-expo");
    assert_eq!(of("oExpo").label, "Spring Expo");
    assert_eq!(of("oFlyer").reply_rule_id, "welcome:default");
    assert_eq!(of("oSearch").reply_rule_id, "welcome:default");
    assert_eq!(of("oFan").reply_rule_id, "");
    assert_eq!(of("oEarly").reply_rule_id, "");

    let (status, _) = admin(app, Method::DELETE, "/accounts/acme-plain/welcome", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        plain_answer(app, "acme-plain", &event_xml("oLater", "subscribe", "")).await,
        None
    );
    env.app.stop().await;
}

fn contact_xml(external: &str, state: &str, welcome_code: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{WORK_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
         <State><![CDATA[{state}]]></State><WelcomeCode><![CDATA[{welcome_code}]]></WelcomeCode></xml>",
        now()
    )
}

async fn wait_for_calls(wechat: &FakeWeChat, path: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let calls = wechat.requests_to(path);
        if calls.len() >= n {
            return calls.into_iter().map(|r| r.body).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{path} called {} times, expected {n}",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_wecom_contact_me_customer_gets_the_codes_welcome_through_send_welcome_msg() {
    let env = env().await;
    let app = &env.app;
    let (status, code) = admin(
        app,
        Method::POST,
        "/accounts/acme-work/qrcodes",
        Some(
            json!({"scene": "expo-booth-7", "label": "Booth 7", "users": ["zhangsan"],
                    "welcome": {"text": {"content": "你好，我是展位7的张三"}}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{code}");
    let (status, _) = admin(
        app,
        Method::PUT,
        "/accounts/acme-work/welcome",
        Some(json!({"news": {"title": "About us", "url": "https://example.com/about"}})),
    )
    .await;
    assert_eq!(status, 200);

    let xml = contact_xml("wmBooth", "expo-booth-7", "WELCOMECODE-1");
    let answer = app.post_safe("acme-work", &xml).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.text().await.unwrap(),
        "success",
        "no passive reply to a contact event"
    );
    let sent = wait_for_calls(&env.wechat, SEND_WELCOME, 1).await;
    assert_eq!(
        sent[0],
        json!({"welcome_code": "WELCOMECODE-1", "text": {"content": "你好，我是展位7的张三"}})
    );
    let call = &env.wechat.requests_to(SEND_WELCOME)[0];
    assert_eq!(
        call.token(),
        env.wechat.current_token(WORK_CORP_ID).unwrap()
    );

    // A customer through another code gets the default welcome, as a link attachment.
    let answer = app
        .post_safe(
            "acme-work",
            &contact_xml("wmOther", "other", "WELCOMECODE-2"),
        )
        .await;
    assert_eq!(answer.status(), 200);
    let sent = wait_for_calls(&env.wechat, SEND_WELCOME, 2).await;
    assert_eq!(sent[1]["welcome_code"], "WELCOMECODE-2");
    assert_eq!(sent[1]["attachments"][0]["msgtype"], "link");
    assert_eq!(
        sent[1]["attachments"][0]["link"]["url"],
        "https://example.com/about"
    );

    // WeCom's retry of the first event sends nothing more (a code works once).
    let encrypt = app.encrypt_for("acme-work", &xml, None);
    assert_eq!(
        app.post_encrypted("acme-work", &encrypt, now())
            .await
            .status(),
        200
    );

    // WeCom refusing (41051: someone greeted the customer first) changes nothing for the
    // callback, and is counted.
    env.wechat.inject(SEND_WELCOME, Injected::Errcode(41051), 1);
    let answer = app
        .post_safe(
            "acme-work",
            &contact_xml("wmLate", "expo-booth-7", "WELCOMECODE-3"),
        )
        .await;
    assert_eq!(answer.status(), 200);
    wait_for_calls(&env.wechat, SEND_WELCOME, 3).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        if metrics.lines().any(|l| {
            l.starts_with("wgw_welcome_messages_total")
                && l.contains("account=\"acme-work\"")
                && l.contains("outcome=\"failed\"")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed welcome counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.wechat.count(SEND_WELCOME),
        3,
        "the retry sent no second welcome"
    );

    let events = env.crm.wait_for(|evs| evs.len() >= 3, WAIT).await;
    let of = |external: &str| {
        events
            .iter()
            .find(|e| e.external_user_id == external)
            .unwrap()
    };
    assert_eq!(of("wmBooth").reply_rule_id, "welcome:expo-booth-7");
    assert_eq!(of("wmBooth").label, "Booth 7");
    assert_eq!(of("wmOther").reply_rule_id, "welcome:default");
    env.app.stop().await;
}

#[tokio::test]
async fn a_broken_stored_rule_is_skipped_and_instances_on_one_redis_converge_on_the_rules() {
    let url = fresh_db_url().await;
    let crm = FakeCrm::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), dir_a.path()).await;
    let b = spawn_app(AppOptions::redis(&url).crm(&crm.endpoint()), dir_b.path()).await;

    // What an older or newer version might have left in the store: a regular expression this
    // one cannot compile (at the highest priority) and a record that does not decode.
    let store = RedisStore::connect(&url, vec!["acme-plain".into()], Duration::from_secs(3600))
        .await
        .unwrap();
    let broken = json!({"id": "broken", "match": {"kind": "regex", "value": "(unclosed"},
        "reply": {"text": {"content": "never"}}, "priority": 100, "enabled": true,
        "created_at_ms": 1, "updated_at_ms": 1, "actor": "old"});
    for (id, bytes) in [
        ("broken", serde_json::to_vec(&broken).unwrap()),
        ("garbage", b"\xff not json".to_vec()),
    ] {
        store
            .put_doc(
                "acme-plain",
                "reply-rule",
                id,
                &bytes,
                DocWrite::Always,
                None,
            )
            .await
            .unwrap();
    }
    // Created on instance A: A reloads at once (reading the broken records too).
    create_rule(
        &a,
        "acme-plain",
        json!({"id": "hours", "match": {"kind": "contains", "value": "hours"},
               "reply": {"text": {"content": "9:00-18:00"}}}),
    )
    .await;
    assert_eq!(
        plain_answer(&a, "acme-plain", &text_xml("oA", "opening hours?"))
            .await
            .as_deref(),
        Some("9:00-18:00")
    );
    // Instance B learns the rule from the store within its refresh period.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = plain_answer(&b, "acme-plain", &text_xml("oB", "hours")).await;
        if answer.as_deref() == Some("9:00-18:00") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "instance B never answered with the rule"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The admin list shows what can be used (the broken regex as stored, the garbage not).
    let (_, list) = admin(&a, Method::GET, "/accounts/acme-plain/reply-rules", None).await;
    let ids: Vec<_> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, [json!("broken"), json!("hours")]);
    // Repairing the broken rule through the admin API makes it answer.
    let (status, _) = admin(
        &a,
        Method::PUT,
        "/accounts/acme-plain/reply-rules/broken",
        Some(
            json!({"match": {"kind": "regex", "value": "(?i)hours"}, "priority": 100,
                    "reply": {"text": {"content": "repaired"}}}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        plain_answer(&a, "acme-plain", &text_xml("oA", "Hours?"))
            .await
            .as_deref(),
        Some("repaired")
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn grpc_manages_reply_rules_with_the_admin_apis_checks() {
    let env = env().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", env.app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let text = |content: &str| ReplyContent {
        content: Some(reply_content::Content::Text(pb::TextContent {
            content: content.into(),
        })),
    };
    let put = |rule: pb::ReplyRule| pb::PutReplyRuleRequest {
        account_id: "acme-plain".into(),
        rule: Some(rule),
    };
    let created = gateway
        .put_reply_rule(put(pb::ReplyRule {
            id: "grpc-rule".into(),
            match_kind: "exact".into(),
            match_value: "grpc".into(),
            reply: Some(text("from gRPC")),
            priority: 3,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    let rule = created.rule.unwrap();
    assert_eq!(rule.enabled, Some(true), "unset means enabled");
    assert_eq!(rule.actor, "grpc");
    assert_eq!(
        plain_answer(&env.app, "acme-plain", &text_xml("oG", "grpc"))
            .await
            .as_deref(),
        Some("from gRPC")
    );

    let refused = gateway
        .put_reply_rule(put(pb::ReplyRule {
            id: "bad".into(),
            match_kind: "regex".into(),
            match_value: "[".into(),
            reply: Some(text("x")),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("regular expression"),
        "{}",
        refused.message()
    );

    let listed = gateway
        .list_reply_rules(pb::ListReplyRulesRequest {
            account_id: "acme-plain".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rules.len(), 1);
    assert_eq!(listed.rules[0].match_kind, "exact");

    gateway
        .delete_reply_rule(pb::DeleteReplyRuleRequest {
            account_id: "acme-plain".into(),
            rule_id: "grpc-rule".into(),
        })
        .await
        .unwrap();
    let gone = gateway
        .delete_reply_rule(pb::DeleteReplyRuleRequest {
            account_id: "acme-plain".into(),
            rule_id: "grpc-rule".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert_eq!(
        plain_answer(&env.app, "acme-plain", &text_xml("oG", "grpc")).await,
        None
    );
    env.app.stop().await;
}
