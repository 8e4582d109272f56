//! Template message and subscription notice jobs against the fake WeChat API
//! (`support::fake_wechat::templates`), which de-duplicates `template/send` on openid and
//! client_msg_id as WeChat documents and records every message that reached a follower: the
//! assertions count those deliveries. The SIGKILL tests run the real binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::app::{
    config_toml, fresh_nonce, now, spawn_app, AppOptions, TestApp, ADMIN_TOKEN, MP_TOKEN,
};
use crate::support::fake_wechat::templates::{
    TemplateDelivery, BIZSEND, SEEDED_NOTICE, SEEDED_TEMPLATE, TEMPLATE_SEND,
};
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const WAIT: Duration = Duration::from_secs(60);
const FAST: &str = "[template_sends]\nsends_per_second = 500\nbackoff_min_ms = 100\n\
                    backoff_max_seconds = 1\nlease_seconds = 2\n";

async fn app(wechat: &FakeWeChat, extra: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = extra.to_owned();
    (spawn_app(opts, dir.path()).await, dir)
}

fn open_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:08}")).collect()
}

fn template_body(ids: &[String]) -> Value {
    json!({
        "template_id": SEEDED_TEMPLATE,
        "data": {
            "first": {"value": "您的订单已发货"},
            "character_string1": {"value": "SO-2026-0001"},
            "thing2": {"value": "羊毛围巾"},
            "remark": "感谢惠顾",
        },
        "url": "https://shop.example.cn/orders/1",
        "audience": {"open_ids": ids},
    })
}

fn notice_body(ids: &[String]) -> Value {
    json!({
        "template_id": SEEDED_NOTICE,
        "data": {"thing1": {"value": "牙科复诊"}, "time2": {"value": "15:30"}},
        "page": "https://shop.example.cn/appointments",
        "audience": {"open_ids": ids},
    })
}

