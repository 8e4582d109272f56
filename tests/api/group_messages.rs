//! WeCom group messages, complete (issue 15, item 5) against the fake WeCom API, which checks
//! `add_msg_template` as developer.work.weixin.qq.com/document/path/92135 documents it
//! (`support::fake_wechat::mass`): `chat_type` group to the sender's customer groups,
//! `tag_filter` and `allow_select`, text and attachments of every type, media named by a
//! gateway upload; refusals before any call; a quota answer; a lost answer reconciled in WeCom's
//! record of customer-group messages; a media id WeCom forgot between batches; SIGKILL mid-job
//! on both backends.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use wechat_gateway::pb::gateway_client::GatewayClient;
use wechat_gateway::pb::{self, send_broadcast_request};

use crate::broadcasts::{
    app, every_batch, fast, send, until, wait_job, wait_process_job, ADD_MSG_TEMPLATE,
    GROUPMSG_LIST, GROUPMSG_SEND_RESULT, TOKEN,
};
use crate::support::app::{config_toml, AppOptions, TestApp, WORK_CORP_ID};
use crate::support::fake_wechat::{FakeWeChat, Injected};
use crate::support::redis::fresh_db_url;

const UPLOAD: &str = "/cgi-bin/media/upload";

/// A WeCom upload through the gateway (`POST .../media`): its answer.
async fn upload(app: &TestApp, kind: &str, name: &str, bytes: &[u8]) -> Value {
    let form = Form::new().text("type", kind.to_owned()).part(
        "media",
        Part::bytes(bytes.to_vec()).file_name(name.to_owned()),
    );
    let resp = app
        .http
        .post(app.url("/admin/v1/accounts/acme-work/media"))
        .bearer_auth(TOKEN)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "upload {name}");
    resp.json().await.unwrap()
}

fn chats(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("wrChat{i:05}")).collect()
}

