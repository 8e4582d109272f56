//! Broadcast jobs against the fake WeChat API (`support::fake_wechat::mass`), which enforces
//! WeChat's mass-send rules (2..10,000 openids, clientmsgid de-duplication answered 45065 with
//! the first msg_id) and records every send it accepted; the assertions count the sends WeChat
//! *accepted*, which is what reaches followers. The SIGKILL test runs the real binary, like the
//! fault tests of `crash.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wechat_gateway::pb::event::Kind;
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{self, send_broadcast_request};

use crate::support::app::{
    config_toml, now, spawn_app, AppOptions, TestApp, MP_APP_ID, WORK_CORP_ID,
};
use crate::support::crm::FakeCrm;
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

pub(crate) const TOKEN: &str = "test-admin-token-0123456789";
pub(crate) const WAIT: Duration = Duration::from_secs(30);
const MASS_SEND: &str = "/cgi-bin/message/mass/send";
const MASS_SENDALL: &str = "/cgi-bin/message/mass/sendall";
pub(crate) const ADD_MSG_TEMPLATE: &str = "/cgi-bin/externalcontact/add_msg_template";
pub(crate) const GROUPMSG_LIST: &str = "/cgi-bin/externalcontact/get_groupmsg_list_v2";
pub(crate) const GROUPMSG_SEND_RESULT: &str = "/cgi-bin/externalcontact/get_groupmsg_send_result";
/// A fast pace and short backoffs, so that tests do not wait a minute per 60 batches.
const FAST: &str = "[broadcasts]\ncalls_per_minute = 6000\nbackoff_min_ms = 50\n\
                    backoff_max_seconds = 1\nlease_seconds = 5\n";

pub(crate) fn fast(check_after_seconds: u64) -> String {
    format!("{FAST}check_after_seconds = {check_after_seconds}\n")
}

pub(crate) async fn app(
    wechat: &FakeWeChat,
    crm: Option<&FakeCrm>,
    extra: String,
) -> (TestApp, tempfile::TempDir) {
    app_with_timeout(wechat, crm, extra, 1000).await
}

async fn app_with_timeout(
    wechat: &FakeWeChat,
    crm: Option<&FakeCrm>,
    extra: String,
    wechat_timeout_ms: u64,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = extra;
    opts.wechat_timeout_ms = wechat_timeout_ms;
    if let Some(crm) = crm {
        opts = opts.crm(&crm.endpoint());
    }
    (spawn_app(opts, dir.path()).await, dir)
}

fn open_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("oFollower{i:08}")).collect()
}

pub(crate) async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, app.url(&format!("/admin/v1/accounts/{path}")))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn send(app: &TestApp, account: &str, body: &Value) -> (u16, Value) {
    admin(
        app,
        reqwest::Method::POST,
        &format!("{account}/broadcasts"),
        Some(body),
    )
    .await
}