async fn job(app: &TestApp, account: &str, job_id: &str, query: &str) -> Value {
    let (status, body) = app
        .admin(
            "GET",
            &format!("/accounts/{account}/template-sends/{job_id}{query}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_job(app: &TestApp, job_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let j = job(app, "acme-plain", job_id, "?limit=1000").await;
        if done(&j) {
            return j;
        }
        assert!(start.elapsed() < WAIT, "job never got there: {j:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(j: &Value) -> bool {
    j["status"] == "finished"
}

/// Deliveries per (openid, client_msg_id) of template/send.
fn per_recipient(deliveries: &[TemplateDelivery]) -> HashMap<(String, String), usize> {
    let mut per = HashMap::new();
    for d in deliveries.iter().filter(|d| d.path == TEMPLATE_SEND) {
        *per.entry((d.touser.clone(), d.client_msg_id.clone()))
            .or_insert(0) += 1;
    }
    per
}

fn finish_xml(open_id: &str, msg_id: i64, status: &str) -> String {
    // The TEMPLATESENDJOBFINISH push as the template message page documents it
    // (developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html,
    // "事件推送"): ToUserName, FromUserName (the recipient), CreateTime, MsgType event, Event,
    // MsgID, Status.
    format!(
        "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\
         <FromUserName><![CDATA[{open_id}]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>\
         <MsgID>{msg_id}</MsgID><Status><![CDATA[{status}]]></Status></xml>",
        now()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_with_their_fields_and_limits() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    let (status, body) = app
        .admin("GET", "/accounts/acme-plain/templates", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let t = &body["templates"][0];
    assert_eq!(t["template_id"], SEEDED_TEMPLATE);
    let names: Vec<&str> = t["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "character_string1", "thing2", "remark"]);
    assert_eq!(t["fields"][2]["max_chars"], 20);
    let (status, body) = app
        .admin("GET", "/accounts/acme-plain/templates?kind=subscribe", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["templates"][0]["template_id"], SEEDED_NOTICE);
    assert_eq!(body["templates"][0]["kind"], "subscribe");
    let (status, _) = app
        .admin("GET", "/accounts/acme-work/templates", None)
        .await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    let ids = open_ids("oFollower", 3);
    let mut unknown = template_body(&ids);
    unknown["template_id"] = json!("no-such-template");
    let mut missing = template_body(&ids);
    missing["data"].as_object_mut().unwrap().remove("thing2");
    let mut long = template_body(&ids);
    long["data"]["thing2"] = json!({"value": "围".repeat(21)});
    let mut bad_url = template_body(&ids);
    bad_url["url"] = json!("javascript:alert(1)");
    let empty = template_body(&[]);
    let mut bad_id = template_body(&ids);
    bad_id["audience"]["open_ids"] = json!(["not an openid"]);
    for (what, body) in [
        ("unknown template", &unknown),
        ("missing field", &missing),
        ("thing over 20", &long),
        ("bad url", &bad_url),
        ("empty audience", &empty),
        ("bad openid", &bad_id),
    ] {
        let (status, answer) = app
            .admin("POST", "/accounts/acme-plain/template-sends", Some(body))
            .await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(
            answer["error"]["code"], "invalid_request",
            "{what}: {answer}"
        );
    }
    let mut long_notice = notice_body(&ids);
    long_notice["data"]["thing1"] = json!("一二三四五六七八九十一二三四五六七八九十一");
    let (status, answer) = app
        .admin(
            "POST",
            "/accounts/acme-plain/subscribe-sends",
            Some(&long_notice),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 20"));
    let (status, _) = app
        .admin(
            "POST",
            "/accounts/acme-work/template-sends",
            Some(&template_body(&ids)),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(wechat.count(TEMPLATE_SEND) + wechat.count(BIZSEND), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sends_each_recipient_once_records_43004_and_matches_templatesendjobfinish() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    let mut ids = open_ids("oFollower", 250);
    ids.push("oUnsub0001".into());
    ids.push("oFollower00000003".into()); // a repeat
    let mut body = template_body(&ids);
    body["client_msg_id"] = json!("crm-campaign-7");
    let (status, created) = app
        .admin("POST", "/accounts/acme-plain/template-sends", Some(&body))
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["total"], 251);
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, &job_id, finished).await;
    assert_eq!(j["counts"]["sent"], 250, "{j:#}");
    assert_eq!(j["counts"]["failed"], 1);
    assert_eq!(j["counts"]["pending"], 0);
    let unsub = j["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["open_id"] == "oUnsub0001")
        .unwrap();
    assert_eq!(unsub["status"], "failed");
    assert_eq!(unsub["errcode"], 43004);
    let deliveries = wechat.template_deliveries();
    assert_eq!(deliveries.len(), 250);
    assert!(per_recipient(&deliveries).values().all(|n| *n == 1));
    // Each body carries the values and the URL.
    assert_eq!(deliveries[0].body["data"]["thing2"]["value"], "羊毛围巾");
    assert_eq!(
        deliveries[0].body["url"],
        "https://shop.example.cn/orders/1"
    );
    // The same client_msg_id again: the same job, nothing new sent.
    let (status, again) = app
        .admin("POST", "/accounts/acme-plain/template-sends", Some(&body))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["job_id"], job_id.as_str());
    assert_eq!(again["created"], false);

    // WeChat reports back: matched by msgid to the recipient.
    let d0 = &deliveries[0];
    let d1 = &deliveries[1];
    let d2 = &deliveries[2];
    for (d, status) in [
        (d0, "success"),
        (d1, "failed:user block"),
        (d2, "failed: system failed"),
    ] {
        let resp = app
            .post_plain("acme-plain", &finish_xml(&d.touser, d.msgid, status))
            .await;
        assert_eq!(resp.status(), 200);
    }
    let j = wait_job(&app, &job_id, |j| {
        j["counts"]["delivered"] == 1
            && j["counts"]["user_block"] == 1
            && j["counts"]["system_failed"] == 1
    })
    .await;
    let by_open_id = |id: &str| {
        j["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["open_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_open_id(&d0.touser)["status"], "delivered");
    assert_eq!(by_open_id(&d0.touser)["msgid"], d0.msgid);
    assert_eq!(by_open_id(&d1.touser)["status"], "user_block");
    assert_eq!(by_open_id(&d2.touser)["status"], "system_failed");
    // Paging the recipients.
    let page = job(&app, "acme-plain", &job_id, "?offset=200&limit=100").await;
    assert_eq!(page["recipients"].as_array().unwrap().len(), 51);
    assert!(page.get("next_offset").is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_answer_pauses_the_job_and_it_resumes_with_nobody_skipped() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(
        &wechat,
        "[template_sends]\nsends_per_second = 500\nbackoff_min_ms = 1500\n\
         backoff_max_seconds = 2\nlease_seconds = 2\n",
    )
    .await;
    wechat.inject(TEMPLATE_SEND, Injected::Errcode(45009), 1);
    let ids = open_ids("oFollower", 120);
    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/template-sends",
            Some(&template_body(&ids)),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let paused = wait_job(&app, &job_id, |j| j["status"] == "paused").await;
    assert!(paused["paused"]["reason"]
        .as_str()
        .unwrap()
        .contains("45009"));
    assert_eq!(wechat.template_deliveries().len(), 0);
    let j = wait_job(&app, &job_id, finished).await;
    assert_eq!(j["counts"]["sent"], 120, "{j:#}");
    assert!(j.get("paused").is_none());
    assert_eq!(wechat.template_deliveries().len(), 120);
    assert_eq!(
        wechat.count(TEMPLATE_SEND),
        121,
        "one refused call, then one per recipient"
    );
    app.stop().await;
}

/// A lower bound only: a loaded machine makes the job slower, never faster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_paced_at_sends_per_second_one_call_at_a_time() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(
        &wechat,
        "[template_sends]\nsends_per_second = 10\nlease_seconds = 2\n",
    )
    .await;
    let started = Instant::now();
    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/template-sends",
            Some(&template_body(&open_ids("oFollower", 16))),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, &job_id, finished).await;
    // 16 calls at 10 a second: at least 15 intervals of 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(wechat.max_in_flight(TEMPLATE_SEND), 1);
    assert_eq!(wechat.template_deliveries().len(), 16);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_sent_again_with_the_same_client_msg_id_and_delivered_once() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    wechat.lose_template_answers(2);
    let ids = open_ids("oFollower", 30);
    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/template-sends",
            Some(&template_body(&ids)),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, &job_id, finished).await;
    assert_eq!(j["counts"]["sent"], 30, "{j:#}");
    let deliveries = wechat.template_deliveries();
    assert_eq!(deliveries.len(), 30, "nobody twice");
    assert!(
        wechat.template_repeats() >= 2,
        "the lost ones were asked again"
    );
    assert!(wechat.count(TEMPLATE_SEND) >= 32);
    // The recipient whose answer was lost got the msgid of the one delivery.
    let first = &deliveries[0];
    let r = &j["recipients"][0];
    assert_eq!(r["open_id"], first.touser.as_str());
    assert_eq!(r["msgid"], first.msgid);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_sends_go_through_bizsend_with_refusals_per_recipient() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    let mut ids = open_ids("oFollower", 5);
    ids.push("oRefuse0001".into());
    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/subscribe-sends",
            Some(&notice_body(&ids)),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["kind"], "subscribe");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, &job_id, finished).await;
    assert_eq!(j["counts"]["sent"], 5, "{j:#}");
    assert_eq!(j["counts"]["failed"], 1);
    assert_eq!(j["recipients"][5]["errcode"], 43101);
    let deliveries = wechat.template_deliveries();
    assert_eq!(deliveries.len(), 5);
    assert!(deliveries.iter().all(|d| d.path == BIZSEND));
    assert_eq!(
        deliveries[0].body["page"],
        "https://shop.example.cn/appointments"
    );
    assert_eq!(deliveries[0].body["data"]["time2"]["value"], "15:30");
    app.stop().await;
}

/// The popup and sent callbacks as the Service Account page documents them
/// (developers.weixin.qq.com/doc/service/guide/product/subscription_messages/push.html).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_callbacks_reach_the_crm_typed_and_a_sent_event_is_matched_to_its_job() {
    use wechat_gateway::pb::event::Kind;
    let wechat = FakeWeChat::start().await;
    let crm = crate::support::crm::FakeCrm::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data"))
        .wechat(&wechat.base())
        .crm(&crm.endpoint());
    opts.extra_toml = FAST.into();
    let app = spawn_app(opts, dir.path()).await;
    let ids = open_ids("oFollower", 2);
    let (status, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/subscribe-sends",
            Some(&notice_body(&ids)),
        )
        .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, &job_id, finished).await;
    let sent = wechat.template_deliveries()[0].clone();
    let popup = format!(
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\
         <FromUserName><![CDATA[{}]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event>\
         <SubscribeMsgPopupEvent><List><TemplateId><![CDATA[{SEEDED_NOTICE}]]></TemplateId>\
         <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene>\
         </List><List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId>\
         <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>2</PopupScene>\
         </List></SubscribeMsgPopupEvent></xml>",
        sent.touser,
        now() - 5
    );
    let sent_xml = format!(
        "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\
         <FromUserName><![CDATA[{}]]></FromUserName><CreateTime>{}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_sent_event]]></Event>\
         <SubscribeMsgSentEvent><List><TemplateId><![CDATA[{SEEDED_NOTICE}]]></TemplateId>\
         <MsgID>{}</MsgID><ErrorCode>0</ErrorCode><ErrorStatus><![CDATA[success]]></ErrorStatus>\
         </List></SubscribeMsgSentEvent></xml>",
        sent.touser,
        now(),
        sent.msgid
    );
    for xml in [&popup, &sent_xml] {
        assert_eq!(app.post_plain("acme-plain", xml).await.status(), 200);
    }
    let events = crm
        .wait_for(
            |e| {
                e.iter()
                    .any(|e| matches!(e.kind, Some(Kind::SubscribeNoticePopup(_))))
                    && e.iter()
                        .any(|e| matches!(e.kind, Some(Kind::SubscribeNoticeSent(_))))
            },
            WAIT,
        )
        .await;
    let popup = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::SubscribeNoticePopup(p)) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(popup.choices.len(), 2);
    assert_eq!(popup.choices[0].template_id, SEEDED_NOTICE);
    assert_eq!(popup.choices[0].status, "accept");
    assert_eq!(popup.choices[1].status, "reject");
    assert_eq!(popup.choices[1].popup_scene, 2);
    let sent_event = events
        .iter()
        .find(|e| matches!(e.kind, Some(Kind::SubscribeNoticeSent(_))))
        .unwrap();
    assert_eq!(sent_event.template_send_job_id, job_id);
    let j = wait_job(&app, &job_id, |j| j["counts"]["delivered"] == 1).await;
    let r = j["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["open_id"] == sent.touser.as_str())
        .unwrap()
        .clone();
    assert_eq!(r["status"], "delivered");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_stops_it_and_cancelling_again_answers_the_same() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(
        &wechat,
        "[template_sends]\nsends_per_second = 20\nlease_seconds = 2\n",
    )
    .await;
    let ids = open_ids("oFollower", 400);
    let (_, created) = app
        .admin(
            "POST",
            "/accounts/acme-plain/template-sends",
            Some(&template_body(&ids)),
        )
        .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let path = format!("/accounts/acme-plain/template-sends/{job_id}/cancel");
    let (status, c) = app.admin("POST", &path, None).await;
    assert_eq!(status, 200, "{c}");
    let j = wait_job(&app, &job_id, |j| j["status"] == "cancelled").await;
    let sent = j["counts"]["sent"].as_u64().unwrap() as usize;
    assert!(sent < 400, "{j:#}");
    assert_eq!(
        j["counts"]["cancelled"].as_u64().unwrap() as usize,
        400 - sent
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wechat.template_deliveries().len(), sent);
    let (status, _) = app.admin("POST", &path, None).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_send_get_and_cancel_template_send_follow_the_admin_rules() {
    use wechat_gateway::pb::{self, gateway_client::GatewayClient};
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, FAST).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let request = |ids: Vec<String>, thing: &str| pb::SendTemplateRequest {
        account_id: "acme-plain".into(),
        subscribe: false,
        template_id: SEEDED_TEMPLATE.into(),
        data: [
            ("first", "您的订单已发货"),
            ("character_string1", "SO-1"),
            ("thing2", thing),
            ("remark", "谢谢"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        url: "https://shop.example.cn/orders/1".into(),
        open_ids: ids,
        client_msg_id: "grpc-1".into(),
        ..Default::default()
    };
    let too_long = gateway
        .send_template(request(open_ids("oFollower", 2), &"围".repeat(21)))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    let job = gateway
        .send_template(request(open_ids("oFollower", 3), "围巾"))
        .await
        .unwrap()
        .into_inner();
    assert!(job.created);
    assert_eq!(job.total, 3);
    wait_job(&app, &job.job_id, finished).await;
    let got = gateway
        .get_template_send(pb::GetTemplateSendRequest {
            account_id: "acme-plain".into(),
            job_id: job.job_id.clone(),
            offset: 1,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, "finished");
    assert_eq!(got.counts.unwrap().sent, 3);
    assert_eq!(got.recipients.len(), 2);
    assert_eq!(got.recipients[0].open_id, "oFollower00000001");
    assert_ne!(got.recipients[0].msgid, 0);
    let again = gateway
        .send_template(request(open_ids("oFollower", 3), "围巾"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.job_id, job.job_id);
    let cancel = gateway
        .cancel_template_send(pb::GetTemplateSendRequest {
            account_id: "acme-plain".into(),
            job_id: job.job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), tonic::Code::FailedPrecondition);
    assert_eq!(wechat.template_deliveries().len(), 3);
    app.stop().await;
}

// ---- faults: SIGKILL in the middle of a job -------------------------------------------------

async fn post_json(client: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let resp = client
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_job(client: &reqwest::Client, addr: SocketAddr, job_id: &str, q: &str) -> Value {
    client
        .get(format!(
            "http://{addr}/admin/v1/accounts/acme-plain/template-sends/{job_id}{q}"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_process_job(
    client: &reqwest::Client,
    addr: SocketAddr,
    job_id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let j = get_job(client, addr, job_id, "?limit=0").await;
        if done(&j) {
            return j;
        }
        assert!(start.elapsed() < within, "never got there: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until_deliveries(wechat: &FakeWeChat, n: usize, within: Duration) {
    let start = Instant::now();
    while wechat.template_deliveries().len() < n {
        assert!(start.elapsed() < within, "never {n} deliveries");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Posts a signed plain-mode callback to a gateway process.
async fn post_callback(client: &reqwest::Client, addr: SocketAddr, xml: String) -> u16 {
    let ts = now().to_string();
    let nonce = fresh_nonce();
    let sig = wechat_gateway::wechat::crypto::signature(MP_TOKEN, &ts, &nonce);
    client
        .post(format!("http://{addr}/wechat/mp/acme-plain"))
        .query(&[
            ("signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
        ])
        .body(xml)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn sigkill_mid_job(opts: AppOptions, wechat: &FakeWeChat, dir: &std::path::Path) {
    use crate::support::process::GatewayProcess;
    wechat_gateway::wechat::api::install_tls_provider();
    let mut opts = opts;
    opts.extra_toml = "[template_sends]\nsends_per_second = 100\nbackoff_min_ms = 100\n\
                       backoff_max_seconds = 1\nlease_seconds = 2\n"
        .into();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let ids = open_ids("oFollower", 600);
    let (status, created) = post_json(
        &client,
        format!(
            "http://{}/admin/v1/accounts/acme-plain/template-sends",
            gateway.addr
        ),
        &template_body(&ids),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    // In the middle of a window of 50: sent, not yet recorded.
    until_deliveries(wechat, 275, WAIT).await;
    gateway.kill();
    let before = wechat.template_deliveries().len();
    assert!(before < 600);

    let restarted = GatewayProcess::start(&config);
    let j = wait_process_job(&client, restarted.addr, &job_id, WAIT * 2, finished).await;
    restarted.kill();
    assert_eq!(j["counts"]["sent"], 600, "{j:#}");
    assert_eq!(j["counts"]["unknown"], 0);
    let per = per_recipient(&wechat.template_deliveries());
    assert_eq!(per.len(), 600, "everyone reached");
    assert!(per.values().all(|n| *n == 1), "someone reached twice");
    assert!(
        wechat.template_repeats() >= 1,
        "the window open at the kill was sent again with the same client_msg_ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_job_killed_mid_window_resumes_after_restart_with_nobody_reached_twice() {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    sigkill_mid_job(opts, &wechat, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_job_killed_mid_window_resumes_on_another_instance_with_nobody_reached_twice_redis(
) {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_db_url().await;
    let opts = AppOptions::redis(&url).wechat(&wechat.base());
    sigkill_mid_job(opts, &wechat, dir.path()).await;
}

/// The "Done when": 20,000 openids, a quota pause and a SIGKILL in the middle; each
/// recipient exactly once, every TEMPLATESENDJOBFINISH matched. Prints what the closing note
/// reports. `cargo test --test api template_sends::twenty_thousand -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: minutes in a debug build"]
async fn twenty_thousand_recipients_with_a_quota_pause_and_a_sigkill_each_reached_once() {
    use crate::support::process::GatewayProcess;
    use futures::StreamExt;
    wechat_gateway::wechat::api::install_tls_provider();
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = "[template_sends]\nsends_per_second = 1000\nbackoff_min_ms = 3000\n\
                       backoff_max_seconds = 3\nlease_seconds = 2\n"
        .into();
    opts.wechat_timeout_ms = 3000;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    // 1 in 200 has not followed: 43004.
    let ids: Vec<String> = (0..20_000)
        .map(|i| {
            if i % 200 == 199 {
                format!("oUnsub{i:08}")
            } else {
                format!("oFollower{i:08}")
            }
        })
        .collect();
    let started = Instant::now();
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let mut body = template_body(&ids);
    body["client_msg_id"] = json!("done-when-20000");
    let (status, created) = post_json(
        &client,
        format!(
            "http://{}/admin/v1/accounts/acme-plain/template-sends",
            gateway.addr
        ),
        &body,
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let long = Duration::from_secs(1800);

    until_deliveries(&wechat, 5_000, long).await;
    wechat.inject(TEMPLATE_SEND, Injected::Errcode(45009), 1);
    let paused = wait_process_job(&client, gateway.addr, &job_id, long, |j| {
        j["status"] == "paused"
    })
    .await;
    assert!(paused["paused"]["reason"]
        .as_str()
        .unwrap()
        .contains("45009"));
    let paused_at = wechat.template_deliveries().len();

    until_deliveries(&wechat, 12_345, long).await;
    gateway.kill();
    let killed_at = wechat.template_deliveries().len();

    let restarted = GatewayProcess::start(&config);
    let j = wait_process_job(&client, restarted.addr, &job_id, long, finished).await;
    let send_time = started.elapsed();

    let deliveries = wechat.template_deliveries();
    let per = per_recipient(&deliveries);
    assert_eq!(per.len(), 19_900, "every follower reached");
    assert!(per.values().all(|n| *n == 1), "someone reached twice");
    assert!(deliveries.iter().all(|d| !d.touser.starts_with("oUnsub")));
    assert_eq!(j["counts"]["sent"], 19_900, "{j:#}");
    assert_eq!(j["counts"]["failed"], 100);
    assert_eq!(j["counts"]["pending"], 0);
    assert_eq!(j["counts"]["unknown"], 0);

    // WeChat reports every delivered message back.
    let cb_started = Instant::now();
    let status_of = |i: usize| match i {
        i if i % 1000 == 7 => "failed:user block",
        i if i % 1500 == 11 => "failed: system failed",
        _ => "success",
    };
    let addr = restarted.addr;
    let codes: Vec<u16> = futures::stream::iter(deliveries.iter().enumerate())
        .map(|(i, d)| {
            let client = client.clone();
            let xml = finish_xml(&d.touser, d.msgid, status_of(i));
            async move { post_callback(&client, addr, xml).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(codes.iter().all(|c| *c == 200));
    let expected_block = (0..deliveries.len())
        .filter(|i| status_of(*i) == "failed:user block")
        .count();
    let expected_system = (0..deliveries.len())
        .filter(|i| status_of(*i) == "failed: system failed")
        .count();
    let j = wait_process_job(&client, addr, &job_id, long, |j| {
        j["counts"]["delivered"].as_u64().unwrap()
            + j["counts"]["user_block"].as_u64().unwrap()
            + j["counts"]["system_failed"].as_u64().unwrap()
            == 19_900
    })
    .await;
    assert_eq!(j["counts"]["user_block"], expected_block);
    assert_eq!(j["counts"]["system_failed"], expected_system);
    let callback_time = cb_started.elapsed();
    // Every recipient's own status, page by page.
    let mut statuses: HashMap<String, usize> = HashMap::new();
    let mut offset = 0;
    loop {
        let page = get_job(
            &client,
            addr,
            &job_id,
            &format!("?offset={offset}&limit=1000"),
        )
        .await;
        for r in page["recipients"].as_array().unwrap() {
            *statuses
                .entry(r["status"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        match page["next_offset"].as_u64() {
            Some(n) => offset = n as usize,
            None => break,
        }
    }
    assert_eq!(statuses.values().sum::<usize>(), 20_000);
    assert_eq!(statuses.get("failed"), Some(&100));
    assert_eq!(
        statuses.get("delivered").copied().unwrap_or(0),
        19_900 - expected_block - expected_system
    );
    // Every TEMPLATESENDJOBFINISH reached the sink with its job id (the stdout sink's JSON).
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut matched = std::collections::HashSet::new();
    while matched.len() < 19_900 && Instant::now() < deadline {
        match restarted.stdout.recv_timeout(Duration::from_secs(5)) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["templateSendJobId"] == job_id.as_str() {
                    matched.insert(v["templateSendFinished"]["msgId"].to_string());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    restarted.kill();
    assert_eq!(
        matched.len(),
        19_900,
        "every TEMPLATESENDJOBFINISH matched to the job"
    );
    println!(
        "DONE-WHEN: wall time {:.1} s to send (from create to finished, incl. quota pause and \
         restart), {:.1} s for 19,900 callbacks; template/send calls {} (quota-refused 1, \
         repeats with the same client_msg_id {}), deliveries {}; paused at {} deliveries, \
         killed at {}; job counts {}; recipient statuses {:?}",
        send_time.as_secs_f64(),
        callback_time.as_secs_f64(),
        wechat.count(TEMPLATE_SEND),
        wechat.template_repeats(),
        deliveries.len(),
        paused_at,
        killed_at,
        j["counts"],
        statuses
    );
}

/// With the Redis server gone, the template and broadcast runners cannot list any account's
/// jobs on their passes: each account is logged once when it starts failing and once when it
/// recovers, not on every pass. (The template runner before it backed off per account logged
/// the first two accounts twice within the 20 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_job_runners_log_each_account_once_and_once_at_recovery() {
    use crate::support::process::GatewayProcess;
    use crate::support::redis::RedisServer;
    const ACCOUNTS: [&str; 5] = [
        "acme-mp",
        "acme-plain",
        "acme-compat",
        "acme-rotated",
        "acme-work",
    ];
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::redis(&redis.url());
    opts.extra_toml = "[template_sends]\nbackoff_min_ms = 100\nbackoff_max_seconds = 1\n\
                       [broadcasts]\nbackoff_min_ms = 100\nbackoff_max_seconds = 1\n"
        .to_owned();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let gateway = GatewayProcess::start(&config);
    gateway.wait_for_log("listening", 1);
    redis.kill();
    // With the server gone, each call fails after the client's reconnection attempts (~2.3 s),
    // so a pass over the five accounts takes ~12 s: 20 s see every account fail at least once
    // and the first ones fail again on the second pass.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let log = gateway.log();
    for failing in ["cannot list template jobs", "cannot list broadcast jobs"] {
        for account in ACCOUNTS {
            let lines: Vec<&String> = log
                .iter()
                .filter(|l| l.contains(failing) && l.contains(&format!("account={account} ")))
                .collect();
            assert_eq!(
                lines.len(),
                1,
                "{failing}, {account}: {:#?}",
                log.iter()
                    .filter(|l| l.contains("WARN"))
                    .collect::<Vec<_>>()
            );
        }
    }
    redis.restart();
    for recovered in [
        "template jobs can be listed again",
        "broadcast jobs can be listed again",
    ] {
        let lines = gateway.wait_for_log(recovered, ACCOUNTS.len());
        for account in ACCOUNTS {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains(&format!("account={account}"))),
                "{recovered}: {account} missing in {lines:#?}"
            );
        }
    }
}