/// One attachment of each type WeCom documents; the image and the miniprogram's cover name
/// the gateway's upload by its hash.
fn every_attachment(image_sha: &str) -> Value {
    json!([
        {"msgtype": "image", "image": {"sha256": image_sha}},
        {"msgtype": "link", "link": {"title": "双十二", "url": "https://example.com/sale",
            "picurl": "https://example.com/p.png", "desc": "全场五折"}},
        {"msgtype": "miniprogram", "miniprogram": {"title": "下单", "pic_sha256": image_sha,
            "appid": "wx8bd80126147dfAAA", "page": "/pages/sale.html"}},
        {"msgtype": "video", "video": {"media_id": "VIDEO_ID"}},
        {"msgtype": "file", "file": {"media_id": "FILE_ID"}},
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_goes_to_the_owners_customer_groups_with_every_attachment_type() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    wechat.profile(|p| {
        p.add_chat("wrOwned1", "VIP", "zhangsan", 0);
        p.add_chat("wrOwned2", "Expo", "zhangsan", 0);
        p.add_chat("wrOther", "Else", "lisi", 0);
    });
    let poster = upload(&app, "image", "poster.jpg", b"poster bytes").await;
    let sha = poster["sha256"].as_str().unwrap();
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"chat_type": "group", "sender": "zhangsan"},
                "message": {"text": {"content": "新品上市"}, "attachments": every_attachment(sha)}}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["msgtype"], "text+image+link+miniprogram+video+file");
    assert_eq!(
        created["audience"],
        json!({"chat_type": "group", "chat_ids": 0, "sender": "zhangsan"})
    );
    let job_id = created["job_id"].as_str().unwrap();
    let j = wait_job(&app, "acme-work", job_id, |j| every_batch(j, "sent")).await;
    let bodies = wechat.group_messages();
    assert_eq!(bodies.len(), 1);
    let media_id = poster["media_id"].as_str().unwrap();
    assert_eq!(
        bodies[0],
        json!({"chat_type": "group", "sender": "zhangsan", "text": {"content": "新品上市"},
        "attachments": [
            {"msgtype": "image", "image": {"media_id": media_id}},
            {"msgtype": "link", "link": {"title": "双十二", "url": "https://example.com/sale",
                "picurl": "https://example.com/p.png", "desc": "全场五折"}},
            {"msgtype": "miniprogram", "miniprogram": {"title": "下单", "pic_media_id": media_id,
                "appid": "wx8bd80126147dfAAA", "page": "/pages/sale.html"}},
            {"msgtype": "video", "video": {"media_id": "VIDEO_ID"}},
            {"msgtype": "file", "file": {"media_id": "FILE_ID"}},
        ]}),
        "every group of the owner: no chat_id_list, no external_userid"
    );
    assert_eq!(
        j["batches"][0]["msg_id"],
        wechat.group_message_ids()[0].as_str()
    );
    assert_eq!(j["batches"][0]["pending_confirmation"], json!(["zhangsan"]));
    assert_eq!(
        wechat.count(UPLOAD),
        1,
        "the upload's media id was live: reused"
    );

    // Listed groups go by 2,000 a call (chat_id_list).
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"chat_type": "group", "sender": "zhangsan", "chat_ids": chats(2001)},
                "message": {"text": {"content": "分批"}}}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["audience"]["chat_ids"], 2001);
    wait_job(
        &app,
        "acme-work",
        created["job_id"].as_str().unwrap(),
        |j| every_batch(j, "sent"),
    )
    .await;
    let bodies = wechat.group_messages();
    let sizes: Vec<usize> = bodies[1..]
        .iter()
        .map(|b| b["chat_id_list"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2000, 1]);
    assert!(bodies[1..].iter().all(|b| b["chat_type"] == "group"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_filter_goes_with_every_batch_and_may_stand_alone() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let filter =
        json!({"group_list": [{"tag_list": ["etHot", "etWarm"]}, {"tag_list": ["etVip"]}]});
    let contacts: Vec<String> = (0..10_001).map(|i| format!("wmContact{i}")).collect();
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"external_user_ids": contacts, "sender": "zhangsan",
                             "tag_filter": filter, "allow_select": true},
                "message": {"text": {"content": "会员日"}}}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["audience"]["tag_filter"], filter);
    assert_eq!(created["audience"]["allow_select"], true);
    wait_job(
        &app,
        "acme-work",
        created["job_id"].as_str().unwrap(),
        |j| every_batch(j, "sent"),
    )
    .await;
    let (status, alone) = send(
        &app,
        "acme-work",
        &json!({"audience": {"sender": "zhangsan", "tag_filter": filter},
                "message": {"attachments": [{"msgtype": "link",
                    "link": {"title": "会员日", "url": "https://example.com/vip"}}]}}),
    )
    .await;
    assert_eq!(status, 202, "{alone}");
    assert_eq!(alone["batches"].as_array().unwrap().len(), 1);
    wait_job(&app, "acme-work", alone["job_id"].as_str().unwrap(), |j| {
        every_batch(j, "sent")
    })
    .await;
    let bodies = wechat.group_messages();
    assert_eq!(bodies.len(), 3);
    for b in &bodies[..2] {
        assert_eq!(b["chat_type"], "single");
        assert_eq!(b["tag_filter"], filter);
        assert_eq!(b["allow_select"], true);
    }
    assert_eq!(
        bodies[0]["external_userid"].as_array().unwrap().len(),
        10_000
    );
    assert_eq!(bodies[1]["external_userid"].as_array().unwrap().len(), 1);
    assert_eq!(
        bodies[2],
        json!({"chat_type": "single", "sender": "zhangsan", "tag_filter": filter,
            "attachments": [{"msgtype": "link",
                "link": {"title": "会员日", "url": "https://example.com/vip"}}]})
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_wecoms_limits_are_refused_naming_the_limit_before_any_call() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let to = json!({"external_user_ids": ["wmA"], "sender": "zhangsan"});
    let link = |title: String, desc: String| {
        json!({"attachments": [{"msgtype": "link",
            "link": {"title": title, "url": "https://example.com", "desc": desc}}]})
    };
    let image = json!({"msgtype": "image", "image": {"media_id": "M"}});
    let unknown_sha = "ab".repeat(32);
    let cases = [
        (
            to.clone(),
            json!({"attachments": vec![image.clone(); 10]}),
            "at most 9",
        ),
        (
            to.clone(),
            json!({"text": {"content": "a".repeat(4001)}}),
            "at most 4000 bytes",
        ),
        (
            to.clone(),
            link("t".repeat(129), "d".into()),
            "at most 128 bytes",
        ),
        (
            to.clone(),
            link("t".into(), "d".repeat(513)),
            "at most 512 bytes",
        ),
        (
            to.clone(),
            json!({"attachments": [{"msgtype": "miniprogram", "miniprogram": {"title": "x".repeat(65),
                "pic_media_id": "P", "appid": "wx1", "page": "/p.html"}}]}),
            "at most 64 bytes",
        ),
        (
            to.clone(),
            json!({"attachments": [{"msgtype": "miniprogram", "miniprogram": {"title": "t",
                "appid": "wx1", "page": "/p.html"}}]}),
            "pic_media_id is required",
        ),
        (
            to.clone(),
            json!({"attachments": [{"msgtype": "voice", "voice": {"media_id": "V"}}]}),
            "image, link, miniprogram, video and file",
        ),
        (
            to.clone(),
            json!({"mpnews": {"media_id": "M"}}),
            "cannot be sent",
        ),
        (
            to.clone(),
            json!({"attachments": [{"msgtype": "file", "file": {"sha256": unknown_sha}}]}),
            "no WeCom upload of a file",
        ),
        (
            json!({"sender": "zhangsan", "tag_filter": {"group_list": [{"tag_list":
                (0..101).map(|i| format!("et{i}")).collect::<Vec<_>>()}]}}),
            json!({"text": {"content": "x"}}),
            "1 to 100 tags per group",
        ),
        (
            json!({"chat_type": "group"}),
            json!({"text": {"content": "x"}}),
            "audience.sender",
        ),
        (
            json!({"chat_type": "group", "sender": "zhangsan", "external_user_ids": ["wmA"]}),
            json!({"text": {"content": "x"}}),
            "for chat_type \"single\"",
        ),
        (
            json!({"chat_type": "groups", "sender": "zhangsan"}),
            json!({"text": {"content": "x"}}),
            "chat_type must be",
        ),
        (
            json!({"sender": "zhangsan"}),
            json!({"text": {"content": "x"}}),
            "or give a tag_filter",
        ),
    ];
    for (audience, message, needle) in cases {
        let (status, body) = send(
            &app,
            "acme-work",
            &json!({"audience": audience, "message": message}),
        )
        .await;
        assert_eq!(status, 400, "{audience} {message}: {body}");
        let said = body["error"]["message"].as_str().unwrap();
        assert!(said.contains(needle), "{needle:?} not in {said:?}");
    }
    // Over gRPC, the same rule in the same words.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let err = GatewayClient::new(channel)
        .send_broadcast(pb::SendBroadcastRequest {
            account_id: "acme-work".into(),
            audience: Some(send_broadcast_request::Audience::External(
                pb::ExternalAudience {
                    sender: "zhangsan".into(),
                    external_user_ids: vec!["wmA".into()],
                    ..Default::default()
                },
            )),
            message_json: json!({"attachments": vec![image; 10]}).to_string(),
            client_msg_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at most 9"), "{}", err.message());
    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 0, "no call made");
    assert_eq!(wechat.count(UPLOAD), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_send_broadcast_sends_a_group_message_with_tag_filter_and_attachments() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let job = GatewayClient::new(channel)
        .send_broadcast(pb::SendBroadcastRequest {
            account_id: "acme-work".into(),
            audience: Some(send_broadcast_request::Audience::External(
                pb::ExternalAudience {
                    sender: "zhangsan".into(),
                    tag_filter: vec![pb::CorpTagFilterGroup {
                        tag_ids: vec!["etHot".into()],
                    }],
                    allow_select: true,
                    ..Default::default()
                },
            )),
            message_json: json!({"text": {"content": "via gRPC"}, "attachments": [
                {"msgtype": "video", "video": {"media_id": "V"}}]})
            .to_string(),
            client_msg_id: "grpc-group-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(job.created);
    assert_eq!(job.msgtype, "text+video");
    wait_job(&app, "acme-work", &job.job_id, |j| every_batch(j, "sent")).await;
    assert_eq!(
        wechat.group_messages(),
        [
            json!({"chat_type": "single", "sender": "zhangsan", "allow_select": true,
            "tag_filter": {"group_list": [{"tag_list": ["etHot"]}]},
            "text": {"content": "via gRPC"},
            "attachments": [{"msgtype": "video", "video": {"media_id": "V"}}]})
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_answer_pauses_a_group_message_which_goes_out_once_later() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    // WeCom's frequency limit (45009, 接口调用超过限制): nothing was created.
    wechat.inject(ADD_MSG_TEMPLATE, Injected::Errcode(45009), 1);
    let (_, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"chat_type": "group", "sender": "zhangsan", "chat_ids": ["wrA"]},
                "message": {"text": {"content": "限流"}}}),
    )
    .await;
    let job_id = created["job_id"].as_str().unwrap();
    let j = wait_job(&app, "acme-work", job_id, |j| every_batch(j, "sent")).await;
    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 2);
    assert_eq!(wechat.group_message_ids().len(), 1, "created once");
    let batch = &j["batches"][0];
    assert_eq!(batch["attempts"], 2);
    assert_eq!(batch["reconciled"], false);
    assert_eq!(batch["error"], Value::Null);
    // Between the two attempts, a look at WeCom's record of customer-group messages.
    let lists = wechat.requests_to(GROUPMSG_LIST);
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].body["chat_type"], "group");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_found_in_wecoms_group_record_by_its_attachments_and_not_sent_again() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let content = |url: &str| {
        json!({"text": {"content": "周年庆"}, "attachments": [
            {"msgtype": "link", "link": {"title": "周年庆", "url": url}},
            {"msgtype": "file", "file": {"media_id": "FILE_ID"}}]})
    };
    // Another message to the same groups with the same text and a different link: only the
    // attachments tell it apart.
    let lookalike = wechat.seed_group_chat_message(
        WORK_CORP_ID,
        "zhangsan",
        &content("https://example.com/old"),
        &["wrA", "wrB"],
    );
    wechat.lose_group_message_answers(1);
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"chat_type": "group", "sender": "zhangsan", "chat_ids": ["wrA", "wrB"]},
                "message": content("https://example.com/new")}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let job_id = created["job_id"].as_str().unwrap();
    let j = wait_job(&app, "acme-work", job_id, |j| every_batch(j, "sent")).await;
    assert_eq!(wechat.count(ADD_MSG_TEMPLATE), 1, "never sent twice");
    let ids = wechat.group_message_ids();
    assert_eq!(ids.len(), 1);
    let batch = &j["batches"][0];
    assert_eq!(batch["msg_id"], ids[0].as_str(), "{j:#}");
    assert_eq!(batch["reconciled"], true);
    let lists = wechat.requests_to(GROUPMSG_LIST);
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|l| l.body["chat_type"] == "group"));
    let checked: Vec<Value> = wechat
        .requests_to(GROUPMSG_SEND_RESULT)
        .iter()
        .map(|r| r.body.clone())
        .collect();
    assert!(
        checked.iter().all(|b| b["msgid"] != lookalike.as_str()),
        "the look-alike's content differs: not a candidate: {checked:?}"
    );
    assert!(checked.iter().any(|b| b["msgid"] == ids[0].as_str()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_id_wecom_forgot_between_batches_is_uploaded_again_and_the_batch_sent() {
    let wechat = FakeWeChat::start().await;
    let (app, _dir) = app(&wechat, None, fast(3600)).await;
    let report = upload(&app, "file", "report.pdf", b"quarterly report").await;
    let first_id = report["media_id"].as_str().unwrap().to_owned();
    // Batch 0 goes through; batch 1's call waits while WeCom forgets the media id (its 3
    // days are over).
    wechat.hold(ADD_MSG_TEMPLATE, 1);
    let (status, created) = send(
        &app,
        "acme-work",
        &json!({"audience": {"chat_type": "group", "sender": "zhangsan", "chat_ids": chats(2001)},
                "message": {"attachments": [{"msgtype": "file",
                    "file": {"sha256": report["sha256"]}}]}}),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    until("batch 1 reached WeCom", || {
        wechat.count(ADD_MSG_TEMPLATE) >= 2
    })
    .await;
    wechat.forget_media(&first_id);
    wechat.release(ADD_MSG_TEMPLATE);
    let j = wait_job(
        &app,
        "acme-work",
        created["job_id"].as_str().unwrap(),
        |j| every_batch(j, "sent") || every_batch(j, "failed"),
    )
    .await;
    assert!(every_batch(&j, "sent"), "{j:#}");
    let sent: Vec<String> = wechat
        .requests_to(ADD_MSG_TEMPLATE)
        .iter()
        .map(|r| {
            r.body["attachments"][0]["file"]["media_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let uploads = wechat.requests_to(UPLOAD);
    assert_eq!(uploads.len(), 2, "uploaded again once");
    assert_eq!(uploads[1].body["media"]["content"], "quarterly report");
    assert_eq!(uploads[1].query["type"], "file");
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[..2], [first_id.clone(), first_id.clone()]);
    assert_ne!(sent[2], first_id, "batch 1 sent with the new media id");
    assert_eq!(wechat.group_message_ids().len(), 2);
    assert_eq!(j["batches"][1]["attempts"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_job_killed_mid_way_finishes_after_restart_with_no_batch_sent_twice() {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::embedded(&dir.path().join("data")).wechat(&wechat.base());
    group_job_killed_mid_way(&wechat, opts, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_job_killed_mid_way_finishes_after_restart_with_no_batch_sent_twice_redis() {
    let wechat = FakeWeChat::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = AppOptions::redis(&fresh_db_url().await).wechat(&wechat.base());
    group_job_killed_mid_way(&wechat, opts, dir.path()).await;
}

/// A customer-group job of three batches whose second group message WeCom created while the
/// process died before its answer: after a restart, batch 1 is found in WeCom's record, batch
/// 2 sent once, batch 0 never again.
async fn group_job_killed_mid_way(
    wechat: &FakeWeChat,
    mut opts: AppOptions,
    dir: &std::path::Path,
) {
    use crate::support::process::GatewayProcess;
    wechat_gateway::wechat::api::install_tls_provider();
    opts.extra_toml = "[broadcasts]\ncalls_per_minute = 120\nbackoff_min_ms = 100\n\
                       backoff_max_seconds = 1\nlease_seconds = 2\n"
        .into();
    let config = dir.join("gateway.toml");
    std::fs::write(&config, config_toml(&opts)).unwrap();
    let gateway = GatewayProcess::start(&config);
    let client = reqwest::Client::new();
    let body = json!({"audience": {"chat_type": "group", "sender": "zhangsan", "chat_ids": chats(4001)},
        "message": {"text": {"content": "不怕重启"}, "attachments": [
            {"msgtype": "link", "link": {"title": "不怕重启", "url": "https://example.com/k"}}]}});
    // Batch 0 answers; batch 1 is created at WeCom and its answer never comes back.
    wechat.hold(ADD_MSG_TEMPLATE, 1);
    let resp = client
        .post(format!(
            "http://{}/admin/v1/accounts/acme-work/broadcasts",
            gateway.addr
        ))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let created: Value = resp.json().await.unwrap();
    let job_id = created["job_id"].as_str().unwrap().to_owned();
    until("batch 1 reached WeCom", || {
        wechat.count(ADD_MSG_TEMPLATE) >= 2
    })
    .await;
    wechat.lose_group_message_answers(1);
    wechat.release(ADD_MSG_TEMPLATE);
    until("batch 1 created at WeCom", || {
        wechat.group_message_ids().len() == 2
    })
    .await;
    gateway.kill();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let restarted = GatewayProcess::start(&config);
    let j = wait_process_job(&client, restarted.addr, "acme-work", &job_id, "sent").await;
    restarted.kill();
    let ids = wechat.group_message_ids();
    assert_eq!(
        wechat.count(ADD_MSG_TEMPLATE),
        3,
        "one call per batch: {j:#}"
    );
    assert_eq!(ids.len(), 3);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(j["batches"][i]["msg_id"], id.as_str(), "{j:#}");
    }
    assert_eq!(j["batches"][0]["reconciled"], false);
    assert_eq!(j["batches"][1]["reconciled"], true);
    assert_eq!(j["batches"][2]["reconciled"], false);
    let sizes: Vec<usize> = wechat
        .group_messages()
        .iter()
        .map(|b| b["chat_id_list"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2000, 2000, 1]);
}