pub(crate) async fn job(app: &TestApp, account: &str, job_id: &str) -> Value {
    let (status, body) = admin(
        app,
        reqwest::Method::GET,
        &format!("{account}/broadcasts/{job_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn cancel(app: &TestApp, account: &str, job_id: &str) -> (u16, Value) {
    admin(
        app,
        reqwest::Method::POST,
        &format!("{account}/broadcasts/{job_id}/cancel"),
        None,
    )
    .await
}

/// Waits until `done` holds.
pub(crate) async fn until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the job until `done` holds.
pub(crate) async fn wait_job(
    app: &TestApp,
    account: &str,
    job_id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let j = job(app, account, job_id).await;
        if done(&j) {
            return j;
        }
        assert!(start.elapsed() < WAIT, "job never got there: {j:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls a job of the gateway process at `addr` (a restarted binary) until every batch has
/// `status`; at most a minute.
pub(crate) async fn wait_process_job(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    account: &str,
    job_id: &str,
    status: &str,
) -> Value {
    let url = format!("http://{addr}/admin/v1/accounts/{account}/broadcasts/{job_id}");
    let start = Instant::now();
    loop {
        let j: Value = client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if every_batch(&j, status) {
            return j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never {status}: {j:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn every_batch(j: &Value, status: &str) -> bool {
    j["batches"]
        .as_array()
        .is_some_and(|b| b.iter().all(|b| b["status"] == status))
}

fn text(content: &str) -> Value {
    json!({"text": {"content": content}})
}

/// Accepted sends per clientmsgid.
fn accepted_per_cmid(wechat: &FakeWeChat) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for s in wechat.mass_sends().iter().filter(|s| s.accepted()) {
        *per.entry(s.clientmsgid.clone()).or_insert(0) += 1;
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_thousand_openids_with_duplicates_go_out_as_three_batches_each_openid_once() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let mut list = open_ids(25_000);
    list.extend(open_ids(700)); // repeats
    list.push("oFollower00024999".into());
    let (status, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": list}, "message": text("Spring sale")}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["created"], true);
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let sizes: Vec<_> = created["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [10_000, 10_000, 5_000]);

    let j = wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    assert_eq!(j["status"], "sent", "every batch sent, results pending");
    let sends = wechat.mass_sends();
    assert_eq!(sends.len(), 3, "one call per batch");
    let mut seen = HashSet::new();
    let mut cmids = HashSet::new();
    for (i, s) in sends.iter().enumerate() {
        assert!(s.accepted());
        assert!(!s.clientmsgid.is_empty() && s.clientmsgid.len() <= 64);
        assert!(cmids.insert(s.clientmsgid.clone()), "distinct clientmsgids");
        assert_eq!(j["batches"][i]["client_msg_id"], s.clientmsgid);
        assert_eq!(j["batches"][i]["msg_id"], s.msg_id);
        for id in &s.touser {
            assert!(seen.insert(id.clone()), "{id} sent twice");
        }
    }
    assert_eq!(seen, open_ids(25_000).into_iter().collect::<HashSet<_>>());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_msg_id_twice_sends_nothing_new() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let body = json!({
        "audience": {"open_ids": open_ids(3)},
        "message": text("once"),
        "client_msg_id": "crm-campaign-42",
    });
    let (status, first) = send(&app, "acme-plain", &body).await;
    assert_eq!(status, 202, "{first}");
    let job_id = first["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;

    let (status, again) = send(&app, "acme-plain", &body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["job_id"], job_id.as_str());
    assert_eq!(again["created"], false);
    // Even a different body under the same id answers the first job.
    let mut other = body.clone();
    other["audience"] = json!({"all": true});
    let (_, third) = send(&app, "acme-plain", &other).await;
    assert_eq!(third["job_id"], job_id.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wechat.mass_sends().len(), 1, "{:?}", wechat.mass_sends());
    assert_eq!(wechat.count(MASS_SENDALL), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_and_all_audiences_use_sendall_with_their_filter() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    for audience in [json!({"tag_id": 134}), json!({"all": true})] {
        let (status, j) = send(
            &app,
            "acme-plain",
            &json!({"audience": audience, "message": {"mpnews": {"media_id": "M1"}, "send_ignore_reprint": 1}}),
        )
        .await;
        assert_eq!(status, 202, "{j}");
        wait_job(&app, "acme-plain", j["job_id"].as_str().unwrap(), |j| {
            every_batch(j, "sent")
        })
        .await;
    }
    assert_eq!(wechat.count(MASS_SEND), 0);
    let sends = wechat.mass_sends();
    assert!(sends
        .iter()
        .all(|s| s.accepted() && s.path == MASS_SENDALL && s.touser.is_empty()));
    assert_eq!(sends[1].filter, json!({"is_to_all": true}));
    let calls = wechat.requests_to(MASS_SENDALL);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].body["filter"],
        json!({"is_to_all": false, "tag_id": 134})
    );
    assert_eq!(calls[1].body["filter"], json!({"is_to_all": true}));
    for c in &calls {
        assert_eq!(c.body["msgtype"], "mpnews");
        assert_eq!(c.body["mpnews"]["media_id"], "M1");
        assert_eq!(c.body["send_ignore_reprint"], 1);
        assert!(c.body["clientmsgid"]
            .as_str()
            .is_some_and(|c| !c.is_empty()));
    }
    app.stop().await;
}

#[tokio::test]
async fn a_one_openid_audience_and_bad_requests_are_refused_before_anything_is_sent() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    for (body, needle) in [
        (
            json!({"audience": {"open_ids": ["oA"]}, "message": text("x")}),
            "preview",
        ),
        (
            json!({"audience": {"open_ids": ["oA", "oA"]}, "message": text("x")}),
            "preview",
        ),
        (
            json!({"audience": {"open_ids": ["oA", "oB"]}, "message": {"news": {}}}),
            "cannot be mass-sent",
        ),
        (
            json!({"audience": {"tag_id": 2, "all": true}, "message": text("x")}),
            "exactly one",
        ),
        (
            json!({"audience": {"all": true}, "message": text("x"), "client_msg_id": "a b"}),
            "client_msg_id",
        ),
    ] {
        let (status, answer) = send(&app, "acme-plain", &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
    let (status, _) = send(
        &app,
        "nope",
        &json!({"audience": {"all": true}, "message": text("x")}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = admin(
        &app,
        reqwest::Method::GET,
        "acme-plain/broadcasts/unknown",
        None,
    )
    .await;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(wechat.mass_sends().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_openid_list_may_exceed_the_callback_body_limit_up_to_the_broadcast_one() {
    let wechat = FakeWeChat::start().await;
    // http.max_body_bytes is 64 KiB in tests: 20,000 openids (~400 KB) pass, 2 MiB do not.
    let (app, _dir) = app(&wechat, None, format!("{FAST}max_body_bytes = 1048576\n")).await;
    let (status, ok) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(20_000)}, "message": text("big")}),
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    let (status, too_large) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(100_000)}, "message": text("bigger")}),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(too_large["error"]["code"], "payload_too_large");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_with_the_same_clientmsgid_and_45065_marks_the_batch_sent() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    // WeChat accepts the send but its answer comes after the gateway's 1 s deadline.
    wechat.slow_mass_sends(1, Duration::from_secs(3));
    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(4)}, "message": text("hello")}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    let sends = wechat.mass_sends();
    assert!(sends.len() >= 2, "{sends:?}");
    assert!(
        sends.iter().all(|s| s.clientmsgid == sends[0].clientmsgid),
        "same clientmsgid"
    );
    assert_eq!(
        sends.iter().filter(|s| s.accepted()).count(),
        1,
        "sent once"
    );
    assert!(sends[1..].iter().all(|s| s.errcode == 45065));
    let batch = &j["batches"][0];
    assert_eq!(batch["already_sent"], true);
    assert_eq!(batch["msg_id"], sends[0].msg_id, "the first send's msg_id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_answers_45009_and_45011_back_off_and_the_batch_goes_out_later() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    wechat.inject(MASS_SEND, Injected::Errcode(45009), 1);
    wechat.inject(MASS_SEND, Injected::Errcode(45011), 1);
    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(2)}, "message": text("later")}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    assert_eq!(wechat.count(MASS_SEND), 3, "two refusals, then the send");
    assert_eq!(
        wechat.mass_sends().iter().filter(|s| s.accepted()).count(),
        1
    );
    assert_eq!(j["batches"][0]["attempts"], 3);
    assert_eq!(j["batches"][0]["already_sent"], false);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_wechat_refuses_fails_alone_and_the_job_still_finishes() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(1)).await;
    wechat.inject(MASS_SEND, Injected::Errcode(40007), 1);
    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(10_002)}, "message": {"image": {"media_id": "IMG"}}}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-plain", &job_id, |j| j["status"] == "finished").await;
    assert_eq!(j["batches"][0]["status"], "failed");
    assert!(j["batches"][0]["error"].as_str().unwrap().contains("40007"));
    assert_eq!(j["batches"][1]["status"], "finished");
    assert_eq!(j["batches"][1]["result_source"], "mass/get");
    assert_eq!(j["batches"][1]["wechat_status"], "SEND_SUCCESS");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masssendjobfinish_callback_updates_its_batch_and_reaches_the_crm_with_the_job_id() {
    let wechat = FakeWeChat::start().await;
    let crm = FakeCrm::start().await;
    let (app, _dir) = app(&wechat, Some(&crm), fast(3600)).await;
    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(3)}, "message": text("results")}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    let msg_id = j["batches"][0]["msg_id"].as_i64().unwrap();
    let xml = format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{MP_APP_ID}</FromUserName>\
         <CreateTime>{}</CreateTime><MsgType>event</MsgType><Event>MASSSENDJOBFINISH</Event>\
         <MsgID>{msg_id}</MsgID><Status>send success</Status><TotalCount>3</TotalCount>\
         <FilterCount>3</FilterCount><SentCount>2</SentCount><ErrorCount>1</ErrorCount></xml>",
        now()
    );
    assert_eq!(app.post_plain("acme-plain", &xml).await.status(), 200);
    let events = crm
        .wait_for(
            |evs| {
                evs.iter()
                    .any(|e| matches!(e.kind, Some(Kind::MassSendFinished(_))))
            },
            WAIT,
        )
        .await;
    let event = events
        .iter()
        .find(|e| matches!(e.kind, Some(Kind::MassSendFinished(_))))
        .unwrap();
    assert_eq!(event.broadcast_job_id, job_id);
    let j = wait_job(&app, "acme-plain", &job_id, |j| j["status"] == "finished").await;
    let batch = &j["batches"][0];
    assert_eq!(batch["status"], "finished");
    assert_eq!(
        (
            &batch["total"],
            &batch["filtered"],
            &batch["sent"],
            &batch["errors"]
        ),
        (&json!(3), &json!(3), &json!(2), &json!(1))
    );
    assert_eq!(batch["wechat_status"], "send success");
    assert_eq!(batch["result_source"], "callback");
    assert_eq!(
        wechat.count("/cgi-bin/message/mass/get"),
        0,
        "no check needed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_goes_to_one_openid_and_delete_removes_every_sent_batch() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let message = json!({"mpnews": {"media_id": "NEWS1"}});
    let (status, preview) = admin(
        &app,
        reqwest::Method::POST,
        "acme-plain/broadcasts/preview",
        Some(&json!({"open_id": "oEditor", "message": message})),
    )
    .await;
    assert_eq!(status, 200, "{preview}");
    assert!(preview["msg_id"].is_i64());
    let previews = wechat.previews();
    assert_eq!(previews.len(), 1);
    assert_eq!(previews[0]["touser"], "oEditor");
    assert_eq!(previews[0]["mpnews"]["media_id"], "NEWS1");
    assert_eq!(wechat.mass_sends().len(), 0, "a preview is not a broadcast");

    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(10_005)}, "message": message}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    let (status, deleted) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("acme-plain/broadcasts/{job_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    let deletes: Vec<i64> = wechat
        .requests_to("/cgi-bin/message/mass/delete")
        .iter()
        .map(|r| r.body["msg_id"].as_i64().unwrap())
        .collect();
    let sent: Vec<i64> = wechat.mass_sends().iter().map(|s| s.msg_id).collect();
    assert_eq!(deletes, sent, "every batch's articles deleted");
    assert!(deleted["batches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|b| b["deleted"] == true));

    // A text broadcast has no articles to delete.
    let (_, text_job) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(2)}, "message": text("t")}),
    )
    .await;
    let (status, refused) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!(
            "acme-plain/broadcasts/{}",
            text_job["job_id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_created_and_users_added_and_removed_in_batches_of_fifty() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let (status, tag) = admin(
        &app,
        reqwest::Method::POST,
        "acme-plain/tags",
        Some(&json!({"name": "spring-vip"})),
    )
    .await;
    assert_eq!(status, 200, "{tag}");
    let tag_id = tag["tag_id"].as_u64().unwrap();
    let (status, taken) = admin(
        &app,
        reqwest::Method::POST,
        "acme-plain/tags",
        Some(&json!({"name": "spring-vip"})),
    )
    .await;
    assert_eq!(status, 409, "45157 is a conflict: {taken}");

    let mut users = open_ids(120);
    users.push("oFollower00000000".into());
    let (status, added) = admin(
        &app,
        reqwest::Method::POST,
        &format!("acme-plain/tags/{tag_id}/members"),
        Some(&json!({"open_ids": users})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        (added["users"].as_u64(), added["batches"].as_u64()),
        (Some(120), Some(3))
    );
    let calls = wechat.requests_to("/cgi-bin/tags/members/batchtagging");
    assert!(calls
        .iter()
        .all(|c| c.body["openid_list"].as_array().unwrap().len() <= 50));
    assert_eq!(wechat.tag_members(MP_APP_ID, tag_id).len(), 120);

    let (status, _) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("acme-plain/tags/{tag_id}/members"),
        Some(&json!({"open_ids": open_ids(60)})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(wechat.count("/cgi-bin/tags/members/batchuntagging"), 2);
    assert_eq!(wechat.tag_members(MP_APP_ID, tag_id).len(), 60);

    let (status, bad) = admin(
        &app,
        reqwest::Method::POST,
        &format!("acme-plain/tags/{tag_id}/members"),
        Some(&json!({"open_ids": ["not an openid"]})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_broadcast_is_a_group_message_recording_fail_list_and_confirmation() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(1)).await;
    let mut ids: Vec<String> = (0..10_001).map(|i| format!("wmContact{i}")).collect();
    ids.push("wmFailGone".into());
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"external_user_ids": ids, "sender": "zhangsan"},
                "message": text("新品上市")}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-work", &job_id, |j| {
        j["batches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| !b["msg_id"].is_null())
    })
    .await;
    let bodies = wechat.group_messages();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        bodies[0]["external_userid"].as_array().unwrap().len(),
        10_000
    );
    assert_eq!(bodies[1]["external_userid"].as_array().unwrap().len(), 2);
    assert_eq!(bodies[0]["chat_type"], "single");
    assert_eq!(bodies[0]["sender"], "zhangsan");
    assert_eq!(bodies[0]["text"]["content"], "新品上市");
    assert_eq!(j["batches"][1]["fail_list"], json!(["wmFailGone"]));
    assert_eq!(j["batches"][0]["pending_confirmation"], json!(["zhangsan"]));
    assert_eq!(j["status"], "sent");

    for b in j["batches"].as_array().unwrap() {
        wechat.confirm_group_message(b["msg_id"].as_str().unwrap());
    }
    let j = wait_job(&app, "acme-work", &job_id, |j| j["status"] == "finished").await;
    assert_eq!(j["batches"][0]["wechat_status"], "confirmed");
    assert_eq!(j["batches"][0]["pending_confirmation"], json!([]));

    let (status, refused) = send(
        &app,
        "acme-work",
        &json!({"audience": {"open_ids": ["oA", "oB"]}, "message": text("x")}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");

    // Deleting a WeCom job cancels its group messages for members who have not sent them.
    let (_, second) = send(
        &app,
        "acme-work",
        &json!({"audience": {"external_user_ids": ["wmOne"], "sender": "lisi"}, "message": {"image": {"media_id": "IMG"}}}),
    )
    .await;
    let second_id = second["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, "acme-work", &second_id, |j| every_batch(j, "sent")).await;
    assert_eq!(
        wechat.group_messages()[2]["attachments"],
        json!([{"msgtype": "image", "image": {"media_id": "IMG"}}])
    );
    let (status, cancelled) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("acme-work/broadcasts/{second_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        wechat.count("/cgi-bin/externalcontact/cancel_groupmsg_send"),
        1
    );
    assert_eq!(cancelled["status"], "finished");
    assert_eq!(cancelled["batches"][0]["wechat_status"], "cancelled");
    assert_eq!(cancelled["batches"][0]["pending_confirmation"], json!([]));
    app.stop().await;
}

fn wecom_text(contacts: &[String], content: &str) -> Value {
    json!({"audience": {"external_user_ids": contacts, "sender": "zhangsan"},
           "message": text(content)})
}

fn contacts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("wmContact{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_batch_whose_answer_was_lost_is_found_in_wecoms_record_and_not_sent_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    // The corp's other group messages in the window: more than a page of
    // get_groupmsg_list_v2 (100), one of them with the same text to other contacts.
    for i in 0..120 {
        wechat.seed_group_message(WORK_CORP_ID, "lisi", &format!("other {i}"), &["wmElse"]);
    }
    let lookalike = wechat.seed_group_message(
        WORK_CORP_ID,
        "zhangsan",
        "双十二",
        &["wmContact0", "wmElse"],
    );
    // An earlier job to the same contacts with the same text: its message matches in all but
    // its msgid, which that job recorded.
    let body = wecom_text(&contacts(3), "双十二");
    let (_, earlier) = send(&app, "acme-work", &body).await;
    let earlier = wait_job(
        &app,
        "acme-work",
        earlier["job_id"].as_str().unwrap(),
        |j| every_batch(j, "sent"),
    )
    .await;

    // WeCom creates the next group message but its answer is lost; the first look at WeCom's
    // record fails too (errcode -1 for each of the client's three attempts).
    wechat.lose_group_message_answers(1);
    wechat.inject(GROUPMSG_LIST, Injected::Errcode(-1), 3);
    let (status, created) = send(&app, "acme-work", &body).await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-work", &job_id, |j| every_batch(j, "sent")).await;

    assert_eq!(
        wechat.count(ADD_MSG_TEMPLATE),
        2,
        "one call per job, none repeated"
    );
    let ids = wechat.group_message_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(earlier["batches"][0]["msg_id"], ids[0].as_str());
    let batch = &j["batches"][0];
    assert_eq!(
        batch["msg_id"],
        ids[1].as_str(),
        "the lost send's msgid: {j:#}"
    );
    assert_eq!(batch["reconciled"], true);
    assert_eq!(batch["already_sent"], true);
    assert_eq!(batch["attempts"], 1);
    assert_eq!(batch["pending_confirmation"], json!(["zhangsan"]));

    // Three failed reads, then two pages of the record.
    let lists = wechat.requests_to(GROUPMSG_LIST);
    assert_eq!(lists.len(), 5, "{lists:?}");
    assert_eq!(lists[3].body["cursor"], "");
    assert_ne!(lists[4].body["cursor"], "", "the second page");
    for l in &lists {
        assert_eq!(l.body["chat_type"], "single");
        assert_eq!(l.body["filter_type"], 0);
        let (start, end) = (
            l.body["start_time"].as_u64().unwrap(),
            l.body["end_time"].as_u64().unwrap(),
        );
        assert!(start <= now() && now() <= end && end - start <= 31 * 24 * 3600);
    }
    // The look-alike was checked by its send list; the earlier job's message was not (it is
    // recorded by that job).
    let checked: Vec<Value> = wechat
        .requests_to(GROUPMSG_SEND_RESULT)
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(
        checked.iter().all(|b| b["userid"] == "zhangsan"),
        "{checked:?}"
    );
    assert!(checked.iter().any(|b| b["msgid"] == lookalike.as_str()));
    assert!(checked.iter().any(|b| b["msgid"] == ids[1].as_str()));
    assert!(checked.iter().all(|b| b["msgid"] != ids[0].as_str()));

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wgw_broadcast_batches_total")
                && l.contains("acme-work")
                && l.contains("outcome=\"reconciled\"")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_batch_whose_attempts_never_reached_wecom_is_sent_again_after_a_look() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    // Refused before WeCom created anything: a 503, then "system busy". Neither is repeated
    // inside the call, each is followed by a look at WeCom's record, which finds nothing.
    wechat.inject(ADD_MSG_TEMPLATE, Injected::Status(503), 1);
    wechat.inject(ADD_MSG_TEMPLATE, Injected::Errcode(-1), 1);
    let (_, created) = send(&app, "acme-work", &wecom_text(&contacts(2), "再来一次")).await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let j = wait_job(&app, "acme-work", &job_id, |j| every_batch(j, "sent")).await;

    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 3);
    let ids = wechat.group_message_ids();
    assert_eq!(ids.len(), 1, "created once");
    let batch = &j["batches"][0];
    assert_eq!(batch["msg_id"], ids[0].as_str());
    assert_eq!(batch["attempts"], 3);
    assert_eq!(batch["reconciled"], false);
    assert_eq!(batch["already_sent"], false);
    // A look before each attempt after the first.
    let requests = wechat.requests();
    let order: Vec<&str> = requests
        .iter()
        .map(|r| r.path.as_str())
        .filter(|p| *p == ADD_MSG_TEMPLATE || *p == GROUPMSG_LIST)
        .collect();
    assert_eq!(
        order,
        [
            ADD_MSG_TEMPLATE,
            GROUPMSG_LIST,
            ADD_MSG_TEMPLATE,
            GROUPMSG_LIST,
            ADD_MSG_TEMPLATE
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_mid_way_finishes_the_batch_in_flight_and_never_sends_the_rest() {
    let wechat = FakeWeChat::start().await;
    // A deadline longer than the test holds a call.
    let (app, _dir) = app_with_timeout(&wechat, None, fast(3600), 60_000).await;
    // Batch 0 goes through; batch 1 reaches WeChat and waits there until released.
    wechat.hold(MASS_SEND, 1);
    let (_, created) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(30_000)}, "message": text("stop")}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    until("batch 1 in flight", || wechat.count(MASS_SEND) == 2).await;

    let (status, cancelled) = cancel(&app, "acme-plain", &job_id).await;
    assert_eq!(status, 200, "{cancelled}");
    let statuses = |j: &Value| -> Vec<String> {
        j["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["status"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(statuses(&cancelled), ["sent", "sending", "cancelled"]);
    assert_eq!(cancelled["status"], "sending", "batch 1 is still in flight");
    assert_eq!(cancelled["cancelled_by"], "ops");
    let (status, again) = cancel(&app, "acme-plain", &job_id).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, cancelled, "cancelling again answers the same");

    wechat.release(MASS_SEND);
    let j = wait_job(&app, "acme-plain", &job_id, |j| j["status"] == "cancelled").await;
    assert_eq!(statuses(&j), ["sent", "sent", "cancelled"]);
    let sends = wechat.mass_sends();
    assert_eq!(
        j["batches"][1]["msg_id"], sends[1].msg_id,
        "its result is kept"
    );
    assert_eq!(j["batches"][2]["msg_id"], Value::Null);
    assert_eq!(j["batches"][2]["attempts"], 0);

    // The runner goes on to a later job: batch 2 had its turn and was not sent.
    let (_, next) = send(
        &app,
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(2)}, "message": text("after")}),
    )
    .await;
    let next_id = next["job_id"].as_str().unwrap().to_owned();
    wait_job(&app, "acme-plain", &next_id, |j| every_batch(j, "sent")).await;
    let sends = wechat.mass_sends();
    assert_eq!(sends.len(), 3, "{sends:?}");
    assert!(sends.iter().all(|s| s.clientmsgid != format!("{job_id}-2")));

    // Nothing left to send: a conflict. Unknown: 404. No token: 401.
    let (status, conflict) = cancel(&app, "acme-plain", &next_id).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "conflict");
    let message = conflict["error"]["message"].as_str().unwrap();
    assert!(message.contains("nothing left to send"), "{message}");
    let (status, _) = cancel(&app, "acme-plain", "unknown").await;
    assert_eq!(status, 404);
    let resp = app
        .http
        .post(app.url(&format!(
            "/admin/v1/accounts/acme-plain/broadcasts/{job_id}/cancel"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_cancel_broadcast_settles_a_wecom_batch_in_doubt_without_sending_it_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app_with_timeout(&wechat, None, fast(3600), 60_000).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    // Batch 0 fails before WeCom acts (a 503), so it is in doubt; the look at WeCom's record
    // that must come before another attempt is held in flight while the job is cancelled.
    wechat.inject(ADD_MSG_TEMPLATE, Injected::Status(503), 1);
    wechat.hold(GROUPMSG_LIST, 0);
    let (_, created) = send(&app, "acme-work", &wecom_text(&contacts(10_001), "取消")).await;
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    until("the look at WeCom's record", || {
        wechat.count(GROUPMSG_LIST) == 1
    })
    .await;

    let request = || pb::GetBroadcastRequest {
        account_id: "acme-work".into(),
        job_id: job_id.clone(),
    };
    let job = gateway
        .cancel_broadcast(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.status, "sending", "{job:?}");
    assert!(job.cancelled_at > 0);
    assert_eq!(job.batches[0].status, "sending");
    assert_eq!(job.batches[1].status, "cancelled");

    wechat.release(GROUPMSG_LIST);
    let j = wait_job(&app, "acme-work", &job_id, |j| j["status"] == "cancelled").await;
    // The look found nothing: batch 0 never reached WeCom, and is not sent after the cancel.
    assert_eq!(j["batches"][0]["status"], "cancelled", "{j:#}");
    assert!(j["batches"][0]["msg_id"].is_null());
    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 1);
    assert!(wechat.group_message_ids().is_empty());
    let again = gateway
        .cancel_broadcast(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, "cancelled");

    let missing = gateway
        .cancel_broadcast(pb::GetBroadcastRequest {
            account_id: "acme-work".into(),
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_send_and_get_broadcast_follow_the_admin_rules() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut gateway = GatewayClient::new(channel);
    let request = |ids: Vec<String>| pb::SendBroadcastRequest {
        account_id: "acme-plain".into(),
        audience: Some(send_broadcast_request::Audience::OpenIds(pb::OpenIdList {
            open_ids: ids,
        })),
        message_json: r#"{"text": {"content": "via gRPC"}}"#.into(),
        client_msg_id: "grpc-1".into(),
    };
    let err = gateway
        .send_broadcast(pb::SendBroadcastRequest {
            client_msg_id: String::new(),
            ..request(vec!["oOnly".into()])
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("preview"), "{}", err.message());

    let job = gateway
        .send_broadcast(request(open_ids(3)))
        .await
        .unwrap()
        .into_inner();
    assert!(job.created);
    let again = gateway
        .send_broadcast(request(open_ids(3)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.job_id.as_str(), again.created),
        (job.job_id.as_str(), false)
    );
    let start = Instant::now();
    let got = loop {
        let got = gateway
            .get_broadcast(pb::GetBroadcastRequest {
                account_id: "acme-plain".into(),
                job_id: job.job_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if got.status == "sent" {
            break got;
        }
        assert!(start.elapsed() < WAIT, "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.batches.len(), 1);
    assert_eq!(
        got.batches[0].msg_id,
        wechat.mass_sends()[0].msg_id.to_string()
    );
    assert_eq!(got.batches[0].total, -1, "no result yet");
    assert_eq!(wechat.mass_sends().len(), 1);
    // Sent, so nothing is left to cancel: the state refuses it (HTTP 409), nothing "exists".
    let finished = gateway
        .cancel_broadcast(pb::GetBroadcastRequest {
            account_id: "acme-plain".into(),
            job_id: job.job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        finished.code(),
        tonic::Code::FailedPrecondition,
        "{finished:?}"
    );
    assert!(
        finished.message().contains("nothing left to send"),
        "{}",
        finished.message()
    );
    assert_eq!(
        finished.metadata().get("wgw-error-code").unwrap(),
        "conflict"
    );

    let tag = gateway
        .create_tag(pb::CreateTagRequest {
            account_id: "acme-plain".into(),
            name: "grpc-segment".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // A name taken (45157) is the other kind of 409: it exists already.
    let taken = gateway
        .create_tag(pb::CreateTagRequest {
            account_id: "acme-plain".into(),
            name: "grpc-segment".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    let tagged = gateway
        .tag_users(pb::TagUsersRequest {
            account_id: "acme-plain".into(),
            tag_id: tag.tag_id,
            open_ids: open_ids(51),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((tagged.users, tagged.batches), (51, 2));
    let missing = gateway
        .get_broadcast(pb::GetBroadcastRequest {
            account_id: "acme-plain".into(),
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.stop().await;
}

// ---- faults: SIGKILL in the middle of a job -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_job_interrupted_by_sigkill_finishes_after_restart_with_no_batch_sent_twice() {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    sigkill_mid_job(&wechat, opts, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_job_interrupted_by_sigkill_finishes_after_restart_with_no_batch_sent_twice_redis(
) {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_db_url().await;
    let opts = AppOptions::redis(&url).wechat(&wechat.base());
    sigkill_mid_job(&wechat, opts, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_run_a_job_once() {
    let wechat = FakeWeChat::start().await;
    let url = fresh_db_url().await;
    let mut apps = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = AppOptions::redis(&url).wechat(&wechat.base());
        // Slow enough (0.5 s a batch) that the other instance's runner looks at the job while
        // it is being sent.
        opts.extra_toml = "[broadcasts]\ncalls_per_minute = 120\nlease_seconds = 5\n".into();
        apps.push(spawn_app(opts, dir.path()).await);
        dirs.push(dir);
    }
    let (status, created) = send(
        &apps[0],
        "acme-plain",
        &json!({"audience": {"open_ids": open_ids(30_000)}, "message": text("once")}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    // Both instances see the same job.
    wait_job(&apps[1], "acme-plain", &job_id, |j| every_batch(j, "sent")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sends = wechat.mass_sends();
    assert_eq!(
        sends.len(),
        3,
        "one call per batch, by one instance: {sends:?}"
    );
    assert!(sends.iter().all(|s| s.accepted()));
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_job_killed_before_recording_a_group_message_finds_it_after_restart() {
    use crate::support::process::GatewayProcess;
    wechat_gateway::wechat::api::install_tls_provider();
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    opts.extra_toml = "[broadcasts]\ncalls_per_minute = 120\nbackoff_min_ms = 100\n\
                       backoff_max_seconds = 1\nlease_seconds = 2\n"
        .into();
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    // WeCom creates batch 0's group message; the process dies before the answer arrives.
    wechat.lose_group_message_answers(1);
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let resp = client
        .post(format!(
            "http://{}/admin/v1/accounts/acme-work/broadcasts",
            gateway.addr
        ))
        .bearer_auth(TOKEN)
        .json(&wecom_text(&contacts(10_001), "crash-proof"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    until("batch 0 created at WeCom", || {
        wechat.group_message_ids().len() == 1
    })
    .await;
    gateway.kill();

    let restarted = GatewayProcess::start(&config);
    let j = wait_process_job(&client, restarted.addr, "acme-work", &job_id, "sent").await;
    restarted.kill();
    let ids = wechat.group_message_ids();
    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 2, "one call per batch");
    assert_eq!(ids.len(), 2);
    assert_eq!(j["batches"][0]["msg_id"], ids[0].as_str());
    assert_eq!(j["batches"][0]["reconciled"], true);
    assert_eq!(j["batches"][1]["msg_id"], ids[1].as_str());
    assert_eq!(j["batches"][1]["reconciled"], false);
}

async fn sigkill_mid_job(wechat: &FakeWeChat, mut opts: AppOptions, dir: &std::path::Path) {
    use crate::support::process::GatewayProcess;
    wechat_gateway::wechat::api::install_tls_provider();
    // A pace of 2 batches a second; the lease lapses 2 s after the process dies.
    opts.extra_toml = "[broadcasts]\ncalls_per_minute = 120\nbackoff_min_ms = 100\n\
                       backoff_max_seconds = 1\nlease_seconds = 2\n"
        .into();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    // Batch 2 (of 5) is accepted by WeChat, but its answer is held back: the process dies
    // between WeChat sending it and the gateway recording it, the hardest point.
    wechat.slow_mass_sends(1, Duration::ZERO);
    wechat.slow_mass_sends(1, Duration::from_secs(30));
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let list = open_ids(45_000);
    let resp = client
        .post(format!(
            "http://{}/admin/v1/accounts/acme-plain/broadcasts",
            gateway.addr
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"audience": {"open_ids": list}, "message": text("crash-proof")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    let start = Instant::now();
    while wechat.mass_sends().iter().filter(|s| s.accepted()).count() < 2 {
        assert!(start.elapsed() < WAIT, "batch 2 never reached WeChat");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill();
    let before = wechat.mass_sends().len();
    assert_eq!(before, 2, "killed with batch 2 unanswered");

    let restarted = GatewayProcess::start(&config);
    let j = wait_process_job(&client, restarted.addr, "acme-plain", &job_id, "sent").await;
    restarted.kill();

    let sends = wechat.mass_sends();
    let per = accepted_per_cmid(wechat);
    assert_eq!(per.len(), 5, "every batch accepted: {per:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "a batch accepted twice: {per:?}"
    );
    // Every openid reached exactly once across the accepted sends.
    let mut reached = HashMap::<&str, usize>::new();
    for s in sends.iter().filter(|s| s.accepted()) {
        for id in &s.touser {
            *reached.entry(id.as_str()).or_insert(0) += 1;
        }
    }
    assert_eq!(reached.len(), 45_000);
    assert!(reached.values().all(|n| *n == 1));
    // Batch 2 was sent again after the restart, with its clientmsgid: WeChat answered 45065
    // and the batch took the first send's msg_id. Batch 1 was recorded before the kill and not
    // sent again.
    let batch2 = &sends[1];
    let repeats: Vec<_> = sends[before..]
        .iter()
        .filter(|s| s.clientmsgid == batch2.clientmsgid)
        .collect();
    assert!(
        !repeats.is_empty() && repeats.iter().all(|s| s.errcode == 45065),
        "{repeats:?}"
    );
    assert_eq!(j["batches"][1]["msg_id"], batch2.msg_id);
    assert_eq!(j["batches"][1]["already_sent"], true);
    assert!(sends[before..]
        .iter()
        .all(|s| s.clientmsgid != sends[0].clientmsgid));
}
